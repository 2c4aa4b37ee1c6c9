use super::*;
use crate::model::{Execution, Job, Micros};
use async_trait::async_trait;
use uuid::Uuid;

/// What the engine's actors ask of the store: claims, the relay's writes,
/// node leases, scheduler passes, maintenance, notices.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Wake-ups from other nodes and processes: PostgreSQL's NOTIFY, or
    /// SQLite's file changes; `None` means: poll only. Lost notices are
    /// found by polling too.
    async fn listen(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<Notice>>, StoreError> {
        Ok(None)
    }

    /// Whether [`Engine::publish_events`] reaches other nodes (PostgreSQL).
    fn publishes_events(&self) -> bool {
        false
    }

    /// Sends a batch of lifecycle events (a JSON array of
    /// [`crate::engine::events::Event`], under 8,000 bytes) to every node that
    /// hears them.
    async fn publish_events(&self, payload: &str) -> Result<(), StoreError> {
        let _ = payload;
        Ok(())
    }

    /// Whether a node hears lifecycle events now (one has subscribed, on
    /// PostgreSQL a session holds the hearing lock): publishing is skipped
    /// while none does.
    async fn events_heard(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// From now on, `sink` hears every execution this store cancels before
    /// it started, after the transaction commits (but not those cancelled
    /// in the transaction that inserted them, because an upstream had
    /// already failed: their enqueuer announces them).
    fn on_unstarted_cancels(&self, sink: UnstartedSink) {
        let _ = sink;
    }

    /// Other nodes' lifecycle events, as the JSON batches they published;
    /// `None`: the backend does not carry them.
    async fn listen_events(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::UnboundedReceiver<String>>, StoreError> {
        Ok(None)
    }

    /// Brings the schema up to date.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Claims up to `limit` due pending executions for `node`: best priority,
    /// then earliest due.
    async fn claim(&self, node: &str, limit: usize, now: Micros) -> Result<Claims, StoreError>;

    /// Whether any pending execution is due (a cheap read, for idle polls).
    async fn has_due(&self, now: Micros) -> Result<bool, StoreError>;

    /// The earliest due time of any pending execution (a quiet poll sleeps
    /// until then). It reads every pending row: call it when none is due.
    async fn next_run_at(&self) -> Result<Option<Micros>, StoreError>;

    /// Writes a relay batch (logs, progress, pids, completions) in one
    /// transaction; returns what finished, with any retry it scheduled.
    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError>;

    /// sqlx's name of the database (`"SQLite"`, `"PostgreSQL"`).
    fn backend(&self) -> &'static str;

    /// Begins an in-process handler's transaction (an sqlx
    /// `Transaction<'static, _>` of the store's database, boxed), on a
    /// connection apart from the engine's.
    async fn begin_handler(&self) -> Result<Box<dyn std::any::Any + Send>, StoreError>;

    /// Writes completion `c` in handler transaction `tx` and commits both.
    /// `None`: the execution was no longer running (cancelled to its end,
    /// rescued), and both rolled back.
    async fn complete_in(
        &self,
        tx: Box<dyn std::any::Any + Send>,
        c: &Completion,
    ) -> Result<Option<Vec<Finished>>, StoreError>;

    /// Running executions of `node` whose cancel was requested.
    async fn cancel_requests(&self, node: &str) -> Result<Vec<(Uuid, String)>, StoreError>;

    /// Registers a node (a running supervisor).
    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError>;

    /// Renews a node's heartbeat.
    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError>;

    /// Records that `node` now runs `concurrency` executions at once.
    async fn set_node_concurrency(&self, node: &str, concurrency: u32) -> Result<(), StoreError>;

    /// Marks a node stopped.
    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError>;

    /// Running executions that belong to other nodes, with those nodes.
    async fn foreign_running(&self, node: &str) -> Result<Vec<ForeignRunning>, StoreError>;

    /// Unpaused, scheduled (not daemon) jobs due at `now`, earliest first.
    async fn due_jobs(&self, now: Micros, limit: usize) -> Result<Vec<Job>, StoreError>;

    /// The earliest `next_run_at` of unpaused jobs.
    async fn next_due(&self) -> Result<Option<Micros>, StoreError>;

    /// Which of `names` have an execution yet to end (waiting, as on its
    /// condition, pending, held or running).
    async fn active_jobs(
        &self,
        names: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError>;

    /// Pending and running executions of a job.
    async fn active_executions(&self, job: &str) -> Result<Vec<Uuid>, StoreError>;

    /// Unpaused, uncompleted daemon jobs with no active execution.
    async fn idle_daemons(&self) -> Result<Vec<IdleDaemon>, StoreError>;

    /// Applies a scheduler pass's steps in one transaction; returns how many
    /// executions were inserted.
    async fn advance_jobs(&self, steps: &[JobAdvance], now: Micros) -> Result<usize, StoreError>;

    /// Deletes up to `limit` finished executions (and their log lines)
    /// that finished before `before`: of job `job` if given, otherwise of
    /// any job but those in `except`. Returns (executions, log lines).
    /// Without `job`, the timeline's minutes before `before` go too.
    async fn prune(
        &self,
        before: Micros,
        job: Option<&str>,
        except: &[String],
        limit: usize,
    ) -> Result<(u64, u64), StoreError>;

    /// Executions `ids` with their trace contexts (those of them that
    /// still exist), for their spans.
    async fn traced(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Execution, Option<crate::model::TraceContext>)>, StoreError>;

    /// Whether the outbox holds changes to deliver (a cheap read).
    async fn changes_waiting(&self) -> Result<bool, StoreError>;

    /// Whether there is a webhook, a job that sets alerts, or changes left
    /// to take.
    async fn webhooks_or_changes(&self) -> Result<bool, StoreError>;

    /// Takes up to `limit` recorded changes, oldest first, and inserts
    /// the deliveries `deliver` makes of them, in one transaction (one
    /// node at a time). Each delivery runs after the last one of its
    /// webhook and subject that has yet to end. Returns how many changes
    /// were taken and the deliveries inserted.
    async fn deliver_changes(
        &self,
        limit: usize,
        now: Micros,
        deliver: &Deliver,
    ) -> Result<(usize, Vec<Uuid>), StoreError>;

    /// An alert pass, in one transaction (one node at a time, with the
    /// deliveries): reads the facts (`stale`: a node whose heartbeat is
    /// older has stopped), applies what `decide` makes of them. Returns
    /// how many incidents opened and closed.
    async fn alert_pass(
        &self,
        now: Micros,
        stale: Micros,
        decide: &DecideAlerts,
    ) -> Result<(usize, usize), StoreError>;
}
