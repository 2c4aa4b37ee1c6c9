//! `jobvisor serve`: the supervisor as a long-running service.

use super::args::ServeArgs;
use super::CliError;
use crate::service::logging::{self, LogFormat};
use crate::service::notify::Notifier;
use crate::supervisor::{Config, Supervisor};
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

pub(crate) async fn serve(db: &str, a: ServeArgs) -> Result<(), CliError> {
    logging::init(a.log_format.unwrap_or(LogFormat::Auto));
    crate::runner::os::harden_service();
    // A panicking inproc handler is recorded on its execution; the service
    // log gets one line, not a backtrace per panic.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(target: "jobvisor::panic", "{info}");
    }));
    let notifier = Arc::new(
        Notifier::from_env().map_err(|e| super::input(format!("invalid NOTIFY_SOCKET: {e}")))?,
    );
    let config = Config {
        database: db.to_string(),
        concurrency: a.concurrency.unwrap_or(32) as usize,
        poll_interval: a.poll_interval.unwrap_or(Duration::from_millis(250)),
        node_lease: a.node_lease.unwrap_or(Duration::from_secs(10)),
        drain_timeout: a.drain_timeout.unwrap_or(Duration::from_secs(30)),
        ..Config::default()
    };
    let concurrency = config.concurrency;
    // Signals are set up before anything else, so that none is missed.
    let signals =
        Signals::new().map_err(|e| super::input(format!("cannot handle signals: {e}")))?;
    let sup = Supervisor::builder().config(config).build().await?;
    tracing::info!(
        database = %crate::store::redact(db),
        node = sup.node_id(),
        concurrency,
        "serving"
    );

    let (stopping_tx, stopping) = watch::channel(false);
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
    crate::runner::cgroup::release();
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT (shutdown, then force) and SIGHUP (reload).
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
