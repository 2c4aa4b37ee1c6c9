//! The handler API: write a handler once, run it in either mode.
//!
//! A handler is an async function of a [`Context`] and a JSON payload. The
//! supervisor runs it as a tokio task (inproc) or the worker host runs it in
//! a child process (process); the `Context` looks the same in both.

use crate::protocol::{Level, LogMessage, Progress, WorkerMessage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A boxed, sendable future: what a [`Handler`] returns.
///
/// ```
/// use jobvisor_worker::{BoxFuture, HandlerResult};
/// fn later() -> BoxFuture<HandlerResult> {
///     Box::pin(async { Ok(serde_json::json!("done")) })
/// }
/// ```
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler returns: its JSON output, or why it failed.
///
/// ```
/// use jobvisor_worker::{Context, HandlerError, HandlerResult};
/// async fn double(_ctx: Context, payload: serde_json::Value) -> HandlerResult {
///     let n = payload.as_i64().ok_or_else(|| HandlerError::permanent("expected a number"))?;
///     Ok((n * 2).into())
/// }
/// ```
pub type HandlerResult = Result<Value, HandlerError>;

/// Why a handler did not succeed, and whether trying again could help.
///
/// ```
/// use jobvisor_worker::{ErrorKind, HandlerError};
/// let e = HandlerError::retryable("upstream returned 503");
/// assert_eq!((e.kind, e.to_string().as_str()), (ErrorKind::Retryable, "upstream returned 503"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Human-readable reason, stored on the execution.
    pub message: String,
    /// What kind of failure this is.
    pub kind: ErrorKind,
}

/// The kinds of handler failure.
///
/// ```
/// use jobvisor_worker::{ErrorKind, HandlerError};
/// fn retried(e: &HandlerError) -> bool {
///     matches!(e.kind, ErrorKind::Retryable)
/// }
/// assert!(!retried(&HandlerError::permanent("bad input")));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Transient: retried while attempts remain.
    Retryable,
    /// Permanent: never retried (`retry: false` on the wire).
    Permanent,
    /// The handler stopped because it was asked to.
    Cancelled,
    /// Not a failure: run again after this long, without using a retry
    /// (the protocol's `snooze`).
    Snooze(std::time::Duration),
}

impl HandlerError {
    /// A transient failure: retried while attempts remain.
    ///
    /// ```
    /// let e = jobvisor_worker::HandlerError::retryable("the database is busy");
    /// assert_eq!(e.kind, jobvisor_worker::ErrorKind::Retryable);
    /// ```
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Retryable,
        }
    }

    /// A permanent failure: not retried.
    ///
    /// ```
    /// let e = jobvisor_worker::HandlerError::permanent("no such customer");
    /// assert_eq!(e.kind, jobvisor_worker::ErrorKind::Permanent);
    /// ```
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Permanent,
        }
    }

    /// The handler honoured a cancel request.
    ///
    /// ```
    /// use jobvisor_worker::{Context, HandlerError, HandlerResult};
    /// async fn wait(ctx: Context, _payload: serde_json::Value) -> HandlerResult {
    ///     ctx.cancelled().await;
    ///     Err(HandlerError::cancelled())
    /// }
    /// ```
    pub fn cancelled() -> Self {
        Self {
            message: "cancelled".into(),
            kind: ErrorKind::Cancelled,
        }
    }

    /// Not a failure: ends this execution as `snoozed` and runs it again
    /// after `delay`, keeping its attempt number and attempts allowed (at
    /// most 1,000 snoozes per execution chain; the next one fails it).
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = jobvisor_worker::HandlerError::snooze(Duration::from_secs(30));
    /// assert_eq!(e.kind, jobvisor_worker::ErrorKind::Snooze(Duration::from_secs(30)));
    /// ```
    pub fn snooze(delay: std::time::Duration) -> Self {
        Self {
            message: String::new(),
            kind: ErrorKind::Snooze(delay),
        }
    }

    /// [`HandlerError::snooze`] with a reason, stored on the execution.
    ///
    /// ```
    /// let e = jobvisor_worker::HandlerError::snooze_because(
    ///     std::time::Duration::from_secs(60),
    ///     "the upstream asks us to wait",
    /// );
    /// assert_eq!(e.message, "the upstream asks us to wait");
    /// ```
    pub fn snooze_because(delay: std::time::Duration, reason: impl Into<String>) -> Self {
        Self {
            message: reason.into(),
            kind: ErrorKind::Snooze(delay),
        }
    }

    /// A payload the handler cannot use: permanent, since retrying the same
    /// input cannot help.
    ///
    /// ```
    /// let err = serde_json::from_str::<u32>("\"x\"").unwrap_err();
    /// let e = jobvisor_worker::HandlerError::invalid_payload(err);
    /// assert!(e.message.starts_with("invalid payload: invalid type"));
    /// assert_eq!(e.kind, jobvisor_worker::ErrorKind::Permanent);
    /// ```
    pub fn invalid_payload(err: impl std::fmt::Display) -> Self {
        Self::permanent(format!("invalid payload: {err}"))
    }
}

