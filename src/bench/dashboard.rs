//! `jobvisor bench --scenario dashboard`: how fast every dashboard page's
//! API calls answer over a large history.
//!
//! A fresh SQLite database (or the empty one `--database` names, such as a
//! PostgreSQL database) gets `--executions` executions (run through the
//! real claim and completion path, a tenth failed) and `--log-lines` log
//! lines: 200,000 on one execution (the long log the viewer pages through),
//! the rest a thousand each on others. A twentieth of the executions are a
//! backlog, pending until tomorrow, in every queue but `q3` (so that the
//! list of `q3`'s pending rows finds none and walks the whole backlog).
//! Then a supervisor serves the real
//! router on loopback, and each call a page makes is timed over HTTP,
//! against `/ui/session` (a round trip that reads nothing) in the same run.

use super::{tempfile_dir, BenchArgs};
use crate::failure::CliError;
use jobvisor::model::Outcome;
use jobvisor::model::{now_micros, JobSpec};
use jobvisor::schedule::ScheduleSpec;
use jobvisor::store::{Batch, Completion, ExecFilter, LogRow, Store};
use jobvisor::RunSpec;
use serde::Serialize;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One timed call.
#[derive(Debug, Serialize)]
pub struct CallRow {
    /// The page that makes it.
    pub page: &'static str,
    /// The call.
    pub path: String,
    /// Median, ms.
    pub p50_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Bytes of the answer.
    pub bytes: usize,
}

/// Result of the dashboard scenario.
#[derive(Debug, Serialize)]
pub struct DashboardBench {
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// Executions in the database.
    pub executions: usize,
    /// Of them, pending (a backlog due tomorrow).
    pub pending: usize,
    /// Log lines in the database.
    pub log_lines: usize,
    /// Filling it, s.
    pub fill_s: f64,
    /// The bare round trip, p50 ms.
    pub baseline_ms: f64,
    /// One row per call.
    pub rows: Vec<CallRow>,
    /// The slowest p50, ms.
    pub worst_p50_ms: f64,
}

const REPS: usize = 11;
const LONG_LOG: usize = 200_000;
const BUDGET_MS: f64 = 200.0;

/// One GET over a fresh connection: status and body length.
async fn get(addr: &str, path: &str) -> std::io::Result<(u16, usize)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let head_end = memchr::memmem::find(&raw, b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, raw.len().saturating_sub(head_end + 4)))
}

