//! The handler API: write a handler once, run it in either mode.
//!
//! A handler is an async function of a [`Context`] and a JSON payload. The
//! supervisor runs it as a tokio task (inproc) or the worker host runs it in
//! a child process (process); the `Context` looks the same in both.

use crate::protocol::{Level, LogMessage, Progress, WorkerMessage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// A boxed, sendable future: what a [`Handler`] returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler returns: its JSON output, or why it failed.
pub type HandlerResult = Result<Value, HandlerError>;

/// Why a handler did not succeed, and whether trying again could help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Human-readable reason, stored on the execution.
    pub message: String,
    /// What kind of failure this is.
    pub kind: ErrorKind,
}

/// The kinds of handler failure.
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
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Retryable,
        }
    }

    /// A permanent failure: not retried.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Permanent,
        }
    }

    /// The handler honoured a cancel request.
    pub fn cancelled() -> Self {
        Self {
            message: "cancelled".into(),
            kind: ErrorKind::Cancelled,
        }
    }

    /// Not a failure: ends this execution as `snoozed` and runs it again
    /// after `delay`, keeping its attempt number and attempts allowed (at
    /// most 1,000 snoozes per execution chain; the next one fails it).
    pub fn snooze(delay: std::time::Duration) -> Self {
        Self {
            message: String::new(),
            kind: ErrorKind::Snooze(delay),
        }
    }

    /// [`HandlerError::snooze`] with a reason, stored on the execution.
    pub fn snooze_because(delay: std::time::Duration, reason: impl Into<String>) -> Self {
        Self {
            message: reason.into(),
            kind: ErrorKind::Snooze(delay),
        }
    }

    /// A payload the handler cannot use: permanent, since retrying the same
    /// input cannot help.
    pub fn invalid_payload(err: impl std::fmt::Display) -> Self {
        Self::permanent(format!("invalid payload: {err}"))
    }
}

/// Identifies the execution a [`Context`] belongs to.
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
}

struct ContextInner {
    info: ExecutionInfo,
    cancel: CancellationToken,
    events: mpsc::Sender<WorkerMessage>,
}

/// A handler's line back to its supervisor: progress, logs, heartbeats, and
/// whether it has been asked to stop.
///
/// Sends wait when the supervisor is behind (back-pressure), so a handler
/// that logs faster than the database writes slows down instead of losing
/// lines or growing memory.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl Context {
    /// Builds a context whose events go to `events`; used by the runners.
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
            }),
        }
    }

    /// The execution this context serves.
    pub fn execution(&self) -> &ExecutionInfo {
        &self.inner.info
    }

    /// The ends and outputs of the executions this one ran after (its
    /// parents: `--after`, a workflow's `after`, a job's `--then`), in the
    /// order of their ids; empty if it has none.
    pub fn inputs(&self) -> &[crate::protocol::Input] {
        &self.inner.info.inputs
    }

    async fn send(&self, message: WorkerMessage) {
        // The receiver is gone only when the execution is over (abandoned
        // after a cancel): nothing is waiting for this message any more.
        let _ = self.inner.events.send(message).await;
    }

    /// Reports progress; the supervisor keeps the latest values.
    pub async fn progress(&self, progress: Progress) {
        self.send(WorkerMessage::Progress(progress.normalized()))
            .await;
    }

    /// Reports `done` of `total` units, with a message.
    pub async fn step(&self, done: u64, total: u64, message: impl Into<String>) {
        self.progress(Progress {
            percent: None,
            message: Some(message.into()),
            done: Some(done),
            total: Some(total),
        })
        .await;
    }

    /// Logs a line at `level`.
    pub async fn log(&self, level: Level, message: impl Into<String>) {
        self.send(WorkerMessage::Log(LogMessage {
            level,
            message: message.into(),
            fields: None,
        }))
        .await;
    }

    /// Logs a line at `level` with structured fields.
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
    pub async fn info(&self, message: impl Into<String>) {
        self.log(Level::Info, message).await;
    }

    /// Logs at `warn`.
    pub async fn warn(&self, message: impl Into<String>) {
        self.log(Level::Warn, message).await;
    }

    /// Logs at `error`.
    pub async fn error(&self, message: impl Into<String>) {
        self.log(Level::Error, message).await;
    }

    /// Tells a supervisor with a heartbeat timeout that this job is alive.
    pub async fn heartbeat(&self) {
        self.send(WorkerMessage::Heartbeat).await;
    }

    /// Whether a cancel was requested.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Completes when a cancel is requested; `select!` on it in long waits.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.inner.cancel.cancelled()
    }
}

/// A job's code: an async function of a [`Context`] and a JSON payload.
///
/// Implemented for every `Fn(Context, Value) -> impl Future<Output =
/// HandlerResult>`, so a plain `async fn` is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Runs one execution.
    fn call(&self, ctx: Context, payload: Value) -> BoxFuture<HandlerResult>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, ctx: Context, payload: Value) -> BoxFuture<HandlerResult> {
        Box::pin(self(ctx, payload))
    }
}

/// Handlers by name: what a supervisor runs inproc and a worker host runs
/// in its process.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in handlers (see [`crate::builtins`]).
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        crate::builtins::register_all(&mut r);
        r
    }

    /// Adds (or replaces) a handler.
    pub fn register(&mut self, name: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(name.into(), Arc::new(handler));
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
    pub fn get(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Turns a panic payload into its message.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
