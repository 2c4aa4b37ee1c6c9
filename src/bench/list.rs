//! `jobvisor bench --scenario list`: how long `exec list` takes to find
//! executions by its filters in a large history.
//!
//! A fresh database gets `--executions` executions over 1,000 jobs and 10
//! queues (a tenth failed, the rest succeeded, run through the real claim
//! and completion path); then each filter of `exec list --limit 50` is timed
//! through the store, against the unfiltered newest 50 in the same run.

use super::{tempfile_dir, BenchArgs};
use crate::failure::CliError;
use jobvisor::model::{now_micros, Outcome, Status};
use jobvisor::store::{Batch, Completion, ExecFilter, Store};
use jobvisor::RunSpec;
use serde::Serialize;
use serde_json::Value;
use std::time::Instant;

/// One timed filter.
#[derive(Debug, Serialize)]
pub struct ListRow {
    /// The `exec list` flags.
    pub filter: String,
    /// Rows it returned (at most 50).
    pub rows: usize,
    /// Median over the repetitions, ms.
    pub p50_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
}

/// Result of the list scenario.
#[derive(Debug, Serialize)]
pub struct ListBench {
    /// Executions in the database.
    pub executions: usize,
    /// Filling it, s.
    pub fill_s: f64,
    /// One row per filter; the first is the unfiltered baseline.
    pub rows: Vec<ListRow>,
}

const JOBS: usize = 1_000;
const QUEUES: usize = 10;
const REPS: usize = 21;

pub(super) async fn bench_list(database: Option<String>, a: &BenchArgs) -> Result<(), CliError> {
    if a.executions == 0 {
        return Err(crate::failure::input("--executions must be at least 1"));
    }
    let tmp = tempfile_dir()?;
    let db = database.unwrap_or_else(|| tmp.join("list.db").display().to_string());
    let store = jobvisor::store::open(&db).await?;
    let t0 = Instant::now();
    fill(store.store().as_ref(), a.executions).await?;
    let fill_s = t0.elapsed().as_secs_f64();

    let newest = store
        .executions(&ExecFilter {
            job: Some("job-7".into()),
            limit: 500,
            ..Default::default()
        })
        .await?;
    let deep = newest.last().map(|e| e.id);
    let cases = cases(deep);
    let mut rows = Vec::new();
    for (name, filter) in cases {
        let mut times = Vec::with_capacity(REPS);
        let mut n = 0;
        for _ in 0..REPS {
            let t = Instant::now();
            n = store.executions(&filter).await?.len();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        rows.push(ListRow {
            filter: name,
            rows: n,
            p50_ms: times[REPS / 2],
            max_ms: times[REPS - 1],
        });
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let r = ListBench {
        executions: a.executions,
        fill_s,
        rows,
    };
    report(&r, a.json);
    Ok(())
}

/// The filters timed, by their `exec list` flags: `deep` is job-7's 500th
/// newest execution.
fn cases(deep: Option<uuid::Uuid>) -> Vec<(String, ExecFilter)> {
    let base = ExecFilter {
        limit: 50,
        ..Default::default()
    };
    vec![
        ("(none)".into(), base.clone()),
        (
            "--job job-7".into(),
            ExecFilter {
                job: Some("job-7".into()),
                ..base.clone()
            },
        ),
        (
            "--job job-7 --before <its 500th newest>".into(),
            ExecFilter {
                job: Some("job-7".into()),
                before: deep,
                ..base.clone()
            },
        ),
        (
            "--job job-3 --status failed".into(),
            ExecFilter {
                job: Some("job-3".into()),
                statuses: vec![Status::Failed],
                ..base.clone()
            },
        ),
        (
            "--job job-7 --status failed (none match)".into(),
            ExecFilter {
                job: Some("job-7".into()),
                statuses: vec![Status::Failed],
                ..base.clone()
            },
        ),
        (
            "--queue empty (none match)".into(),
            ExecFilter {
                queue: Some("empty".into()),
                ..base.clone()
            },
        ),
        (
            "--status pending (none match)".into(),
            ExecFilter {
                statuses: vec![Status::Pending],
                ..base.clone()
            },
        ),
        (
            "--handler echo (none match)".into(),
            ExecFilter {
                handler: Some("echo".into()),
                ..base.clone()
            },
        ),
        (
            "--queue q3".into(),
            ExecFilter {
                queue: Some("q3".into()),
                ..base.clone()
            },
        ),
        (
            "--status failed".into(),
            ExecFilter {
                statuses: vec![Status::Failed],
                ..base.clone()
            },
        ),
        (
            "--handler noop".into(),
            ExecFilter {
                handler: Some("noop".into()),
                ..base.clone()
            },
        ),
        (
            "--since 1m".into(),
            ExecFilter {
                since: Some(now_micros() - 60_000_000),
                ..base.clone()
            },
        ),
    ]
}

fn report(r: &ListBench, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("serializes"));
        return;
    }
    println!(
        "exec list --limit 50 over {} executions ({JOBS} jobs, {QUEUES} queues; filled in {:.1} s), {REPS} runs each",
        r.executions, r.fill_s
    );
    println!(
        "{:<42} {:>5} {:>10} {:>10} {:>7}",
        "filter", "rows", "p50", "max", "ratio"
    );
    let base = r.rows[0].p50_ms;
    for row in &r.rows {
        println!(
            "{:<42} {:>5} {:>8.2}ms {:>8.2}ms {:>6.1}x",
            row.filter,
            row.rows,
            row.p50_ms,
            row.max_ms,
            row.p50_ms / base
        );
    }
}

/// Inserts `n` executions and runs them to their ends through the claim
/// and completion path (a tenth failed).
pub(super) async fn fill(store: &dyn Store, n: usize) -> Result<(), CliError> {
    const CHUNK: usize = 10_000;
    let local = |h: &str| jobvisor_worker::builtins::known(h);
    let mut done = 0;
    while done < n {
        let take = CHUNK.min(n - done);
        let specs = (done..done + take)
            .map(|i| {
                let mut s = RunSpec::new("noop", Value::Null);
                s.job = Some(format!("job-{}", i % JOBS));
                s.queue = format!("q{}", i % QUEUES);
                s
            })
            .collect();
        let execs = jobvisor::submit::prepare_many(store, &local, specs).await?;
        jobvisor::submit::enqueue(store, &execs).await?;
        let claimed = store
            .claim("bench-list", take, now_micros())
            .await?
            .executions;
        let completions = claimed
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let outcome = if (done + i) % 10 == 3 {
                    Outcome::Failed { retryable: false }
                } else {
                    Outcome::Succeeded
                };
                Completion::new(c.id, outcome, now_micros())
            })
            .collect();
        store
            .apply(&Batch {
                completions,
                ..Default::default()
            })
            .await?;
        done += take;
    }
    Ok(())
}
