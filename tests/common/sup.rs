//! A supervisor running in the test's own process.

use super::*;
use jobvisor::{Supervisor, SupervisorBuilder};

/// A supervisor on `db`, as `build` makes it, running until the returned
/// sender is sent (or dropped); the task ends when it stopped. It polls
/// every 20 ms, aborts an in-process handler 300 ms after a stop, and runs
/// this build's worker program.
pub async fn start_supervisor(
    db: &str,
    build: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
) -> (
    Supervisor,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let builder = Supervisor::builder().database(db).configure(|c| {
        c.worker_program = Some(worker_bin());
        c.poll_interval = Duration::from_millis(20);
        c.inproc_grace = Duration::from_millis(300);
    });
    let sup = build(builder).build().await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = sup.clone();
    let task = tokio::spawn(async move {
        s.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (sup, tx, task)
}
