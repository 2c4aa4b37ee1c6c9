//! `jobvisor bench --scenario workflow`: what dependencies and unique keys
//! cost, each against the same work without them, measured in the same run
//! on a supervisor in this process (default settings, built-in `noop`).
//!
//! - fan-out/fan-in: one step, `--fanout` steps after it, one step after
//!   all of those. The figure: from the last parent's end (its recorded
//!   `finished_at`) to the fan-in step's start (`started_at`), both stamped
//!   by this process's clock. Baseline: the same number of plain noops.
//! - chain: `--chain` steps, each after the one before. The figure: its
//!   wall time over that of as many plain noops, per link. A second
//!   baseline chains the same steps from the client: enqueue the next when
//!   the previous has ended.
//! - unique enqueue: `--keys` enqueues one at a time from 8 tasks, plain,
//!   with one hot key (one execution, the rest duplicates), and with as
//!   many distinct keys, alternating over three rounds; the median
//!   enqueues/s of each and its ratio to plain.

use super::BenchArgs;
use crate::failure::CliError;
use jobvisor::model::Status;
use jobvisor::store::Store;
use jobvisor::workflow::{StepSpec, WorkflowSpec};
use jobvisor::{RunSpec, Supervisor};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Result of the workflow scenario.
#[derive(Debug, Serialize)]
pub struct WorkflowBench {
    /// The database's kind.
    pub database: &'static str,
    /// Steps between the fan-out and the fan-in.
    pub fanout: usize,
    /// Inserting the workflow (fanout + 2 executions, 2 x fanout edges), s.
    pub fanout_insert_s: f64,
    /// Fan-out start to fan-in end, s.
    pub fanout_total_s: f64,
    /// The same number of plain noops, enqueued at once, to the last end, s.
    pub fanout_plain_s: f64,
    /// Last parent's end to the fan-in step's start, ms.
    pub fanin_start_ms: f64,
    /// Links in the chain.
    pub chain: usize,
    /// Chain submitted to its last step's end, s.
    pub chain_s: f64,
    /// As many plain noops, enqueued at once, to the last end, s.
    pub chain_plain_s: f64,
    /// (chain - plain) / links, ms.
    pub chain_overhead_per_link_ms: f64,
    /// The chain driven by the client instead (enqueue the next when the
    /// previous ended), s.
    pub chain_by_client_s: f64,
    /// Enqueues per case in the unique-key comparison.
    pub keys: usize,
    /// Plain enqueues/s.
    pub plain_enqueue_per_s: f64,
    /// Enqueues/s with one hot key (all but the first are duplicates).
    pub hot_key_enqueue_per_s: f64,
    /// Enqueues/s with a distinct key each.
    pub distinct_keys_enqueue_per_s: f64,
}

/// How often the bench looks whether what it waits for has ended.
const POLL: Duration = Duration::from_millis(2);

fn step(name: String, after: Vec<String>) -> StepSpec {
    StepSpec {
        after,
        ..StepSpec::new(name, "noop")
    }
}