/// Runs executions that write `lines` log lines in all: 200,000 on the
/// first (the long log), a thousand on each of the others. Lines are
/// stored only while their execution runs, so each is claimed, written
/// and then completed, as a worker's would be.
async fn fill_logs(store: &dyn Store, lines: usize) -> Result<(uuid::Uuid, usize), CliError> {
    let runs = 1 + lines.saturating_sub(LONG_LOG).div_ceil(1000);
    let local = |h: &str| jobvisor_worker::builtins::known(h);
    let levels = ["info", "info", "info", "debug", "warn", "error", "info"];
    let mut long = None;
    let mut written = 0;
    let mut n = 0;
    while n < runs {
        let take = 100.min(runs - n);
        let specs = (0..take)
            .map(|_| RunSpec::new("noop", serde_json::Value::Null))
            .collect();
        let execs = jobvisor::submit::prepare_many(store, &local, specs).await?;
        jobvisor::submit::enqueue(store, &execs).await?;
        let claimed = store
            .claim("bench-logs", take, now_micros())
            .await?
            .executions;
        let mut logs = Vec::new();
        for c in &claimed {
            let count = if n == 0 { LONG_LOG } else { 1000 };
            long.get_or_insert(c.id);
            for seq in 1..=count.min(lines - written) {
                logs.push(LogRow {
                    execution_id: c.id,
                    seq: seq as i64,
                    ts: now_micros(),
                    level: levels[seq % levels.len()],
                    stream: "log",
                    message: format!("processed record {seq} of batch {n}"),
                    fields: (seq % 10 == 0).then(|| format!(r#"{{"record":{seq}}}"#)),
                });
                written += 1;
                if logs.len() == 50_000 {
                    store
                        .apply(&Batch {
                            logs: std::mem::take(&mut logs),
                            ..Default::default()
                        })
                        .await?;
                }
            }
            n += 1;
        }
        let completions = claimed
            .iter()
            .map(|c| Completion::new(c.id, Outcome::Succeeded, now_micros()))
            .collect();
        store
            .apply(&Batch {
                logs,
                completions,
                ..Default::default()
            })
            .await?;
    }
    let long = long.ok_or_else(|| crate::failure::input("no execution ran"))?;
    Ok((long, written))
}

/// Enqueues `n` executions due tomorrow, in queues `q0` to `q9` but `q3`.
async fn fill_backlog(store: &dyn Store, n: usize) -> Result<(), CliError> {
    let local = |h: &str| jobvisor_worker::builtins::known(h);
    let tomorrow = now_micros() + 24 * 3600 * 1_000_000;
    let queues = ["q0", "q1", "q2", "q4", "q5", "q6", "q7", "q8", "q9"];
    for start in (0..n).step_by(10_000) {
        let specs = (start..n.min(start + 10_000))
            .map(|i| {
                let mut s = RunSpec::new("noop", serde_json::Value::Null);
                s.queue = queues[i % queues.len()].into();
                s.run_at = Some(tomorrow);
                s
            })
            .collect();
        let execs = jobvisor::submit::prepare_many(store, &local, specs).await?;
        jobvisor::submit::enqueue(store, &execs).await?;
    }
    Ok(())
}

fn job(i: usize) -> JobSpec {
    let cron = ScheduleSpec::Cron {
        expr: format!("{} 3 * * *", i % 60),
        tz: "UTC".into(),
    };
    JobSpec {
        paused: true,
        ..JobSpec::new(format!("job-{i}"), "noop", cron)
    }
}

pub(super) async fn bench_dashboard(
    database: Option<String>,
    a: &BenchArgs,
) -> Result<(), CliError> {
    if a.executions < 10_000 {
        return Err(crate::failure::input(
            "--executions must be at least 10000 for this scenario",
        ));
    }
    let tmp = tempfile_dir()?;
    let db = database.unwrap_or_else(|| tmp.join("dashboard.db").display().to_string());
    let t0 = Instant::now();
    let backlog = a.executions / 20;
    let (long, log_lines) = fill(&db, a, backlog).await?;
    let fill_s = t0.elapsed().as_secs_f64();
    let config = jobvisor::supervisor::Config {
        database: db.clone(),
        ..Default::default()
    };
    let sup = jobvisor::Supervisor::builder()
        .config(config)
        .build()
        .await?;
    let wf = jobvisor::workflow::WorkflowSpec {
        name: "bench".into(),
        steps: vec![
            jobvisor::workflow::StepSpec::new("a", "noop"),
            jobvisor::workflow::StepSpec::new("b", "noop"),
        ],
    };
    let workflow = sup.workflow(&wf).await?.id;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| crate::failure::input(format!("cannot listen: {e}")))?;
    let addr = listener.local_addr().expect("bound").to_string();
    let app = jobvisor::http::router(sup.clone(), jobvisor::http::Auth::none());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(jobvisor::http::serve(listener, app, async move {
        let _ = stop_rx.await;
    }));

    let newest = sup
        .store()
        .executions(&ExecFilter {
            job: Some("job-7".into()),
            limit: 500,
            ..Default::default()
        })
        .await?;
    let deep = newest.last().map(|e| e.id).unwrap_or(long);
    let (baseline_ms, _, _) = time_call(&addr, "/ui/session").await?;
    let mut rows = Vec::new();
    for (page, path) in calls(long, deep, workflow) {
        let (p50_ms, max_ms, bytes) = time_call(&addr, &path).await?;
        rows.push(CallRow {
            page,
            path,
            p50_ms,
            max_ms,
            bytes,
        });
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    let _ = std::fs::remove_dir_all(&tmp);
    let worst_p50_ms = rows.iter().map(|r| r.p50_ms).fold(0.0, f64::max);
    let r = DashboardBench {
        backend: super::backend_of(&db),
        executions: a.executions,
        pending: backlog,
        log_lines,
        fill_s,
        baseline_ms,
        rows,
        worst_p50_ms,
    };
    report(&r, a.json);
    if r.worst_p50_ms > BUDGET_MS {
        return Err(crate::failure::input(format!(
            "a dashboard call took {:.0} ms, over the {BUDGET_MS} ms budget",
            r.worst_p50_ms
        )));
    }
    Ok(())
}

/// Fills database `db`: `a.executions` in all (`backlog` of them
/// pending), 100 paused jobs, and one execution with `a.log_lines` log
/// lines. Gives that execution's id and its lines.
async fn fill(db: &str, a: &BenchArgs, backlog: usize) -> Result<(uuid::Uuid, usize), CliError> {
    {
        let store = jobvisor::store::open(db).await?.store().clone();
        let with_logs = 1 + a.log_lines.saturating_sub(LONG_LOG).div_ceil(1000);
        super::list::fill(
            store.as_ref(),
            a.executions.saturating_sub(with_logs + backlog),
        )
        .await?;
        fill_backlog(store.as_ref(), backlog).await?;
        for i in 0..100 {
            store.insert_job(&job(i), None, now_micros()).await?;
        }
    }
    let store = jobvisor::store::open(db).await?.store().clone();
    fill_logs(store.as_ref(), a.log_lines).await
}

/// The calls each dashboard page makes, by page: `long` is the execution
/// with the long log, `deep` one 500 rows down a job's history.
fn calls(long: uuid::Uuid, deep: uuid::Uuid, workflow: uuid::Uuid) -> Vec<(&'static str, String)> {
    vec![
        ("overview", "/v1/nodes".into()),
        ("overview", "/v1/queues".into()),
        ("overview", "/v1/attention".into()),
        ("overview", "/v1/timeline?since=1h".into()),
        ("executions", "/v1/executions?limit=50".into()),
        ("executions", "/v1/executions?status=failed&limit=50".into()),
        ("executions", "/v1/executions?job=job-7&limit=50".into()),
        (
            "executions",
            format!("/v1/executions?job=job-7&before={deep}&limit=50"),
        ),
        (
            "executions",
            "/v1/executions?status=pending&limit=50".into(),
        ),
        (
            "executions",
            "/v1/executions?status=pending&queue=q3&limit=50".into(),
        ),
        ("execution", format!("/v1/executions/{long}")),
        (
            "execution",
            format!("/v1/executions/{long}/logs?from_end=true&limit=500"),
        ),
        (
            "execution",
            format!("/v1/executions/{long}/logs?from_end=true&limit=500&before_seq=100000"),
        ),
        (
            "execution",
            format!("/v1/executions/{long}/logs?from_end=true&limit=500&level=error"),
        ),
        (
            "execution",
            format!("/v1/executions/{long}/logs?from_end=true&limit=500&q=record%20199999"),
        ),
        ("jobs", "/v1/jobs".into()),
        ("jobs", "/v1/jobs/job-7/next?count=5".into()),
        ("jobs", "/v1/executions?job=job-7&limit=30".into()),
        ("workflows", "/v1/workflows?limit=100".into()),
        ("workflows", format!("/v1/workflows/{workflow}")),
        ("handlers", "/v1/handlers".into()),
    ]
}

/// GETs `path` `REPS` times: its p50 and longest time (ms) and its size.
async fn time_call(addr: &str, path: &str) -> Result<(f64, f64, usize), CliError> {
    let mut times = Vec::with_capacity(REPS);
    let mut bytes = 0;
    for _ in 0..REPS {
        let t = Instant::now();
        let (status, n) = get(addr, path)
            .await
            .map_err(|e| crate::failure::input(format!("GET {path}: {e}")))?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if status != 200 {
            return Err(crate::failure::input(format!("GET {path}: HTTP {status}")));
        }
        bytes = n;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[REPS / 2], times[REPS - 1], bytes))
}

fn report(r: &DashboardBench, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("serializes"));
        return;
    }
    println!(
        "dashboard API calls over {} executions ({} pending) and {} log lines ({}; filled in {:.0} s), {REPS} runs each, over HTTP on loopback",
        r.executions, r.pending, r.log_lines, r.backend, r.fill_s
    );
    println!("bare round trip (/ui/session): {:.2} ms", r.baseline_ms);
    println!(
        "{:<11} {:<78} {:>9} {:>9} {:>7} {:>9}",
        "page", "call", "p50", "max", "ratio", "bytes"
    );
    for row in &r.rows {
        println!(
            "{:<11} {:<78} {:>7.2}ms {:>7.2}ms {:>6.1}x {:>9}",
            row.page,
            row.path,
            row.p50_ms,
            row.max_ms,
            row.p50_ms / r.baseline_ms,
            row.bytes
        );
    }
    println!(
        "slowest p50: {:.2} ms (budget {BUDGET_MS} ms)",
        r.worst_p50_ms
    );
}
