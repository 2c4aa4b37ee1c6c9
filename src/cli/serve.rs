//! `jobvisor serve`: the supervisor as a long-running service.

use super::args::ServeArgs;
use super::{config, CliError};
use jobvisor::service::logging::{self, LogFormat};
use jobvisor::service::{Reloader, Service, ServiceError};
use jobvisor::supervisor::{Config, Supervisor};
use tokio::signal::unix::{signal, SignalKind};

use super::config::DEFAULT_LISTEN;

pub(crate) async fn serve(database: Option<String>, a: ServeArgs) -> Result<(), CliError> {
    let path = config::locate(a.config.as_deref());
    let file = match &path {
        Some(p) => Some(config::load(p).map_err(|e| super::input(e.to_string()))?),
        None => None,
    };
    let s = file
        .as_ref()
        .map(|f| f.settings.clone())
        .unwrap_or_default();
    logging::init(a.log_format.or(s.log_format).unwrap_or(LogFormat::Auto));
    jobvisor::runner::os::harden_service();
    jobvisor::runner::isolate::core_dumps_off();
    // A panicking inproc handler is recorded on its execution; the service
    // log gets one line, not a backtrace per panic.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(target: "jobvisor::panic", "{info}");
    }));
    // Flags (and JOBVISOR_DATABASE) override the file.
    let db = database
        .or(s.database.clone())
        .unwrap_or_else(jobvisor::default_database);
    let db = db.as_str();
    let config = supervisor_config(db, &a, &s)?;
    let concurrency = config.concurrency;
    // The HTTP listener is bound before READY=1, and a bad address or a
    // missing token stops the start.
    let (addr, http) = http_options(&a, &s)?;
    // Signals are set up before anything else, so that none is missed.
    let signals =
        Signals::new().map_err(|e| super::input(format!("cannot handle signals: {e}")))?;
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| super::input(format!("cannot handle SIGHUP: {e}")))?;
    // The port is taken before anything is registered: a second `serve` on
    // a busy port leaves no node, cgroup or log line behind.
    let listener = match addr {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| {
                    super::input(jobvisor::error_chain(&ServiceError::Listen {
                        addr,
                        source,
                    }))
                })?,
        ),
    };
    let sup = Supervisor::builder().config(config).build().await?;
    let declared = file.as_ref().map(|f| f.declared.clone());
    let started = Service::start_on(sup.clone(), declared, listener, http).await;
    let service = match started {
        Ok(service) => service,
        Err(e) => {
            return Err(match e {
                ServiceError::Declarations(e) => {
                    let f = file.as_ref().expect("only a file declares");
                    let e = config::ConfigError::declarations(f, e);
                    super::input(jobvisor::error_chain(&e))
                }
                e => super::input(jobvisor::error_chain(&e)),
            });
        }
    };
    // Started now rather than at the first process-mode execution, so that
    // a missing guardian is said at start.
    let guardian = jobvisor::runner::guardian::pid();
    let url = service.url();
    tracing::info!(
        database = %jobvisor::store::redact(db),
        node = sup.node_id(),
        concurrency,
        guardian = ?guardian,
        dashboard = url.as_deref().unwrap_or("none (no listener)"),
        "serving"
    );
    {
        let reloader = service.reloader();
        let running = std::sync::Mutex::new(file);
        let flag = a.concurrency;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match &path {
                    Some(path) => reload(&reloader, path, &running, flag).await,
                    None => tracing::warn!(
                        "SIGHUP: no config file to reload (none at {} and no --config)",
                        config::DEFAULT_PATH
                    ),
                }
            }
        });
    }
    // The signals are heard by a task of their own, whatever the rest is
    // doing: a database that hangs or fails holds neither the "shutting
    // down" nor the stop (the dispatcher races its waits with it).
    let heard = signals.listen();
    let deaf = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let shutdown = stop_when_heard(heard.clone(), deaf.clone());
    let force = async move {
        let mut heard = heard;
        if heard.wait_for(|h| *h == Heard::Force).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let ran = service.run_until(shutdown, force).await;
    if deaf.load(std::sync::atomic::Ordering::Relaxed) {
        if let Err(e) = ran {
            tracing::error!(error = %jobvisor::error_chain(&e), "stopping");
        }
        return Err(CliError::Runtime(
            "stopped: the signal listener ended (SIGTERM could no longer be heard)".into(),
        ));
    }
    ran?;
    tracing::info!("stopped");
    Ok(())
}

