//! `jobvisor serve`: the supervisor as a long-running service.

use super::args::ServeArgs;
use super::{config, CliError};
use crate::service::logging::{self, LogFormat};
use crate::service::notify::Notifier;
use crate::supervisor::{Config, Supervisor};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::config::DEFAULT_LISTEN;

pub(crate) async fn serve(database: Option<String>, a: ServeArgs) -> Result<(), CliError> {
    let path = config::locate(a.config.as_deref());
    let file = match &path {
        Some(p) => Some(config::load(p).map_err(super::input)?),
        None => None,
    };
    let s = file
        .as_ref()
        .map(|f| f.settings.clone())
        .unwrap_or_default();
    logging::init(a.log_format.or(s.log_format).unwrap_or(LogFormat::Auto));
    crate::runner::os::harden_service();
    crate::runner::isolate::core_dumps_off();
    // A panicking inproc handler is recorded on its execution; the service
    // log gets one line, not a backtrace per panic.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(target: "jobvisor::panic", "{info}");
    }));
    let notifier = Arc::new(
        Notifier::from_env().map_err(|e| super::input(format!("invalid NOTIFY_SOCKET: {e}")))?,
    );
    // Flags (and JOBVISOR_DATABASE) override the file.
    let db = database
        .or(s.database.clone())
        .unwrap_or_else(crate::default_database);
    let db = db.as_str();
    // Flags, then the file, then `Config::service()`.
    let d = Config::service();
    let config = Config {
        database: db.to_string(),
        concurrency: a
            .concurrency
            .or(s.concurrency)
            .map_or(d.concurrency, |n| n as usize),
        poll_interval: a
            .poll_interval
            .or(s.poll_interval)
            .unwrap_or(d.poll_interval),
        node_lease: a.node_lease.or(s.node_lease).unwrap_or(d.node_lease),
        drain_timeout: a
            .drain_timeout
            .or(s.drain_timeout)
            .unwrap_or(d.drain_timeout),
        ..d
    };
    let concurrency = config.concurrency;
    // The HTTP listener is bound before READY=1, and a bad address or a
    // missing token stops the start.
    let listen = a
        .listen
        .clone()
        .or(s.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let token = config::api_token(s.token.as_deref());
    let addr = config::listen_addr(&listen, token.as_deref()).map_err(super::input)?;
    // Signals are set up before anything else, so that none is missed.
    let signals =
        Signals::new().map_err(|e| super::input(format!("cannot handle signals: {e}")))?;
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| super::input(format!("cannot handle SIGHUP: {e}")))?;
    let sup = Supervisor::builder().config(config).build().await?;
    // Started now rather than at the first process-mode execution, so that
    // a missing guardian is said at start.
    let guardian = crate::runner::guardian::pid();
    tracing::info!(
        database = %crate::store::redact(db),
        node = sup.node_id(),
        concurrency,
        guardian = ?guardian,
        "serving"
    );
    if let Some(f) = &file {
        let n = config::sync(sup.store().as_ref(), f)
            .await
            .map_err(super::input)?;
        tracing::info!(config = %f.path.display(), changes = n, "config applied");
        sup.jobs_changed();
    }
    // Bound only once the file is known good, so that a bad file is said
    // as itself, not as a port that another process holds.
    let listener = match addr {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| super::input(format!("cannot listen on {addr}: {e}")))?,
        ),
    };
    let running = Arc::new(std::sync::Mutex::new(file));
    let pruner = tokio::spawn(retention(sup.clone(), running.clone()));
    {
        let (sup, running, path) = (sup.clone(), running.clone(), path.clone());
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &path {
                    Some(path) => reload(&sup, path, &running).await,
                    None => tracing::warn!(
                        "SIGHUP: no config file to reload (none at {} and no --config)",
                        config::DEFAULT_PATH
                    ),
                }
            }
        });
    }

    let (stopping_tx, stopping) = watch::channel(false);
    let http = listener.map(|l| {
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(addr = %addr, auth = token.is_some(), "HTTP API listening");
        let app = crate::http::router(sup.clone(), token.clone());
        let mut stop = stopping.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = crate::http::serve(l, app, shutdown).await {
                tracing::error!(error = %e, "HTTP API stopped");
            }
        })
    });
    let reporter = tokio::spawn(report(sup.clone(), notifier.clone(), stopping.clone()));
    // Migrations, recovery and the node's registration were done by the
    // builder; `ready` completes once `run` listens and dispatches.
    {
        let (sup, notifier) = (sup.clone(), notifier.clone());
        tokio::spawn(async move {
            sup.ready().await;
            notifier.notify("READY=1");
            tracing::info!("ready");
        });
    }
    let shutdown = {
        let mut signals = signals;
        let notifier = notifier.clone();
        async move {
            signals.first().await;
            notifier.notify("STOPPING=1");
            let _ = stopping_tx.send(true);
            signals
        }
    };
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let shutdown = async move {
        let signals = shutdown.await;
        let _ = first_tx.send(signals);
    };
    let force = async move {
        if let Ok(mut signals) = first_rx.await {
            signals.second().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    sup.run_until(shutdown, force).await?;
    reporter.abort();
    pruner.abort();
    if let Some(h) = http {
        // Open event streams would hold a graceful stop forever.
        h.abort();
    }
    crate::runner::cgroup::release();
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: reads the file again; a valid one is synced and becomes the
/// running config, an invalid one is rejected whole.
async fn reload(
    sup: &Supervisor,
    path: &std::path::Path,
    running: &std::sync::Mutex<Option<config::ServiceFile>>,
) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    let file = match config::load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("config rejected: {e}; the running config stays in force");
            return;
        }
    };
    match config::sync(sup.store().as_ref(), &file).await {
        Ok(n) => {
            sup.jobs_changed();
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = running.as_ref() {
                if old.settings != file.settings {
                    tracing::warn!("config: service settings (database, listen, token, concurrency, intervals, log format) take effect at the next start");
                }
            }
            *running = Some(file);
            tracing::info!(changes = n, "config reloaded");
        }
        Err(e) => tracing::error!("config not applied: {e}; the running config stays in force"),
    }
}

/// Prunes finished executions (and their logs) older than the configured
/// retention, global or per job, in small batches; at start, then every
/// `retention.every`.
async fn retention(sup: Supervisor, running: Arc<std::sync::Mutex<Option<config::ServiceFile>>>) {
    const BATCH: usize = 500;
    loop {
        let (global, per_job, every) = {
            let r = running.lock().unwrap_or_else(|e| e.into_inner());
            match r.as_ref() {
                Some(f) => (f.retention, f.job_retention.clone(), f.retention_every),
                None => (None, Default::default(), Duration::from_secs(60)),
            }
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
                match sup
                    .store()
                    .prune(before, job.as_deref(), &except, BATCH)
                    .await
                {
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

/// SIGTERM and SIGINT (shutdown, then force).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }

    async fn first(&mut self) {
        let s = self.next().await;
        tracing::info!("{s}: shutting down (a second signal stops running executions at once)");
    }

    async fn second(&mut self) {
        let s = self.next().await;
        tracing::info!("{s} again: stopping running executions now");
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
