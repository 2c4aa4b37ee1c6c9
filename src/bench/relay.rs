//! `jobvisor bench --scenario relay`: how fast the supervisor stores what
//! workers log, and whether it loses any of it.
//!
//! A process-mode execution of the built-in `logs` handler writes
//! `--lines` log lines as fast as its `jobvisor-worker` can; then
//! `--children` of them do so at once. Each case runs on a fresh
//! supervisor and database. It reports lines stored per second (from the
//! enqueue to the last end recorded), lines lost (written but not stored,
//! counted line by line from the database), and the supervisor's peak
//! resident memory.

use super::{peak_rss_mib, reset_peak_rss, run_in_background, CaseDatabases};
use crate::failure::CliError;
use jobvisor::model::Mode;
use jobvisor::{RunSpec, Supervisor};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Instant;
use tokio::sync::broadcast::error::RecvError;

/// One case of the relay scenario.
#[derive(Debug, Serialize)]
pub struct RelayRow {
    /// Children writing at once.
    pub children: usize,
    /// Lines each child wrote.
    pub lines_per_child: u64,
    /// Lines stored in all.
    pub lines_stored: u64,
    /// Lines written but not stored.
    pub lines_lost: u64,
    /// Stored lines per second, from the enqueue to the last end recorded.
    pub lines_per_sec: f64,
    /// Wall time, s.
    pub seconds: f64,
    /// The supervisor's peak resident memory, MiB.
    pub peak_rss_mib: f64,
}

/// Result of the relay scenario.
#[derive(Debug, Serialize)]
pub struct RelayBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// One row per case.
    pub rows: Vec<RelayRow>,
}

pub(super) async fn bench_relay(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    if a.lines == 0 || a.children == 0 {
        return Err(crate::failure::input(
            "--lines and --children must be at least 1",
        ));
    }
    let dbs = CaseDatabases::new(database)?;
    let worker = jobvisor::worker_program();
    let mut rows = Vec::new();
    for (case, children) in [(1usize, 1usize), (2, a.children)] {
        rows.push(
            relay_case(
                &dbs.of(&format!("relay-{case}")),
                &worker,
                children,
                a.lines,
            )
            .await?,
        );
    }
    let r = RelayBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        rows,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
    } else {
        println!(
            "{} cores | {} | each child: jobvisor-worker's built-in `logs`, process mode",
            r.cores, r.backend
        );
        println!(
            "{:>8} {:>14} {:>12} {:>10} {:>12} {:>9} {:>10}",
            "children", "lines/child", "stored", "lost", "lines/s", "seconds", "peak RSS"
        );
        for row in &r.rows {
            println!(
                "{:>8} {:>14} {:>12} {:>10} {:>12.0} {:>9.2} {:>7.1}MiB",
                row.children,
                row.lines_per_child,
                row.lines_stored,
                row.lines_lost,
                row.lines_per_sec,
                row.seconds,
                row.peak_rss_mib
            );
        }
    }
    let lost: u64 = r.rows.iter().map(|row| row.lines_lost).sum();
    if lost > 0 {
        return Err(crate::failure::input(format!("{lost} log lines were lost")));
    }
    Ok(())
}

async fn relay_case(
    db: &str,
    worker: &std::path::Path,
    children: usize,
    lines: u64,
) -> Result<RelayRow, CliError> {
    let sup = Supervisor::builder()
        .database(db)
        .configure(|c| {
            c.worker_program = Some(worker.to_path_buf());
            c.concurrency = children.max(1);
        })
        .build()
        .await?;
    // The relay is measured, not the log budget: `logs` gets a budget
    // that its lines fit in (the default, 64 MiB of stored lines, holds
    // about 896,000 of them; the rest would be counted lost).
    let mut logs = jobvisor::model::HandlerSpec::builtin("logs");
    logs.limits.max_log_bytes = lines.saturating_mul(1024).max(logs.limits.max_log_bytes);
    sup.add_handler(&logs).await?;
    let mut finished = sup.subscribe();
    let (stop_tx, runner) = run_in_background(&sup);
    reset_peak_rss();
    let t0 = Instant::now();
    let specs = (0..children)
        .map(|_| {
            RunSpec::new(
                "logs",
                serde_json::json!({ "count": lines, "level": "info" }),
            )
            .mode(Mode::Process)
        })
        .collect();
    let ids: HashSet<uuid::Uuid> = sup.enqueue_many(specs).await?.into_iter().collect();
    let mut left = ids.clone();
    while !left.is_empty() {
        match finished.recv().await {
            Ok(f) => {
                left.remove(&f.id);
            }
            Err(RecvError::Lagged(_)) => {
                // Look the rest up rather than trust a missed announcement.
                for id in left.clone() {
                    if let Some(e) = sup.store().execution(id).await? {
                        if e.finished_at.is_some() {
                            left.remove(&id);
                        }
                    }
                }
            }
            Err(RecvError::Closed) => return Err(crate::failure::input("the supervisor stopped")),
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    let _ = stop_tx.send(());
    runner.await.expect("supervisor task")?;
    let store = sup.store().clone();
    let mut stored = 0u64;
    for id in &ids {
        let e = store
            .execution(*id)
            .await?
            .ok_or_else(|| crate::failure::input("an execution vanished"))?;
        if e.status != jobvisor::Status::Succeeded {
            return Err(crate::failure::input(format!(
                "execution {id} ended {}: {}",
                e.status,
                e.error.unwrap_or_default()
            )));
        }
        // Counted line by line: each of the child's numbered lines once.
        let mut seen = vec![false; lines as usize];
        let mut after = 0;
        loop {
            let page = store.logs(*id, after, None, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for l in &page {
                let n = l
                    .message
                    .strip_prefix("line ")
                    .and_then(|n| n.parse::<usize>().ok());
                if let Some(slot) = n.and_then(|n| seen.get_mut(n)) {
                    if l.stream == jobvisor::model::stream::LOG && !*slot {
                        *slot = true;
                        stored += 1;
                    }
                }
            }
        }
    }
    let written = lines * children as u64;
    Ok(RelayRow {
        children,
        lines_per_child: lines,
        lines_stored: stored,
        lines_lost: written.saturating_sub(stored),
        lines_per_sec: stored as f64 / seconds,
        seconds,
        peak_rss_mib: peak,
    })
}
