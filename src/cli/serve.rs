//! `jobvisor serve`: the supervisor as a long-running service.

use super::args::ServeArgs;
use super::CliError;
use crate::supervisor::{Config, Supervisor};

pub(crate) async fn serve(db: &str, a: ServeArgs) -> Result<(), CliError> {
    init_tracing();
    crate::runner::os::harden_service();
    // A panicking inproc handler is recorded on its execution; the service
    // log gets one line, not a backtrace per panic.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(target: "jobvisor::panic", "{info}");
    }));
    let config = Config {
        database: db.to_string(),
        concurrency: a.concurrency as usize,
        poll_interval: a.poll_interval,
        node_lease: a.node_lease,
        ..Config::default()
    };
    let sup = Supervisor::builder().config(config).build().await?;
    tracing::info!(
        database = db,
        node = sup.node_id(),
        concurrency = a.concurrency,
        "serving"
    );
    sup.run(shutdown_signal()).await?;
    crate::runner::cgroup::release();
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, only the default actions stop us.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("JOBVISOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
