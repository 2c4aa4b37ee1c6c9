//! [`SupervisorBuilder`]: a supervisor's database, settings, handlers and
//! event hooks, before it is built.

use super::{Config, Supervisor};
use crate::engine::events::{Event, EventKind, Hook};
use crate::{store, Error};
use jobvisor_worker::{IntoHandler, Registry};

/// Builds a [`Supervisor`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let sup = jobvisor::Supervisor::builder()
///     .database(&db)
///     .configure(|c| c.concurrency = 4)
///     .register("double", |_ctx: jobvisor::Context, n: i64| async move {
///         Ok::<_, jobvisor::HandlerError>(n * 2)
///     })
///     .on_failure(|e| eprintln!("{} failed", e.execution_id))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
pub struct SupervisorBuilder {
    pub(super) config: Config,
    pub(super) registry: Registry,
    pub(super) hooks: Vec<Hook>,
}

impl SupervisorBuilder {
    /// Uses this database.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobvisor::Error> {
    /// let local = jobvisor::Supervisor::builder().database("jobs.db").build().await?;
    /// let shared = jobvisor::Supervisor::builder()
    ///     .database("postgres://jobvisor:secret@db.example/jobvisor")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn database(mut self, url: impl Into<String>) -> Self {
        self.config.database = url.into();
        self
    }

    /// Replaces the whole configuration.
    ///
    /// ```
    /// let builder = jobvisor::Supervisor::builder().config(jobvisor::Config::service());
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Changes the configuration.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = jobvisor::Supervisor::builder().configure(|c| {
    ///     c.concurrency = 64;
    ///     c.drain_timeout = Duration::from_secs(10);
    /// });
    /// ```
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Registers a Rust handler for inproc mode: an async function of a
    /// [`Context`](crate::Context) and its arguments, decoded from the
    /// payload (see [`IntoHandler`]).
    ///
    /// ```
    /// use jobvisor::{Context, HandlerError};
    /// #[derive(serde::Deserialize)]
    /// struct Greet { name: String }
    /// async fn greet(ctx: Context, args: Greet) -> Result<String, HandlerError> {
    ///     ctx.info(format!("greeting {}", args.name)).await;
    ///     Ok(format!("hello, {}", args.name))
    /// }
    /// let builder = jobvisor::Supervisor::builder().register("greet", greet);
    /// ```
    pub fn register<M>(mut self, name: impl Into<String>, handler: impl IntoHandler<M>) -> Self {
        self.registry.register(name, handler);
        self
    }

    /// Calls `hook` with every event of this node (see
    /// [`crate::engine::events`]): in order, one at a time, on a task of its own.
    /// Events queue for a slow hook without bound, so a hook that needs to
    /// wait should hand the event on (a channel, a spawned task) rather
    /// than block. A hook that panics is logged and
    /// the others go on. Hooks hear this node's events only, so an alert
    /// sent from one is sent once however many nodes run.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobvisor::Error> {
    /// let sup = jobvisor::Supervisor::builder()
    ///     .on_event(|e| println!("{} {}", e.execution_id, e.kind.name()))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_event(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|_| true, hook)
    }

    /// Calls `hook` when one of this node's executions starts
    /// ([`EventKind::Started`]); see [`SupervisorBuilder::on_event`].
    ///
    /// ```
    /// let builder = jobvisor::Supervisor::builder()
    ///     .on_start(|e| println!("{} started {}", e.node, e.execution_id));
    /// ```
    pub fn on_start(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|k| matches!(k, EventKind::Started { .. }), hook)
    }

    /// Calls `hook` when one of this node's executions succeeds
    /// ([`EventKind::Succeeded`]).
    ///
    /// ```
    /// use jobvisor::events::EventKind;
    /// let builder = jobvisor::Supervisor::builder().on_success(|e| {
    ///     if let EventKind::Succeeded { output: Some(out), .. } = &e.kind {
    ///         println!("{} gave {out}", e.handler);
    ///     }
    /// });
    /// ```
    pub fn on_success(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|k| matches!(k, EventKind::Succeeded { .. }), hook)
    }

    /// Calls `hook` when one of this node's executions fails for good, no
    /// attempt following ([`EventKind::Failed`]); a failure that is retried
    /// is [`SupervisorBuilder::on_retry`]'s.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), jobvisor::Error> {
    /// use jobvisor::events::EventKind;
    /// let sup = jobvisor::Supervisor::builder()
    ///     .on_failure(|e| {
    ///         if let EventKind::Failed { error, attempt } = &e.kind {
    ///             eprintln!("{} failed after {attempt} attempts: {error}", e.handler);
    ///         }
    ///     })
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_failure(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|k| matches!(k, EventKind::Failed { .. }), hook)
    }

    /// Calls `hook` when one of this node's executions fails and another
    /// attempt is scheduled ([`EventKind::Retrying`]).
    ///
    /// ```
    /// use jobvisor::events::EventKind;
    /// let builder = jobvisor::Supervisor::builder().on_retry(|e| {
    ///     if let EventKind::Retrying { attempt, error, .. } = &e.kind {
    ///         eprintln!("attempt {attempt} of {} failed: {error}; retrying", e.execution_id);
    ///     }
    /// });
    /// ```
    pub fn on_retry(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|k| matches!(k, EventKind::Retrying { .. }), hook)
    }

    /// Calls `hook` when one of this node's executions is cancelled
    /// ([`EventKind::Cancelled`]).
    ///
    /// ```
    /// let builder = jobvisor::Supervisor::builder()
    ///     .on_cancel(|e| println!("{} was cancelled", e.execution_id));
    /// ```
    pub fn on_cancel(self, hook: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.hook(|k| matches!(k, EventKind::Cancelled { .. }), hook)
    }

    fn hook(
        mut self,
        wants: fn(&EventKind) -> bool,
        call: impl Fn(&Event) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(Hook {
            wants,
            call: Box::new(call),
        });
        self
    }

    /// Opens and migrates the database, recovers what a previous run left
    /// behind, and registers this node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// assert!(!sup.node_id().is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<Supervisor, Error> {
        let store = store::open(&self.config.database).await?;
        Supervisor::with_parts(store, self.registry, self.config, self.hooks).await
    }
}
