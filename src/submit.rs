//! Turning a request to run a handler into a pending execution: resolves
//! the handler, checks the mode, applies the handler's defaults.

use crate::model::{now_micros, HandlerKind, HandlerSpec, Micros, Mode, NewExecution, RetryPolicy};
use crate::store::Store;
use crate::Error;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// A request to run a handler once (plus retries).
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
#[allow(missing_docs)]
pub struct RunSpec {
    /// The handler's name.
    pub handler: String,
    pub payload: Value,
    /// Inproc or process; the handler's default when `None`.
    pub mode: Option<Mode>,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Delay before the first retry (doubles each attempt, with jitter).
    pub backoff: Duration,
    /// Upper bound of the retry delay.
    pub backoff_cap: Duration,
    /// Wall-clock budget; the handler's default when `None`.
    pub timeout: Option<Duration>,
    /// Higher runs first.
    pub priority: i32,
    /// The job it runs for (`None`: an ad-hoc run, of no job).
    pub job: Option<String>,
    /// Not before this time (now when `None`).
    pub run_at: Option<Micros>,
    /// Queue to wait in.
    pub queue: String,
    /// At most one pending or running execution with this key (and, with a
    /// hold, none within that time of the last one's end).
    pub unique: Option<crate::model::UniqueKey>,
    /// Its concurrency key: the queue's key limit caps how many executions
    /// with one key run at once.
    pub concurrency_key: Option<String>,
    /// Executions to run after: it waits until they have all ended.
    pub after: Vec<Uuid>,
    /// What its parents' ends must be for it to run.
    pub after_policy: crate::model::AfterPolicy,
}

impl RunSpec {
    /// A run of `handler` with `payload` and every default.
    pub fn new(handler: impl Into<String>, payload: Value) -> Self {
        Self {
            handler: handler.into(),
            payload,
            mode: None,
            retries: 0,
            backoff: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            timeout: None,
            priority: 0,
            job: None,
            run_at: None,
            queue: crate::model::DEFAULT_QUEUE.to_string(),
            unique: None,
            concurrency_key: None,
            after: Vec::new(),
            after_policy: Default::default(),
        }
    }

    /// A run of `handler` with `args` encoded as its payload: the
    /// counterpart of a typed handler's arguments.
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Resize { path: String, width: u32 }
    ///
    /// let spec = jobvisor::RunSpec::with_args("resize", &Resize { path: "a.png".into(), width: 64 })?;
    /// assert_eq!(spec.payload, serde_json::json!({"path": "a.png", "width": 64}));
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn with_args(
        handler: impl Into<String>,
        args: &impl serde::Serialize,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self::new(handler, serde_json::to_value(args)?))
    }

    /// Gives the run a concurrency key: in a queue with a key limit (`queue
    /// set-key-limit`), at most that many executions with one key run at
    /// once, across all nodes; other keys are not held back.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Runs it after execution `parent` has ended (repeatable: after all of
    /// them); by default only if they all succeed (see
    /// [`RunSpec::after_policy`]). Its handler receives their outputs as
    /// `inputs`.
    pub fn after(mut self, parent: Uuid) -> Self {
        if !self.after.contains(&parent) {
            self.after.push(parent);
        }
        self
    }

    /// What its parents' ends must be for it to run.
    pub fn after_policy(mut self, policy: crate::model::AfterPolicy) -> Self {
        self.after_policy = policy;
        self
    }

    /// Gives the run a unique key: while an execution with it is pending or
    /// running, enqueueing another creates nothing and returns that one.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        let (hold_ms, replace) = self
            .unique
            .take()
            .map_or((None, false), |u| (u.hold_ms, u.replace));
        self.unique = Some(crate::model::UniqueKey {
            key: key.into(),
            hold_ms,
            replace,
        });
        self
    }

    /// With [`RunSpec::unique_key`]: a duplicate replaces the payload and
    /// due time of the holder that has not started, or of the one execution
    /// that waits to follow a running holder (made if there is none), so a
    /// key has at most one running and one pending execution.
    pub fn replace(mut self) -> Self {
        if let Some(u) = &mut self.unique {
            u.replace = true;
        }
        self
    }

    /// With [`RunSpec::unique_key`]: the key still counts for `hold` after
    /// its execution ends (a throttle).
    pub fn unique_for(mut self, hold: Duration) -> Self {
        if let Some(u) = &mut self.unique {
            u.hold_ms = Some(hold.as_millis().min(u64::MAX as u128) as u64);
        }
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// Resolves `spec` against the registered handlers (`store`) and the
/// built-in or library handlers known here (`local`).
pub async fn prepare(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: RunSpec,
) -> Result<NewExecution, Error> {
    let registered = store.handler(&spec.handler).await?;
    resolve(registered.as_ref(), local, spec)
}

/// [`prepare`] for many specs, reading each distinct handler once.
pub async fn prepare_many(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    specs: Vec<RunSpec>,
) -> Result<Vec<NewExecution>, Error> {
    let mut handlers: HashMap<String, Option<HandlerSpec>> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        if !handlers.contains_key(&spec.handler) {
            let h = store.handler(&spec.handler).await?;
            handlers.insert(spec.handler.clone(), h);
        }
        let registered = handlers[&spec.handler].as_ref();
        out.push(resolve(registered, local, spec)?);
    }
    Ok(out)
}

fn resolve(
    registered: Option<&HandlerSpec>,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: RunSpec,
) -> Result<NewExecution, Error> {
    let (mode, default_timeout) = match registered {
        Some(h) => match (&h.kind, spec.mode) {
            (HandlerKind::Exec { .. }, Some(Mode::Inproc)) => {
                return Err(Error::ExecNotInproc(spec.handler))
            }
            (HandlerKind::Exec { .. }, _) => (Mode::Process, h.limits.timeout_ms),
            (HandlerKind::Rust, m) => (m.unwrap_or(h.mode), h.limits.timeout_ms),
        },
        None if local(&spec.handler) => (spec.mode.unwrap_or(Mode::Inproc), None),
        None => return Err(Error::UnknownHandler(spec.handler)),
    };
    if spec.concurrency_key.as_deref() == Some("") {
        return Err(Error::Invalid("a concurrency key cannot be empty".into()));
    }
    if spec.job.as_deref() == Some("") {
        return Err(Error::Invalid("a job name cannot be empty".into()));
    }
    if spec.timeout == Some(Duration::ZERO) {
        return Err(Error::Invalid("a timeout must be longer than 0".into()));
    }
    Ok(NewExecution {
        id: Uuid::now_v7(),
        job: spec.job,
        handler: spec.handler,
        mode,
        payload: spec.payload,
        retry: RetryPolicy {
            max_attempts: spec.retries.saturating_add(1),
            backoff_base_ms: spec.backoff.as_millis() as u64,
            backoff_cap_ms: spec.backoff_cap.as_millis() as u64,
        },
        timeout_ms: spec
            .timeout
            .map(|t| t.as_millis() as u64)
            .or(default_timeout),
        priority: spec.priority,
        run_at: spec.run_at.unwrap_or_else(now_micros),
        attempt: 1,
        previous_id: None,
        queue: spec.queue,
        occurrence: None,
        unique: spec.unique,
        concurrency_key: spec.concurrency_key,
        after: spec.after,
        after_policy: spec.after_policy,
        step: None,
    })
}

/// Inserts prepared executions; a duplicate of a held unique key is not
/// inserted, and its entry names the holder.
pub async fn enqueue(
    store: &dyn Store,
    execs: &[NewExecution],
) -> Result<Vec<crate::model::Enqueued>, Error> {
    Ok(store.enqueue(execs, now_micros()).await?)
}
