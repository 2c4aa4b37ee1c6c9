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
///
/// ```
/// use jobvisor::RunSpec;
/// use std::time::Duration;
/// let mut spec = RunSpec::new("resize", serde_json::json!({"path": "cat.png"}))
///     .unique_key("resize:cat.png")
///     .mode(jobvisor::Mode::Process);
/// spec.retries = 5;
/// spec.backoff = Duration::from_secs(2);
/// spec.timeout = Some(Duration::from_secs(60));
/// spec.queue = "images".into();
/// ```
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
    /// Its id, chosen by the caller: an id that names an execution already
    /// is refused ([`crate::Error::IdTaken`]). Lists go newest first by id,
    /// so a time-ordered UUIDv7 keeps them in order. A new UUIDv7 if
    /// `None`.
    pub id: Option<Uuid>,
    /// Its meta: string values by key, shown with it and found by
    /// (`exec list --meta K=V`); at most 4 KiB as JSON.
    pub meta: crate::model::Meta,
    /// Its tags, found by (`exec list --tag T`): at most 32, each of at
    /// most 64 characters.
    pub tags: Vec<String>,
    /// The W3C `traceparent` of the caller's span, which its trace
    /// continues (`None`: the ambient OpenTelemetry context's span, if
    /// there is one).
    pub traceparent: Option<String>,
}

impl RunSpec {
    /// A run of `handler` with `payload` and every default.
    ///
    /// ```
    /// use jobvisor::RunSpec;
    /// let spec = RunSpec::new("echo", serde_json::json!({"hello": "world"}));
    /// assert_eq!((spec.retries, spec.queue.as_str(), spec.mode), (0, "default", None));
    /// ```
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
            id: None,
            meta: Default::default(),
            tags: Vec::new(),
            traceparent: None,
        }
    }

    /// Adds tag `tag` (found by `exec list --tag`).
    ///
    /// ```
    /// let spec = jobvisor::RunSpec::new("sync", serde_json::Value::Null).tag("billing").meta("customer", "42");
    /// assert_eq!((spec.tags[0].as_str(), spec.meta["customer"].as_str()), ("billing", "42"));
    /// ```
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets meta `key` to `value` (found by `exec list --meta K=V`).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.meta.insert(key.into(), value.into());
        self
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
    ///
    /// ```
    /// use jobvisor::RunSpec;
    /// let spec = RunSpec::new("sync", serde_json::Value::Null).concurrency_key("customer-42");
    /// assert_eq!(spec.concurrency_key.as_deref(), Some("customer-42"));
    /// ```
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Runs it after execution `parent` has ended (repeatable: after all of
    /// them); by default only if they all succeed (see
    /// [`RunSpec::after_policy`]). Its handler receives their outputs as
    /// `inputs`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::RunSpec;
    /// let extract = sup.enqueue(RunSpec::new("echo", serde_json::json!({"rows": 42}))).await?;
    /// let load = sup.enqueue(RunSpec::new("noop", serde_json::Value::Null).after(extract)).await?;
    /// assert_eq!(store.execution(load).await?.unwrap().status, jobvisor::Status::Waiting);
    /// # Ok(()) }
    /// ```
    pub fn after(mut self, parent: Uuid) -> Self {
        if !self.after.contains(&parent) {
            self.after.push(parent);
        }
        self
    }

    /// What its parents' ends must be for it to run.
    ///
    /// ```
    /// use jobvisor::RunSpec;
    /// use jobvisor::model::AfterPolicy;
    /// let parent = uuid::Uuid::now_v7();
    /// let cleanup = RunSpec::new("noop", serde_json::Value::Null)
    ///     .after(parent)
    ///     .after_policy(AfterPolicy::Finished); // however the parent ended
    /// ```
    pub fn after_policy(mut self, policy: crate::model::AfterPolicy) -> Self {
        self.after_policy = policy;
        self
    }

    /// Gives the run a unique key: while an execution with it is pending or
    /// running, enqueueing another creates nothing and returns that one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::RunSpec;
    /// let a = sup.enqueue(RunSpec::new("noop", serde_json::Value::Null).unique_key("daily-report")).await?;
    /// let b = sup.enqueue(RunSpec::new("noop", serde_json::Value::Null).unique_key("daily-report")).await?;
    /// assert_eq!(a, b, "the second enqueue got the holder");
    /// # Ok(()) }
    /// ```
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
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::RunSpec;
    /// // Debounce: the last payload wins while the run has not started.
    /// let key = |n: i32| RunSpec::new("echo", n.into()).unique_key("reindex").replace();
    /// let a = sup.enqueue(key(1)).await?;
    /// let b = sup.enqueue(key(2)).await?;
    /// assert_eq!(a, b);
    /// assert_eq!(store.execution(a).await?.unwrap().payload, serde_json::json!(2));
    /// # Ok(()) }
    /// ```
    pub fn replace(mut self) -> Self {
        if let Some(u) = &mut self.unique {
            u.replace = true;
        }
        self
    }

    /// With [`RunSpec::unique_key`]: the key still counts for `hold` after
    /// its execution ends (a throttle).
    ///
    /// ```
    /// use jobvisor::RunSpec;
    /// // At most one digest per user an hour, however often it is asked for.
    /// let spec = RunSpec::new("digest", serde_json::json!({"user": 7}))
    ///     .unique_key("digest:7")
    ///     .unique_for(std::time::Duration::from_secs(3600));
    /// assert_eq!(spec.unique.unwrap().hold_ms, Some(3_600_000));
    /// ```
    pub fn unique_for(mut self, hold: Duration) -> Self {
        if let Some(u) = &mut self.unique {
            u.hold_ms = Some(hold.as_millis().min(u64::MAX as u128) as u64);
        }
        self
    }

    /// Sets the mode.
    ///
    /// ```
    /// use jobvisor::RunSpec;
    /// let isolated = RunSpec::new("sleep", serde_json::json!({"ms": 10})).mode(jobvisor::Mode::Process);
    /// assert_eq!(isolated.mode, Some(jobvisor::Mode::Process));
    /// ```
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// Resolves `spec` against the registered handlers (`store`) and the
/// built-in or library handlers known here (`local`).
#[cfg(feature = "testing")]
pub async fn prepare(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: RunSpec,
) -> Result<NewExecution, Error> {
    let registered = store.handler(&spec.handler).await?;
    resolve(registered.as_ref(), local, spec)
}

/// [`prepare`] for many specs, reading each distinct handler once.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn prepare_many(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    specs: Vec<RunSpec>,
) -> Result<Vec<NewExecution>, Error> {
    prepare_each(store, local, specs).await.map_err(|(_, e)| e)
}