/// Waits until execution `id` has ended.
async fn ended(
    store: &dyn jobvisor::store::Reads,
    id: Uuid,
) -> Result<jobvisor::Execution, CliError> {
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        if let Some(e) = store.execution(id).await? {
            if e.status.is_terminal() && e.next_id.is_none() {
                return Ok(e);
            }
        }
        if Instant::now() > deadline {
            return Err(crate::failure::input(format!("execution {id} never ended")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `n` plain noops enqueued at once; the time to the last end.
async fn plain(sup: &Supervisor, n: usize) -> Result<f64, CliError> {
    super::run_all(sup, n, |_| RunSpec::new("noop", Value::Null)).await
}

pub(super) async fn bench_workflow(
    database: Option<String>,
    a: &BenchArgs,
) -> Result<(), CliError> {
    if a.fanout == 0 || a.chain == 0 || a.keys == 0 {
        return Err(crate::failure::input(
            "--fanout, --chain and --keys must be at least 1",
        ));
    }
    let dbs = super::CaseDatabases::new(database)?;
    let fanout = fan_out_in(&dbs.of("fanout"), a).await?;
    let chain = chain(&dbs.of("chain"), a).await?;
    // Unique enqueues: plain, one hot key, distinct keys; each on a fresh
    // database (or, given one, in turn on it), no supervisor running. The
    // cases alternate over three rounds; each figure is its median.
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 0..3 {
        for (i, case) in ["plain", "hot", "distinct"].into_iter().enumerate() {
            let store = jobvisor::store::open(&dbs.of(&format!("unique-{case}-{round}"))).await?;
            let run = format!("bench-{}", Uuid::now_v7().simple());
            rates[i].push(enqueue_rate(store.store().clone(), case, &run, a.keys).await?);
        }
    }
    let rates = rates.map(|mut r| {
        r.sort_by(f64::total_cmp);
        r[1]
    });
    let r = WorkflowBench {
        database: dbs.kind(),
        fanout: a.fanout,
        fanout_insert_s: fanout.insert_s,
        fanout_total_s: fanout.total_s,
        fanout_plain_s: fanout.plain_s,
        fanin_start_ms: fanout.fanin_start_ms,
        chain: a.chain,
        chain_s: chain.total_s,
        chain_plain_s: chain.plain_s,
        chain_overhead_per_link_ms: (chain.total_s - chain.plain_s) * 1000.0 / a.chain as f64,
        chain_by_client_s: chain.by_client_s,
        keys: a.keys,
        plain_enqueue_per_s: rates[0],
        hot_key_enqueue_per_s: rates[1],
        distinct_keys_enqueue_per_s: rates[2],
    };
    report(&r, a);
    Ok(())
}

/// The fan-out/fan-in figures.
struct FanOut {
    insert_s: f64,
    total_s: f64,
    plain_s: f64,
    fanin_start_ms: f64,
}

/// Fan-out/fan-in 1 -> `a.fanout` -> 1, and its plain baseline, on one
/// supervisor.
async fn fan_out_in(db: &str, a: &BenchArgs) -> Result<FanOut, CliError> {
    let (sup, stop) = super::start(db, a).await?;
    let store = sup.store().clone();
    let plain_s = plain(&sup, a.fanout).await?;
    let middle: Vec<String> = (0..a.fanout).map(|i| format!("m{i}")).collect();
    let mut steps = vec![step("root".into(), vec![])];
    steps.extend(middle.iter().map(|m| step(m.clone(), vec!["root".into()])));
    steps.push(step("join".into(), middle));
    let spec = WorkflowSpec {
        name: "bench-fanout".into(),
        steps,
    };
    let t0 = Instant::now();
    let done = sup.workflow(&spec).await?;
    let insert_s = t0.elapsed().as_secs_f64();
    let join = done.steps.last().expect("the fan-in step").1;
    let join_e = ended(store.as_ref(), join).await?;
    let total_s = t0.elapsed().as_secs_f64();
    let (_, _, execs) = store
        .workflow(done.id)
        .await?
        .ok_or_else(|| crate::failure::input("the workflow vanished"))?;
    let last_parent_end = execs
        .iter()
        .filter(|e| e.id != join && e.step.as_deref() != Some("root"))
        .filter_map(|e| e.finished_at)
        .max()
        .ok_or_else(|| crate::failure::input("no parent ended"))?;
    if execs.iter().any(|e| e.status != Status::Succeeded) {
        return Err(crate::failure::input("a fan-out step did not succeed"));
    }
    let join_start = join_e
        .started_at
        .ok_or_else(|| crate::failure::input("the fan-in step never started"))?;
    let _ = stop.send(());
    Ok(FanOut {
        insert_s,
        total_s,
        plain_s,
        fanin_start_ms: (join_start.micros() - last_parent_end.micros()) as f64 / 1000.0,
    })
}

/// The chain figures.
struct Chain {
    total_s: f64,
    plain_s: f64,
    by_client_s: f64,
}

/// A chain of `a.chain` steps, its plain baseline, and the same chain
/// driven by a client of the library, on one supervisor.
async fn chain(db: &str, a: &BenchArgs) -> Result<Chain, CliError> {
    let (sup, stop) = super::start(db, a).await?;
    let store = sup.store().clone();
    let plain_s = plain(&sup, a.chain).await?;
    let names: Vec<String> = (0..a.chain).map(|i| format!("s{i}")).collect();
    let steps = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            step(
                n.clone(),
                if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].clone()]
                },
            )
        })
        .collect();
    let spec = WorkflowSpec {
        name: "bench-chain".into(),
        steps,
    };
    let t0 = Instant::now();
    let done = sup.workflow(&spec).await?;
    let last = done.steps.last().expect("a last step").1;
    ended(store.as_ref(), last).await?;
    let total_s = t0.elapsed().as_secs_f64();
    // A client of the library: enqueue, hear the end, enqueue the next.
    let mut finished = sup.subscribe();
    let t0 = Instant::now();
    for _ in 0..a.chain {
        let id = sup.enqueue(RunSpec::new("noop", Value::Null)).await?;
        loop {
            match finished.recv().await {
                Ok(f) if f.id == id => break,
                Ok(_) => {}
                Err(_) => {
                    ended(store.as_ref(), id).await?;
                    break;
                }
            }
        }
    }
    let by_client_s = t0.elapsed().as_secs_f64();
    let _ = stop.send(());
    Ok(Chain {
        total_s,
        plain_s,
        by_client_s,
    })
}