/// Identifies the execution a [`Context`] belongs to.
///
/// ```
/// use jobvisor_worker::{Context, HandlerResult};
/// async fn who(ctx: Context, _payload: serde_json::Value) -> HandlerResult {
///     let e = ctx.execution();
///     Ok(format!("{} (job {:?}) attempt {}", e.execution_id, e.job, e.attempt).into())
/// }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ExecutionInfo {
    /// The execution's UUID.
    pub execution_id: String,
    /// The job's name.
    pub job: String,
    /// The handler's name.
    pub handler: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Its parents' ends and outputs, if it ran after others.
    pub inputs: Vec<crate::protocol::Input>,
    /// How many times its chain snoozed before it.
    pub snoozes: u32,
    /// Its meta.
    pub meta: std::collections::BTreeMap<String, String>,
    /// Its tags.
    pub tags: Vec<String>,
}

struct ContextInner {
    info: ExecutionInfo,
    cancel: CancellationToken,
    events: mpsc::Sender<WorkerMessage>,
    /// What the runner attached for the handler (see
    /// [`Context::extension`]).
    extension: Option<Arc<dyn std::any::Any + Send + Sync>>,
}

/// A handler's line back to its supervisor: progress, logs, heartbeats, and
/// whether it has been asked to stop.
///
/// Sends wait when the supervisor is behind (back-pressure), so a handler
/// that logs faster than the database writes slows down instead of losing
/// lines or growing memory.
///
/// ```
/// use jobvisor_worker::{Context, HandlerError, Level};
/// async fn copy(ctx: Context, files: Vec<String>) -> Result<usize, HandlerError> {
///     for (i, f) in files.iter().enumerate() {
///         if ctx.is_cancelled() {
///             return Err(HandlerError::cancelled());
///         }
///         ctx.log(Level::Debug, format!("copying {f}")).await;
///         ctx.step(i as u64 + 1, files.len() as u64, f.clone()).await;
///     }
///     Ok(files.len())
/// }
/// ```
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl Context {
    /// Builds a context whose events go to `events`; used by the runners.
    ///
    /// ```
    /// use jobvisor_worker::{Context, ExecutionInfo, WorkerMessage};
    /// // A context of one's own, to test a handler without a supervisor.
    /// let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// let info = ExecutionInfo { attempt: 1, ..Default::default() };
    /// let ctx = Context::new(info, Default::default(), tx);
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// rt.block_on(ctx.heartbeat());
    /// assert!(matches!(rx.try_recv(), Ok(WorkerMessage::Heartbeat)));
    /// ```
    pub fn new(
        info: ExecutionInfo,
        cancel: CancellationToken,
        events: mpsc::Sender<WorkerMessage>,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                info,
                cancel,
                events,
                extension: None,
            }),
        }
    }

    /// This context with `value` attached, for the handler to find with
    /// [`Context::extension`]: how a runner gives its handlers what only it
    /// has (the in-process runner of `jobvisor` attaches the handler's
    /// database transaction). One value at a time; a second replaces the
    /// first.
    ///
    /// ```
    /// # let (tx, _rx) = tokio::sync::mpsc::channel(16);
    /// let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx)
    ///     .with_extension(42u32);
    /// assert_eq!(ctx.extension::<u32>(), Some(&42));
    /// assert_eq!(ctx.extension::<String>(), None);
    /// ```
    pub fn with_extension<T: std::any::Any + Send + Sync>(self, value: T) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(ContextInner {
                info: inner.info.clone(),
                cancel: inner.cancel.clone(),
                events: inner.events.clone(),
                extension: Some(Arc::new(value)),
            }),
        }
    }

    /// The value the runner attached with [`Context::with_extension`], if
    /// it is a `T`.
    pub fn extension<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.inner.extension.as_deref()?.downcast_ref()
    }

    /// The execution this context serves.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// assert_eq!(ctx.execution().attempt, 0); // a default ExecutionInfo
    /// # });
    /// ```
    pub fn execution(&self) -> &ExecutionInfo {
        &self.inner.info
    }

    /// The ends and outputs of the executions this one ran after (its
    /// parents: `--after`, a workflow's `after`, a job's `--then`), in the
    /// order of their ids; empty if it has none.
    ///
    /// ```
    /// use jobvisor_worker::{Context, HandlerResult};
    /// // Sums the `rows` outputs of the executions this one ran after.
    /// async fn load(ctx: Context, _payload: serde_json::Value) -> HandlerResult {
    ///     let rows: i64 = ctx
    ///         .inputs()
    ///         .iter()
    ///         .filter_map(|i| i.output.get("rows")?.as_i64())
    ///         .sum();
    ///     Ok(rows.into())
    /// }
    /// ```
    pub fn inputs(&self) -> &[crate::protocol::Input] {
        &self.inner.info.inputs
    }

    async fn send(&self, message: WorkerMessage) {
        // The receiver is gone only when the execution is over (abandoned
        // after a cancel): nothing is waiting for this message any more.
        let _ = self.inner.events.send(message).await;
    }

    /// Reports progress; the supervisor keeps the latest values.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.progress(jobvisor_worker::Progress { percent: Some(42.5), ..Default::default() }).await;
    /// # });
    /// # assert!(matches!(rx.try_recv(), Ok(jobvisor_worker::WorkerMessage::Progress(_))));
    /// ```
    pub async fn progress(&self, progress: Progress) {
        self.send(WorkerMessage::Progress(progress.normalized()))
            .await;
    }

    /// Reports `done` of `total` units, with a message.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.step(17, 40, "copying chunk 17").await;
    /// # });
    /// # let Ok(jobvisor_worker::WorkerMessage::Progress(p)) = rx.try_recv() else { panic!() };
    /// # assert_eq!((p.done, p.total, p.percent), (Some(17), Some(40), Some(42.5)));
    /// ```
    pub async fn step(&self, done: u64, total: u64, message: impl Into<String>) {
        self.progress(Progress {
            percent: None,
            message: Some(message.into()),
            done: Some(done),
            total: Some(total),
            data: None,
        })
        .await;
    }

    /// Reports free-form progress detail: a JSON object of at most 64 KiB,
    /// kept in place of the last, shown by `exec show`, the dashboard and
    /// the execution's event stream.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.progress_data(serde_json::json!({"stage": "upload", "bytes": 1024})).await;
    /// # });
    /// # let Ok(jobvisor_worker::WorkerMessage::Progress(p)) = rx.try_recv() else { panic!() };
    /// # assert_eq!(p.data.unwrap()["stage"], "upload");
    /// ```
    pub async fn progress_data(&self, data: Value) {
        self.progress(Progress {
            data: Some(data),
            ..Default::default()
        })
        .await;
    }

    /// Logs a line at `level`.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.log(jobvisor_worker::Level::Warn, "retrying upstream").await;
    /// # });
    /// ```
    pub async fn log(&self, level: Level, message: impl Into<String>) {
        self.send(WorkerMessage::Log(LogMessage {
            level,
            message: message.into(),
            fields: None,
        }))
        .await;
    }

    /// Logs a line at `level` with structured fields.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// let mut fields = serde_json::Map::new();
    /// fields.insert("host".into(), "a.example".into());
    /// ctx.log_with(jobvisor_worker::Level::Info, "connected", fields).await;
    /// # });
    /// ```
    pub async fn log_with(
        &self,
        level: Level,
        message: impl Into<String>,
        fields: Map<String, Value>,
    ) {
        self.send(WorkerMessage::Log(LogMessage {
            level,
            message: message.into(),
            fields: Some(fields),
        }))
        .await;
    }

    /// Logs at `info`.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.info("starting").await;
    /// # });
    /// ```
    pub async fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message).await;
    }

    /// Logs at `warn`.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.warn("disk almost full").await;
    /// # });
    /// ```
    pub async fn warn(&self, message: impl Into<String>) {
        self.log(Level::Warn, message).await;
    }

    /// Logs at `error`.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.error("upstream refused the request").await;
    /// # });
    /// ```
    pub async fn error(&self, message: impl Into<String>) {
        self.log(Level::Error, message).await;
    }

    /// Tells a supervisor with a heartbeat timeout that this job is alive.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// ctx.heartbeat().await;
    /// # });
    /// # assert!(matches!(rx.try_recv(), Ok(jobvisor_worker::WorkerMessage::Heartbeat)));
    /// ```
    pub async fn heartbeat(&self) {
        self.send(WorkerMessage::Heartbeat).await;
    }

    /// Whether a cancel was requested.
    ///
    /// ```
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// # rt.block_on(async {
    /// assert!(!ctx.is_cancelled());
    /// # });
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when a cancel is requested; `select!` on it in long waits.
    ///
    /// ```
    /// use jobvisor_worker::{Context, HandlerError, HandlerResult};
    /// use std::time::Duration;
    /// async fn nap(ctx: Context, _payload: serde_json::Value) -> HandlerResult {
    ///     tokio::select! {
    ///         _ = tokio::time::sleep(Duration::from_secs(60)) => Ok("rested".into()),
    ///         _ = ctx.cancelled() => Err(HandlerError::cancelled()),
    ///     }
    /// }
    /// ```
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }
}

