//! The service that `jobvisor serve` runs, as library code, so that an
//! application embedding jobvisor runs the same one: declarations applied
//! at start and on reload, retention, the HTTP API, systemd readiness,
//! status and watchdog, and the supervisor's drain.
//!
//! What stays with the command line is what is the command line's: its
//! flags and config file syntax, which signals mean what, and process-wide
//! hardening.

pub mod declare;
pub mod http;
// The binary's log set-up and sd_notify: machinery, not API.
#[doc(hidden)]
pub mod logging;
pub mod mqtt;
#[doc(hidden)]
pub mod notify;

use crate::supervisor::Supervisor;
use declare::{Declarations, SyncError};
use notify::Notifier;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a service could not start.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::{http::Auth, service::{Service, ServiceError}};
/// // A port another process holds is said as itself.
/// let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let addr = taken.local_addr()?;
/// match Service::start(sup, None, Some(addr), Auth::none()).await {
///     Err(ServiceError::Listen { addr: a, .. }) => assert_eq!(a, addr),
///     other => panic!("{:?}", other.err()),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The declarations were refused.
    #[error(transparent)]
    Declarations(#[from] SyncError),
    /// The HTTP API's address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `NOTIFY_SOCKET` names no usable socket.
    #[error("invalid NOTIFY_SOCKET")]
    Notify(#[source] std::io::Error),
}

/// A supervisor and what runs around it; [`Service::run_until`] runs it.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use jobvisor::{http::Auth, service::Service, Supervisor};
/// // What `jobvisor serve` runs, inside a program of one's own.
/// let sup = Supervisor::builder().database("jobs.db").build().await?;
/// let auth = Auth::new(Some(std::env::var("API_TOKEN")?), None);
/// let service = Service::start(sup, None, Some("127.0.0.1:8080".parse()?), auth).await?;
/// service
///     .run_until(async { tokio::signal::ctrl_c().await.ok(); }, std::future::pending())
///     .await?;
/// # Ok(()) }
/// ```
pub struct Service {
    sup: Supervisor,
    declared: Arc<Mutex<Declarations>>,
    http: Option<(tokio::net::TcpListener, crate::http::Options)>,
    notifier: Arc<Notifier>,
}

/// Applies new declarations to a running [`Service`] (a reload).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::{http::Auth, service::Service};
/// let service = Service::start(sup, None, None, Auth::none()).await?;
/// let reload = service.reloader();
/// use jobvisor::service::declare::{Declarations, JobDecl, QueueDecl};
/// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
/// let mut d = Declarations::default();
/// d.queues.push(QueueDecl { name: "mail".into(), limit: Some(4), key_limit: None, rate: None, paused: None });
/// d.jobs.push(JobDecl {
///     spec: JobSpec::new("digest", "noop", ScheduleSpec::Cron { expr: "0 7 * * *".into(), tz: "UTC".into() }),
///     fixed_start: false,
///     line: 12,
/// });
/// assert_eq!(reload.apply(d.clone()).await?, 2, "a queue and a job");
/// assert_eq!(reload.apply(d).await?, 0, "the same again changes nothing");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Reloader {
    sup: Supervisor,
    declared: Arc<Mutex<Declarations>>,
}

impl Reloader {
    /// Changes how many executions this node runs at once (see
    /// [`Supervisor::set_concurrency`]).
    pub async fn set_concurrency(&self, concurrency: usize) -> Result<(), crate::Error> {
        if self.sup.concurrency() == concurrency {
            return Ok(());
        }
        self.sup.set_concurrency(concurrency).await
    }

    /// Brings the database in line with `d`, which then governs retention.
    /// Refused declarations change nothing. Returns the number of changes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::{http::Auth, service::{declare::Declarations, Service}};
    /// let service = Service::start(sup, None, None, Auth::none()).await?;
    /// assert_eq!(service.reloader().apply(Declarations::default()).await?, 0);
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, d: Declarations) -> Result<usize, SyncError> {
        let n = declare::sync(self.sup.store().store().as_ref(), &d).await?;
        self.sup.jobs_changed();
        *self.declared.lock().unwrap_or_else(|e| e.into_inner()) = d;
        Ok(n)
    }
}

