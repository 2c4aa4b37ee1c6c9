use super::*;
use crate::model::{Enqueued, HandlerSpec, JobSpec, Micros, NewExecution};
use async_trait::async_trait;
use uuid::Uuid;

/// The store's commands: what [`crate::Client`] carries out (and announces).
/// Each is one transaction; none announces anything itself.
#[async_trait]
pub trait Commands: Send + Sync + 'static {
    /// Adds or replaces a handler.
    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError>;

    /// Removes a handler; whether it existed.
    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError>;

    /// Adds or replaces a webhook (checked: [`crate::model::WebhookSpec::check`]).
    async fn put_webhook(
        &self,
        spec: &crate::model::WebhookSpec,
        now: Micros,
    ) -> Result<WebhookPut, StoreError>;

    /// Removes a webhook; whether it existed. Its deliveries already made
    /// stay, and still run.
    async fn remove_webhook(&self, name: &str) -> Result<bool, StoreError>;

    /// Inserts executions (one transaction). One with a unique key that is
    /// held is not inserted: its entry names the holder. One with parents
    /// (`after`, which must come before it if they are in `execs`) waits
    /// until they end, or is cancelled at once if one has already ended
    /// in a way its policy does not allow.
    async fn enqueue(
        &self,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError>;

    /// Inserts a workflow and its steps' executions (one transaction).
    async fn enqueue_workflow(
        &self,
        workflow: &NewWorkflow,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError>;

    /// Cancels every step of a workflow that has not ended: those not
    /// started at once, running ones by their nodes. `None`: no such
    /// workflow.
    async fn cancel_workflow(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<Option<WorkflowCancel>, StoreError>;

    /// Cancels executions `ids` that have not ended: those not started at
    /// once (their dependents settled), running ones by their nodes.
    async fn cancel_many(
        &self,
        ids: &[Uuid],
        reason: &str,
        now: Micros,
    ) -> Result<WorkflowCancel, StoreError>;

    /// Runs a failed or cancelled execution (the last attempt of its chain)
    /// again: a new attempt of the same root, due now, linked to it.
    async fn retry(&self, id: Uuid, now: Micros) -> Result<RetryRequest, StoreError>;

    /// Holds execution `id` (`hold`): a pending or waiting one becomes
    /// `held`, never claimed, while it keeps counting its parents' ends; or
    /// releases it, back to `pending` (or `waiting`, while it still waits
    /// on parents or on a unique key's holder). Holding a held one and
    /// releasing one that is not held change nothing; a running or ended
    /// one is refused.
    async fn hold(&self, id: Uuid, hold: bool) -> Result<HoldRequest, StoreError>;

    /// Records a cancel request: a pending execution is cancelled at once, a
    /// running one is flagged for its node to stop.
    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError>;

    /// Changes job `spec.name` to `spec`, keeping its counts and history;
    /// false if there is no such job.
    async fn replace_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError>;

    /// Adds a job; `false` if the name is taken (nothing written).
    async fn insert_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError>;

    /// Deletes a job (its executions stay, as history); whether it existed.
    async fn remove_job(&self, name: &str) -> Result<bool, StoreError>;

    /// Pauses or resumes a job; whether it exists.
    async fn set_job_paused(
        &self,
        name: &str,
        paused: bool,
        now: Micros,
    ) -> Result<bool, StoreError>;

    /// Changes a queue's limits (`Some(None)` removes one) or pause state;
    /// every node's next claim applies them.
    async fn set_queue(&self, name: &str, change: &QueueChange) -> Result<(), StoreError>;

    /// Names of `kind` (`handler`, `job`) the configuration file declared.
    async fn declared(&self, kind: &str) -> Result<Vec<String>, StoreError>;

    /// Replaces the declared names of `kind`.
    async fn set_declared(&self, kind: &str, names: &[String]) -> Result<(), StoreError>;
}