/// A job's code, as the runners call it: an async function of a
/// [`Context`] and the JSON payload.
///
/// Functions need not implement it themselves: [`Registry::register`]
/// takes any `async fn(Context, Args) -> Result<Out, HandlerError>` (see
/// [`IntoHandler`]). Implement it for a type that decodes its payload in a
/// way of its own.
///
/// ```
/// use jobvisor_worker::{BoxFuture, Context, Handler, HandlerResult, Registry};
/// use serde_json::Value;
///
/// /// Answers every payload with a fixed greeting.
/// struct Greeter(String);
///
/// impl Handler for Greeter {
///     fn call(&self, _ctx: Context, _payload: Value) -> BoxFuture<HandlerResult> {
///         let greeting = Value::String(self.0.clone());
///         Box::pin(async move { Ok(greeting) })
///     }
/// }
///
/// let mut registry = Registry::new();
/// registry.register("greet", Greeter("hello".into()));
/// assert!(registry.get("greet").is_some());
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Runs one execution.
    ///
    /// ```
    /// use jobvisor_worker::Registry;
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # let (tx, _rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = jobvisor_worker::Context::new(Default::default(), Default::default(), tx);
    /// let registry = Registry::with_builtins();
    /// let echo = registry.get("echo").unwrap();
    /// let out = rt.block_on(echo.call(ctx, serde_json::json!({"a": 1})));
    /// assert_eq!(out, Ok(serde_json::json!({"a": 1})));
    /// ```
    fn call(&self, ctx: Context, payload: Value) -> BoxFuture<HandlerResult>;
}