impl Service {
    /// Applies `declared` (if any; without, the database is left as it is)
    /// to the supervisor's database, then binds the HTTP API on `listen`
    /// (if any), guarded by `auth`: bound only once the
    /// declarations are known good, so that a bad one is said as itself,
    /// not as a port that another process holds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::{http::Auth, service::Service};
    /// // No declarations, no HTTP API: a supervisor with sd_notify and retention.
    /// let service = Service::start(sup, None, None, Auth::none()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(
        sup: Supervisor,
        declared: Option<Declarations>,
        listen: Option<SocketAddr>,
        http: impl Into<crate::http::Options>,
    ) -> Result<Service, ServiceError> {
        let listener = match listen {
            None => None,
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServiceError::Listen { addr, source })?,
            ),
        };
        Self::start_on(sup, declared, listener, http).await
    }

    /// [`Service::start`] on a listener bound already: a caller binds it
    /// before it builds the supervisor, so that a busy port stops the start
    /// before anything is registered.
    pub async fn start_on(
        sup: Supervisor,
        declared: Option<Declarations>,
        listener: Option<tokio::net::TcpListener>,
        http: impl Into<crate::http::Options>,
    ) -> Result<Service, ServiceError> {
        let mut opts = http.into();
        // A start that fails here ran nothing: its node is marked stopped,
        // not left to look silent, and its cgroup goes.
        let notifier = match Notifier::from_env() {
            Ok(n) => Arc::new(n),
            Err(e) => {
                sup.abandon().await;
                return Err(ServiceError::Notify(e));
            }
        };
        let reloader = Reloader {
            sup: sup.clone(),
            declared: Arc::new(Mutex::new(Declarations::default())),
        };
        if let Some(d) = declared {
            match reloader.apply(d).await {
                Ok(n) => tracing::info!(changes = n, "config applied"),
                Err(e) => {
                    sup.abandon().await;
                    return Err(e.into());
                }
            }
        }
        let http = match listener {
            None => None,
            Some(listener) => {
                // The Host check takes the port really bound (port 0 asks
                // for any).
                opts.listen = listener.local_addr().ok();
                Some((listener, opts))
            }
        };
        Ok(Service {
            sup,
            declared: reloader.declared,
            http,
            notifier,
        })
    }

    /// Where its dashboard and API answer (`http://127.0.0.1:7180/`), if it
    /// listens.
    pub fn url(&self) -> Option<String> {
        let (listener, opts) = self.http.as_ref()?;
        let addr = listener.local_addr().ok()?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        Some(format!("{scheme}://{addr}/"))
    }

    /// A handle that applies new declarations while the service runs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::{http::Auth, service::Service};
    /// let service = Service::start(sup, None, None, Auth::none()).await?;
    /// let reload = service.reloader(); // e.g. for a SIGHUP handler
    /// # Ok(()) }
    /// ```
    pub fn reloader(&self) -> Reloader {
        Reloader {
            sup: self.sup.clone(),
            declared: self.declared.clone(),
        }
    }

    /// Runs until `shutdown` completes, then drains as
    /// [`Supervisor::run_until`] does (`force` cuts the drain short).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    /// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
    /// # let store = sup.store().as_ref();
    /// use jobvisor::{http::Auth, service::Service};
    /// let service = Service::start(sup, None, None, Auth::none()).await?;
    /// // Stop at once: the shutdown future is already complete.
    /// service.run_until(async {}, std::future::pending()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        force: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), crate::Error> {
        let Service {
            sup,
            declared,
            http,
            notifier,
        } = self;
        let (stopping_tx, stopping) = watch::channel(false);
        let http = http.map(|(listener, opts)| {
            let addr = listener.local_addr().map(|a| a.to_string());
            tracing::info!(addr = %addr.unwrap_or_default(), auth = opts.auth.token.is_some(), readonly = opts.auth.readonly.is_some(), tls = opts.tls.is_some(), "HTTP API listening");
            if opts.tls.is_none() && opts.listen.is_some_and(|a| !a.ip().is_loopback()) {
                tracing::warn!("the HTTP API is served off loopback without TLS: tokens and data cross the network in clear (give tls_cert and tls_key, or put a TLS proxy in front)");
            }
            let serve_opts = crate::http::ServeOptions {
                max_connections: opts.max_connections,
                tls: opts.tls.clone(),
            };
            let app = crate::http::router(sup.clone(), opts);
            let mut stop = stopping.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = crate::http::serve_with(listener, app, serve_opts, shutdown).await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            })
        });
        let mqtt_stop = tokio_util::sync::CancellationToken::new();
        let subscriptions = {
            let declared = declared.clone();
            move || {
                declared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .mqtt
                    .clone()
            }
        };
        let mqtt = tokio::spawn(mqtt::run(sup.clone(), subscriptions, mqtt_stop.clone()));
        // Cancelled at the drain, or else (an actor's panic ends the run
        // first) once the run has ended.
        let mqtt_stopped = mqtt_stop.clone();
        let pruner = tokio::spawn(retention(sup.clone(), declared));
        let reporter = tokio::spawn(report(sup.clone(), notifier.clone(), stopping));
        // Migrations, recovery and the node's registration were done when
        // the supervisor was built; `ready` completes once it dispatches.
        let ready = {
            let (sup, notifier) = (sup.clone(), notifier.clone());
            tokio::spawn(async move {
                sup.ready().await;
                notifier.notify("READY=1");
                tracing::info!("ready");
            })
        };
        let shutdown = async move {
            shutdown.await;
            notifier.notify("STOPPING=1");
            let _ = stopping_tx.send(true);
            // No message is taken once draining starts: the broker keeps
            // what is not acknowledged.
            mqtt_stop.cancel();
            let _ = mqtt.await;
        };
        let result = sup.run_until(shutdown, force).await;
        mqtt_stopped.cancel();
        ready.abort();
        reporter.abort();
        pruner.abort();
        if let Some(h) = http {
            // Open event streams would hold a graceful stop forever.
            h.abort();
        }
        crate::engine::runner::cgroup::release();
        result
    }
}