fn report(r: &WorkflowBench, a: &BenchArgs) {
    if a.json {
        println!("{}", serde_json::to_string_pretty(r).expect("serializes"));
        return;
    }
    println!(
        "workflow scenario on {} (inproc noop, concurrency {})",
        r.database, a.concurrency
    );
    println!(
        "fan-out/fan-in 1 -> {} -> 1: inserted in {:.3} s; ran in {:.3} s (plain {} noops: {:.3} s, {:.2}x)",
        r.fanout,
        r.fanout_insert_s,
        r.fanout_total_s,
        r.fanout,
        r.fanout_plain_s,
        r.fanout_total_s / r.fanout_plain_s
    );
    println!(
        "  last parent's end -> fan-in start: {:.1} ms",
        r.fanin_start_ms
    );
    println!(
        "chain of {}: {:.3} s (plain {} noops: {:.3} s): {:.2} ms per link; driven by the client: {:.3} s ({:.2} ms per link)",
        r.chain,
        r.chain_s,
        r.chain,
        r.chain_plain_s,
        r.chain_overhead_per_link_ms,
        r.chain_by_client_s,
        r.chain_by_client_s * 1000.0 / r.chain as f64
    );
    println!(
        "enqueue, {} one at a time from 8 tasks (median of 3 rounds): plain {:.0}/s; one hot key {:.0}/s ({:.2}x); distinct keys {:.0}/s ({:.2}x)",
        r.keys,
        r.plain_enqueue_per_s,
        r.hot_key_enqueue_per_s,
        r.hot_key_enqueue_per_s / r.plain_enqueue_per_s,
        r.distinct_keys_enqueue_per_s,
        r.distinct_keys_enqueue_per_s / r.plain_enqueue_per_s
    );
}

/// Enqueues `n` noops one at a time from 8 tasks: `plain`, with one `hot`
/// key, or with `distinct` keys (named after `run`); enqueues per second.
async fn enqueue_rate(
    store: Arc<dyn Store>,
    case: &str,
    run: &str,
    n: usize,
) -> Result<f64, CliError> {
    const TASKS: usize = 8;
    let local = |h: &str| jobvisor_worker::builtins::known(h);
    let spec = |i: usize| {
        let s = RunSpec::new("noop", Value::Null);
        match case {
            "hot" => s.unique_key(format!("{run}-hot")),
            "distinct" => s.unique_key(format!("{run}-{i}")),
            _ => s,
        }
    };
    // Prepared first: the figure is the enqueue's.
    let mut prepared = Vec::with_capacity(n);
    for i in 0..n {
        prepared.push(jobvisor::submit::prepare(store.as_ref(), &local, spec(i)).await?);
    }
    let mut shares: Vec<Vec<_>> = (0..TASKS).map(|_| Vec::new()).collect();
    for (i, e) in prepared.into_iter().enumerate() {
        shares[i % TASKS].push(e);
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let store = store.clone();
            tokio::spawn(async move {
                for e in share {
                    jobvisor::submit::enqueue(store.as_ref(), std::slice::from_ref(&e)).await?;
                }
                Ok::<_, jobvisor::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("an enqueue task panicked")?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}