/// The supervisor's settings: flags, then the file, then
/// `Config::service()`.
fn supervisor_config(db: &str, a: &ServeArgs, s: &config::Settings) -> Result<Config, CliError> {
    let d = Config::service();
    Ok(Config {
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
        test_builtins: test_builtins(a.test_builtins || s.test_builtins == Some(true))?,
        ..d
    })
}

/// Where the HTTP API listens (`None`: off) and how it is guarded: flags,
/// then the file, then the defaults.
fn http_options(
    a: &ServeArgs,
    s: &config::Settings,
) -> Result<(Option<std::net::SocketAddr>, jobvisor::http::Options), CliError> {
    let listen = a
        .listen
        .clone()
        .or(s.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let auth = config::api_auth(s).map_err(|e| super::input(e.to_string()))?;
    let addr = config::listen_addr(&listen, &auth).map_err(|e| super::input(e.to_string()))?;
    let mut allowed_hosts = s.allowed_hosts.clone();
    for h in &a.allowed_hosts {
        jobvisor::http::check_allowed_host(h).map_err(super::input)?;
        allowed_hosts.push(h.clone());
    }
    let tls = match (
        a.tls_cert.as_ref().or(s.tls_cert.as_ref()),
        a.tls_key.as_ref().or(s.tls_key.as_ref()),
    ) {
        (Some(cert), Some(key)) => Some(
            jobvisor::http::Tls::from_pem_files(cert, key)
                .map_err(|e| super::input(jobvisor::error_chain(&e)))?,
        ),
        _ => None,
    };
    let http = jobvisor::http::Options {
        auth,
        allowed_hosts,
        listen: None,
        tls,
        max_connections: a
            .max_connections
            .or(s.max_connections)
            .map_or(jobvisor::http::DEFAULT_MAX_CONNECTIONS, |n| n as usize),
        max_streams: a
            .max_streams
            .or(s.max_streams)
            .map_or(jobvisor::http::DEFAULT_MAX_STREAMS, |n| n as usize),
        max_auth_failures: a
            .max_auth_failures
            .or(s.max_auth_failures)
            .unwrap_or(jobvisor::http::DEFAULT_MAX_AUTH_FAILURES),
    };
    Ok((addr, http))
}

/// The test built-ins, when asked for: `append` needs its directory.
fn test_builtins(on: bool) -> Result<Option<jobvisor_worker::builtins::TestBuiltins>, CliError> {
    use jobvisor_worker::builtins::TestBuiltins;
    if !on {
        return Ok(None);
    }
    let dir = std::env::var_os(TestBuiltins::APPEND_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    match dir {
        Some(d) if d.is_dir() => Ok(Some(TestBuiltins {
            append_dir: Some(d),
        })),
        Some(d) => Err(super::input(format!(
            "{}={} is not a directory",
            TestBuiltins::APPEND_DIR_ENV,
            d.display()
        ))),
        None => Err(super::input(format!(
            "--test-builtins needs {}: the only directory the built-in `append` may write under",
            TestBuiltins::APPEND_DIR_ENV
        ))),
    }
}

/// SIGHUP: reads the file again; a valid one is applied and becomes the
/// running config, an invalid one is rejected whole. A changed
/// `concurrency` applies at once, unless `--concurrency` (`flag`) set it.
async fn reload(
    reloader: &Reloader,
    path: &std::path::Path,
    running: &std::sync::Mutex<Option<config::ServiceFile>>,
    flag: Option<u32>,
) {
    tracing::info!(config = %path.display(), "SIGHUP: reloading the config");
    let file = match config::load(path) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("config rejected: {e}; the running config stays in force");
            return;
        }
    };
    match reloader.apply(file.declared.clone()).await {
        Ok(n) => {
            // Only a changed figure applies: a reload for anything else
            // leaves what `PUT /v1/node` set.
            let before = running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|f| f.settings.concurrency);
            let wanted = match (flag, file.settings.concurrency) {
                (_, n) if n == before => None,
                (Some(_), Some(_)) => {
                    tracing::warn!("config: concurrency is set by --concurrency, which the file does not change");
                    None
                }
                (Some(_), None) => None,
                (None, n) => Some(n.map_or(Config::service().concurrency, |n| n as usize)),
            };
            if let Some(n) = wanted {
                if let Err(e) = reloader.set_concurrency(n).await {
                    tracing::error!(
                        "config: concurrency not changed: {}",
                        jobvisor::error_chain(&e)
                    );
                }
            }
            let mut running = running.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = running.as_ref() {
                let rest = config::Settings {
                    concurrency: old.settings.concurrency,
                    ..file.settings.clone()
                };
                if old.settings != rest {
                    tracing::warn!("config: service settings (database, listen, token, intervals, log format) take effect at the next start");
                }
            }
            *running = Some(file);
            tracing::info!(changes = n, "config reloaded");
        }
        Err(e) => tracing::error!(
            "config not applied: {}; the running config stays in force",
            jobvisor::error_chain(&config::ConfigError::declarations(&file, e))
        ),
    }
}