/// Prunes finished executions (and their logs) older than the declared
/// retention, global or per job, in small batches; at start, then every
/// `retention_every`.
async fn retention(sup: Supervisor, declared: Arc<Mutex<Declarations>>) {
    const BATCH: usize = 500;
    loop {
        let (global, per_job, every) = {
            let d = declared.lock().unwrap_or_else(|e| e.into_inner());
            (d.retention, d.job_retention.clone(), d.retention_every)
        };
        let now = crate::model::now_micros();
        let micros = |d: Duration| d.as_micros().min(i64::MAX as u128) as i64;
        let except: Vec<String> = per_job.keys().cloned().collect();
        let mut passes: Vec<(Option<String>, i64)> = per_job
            .iter()
            .map(|(job, keep)| (Some(job.clone()), now - micros(*keep)))
            .collect();
        if let Some(keep) = global {
            passes.push((None, now - micros(keep)));
        }
        let (mut execs, mut logs) = (0u64, 0u64);
        for (job, before) in passes {
            loop {
                let pruned = sup
                    .store()
                    .store()
                    .prune(before, job.as_deref(), &except, BATCH)
                    .await;
                match pruned {
                    Ok((e, l)) => {
                        execs += e;
                        logs += l;
                        if (e as usize) < BATCH {
                            break;
                        }
                        // Let other writers in between batches.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error_chain(&e), "retention: pruning failed");
                        break;
                    }
                }
            }
        }
        if execs > 0 {
            tracing::info!(executions = execs, log_lines = logs, "retention: pruned");
        }
        tokio::time::sleep(every).await;
    }
}

/// Tells the service manager how things stand: `STATUS=` every few
/// seconds, and `WATCHDOG=1` at half the watchdog interval, but only while
/// the scheduler and the dispatcher are going round their loops, so that a
/// wedged supervisor is restarted.
async fn report(sup: Supervisor, notifier: Arc<Notifier>, mut stopping: watch::Receiver<bool>) {
    if !notifier.enabled() {
        return;
    }
    sup.ready().await;
    let watchdog = notifier.watchdog();
    let tick_every = watchdog
        .map(|w| (w / 2).min(Duration::from_secs(5)))
        .unwrap_or(Duration::from_secs(5));
    let mut tick = tokio::time::interval(tick_every);
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.changed() => {}
        }
        if *stopping.borrow() {
            return;
        }
        if let Some(w) = watchdog {
            let (scheduler, dispatcher) = sup.liveness();
            if scheduler < w && dispatcher < w {
                notifier.notify("WATCHDOG=1");
            } else {
                tracing::error!(
                    scheduler_silent = ?scheduler,
                    dispatcher_silent = ?dispatcher,
                    "not pinging the watchdog: a loop of the supervisor is stuck"
                );
            }
        }
        let pending: u64 = match sup.store().queues().await {
            Ok(q) => q.iter().map(|q| q.pending).sum(),
            Err(_) => continue,
        };
        let status = format!("STATUS=running {}, pending {pending}", sup.running_count());
        if status != last_status {
            notifier.notify(&status);
            last_status = status;
        }
    }
}
