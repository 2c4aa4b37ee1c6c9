//! `jobvisor bench --scenario flow`: what queue limits cost the claim, and
//! how closely a rate is held, on a supervisor in this process (built-in
//! `noop`, inproc, `--concurrency`).
//!
//! - claim throughput: `--count` executions enqueued at once, jobs/s to the
//!   last end, in four cases: no limits (the plain claim), a queue limit
//!   that never binds (the limited claim's window functions alone), a rate
//!   that never binds (plus the starts it records), and a key limit of 1
//!   over 1,000 keys (executions spread round-robin). The cases alternate
//!   over three rounds, each on a fresh database (or, given one, in turn on
//!   it); each figure is the median, with its ratio to no limits.
//! - a held rate: `--rate` (default 1000/1s) on a backlog larger than it
//!   can start in `--rate-seconds`; starts per second from `started_at`,
//!   min/p50/max over the whole seconds, and the most started in any
//!   window of the rate's length (the guarantee: never above N).

use super::{start, BenchArgs};
use crate::failure::CliError;
use jobvisor::model::{Rate, Status};
use jobvisor::store::{ExecFilter, QueueChange};
use jobvisor::{RunSpec, Supervisor};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Result of the flow scenario.
#[derive(Debug, Serialize)]
pub struct FlowBench {
    /// The database's kind.
    pub database: &'static str,
    /// Executions per throughput case.
    pub count: usize,
    /// jobs/s with no limit anywhere (median of 3).
    pub plain_jobs_per_s: f64,
    /// jobs/s under a queue limit that never binds.
    pub queue_limit_jobs_per_s: f64,
    /// jobs/s under a rate that never binds.
    pub unbound_rate_jobs_per_s: f64,
    /// jobs/s under a key limit of 1 over 1,000 keys.
    pub key_limit_jobs_per_s: f64,
    /// The rate held.
    pub rate: String,
    /// Whole seconds measured.
    pub seconds: usize,
    /// Starts in each whole second from the first start.
    pub starts_per_second: Vec<usize>,
    /// The most starts in any window of the rate's length.
    pub max_in_any_window: usize,
}

/// Keys of the key-limit case.
const KEYS: usize = 1_000;

/// One throughput case: its queue's settings and each execution's key.
#[derive(Clone, Copy)]
enum Case {
    Plain,
    QueueLimit,
    UnboundRate,
    KeyLimit,
}

impl Case {
    const ALL: [Case; 4] = [
        Case::Plain,
        Case::QueueLimit,
        Case::UnboundRate,
        Case::KeyLimit,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Plain => "plain",
            Case::QueueLimit => "queue-limit",
            Case::UnboundRate => "rate",
            Case::KeyLimit => "key-limit",
        }
    }

    fn change(self, count: usize) -> QueueChange {
        let never = u32::try_from(count.saturating_mul(10)).unwrap_or(u32::MAX);
        match self {
            Case::Plain => QueueChange::default(),
            Case::QueueLimit => QueueChange {
                limit: Some(Some(never)),
                ..Default::default()
            },
            Case::UnboundRate => QueueChange {
                rate: Some(Some(Rate {
                    n: never,
                    per_ms: 1_000,
                })),
                ..Default::default()
            },
            Case::KeyLimit => QueueChange {
                key_limit: Some(Some(1)),
                ..Default::default()
            },
        }
    }
}

/// Every limit of `queue` removed.
fn cleared() -> QueueChange {
    QueueChange {
        limit: Some(None),
        key_limit: Some(None),
        rate: Some(None),
        paused: None,
    }
}

/// Runs `count` noops of `case` in `queue`; jobs/s from the first enqueue
/// to the last end.
async fn throughput(
    sup: &Supervisor,
    case: Case,
    queue: &str,
    count: usize,
) -> Result<f64, CliError> {
    sup.set_queue(queue, &case.change(count)).await?;
    let took = super::run_all(sup, count, |i| {
        let mut s = RunSpec::new("noop", Value::Null);
        s.queue = queue.to_string();
        if matches!(case, Case::KeyLimit) {
            s = s.concurrency_key(format!("k{}", i % KEYS));
        }
        s
    })
    .await?;
    let jobs_per_s = count as f64 / took;
    sup.set_queue(queue, &cleared()).await?;
    Ok(jobs_per_s)
}

/// The starts per whole second from the first, and the most in any window
/// of `window_us`, of sorted start times.
fn held(starts: &[i64], window_us: i64, seconds: usize) -> (Vec<usize>, usize) {
    let Some(&first) = starts.first() else {
        return (vec![0; seconds], 0);
    };
    let mut per_second = vec![0; seconds];
    for s in starts {
        if let Some(slot) = per_second.get_mut(((s - first) / 1_000_000) as usize) {
            *slot += 1;
        }
    }
    let mut max = 0;
    let mut j = 0;
    for (i, s) in starts.iter().enumerate() {
        while j < starts.len() && starts[j] < s + window_us {
            j += 1;
        }
        max = max.max(j - i);
    }
    (per_second, max)
}