/// What [`Registry::register`] accepts: a [`Handler`], or an async
/// function of a [`Context`] and its arguments.
///
/// The arguments are any `Args: DeserializeOwned` (a `serde_json::Value`
/// takes the payload as it is), decoded from the execution's payload; a
/// `null` payload (a run given none) is read as `{}` when `Args` cannot be
/// read from `null`, so a struct whose fields are all optional needs no
/// payload. A payload that does not decode fails the execution for good
/// (retrying the same payload cannot help), with an error that names the
/// field: ``invalid payload: at `items[0].id`: invalid type: string "x",
/// expected u32``. The output is any `Out: Serialize`, stored as JSON.
///
/// ```
/// use jobvisor_worker::{Context, HandlerError, Registry};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct Resize { path: String, width: u32 }
///
/// #[derive(Serialize)]
/// struct Resized { path: String, bytes: u64 }
///
/// async fn resize(ctx: Context, args: Resize) -> Result<Resized, HandlerError> {
///     ctx.info(format!("resizing {} to {}px", args.path, args.width)).await;
///     Ok(Resized { path: format!("{}.small", args.path), bytes: 1024 })
/// }
///
/// let mut registry = Registry::new();
/// registry.register("resize", resize);
/// ```
///
/// The `M` parameter only tells the two kinds apart; it is inferred.
pub trait IntoHandler<M>: Send + Sync + 'static {
    /// The handler the runners call.
    ///
    /// ```
    /// use jobvisor_worker::{Context, HandlerError, IntoHandler};
    /// async fn add(_ctx: Context, (a, b): (i64, i64)) -> Result<i64, HandlerError> {
    ///     Ok(a + b)
    /// }
    /// let handler = add.into_handler();
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # let (tx, _rx) = tokio::sync::mpsc::channel(16);
    /// # let ctx = Context::new(Default::default(), Default::default(), tx);
    /// let out = rt.block_on(handler.call(ctx, serde_json::json!([2, 3])));
    /// assert_eq!(out, Ok(serde_json::json!(5)));
    /// ```
    fn into_handler(self) -> Arc<dyn Handler>;
}