/// Completes at the first SIGTERM or SIGINT, or as soon as the listener
/// is gone (then `deaf` is set): a service that could no longer hear
/// SIGTERM stops, with an error, rather than run on deaf.
async fn stop_when_heard(
    mut heard: tokio::sync::watch::Receiver<Heard>,
    deaf: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    if heard.wait_for(|h| *h != Heard::Nothing).await.is_err() {
        tracing::error!("the signal listener ended: stopping now rather than run deaf to SIGTERM");
        deaf.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What the signal listener heard so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heard {
    Nothing,
    /// SIGTERM or SIGINT: drain and stop.
    Stop,
    /// A second one: stop what runs now.
    Force,
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

    /// The next signal's name; `None` once the runtime's signal driver is
    /// gone and none can come.
    async fn next(&mut self) -> Option<&'static str> {
        tokio::select! {
            s = self.term.recv() => s.map(|()| "SIGTERM"),
            s = self.int.recv() => s.map(|()| "SIGINT"),
        }
    }

    /// Listens in a task of its own, which says what it heard at once. The
    /// receiver sees the channel closed if the listener ever ends (its
    /// signals can no longer come, or it panicked).
    fn listen(mut self) -> tokio::sync::watch::Receiver<Heard> {
        let (tx, rx) = tokio::sync::watch::channel(Heard::Nothing);
        tokio::spawn(async move {
            let Some(s) = self.next().await else { return };
            tracing::info!("{s}: shutting down (a second signal stops running executions at once)");
            tx.send_replace(Heard::Stop);
            let Some(s) = self.next().await else { return };
            tracing::info!("{s} again: stopping running executions now");
            tx.send_replace(Heard::Force);
            while let Some(s) = self.next().await {
                tracing::info!("{s}: already stopping");
            }
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    // Issue 33's first candidate: a signal stream made on one runtime
    // still hears SIGTERM after another runtime registered the same signal,
    // ran and was dropped (tokio's self-pipe is process-wide; each runtime
    // watches a copy of its read end).
    #[test]
    fn sigterm_is_heard_after_another_runtime_came_and_went() {
        let main = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut heard = main.block_on(async { Signals::new().unwrap().listen() });
        for _ in 0..3 {
            let other = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            other.block_on(async {
                let _term = signal(SignalKind::terminate()).unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            });
            drop(other);
        }
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGTERM).unwrap();
        let got = main.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(30),
                heard.wait_for(|h| *h != Heard::Nothing),
            )
            .await
            .map(|r| r.map(|h| *h))
        });
        assert!(matches!(got, Ok(Ok(Heard::Stop))), "{got:?}");
    }

    // The second: should the listener end (its task panicked, or the
    // runtime's signal driver went), the service stops and says so,
    // rather than waiting for a SIGTERM it can no longer hear.
    #[test]
    fn a_listener_that_ends_stops_the_service_as_deaf() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::watch::channel(Heard::Nothing);
        let deaf = Arc::new(AtomicBool::new(false));
        let listener = rt.spawn(async move {
            let _tx = tx;
            panic!("the listener fails");
        });
        rt.block_on(async {
            assert!(listener.await.is_err());
            tokio::time::timeout(Duration::from_secs(30), stop_when_heard(rx, deaf.clone()))
                .await
                .expect("the stop comes at once");
        });
        assert!(deaf.load(Ordering::Relaxed));
        // A signal heard is a stop, not deafness.
        let (tx, rx) = tokio::sync::watch::channel(Heard::Nothing);
        let deaf = Arc::new(AtomicBool::new(false));
        tx.send_replace(Heard::Stop);
        rt.block_on(stop_when_heard(rx, deaf.clone()));
        assert!(!deaf.load(Ordering::Relaxed));
    }
}