pub(super) async fn bench_flow(database: Option<String>, a: &BenchArgs) -> Result<(), CliError> {
    if a.count == 0 || a.rate_seconds == 0 {
        return Err(crate::failure::input(
            "--count and --rate-seconds must be at least 1",
        ));
    }
    let rate: Rate = a
        .rate
        .parse()
        .map_err(|e: jobvisor::model::ValueError| crate::failure::input(e.to_string()))?;
    let dbs = super::CaseDatabases::new(database)?;
    let db_for = |case: &str| dbs.of(case);
    let kind = dbs.kind();

    let mut figures: [Vec<f64>; 4] = Default::default();
    for round in 0..3 {
        for (i, case) in Case::ALL.into_iter().enumerate() {
            let (sup, stop) = start(&db_for(&format!("{}-{round}", case.name())), a).await?;
            let queue = format!("bench-{}-{round}", case.name());
            figures[i].push(throughput(&sup, case, &queue, a.count).await?);
            let _ = stop.send(());
            eprintln!(
                "round {}: {} {:.0} jobs/s",
                round + 1,
                case.name(),
                figures[i][round]
            );
        }
    }
    let [plain, queue_limit, unbound_rate, key_limit] = figures.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[1]
    });

    let (starts_per_second, max_in_any_window) = held_rate(&db_for("rate"), a, rate).await?;
    let r = FlowBench {
        database: kind,
        count: a.count,
        plain_jobs_per_s: plain,
        queue_limit_jobs_per_s: queue_limit,
        unbound_rate_jobs_per_s: unbound_rate,
        key_limit_jobs_per_s: key_limit,
        rate: rate.to_string(),
        seconds: a.rate_seconds,
        starts_per_second,
        max_in_any_window,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    report(&r, a, rate);
    Ok(())
}

/// The held rate: a backlog it cannot drain in the time measured, then the
/// starts per second and the most in any window of the rate.
async fn held_rate(db: &str, a: &BenchArgs, rate: Rate) -> Result<(Vec<usize>, usize), CliError> {
    let (sup, stop) = start(db, a).await?;
    let queue = format!("bench-rated-{}", uuid::Uuid::now_v7().simple());
    let per_s = rate.n as f64 * 1000.0 / rate.per_ms as f64;
    let backlog = ((per_s * (a.rate_seconds + 2) as f64) as usize + rate.n as usize).max(1);
    let held_back = QueueChange {
        paused: Some(true),
        ..Default::default()
    };
    sup.set_queue(&queue, &held_back).await?;
    for chunk in (0..backlog).collect::<Vec<_>>().chunks(5_000) {
        let specs = chunk
            .iter()
            .map(|_| {
                let mut s = RunSpec::new("noop", Value::Null);
                s.queue = queue.clone();
                s
            })
            .collect();
        sup.enqueue_many(specs).await?;
    }
    eprintln!(
        "holding {rate} over {} s with a backlog of {backlog} ...",
        a.rate_seconds
    );
    let go = QueueChange {
        rate: Some(Some(rate)),
        paused: Some(false),
        ..Default::default()
    };
    sup.set_queue(&queue, &go).await?;
    tokio::time::sleep(Duration::from_secs(a.rate_seconds as u64 + 1)).await;
    sup.set_queue(&queue, &held_back).await?;
    let _ = stop.send(());
    let store = jobvisor::store::open(db).await?;
    let mut starts: Vec<i64> = store
        .executions(&ExecFilter {
            queue: Some(queue.clone()),
            statuses: vec![Status::Succeeded, Status::Running, Status::Failed],
            limit: backlog,
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter_map(|e| e.started_at.map(|t| t.micros()))
        .collect();
    starts.sort_unstable();
    Ok(held(&starts, rate.per_ms as i64 * 1000, a.rate_seconds))
}

/// The flow figures as text.
fn report(r: &FlowBench, a: &BenchArgs, rate: Rate) {
    println!(
        "claim throughput, {} inproc noops at concurrency {} on {} (median of 3 alternated rounds):",
        r.count, a.concurrency, r.database
    );
    for (name, v) in [
        ("no limits", r.plain_jobs_per_s),
        ("a queue limit that never binds", r.queue_limit_jobs_per_s),
        ("a rate that never binds", r.unbound_rate_jobs_per_s),
        ("a key limit of 1 over 1,000 keys", r.key_limit_jobs_per_s),
    ] {
        println!(
            "  {name:<34} {v:>9.0} jobs/s  {:.2}x",
            v / r.plain_jobs_per_s
        );
    }
    let mut sorted = r.starts_per_second.clone();
    sorted.sort_unstable();
    println!(
        "rate {} held over {} s: starts per second min {} / p50 {} / max {}; most in any {} window: {}",
        r.rate,
        r.seconds,
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        humantime::format_duration(Duration::from_millis(rate.per_ms)),
        r.max_in_any_window
    );
}

#[cfg(test)]
mod tests {
    use super::held;

    #[test]
    fn starts_are_counted_per_second_and_per_sliding_window() {
        // 0 s, 0.5 s, 0.9 s, 1.2 s, 1.8 s, 2.5 s.
        let s = [0, 500_000, 900_000, 1_200_000, 1_800_000, 2_500_000];
        let (per_second, max) = held(&s, 1_000_000, 3);
        assert_eq!(per_second, [3, 2, 1]);
        // [0.5, 1.5) holds 0.5, 0.9 and 1.2; [0.9, 1.9) holds 0.9, 1.2, 1.8.
        assert_eq!(max, 3);
        assert_eq!(held(&[], 1_000_000, 2), (vec![0, 0], 0));
    }
}
