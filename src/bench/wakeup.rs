//! `jobvisor bench --scenario wakeup`: how soon a running `jobvisor serve`
//! starts what another process enqueued.
//!
//! A real `serve` (default settings: its poll is the fallback) runs on the
//! database; this process enqueues one no-op at a time and waits for its
//! end. The figure is the enqueue stamp to the start stamp, both from the
//! execution's row. The reference row is the same with the supervisor in
//! this process, woken by a message rather than through the database: the
//! floor for a wake-up.

use super::child::{wait_ended, Place};
use super::{percentile, run_in_background, CaseDatabases};
use crate::failure::CliError;
use jobvisor::{RunSpec, Status, Supervisor};
use serde::Serialize;
use std::time::Duration;

/// One row of the wake-up scenario.
#[derive(Debug, Serialize)]
pub struct WakeupRow {
    /// What was measured.
    pub name: &'static str,
    /// `reference` (in-process) or `measured` (another process).
    pub kind: &'static str,
    /// Executions timed.
    pub samples: usize,
    /// Enqueue to start, p50, ms.
    pub start_p50_ms: f64,
    /// ... p99.
    pub start_p99_ms: f64,
    /// p50 over the reference's p50.
    pub ratio: f64,
}

/// Result of the wake-up scenario.
#[derive(Debug, Serialize)]
pub struct WakeupBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// The service's poll interval, the fallback a wake-up beats, ms.
    pub poll_interval_ms: u64,
    /// The rows: the reference first.
    pub rows: Vec<WakeupRow>,
}

pub(super) async fn bench_wakeup(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    if a.latency_samples == 0 {
        return Err(crate::failure::input(
            "--latency-samples must be at least 1",
        ));
    }
    let dbs = CaseDatabases::new(database)?;
    let backend = dbs.kind();
    let n = a.latency_samples;

    // The reference: the supervisor in this process.
    let db = dbs.of("wakeup-inproc");
    let sup = Supervisor::builder().database(&db).build().await?;
    let (stop_tx, runner) = run_in_background(&sup);
    let reference = time_starts(&sup, n, "the in-process supervisor").await?;
    let _ = stop_tx.send(());
    runner.await.expect("supervisor task")?;

    // Measured: a real `serve`, another process.
    let place = Place::new()?;
    let db = dbs.of("wakeup-serve");
    // Created and migrated before the service starts, as an operator's is.
    let sup = Supervisor::builder().database(&db).build().await?;
    let mut serve = place.serve(&db, &[])?;
    let measured = time_starts(&sup, n, "jobvisor serve").await;
    let tail = serve.stop().await;
    let measured = measured.map_err(|e| match tail.is_empty() {
        true => e,
        false => crate::failure::input(format!("{e}; serve said: {tail}")),
    })?;

    let row = |name, kind, mut ms: Vec<f64>, base: f64| {
        let p50 = percentile(&mut ms, 50.0);
        WakeupRow {
            name,
            kind,
            samples: ms.len(),
            start_p50_ms: p50,
            start_p99_ms: percentile(&mut ms, 99.0),
            ratio: p50 / base,
        }
    };
    let base = percentile(&mut reference.clone(), 50.0);
    let r = WakeupBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend,
        poll_interval_ms: jobvisor::supervisor::Config::service()
            .poll_interval
            .as_millis() as u64,
        rows: vec![
            row(
                "in-process supervisor, woken by a message",
                "reference",
                reference,
                base,
            ),
            row(
                "jobvisor serve, enqueued by another process",
                "measured",
                measured,
                base,
            ),
        ],
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
    } else {
        println!(
            "{} cores | {} | one no-op at a time, {n} samples | the service's poll (the fallback): {} ms",
            r.cores, r.backend, r.poll_interval_ms
        );
        println!(
            "{:<48} {:>10} {:>10} {:>7}",
            "enqueue -> start", "p50", "p99", "ratio"
        );
        for row in &r.rows {
            println!(
                "{:<48} {:>8.2}ms {:>8.2}ms {:>7.2}",
                row.name, row.start_p50_ms, row.start_p99_ms, row.ratio
            );
        }
    }
    Ok(())
}

/// Enqueues `n` no-ops through `sup`, one at a time, each after the one
/// before ended; their enqueue-to-start times, ms, from their rows.
async fn time_starts(sup: &Supervisor, n: usize, who: &str) -> Result<Vec<f64>, CliError> {
    let store = sup.store().clone();
    let mut out = Vec::with_capacity(n);
    // The first readies the supervisor (connections, caches) and is not
    // counted. Each is enqueued after a pause of random length (0-100 ms,
    // seeded): a node that hears by a poll (MySQL's notices) would else
    // be asked at one phase of its poll every time, just after the poll
    // that started the run before.
    let mut rng = fastrand::Rng::with_seed(32);
    for i in 0..=n {
        tokio::time::sleep(Duration::from_micros(rng.u64(0..100_000))).await;
        let id = sup
            .enqueue(RunSpec::new("noop", serde_json::Value::Null))
            .await?;
        let within = Duration::from_secs(30);
        let Some(e) = wait_ended(store.as_ref(), id, within, Duration::from_micros(500)).await?
        else {
            return Err(crate::failure::input(format!(
                "{who} did not run a no-op within 30 s"
            )));
        };
        if e.status != Status::Succeeded {
            return Err(crate::failure::input(format!(
                "a no-op ended {}: {}",
                e.status,
                e.error.unwrap_or_default()
            )));
        }
        if i > 0 {
            let started = e.started_at.map_or(0, |s| s.micros());
            out.push((started - e.enqueued_at.micros()) as f64 / 1000.0);
        }
    }
    Ok(out)
}