/// The index of the first of `specs` that [`prepare_many`] refuses: which
/// run made a batch fail.
pub(crate) async fn first_refused(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    specs: &[RunSpec],
) -> Option<usize> {
    match prepare_each(store, local, specs.to_vec()).await {
        // (A database that fails is no run's fault.)
        Err((i, e)) if !matches!(e, Error::Store(_)) => Some(i),
        _ => None,
    }
}

/// [`prepare_many`], saying which spec was refused. Each distinct handler
/// is read once: a batch of 10,000 runs costs as many reads as it names
/// handlers.
async fn prepare_each(
    store: &dyn Store,
    local: &(dyn Fn(&str) -> bool + Sync),
    specs: Vec<RunSpec>,
) -> Result<Vec<NewExecution>, (usize, Error)> {
    let mut handlers: HashMap<String, Option<HandlerSpec>> = HashMap::new();
    let mut out = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        if !handlers.contains_key(&spec.handler) {
            let h = store
                .handler(&spec.handler)
                .await
                .map_err(|e| (i, e.into()))?;
            handlers.insert(spec.handler.clone(), h);
        }
        let registered = handlers[&spec.handler].as_ref();
        out.push(resolve(registered, local, spec).map_err(|e| (i, e))?);
    }
    Ok(out)
}

/// Checks the lengths of a run's names and unique key.
fn check_names(spec: &RunSpec) -> Result<(), String> {
    use crate::model::{check_chars, check_name, MAX_UNIQUE_KEY_CHARS};
    check_name("handler name", &spec.handler)?;
    check_name("queue name", &spec.queue)?;
    if let Some(job) = &spec.job {
        check_name("job name", job)?;
    }
    if let Some(k) = &spec.concurrency_key {
        check_name("concurrency key", k)?;
    }
    if let Some(u) = &spec.unique {
        check_chars("unique key", &u.key, MAX_UNIQUE_KEY_CHARS)?;
    }
    Ok(())
}

fn resolve(
    registered: Option<&HandlerSpec>,
    local: &(dyn Fn(&str) -> bool + Sync),
    spec: RunSpec,
) -> Result<NewExecution, Error> {
    crate::model::refuse_webhook_handler(&spec.handler).map_err(Error::Invalid)?;
    check_names(&spec).map_err(Error::Invalid)?;
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
    crate::model::check_tags(&spec.tags).map_err(Error::Invalid)?;
    crate::model::check_meta(&spec.meta).map_err(Error::Invalid)?;
    let caller = match &spec.traceparent {
        Some(t) => Some(crate::model::RemoteSpan::parse(t).map_err(Error::Invalid)?),
        None => ambient_span(),
    };
    let id = spec.id.unwrap_or_else(Uuid::now_v7);
    let trace = (caller.is_some() || crate::model::trace::exporting())
        .then(|| crate::model::TraceContext::for_run(id, caller, now_micros()));
    Ok(NewExecution {
        id,
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
        origin: crate::model::Origin::Manual,
        meta: spec.meta,
        tags: spec.tags,
        trace,
    })
}

/// The span of the ambient OpenTelemetry context (the caller's, when a
/// library enqueue runs inside one), if it is valid.
fn ambient_span() -> Option<crate::model::RemoteSpan> {
    use opentelemetry::trace::TraceContextExt;
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| crate::model::RemoteSpan {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        sampled: sc.is_sampled(),
    })
}

/// Inserts prepared executions; a duplicate of a held unique key is not
/// inserted, and its entry names the holder.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn enqueue(
    store: &dyn Store,
    execs: &[NewExecution],
) -> Result<Vec<crate::model::Enqueued>, Error> {
    Ok(store.enqueue(execs, now_micros()).await?)
}