/// [`IntoHandler`]'s marker for a type that implements [`Handler`].
#[doc(hidden)]
pub enum ImplementsHandler {}

impl<H: Handler> IntoHandler<ImplementsHandler> for H {
    fn into_handler(self) -> Arc<dyn Handler> {
        Arc::new(self)
    }
}

/// [`IntoHandler`]'s marker for an async function of a [`Context`] and
/// arguments of type `A`, with an output of type `O`.
#[doc(hidden)]
pub struct TypedFn<A, O>(PhantomData<fn(A) -> O>);

impl<F, Fut, A, O> IntoHandler<TypedFn<A, O>> for F
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    O: Serialize + 'static,
{
    fn into_handler(self) -> Arc<dyn Handler> {
        Arc::new(Typed {
            f: self,
            types: PhantomData,
        })
    }
}

/// A typed function as a [`Handler`]: decodes the payload, encodes the
/// output.
struct Typed<F, A, O> {
    f: F,
    types: PhantomData<fn(A) -> O>,
}

impl<F, Fut, A, O> Handler for Typed<F, A, O>
where
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
    A: DeserializeOwned + Send + 'static,
    O: Serialize + 'static,
{
    fn call(&self, ctx: Context, payload: Value) -> BoxFuture<HandlerResult> {
        match decode::<A>(payload) {
            Ok(args) => {
                let fut = (self.f)(ctx, args);
                Box::pin(async move { encode(fut.await?) })
            }
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// Decodes a payload into a handler's arguments (a `Value` is taken as it
/// is); see [`IntoHandler`] for `null` and for the error.
///
/// ```
/// use jobvisor_worker::handler::decode;
/// #[derive(serde::Deserialize, Debug)]
/// struct Args { to: String, #[serde(default)] cc: Vec<String> }
/// let a: Args = decode(serde_json::json!({"to": "ada@example.com"})).unwrap();
/// assert_eq!((a.to.as_str(), a.cc.len()), ("ada@example.com", 0));
/// let e = decode::<Args>(serde_json::json!({"to": 7})).unwrap_err();
/// assert_eq!(e.message, "invalid payload: at `to`: invalid type: integer `7`, expected a string");
/// ```
pub fn decode<A: DeserializeOwned + 'static>(payload: Value) -> Result<A, HandlerError> {
    let payload = match (Box::new(payload) as Box<dyn Any>).downcast::<A>() {
        Ok(args) => return Ok(*args),
        Err(other) => *other.downcast::<Value>().expect("boxed a Value"),
    };
    let null = payload.is_null();
    match serde_path_to_error::deserialize(payload) {
        Ok(args) => Ok(args),
        Err(first) => {
            // A run given no payload: an empty object may do.
            let err = match null {
                true => match serde_path_to_error::deserialize(Value::Object(Map::new())) {
                    Ok(args) => return Ok(args),
                    Err(e) => e,
                },
                false => first,
            };
            let path = err.path().to_string();
            let inner = err.into_inner();
            Err(HandlerError::permanent(match path.as_str() {
                "." | "" => format!("invalid payload: {inner}"),
                path => format!("invalid payload: at `{path}`: {inner}"),
            }))
        }
    }
}

/// Encodes a handler's output as JSON (a `Value` is taken as it is); an
/// output that cannot be encoded (a map with non-string keys, say) fails
/// the execution for good.
fn encode<O: Serialize + 'static>(output: O) -> HandlerResult {
    match (Box::new(output) as Box<dyn Any>).downcast::<Value>() {
        Ok(value) => Ok(*value),
        Err(other) => {
            let output = other.downcast::<O>().expect("boxed an O");
            serde_json::to_value(&*output)
                .map_err(|e| HandlerError::permanent(format!("cannot encode the output: {e}")))
        }
    }
}

/// Handlers by name: what a supervisor runs inproc and a worker host runs
/// in its process.
///
/// ```
/// use jobvisor_worker::{Context, HandlerError, Registry};
/// async fn hello(_ctx: Context, name: String) -> Result<String, HandlerError> {
///     Ok(format!("hello, {name}"))
/// }
/// let mut registry = Registry::with_builtins();
/// registry.register("hello", hello);
/// assert!(registry.names().any(|n| n == "hello"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// let registry = jobvisor_worker::Registry::new();
    /// assert_eq!(registry.names().count(), 0);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in handlers (see [`crate::builtins`]).
    ///
    /// ```
    /// let registry = jobvisor_worker::Registry::with_builtins();
    /// assert!(registry.get("sleep").is_some());
    /// ```
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtins::register_all(&mut r);
        r
    }

    /// Adds (or replaces) a handler.
    ///
    /// ```
    /// use jobvisor_worker::{Context, HandlerError, HandlerResult, Registry};
    /// async fn typed(_ctx: Context, n: u32) -> Result<u32, HandlerError> { Ok(n + 1) }
    /// async fn untyped(_ctx: Context, payload: serde_json::Value) -> HandlerResult { Ok(payload) }
    /// let mut registry = Registry::new();
    /// registry.register("typed", typed).register("untyped", untyped);
    /// assert_eq!(registry.names().collect::<Vec<_>>(), ["typed", "untyped"]);
    /// ```
    pub fn register<M>(
        &mut self,
        name: impl Into<String>,
        handler: impl IntoHandler<M>,
    ) -> &mut Self {
        self.handlers.insert(name.into(), handler.into_handler());
        self
    }

    /// Removes the handler called `name`, if there is one.
    ///
    /// ```
    /// let mut r = jobvisor_worker::Registry::with_builtins();
    /// r.remove("misbehave");
    /// assert!(r.get("misbehave").is_none());
    /// ```
    pub fn remove(&mut self, name: &str) -> &mut Self {
        self.handlers.remove(name);
        self
    }

    /// The handler called `name`.
    ///
    /// ```
    /// let registry = jobvisor_worker::Registry::with_builtins();
    /// assert!(registry.get("noop").is_some());
    /// assert!(registry.get("nope").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    /// The registered names, sorted.
    ///
    /// ```
    /// let registry = jobvisor_worker::Registry::with_builtins();
    /// let names: Vec<&str> = registry.names().collect();
    /// assert_eq!(names, jobvisor_worker::builtins::NAMES.iter().copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>());
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Turns a panic payload into its message.
#[doc(hidden)]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
