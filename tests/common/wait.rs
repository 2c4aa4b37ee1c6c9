//! Polling with generous deadlines, for executions, logs and attempts.

use super::*;

/// Polls `f` until it returns `Some`, or panics after the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the execution is in a terminal state; returns it.
pub async fn finished(store: &dyn Reads, id: Uuid) -> Execution {
    let start = Instant::now();
    loop {
        let e = store.execution(id).await.unwrap();
        if let Some(e) = e.as_ref().filter(|e| e.status.is_terminal()) {
            return e.clone();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for execution {id} to finish: {e:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the execution is running; returns it.
pub async fn running(store: &dyn Reads, id: Uuid) -> Execution {
    eventually(&format!("execution {id} to run"), || async {
        store
            .execution(id)
            .await
            .unwrap()
            .filter(|e| e.status == jobvisor::Status::Running)
    })
    .await
}

/// Waits until the execution is running with a pid; returns it.
pub async fn running_with_pid(store: &dyn Reads, id: Uuid) -> Execution {
    eventually(&format!("execution {id} to run"), || async {
        store
            .execution(id)
            .await
            .unwrap()
            .filter(|e| e.status == jobvisor::Status::Running && e.pid.is_some())
    })
    .await
}

/// All executions of a job, oldest first.
pub async fn attempts(store: &dyn Reads, job: &str) -> Vec<Execution> {
    let mut v = store
        .executions(&ExecFilter {
            job: Some(job.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse();
    v
}

/// All executions of a handler (ad-hoc runs belong to no job), oldest
/// first.
pub async fn runs_of(store: &dyn Reads, handler: &str) -> Vec<Execution> {
    let mut v = store
        .executions(&ExecFilter {
            handler: Some(handler.to_string()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse();
    v
}

/// Waits for a log line of the execution that `pick` accepts; returns what
/// it picked.
pub async fn log_line<T>(
    store: &dyn Reads,
    id: Uuid,
    pick: impl Fn(&jobvisor::model::LogEntry) -> Option<T>,
) -> T {
    eventually(&format!("a log line of {id}"), || async {
        let logs = store.logs(id, 0, None, 10_000).await.unwrap();
        logs.iter().find_map(&pick)
    })
    .await
}

/// The pid a test worker announced with a `grandchild PID` line.
pub async fn grandchild_pid(store: &dyn Reads, id: Uuid) -> i32 {
    log_line(store, id, |l| {
        l.message
            .strip_prefix("grandchild ")
            .map(|p| p.parse().unwrap())
    })
    .await
}

/// Runs a 1-second cron job on the supervisors already serving `env` for
/// `secs` seconds, and checks that each occurrence ran exactly once, none
/// missing. Returns the executions.
pub async fn run_one_second_cron(env: &Env, secs: u64) -> Vec<Execution> {
    env.ok(&[
        "job",
        "add",
        "tick",
        "--handler",
        "noop",
        "--cron",
        "* * * * * *",
        "--overlap",
        "allow",
    ]);
    let store = env.store().await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let execs = attempts(store.as_ref(), "tick").await;
    let mut occ: Vec<i64> = execs.iter().map(|e| e.occurrence.unwrap()).collect();
    occ.sort();
    let distinct: std::collections::HashSet<i64> = occ.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        occ.len(),
        "an occurrence ran twice: {occ:?}"
    );
    assert!(occ.len() as u64 >= secs.saturating_sub(3), "{occ:?}");
    for w in occ.windows(2) {
        assert_eq!(w[1] - w[0], 1_000_000, "an occurrence is missing: {occ:?}");
    }
    execs
}

/// How many executions the database holds (up to 100,000).
#[allow(dead_code)]
pub async fn count_executions(store: &dyn Reads) -> usize {
    store
        .executions(&ExecFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}
