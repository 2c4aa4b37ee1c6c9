//! `jobvisor bench`: what each execution mode costs, measured through the
//! real path (enqueue -> claim -> run -> complete, all in the database) and
//! held against bare baselines measured in the same run.
//!
//! For each mode two phases run on a fresh supervisor:
//! - throughput: `count` executions enqueued in batches while the
//!   supervisor runs them; jobs/s from the first enqueue to the last
//!   completion written.
//! - latency: `latency_samples` executions one at a time on an idle
//!   supervisor; enqueue->start and enqueue->finished-and-written.
//!
//! Baselines: `tokio::spawn` of the same handler with no database, and a
//! bare spawn + run line + result line + wait of `jobvisor-worker`.

use crate::failure::CliError;
use baseline::{baseline_pooled, baseline_process, baseline_spawn};
use cron::bench_cron;
use jobvisor::model::Mode;
use jobvisor::store::ExecFilter;
use rescue::bench_rescue;

mod abuse;
mod bare;
mod baseline;
mod chart;
mod child;
mod cron;
mod dashboard;
mod flow;
mod idle;
mod isolation;
mod list;
mod mqtt;
mod peers;
mod relay;
mod rescue;
mod spawn;
mod traces;
mod transactions;
mod wakeup;
mod webhooks;
mod workflow;
use clap::Args;
use jobvisor::{RunSpec, Supervisor};
use jobvisor_worker::{Context, ExecutionInfo, Handler, Registry};
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast::error::RecvError;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The two execution modes against bare baselines.
    Modes,
    /// The scheduler under many cron jobs.
    Cron,
    /// How long a node killed with SIGKILL leaves its executions before
    /// another node rescues them (default lease settings).
    Rescue,
    /// What each process isolation option costs per spawn.
    Spawn,
    /// Dependencies and unique keys: fan-out/fan-in, a chain, and unique
    /// enqueues, each against the same work without them.
    Workflow,
    /// `exec list` by each of its filters in a large history.
    List,
    /// Claim throughput under queue, rate and key limits against none, and
    /// how closely a rate is held.
    Flow,
    /// Every dashboard page's API calls over a large history.
    Dashboard,
    /// Log lines relayed from children into the database: lines/s, lines
    /// lost, peak memory; one child, then several at once.
    Relay,
    /// Each misbehaviour of a handler (crash, leak, flood, hang) in each
    /// mode: contained or not, and how fast it was detected and cleaned up.
    Isolation,
    /// The modes, then the isolation matrix: what each mode costs and what
    /// it buys, in one table (and one chart with `--chart`).
    Comparison,
    /// How soon a running `serve` starts what another process enqueued
    /// (SQLite: a WAL change; PostgreSQL: NOTIFY), against an in-process
    /// wake-up.
    Wakeup,
    /// What a running `serve` with nothing to do costs: CPU a minute,
    /// memory, wake-ups.
    Idle,
    /// A running `serve` under the worst the API allows: memory while
    /// clients list large payloads and follow a log of 1 MiB lines without
    /// reading, CPU with 500 idle event streams.
    Abuse,
    /// jobvisor against graphile-worker on the same PostgreSQL (given with
    /// --database): `--count` no-ops enqueued in bulk, then drained, in
    /// turns (`--repeat` rounds, at least 2). Needs node and npm, and
    /// installs graphile-worker into a temporary directory. Give it a
    /// database of its own.
    Peers,
    /// What webhooks cost the runs they report (no-op throughput with a
    /// webhook on `failed` against none, `--repeat` rounds), and how fast
    /// deliveries reach a receiver in this process (`--process-count` of
    /// them) against bare POSTs to it.
    Webhooks,
    /// How soon a message published to an MQTT broker (`--broker`) starts
    /// its run (`--latency-samples` messages, one every 2 ms), against a
    /// bare subscriber's receiving them.
    Mqtt,
    /// What exporting traces costs: no-op throughput with traces exported
    /// over OTLP/HTTP to a collector in this process against none,
    /// `--repeat` rounds.
    Traces,
    /// What committing a handler's effect with its run's success costs:
    /// in-process runs that insert a row in their own transaction, against
    /// runs that insert it apart and against no-ops, `--repeat` rounds.
    Transactions,
}

/// A way of running executions that `bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchMode {
    /// inproc: a tokio task.
    Inproc,
    /// process: one `jobvisor-worker` process per execution.
    Process,
    /// process on a pool of reused `jobvisor-worker` processes.
    Pooled,
}

impl BenchMode {
    fn mode(self) -> Mode {
        match self {
            BenchMode::Inproc => Mode::Inproc,
            BenchMode::Process | BenchMode::Pooled => Mode::Process,
        }
    }
}

impl std::fmt::Display for BenchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BenchMode::Inproc => "inproc",
            BenchMode::Process => "process",
            BenchMode::Pooled => "pooled",
        })
    }
}

/// `bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value = "modes")]
    pub scenario: Scenario,
    /// Cron scenario: jobs defined, each `* * * * *`.
    #[arg(long, default_value_t = 10_000)]
    pub jobs: usize,
    /// Cron scenario: minute boundaries measured.
    #[arg(long, default_value_t = 2)]
    pub minutes: u32,
    /// Cron scenario: hold the executions in a paused queue, so that the
    /// CPU figure is the scheduler's alone (delays are due -> enqueued).
    #[arg(long)]
    pub hold: bool,
    /// Executions in the inproc throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Modes scenario: runs of each row; the table shows their medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Executions in the process throughput phase (each one is a spawn).
    #[arg(long, default_value_t = 2_000)]
    pub process_count: usize,
    /// Executions timed one at a time for latency.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Built-in handler to run.
    #[arg(long, default_value = "noop")]
    pub handler: String,
    /// JSON payload for each execution.
    #[arg(long, default_value = "null")]
    pub payload: String,
    /// Inproc executions at once (per node).
    #[arg(long, default_value_t = 512)]
    pub concurrency: usize,
    /// Supervisors sharing the database in the supervised runs (in this
    /// process, each with its own connections and node id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub nodes: u32,
    /// Child processes at once (process mode and its baseline).
    #[arg(long, default_value_t = 4)]
    pub process_concurrency: usize,
    /// Modes to measure.
    #[arg(long, value_delimiter = ',', default_value = "inproc,process,pooled")]
    pub modes: Vec<BenchMode>,
    /// Worker processes of the pooled mode (and its baseline).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub pool_size: u32,
    /// Spawn scenario: spawns timed per isolation option.
    #[arg(long, default_value_t = 300)]
    pub spawns: usize,
    /// Spawn scenario: also time each option with this much memory resident
    /// in the spawning process (fork copies its page tables).
    #[arg(long, default_value = "1G", value_parser = jobvisor::model::parse_bytes)]
    pub ballast: u64,
    /// Workflow scenario: steps between the fan-out and the fan-in.
    #[arg(long, default_value_t = 10_000)]
    pub fanout: usize,
    /// Workflow scenario: links in the chain.
    #[arg(long, default_value_t = 1_000)]
    pub chain: usize,
    /// Workflow scenario: enqueues per unique-key case.
    #[arg(long, default_value_t = 10_000)]
    pub keys: usize,
    /// List scenario: executions in the history searched.
    #[arg(long, default_value_t = 1_000_000)]
    pub executions: usize,
    /// Dashboard scenario: log lines in the history.
    #[arg(long, default_value_t = 10_000_000)]
    pub log_lines: usize,
    /// Relay scenario: log lines each child writes.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// Relay scenario: children writing at once in the second case.
    #[arg(long, default_value_t = 8)]
    pub children: usize,
    /// Flow scenario: the rate held (N/DUR).
    #[arg(long, default_value = "1000/1s")]
    pub rate: String,
    /// Flow scenario: seconds the rate is held and measured.
    #[arg(long, default_value_t = 30)]
    pub rate_seconds: usize,
    /// Isolation scenario: only these misbehaviours (default all).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(jobvisor_worker::builtins::MISBEHAVIOURS))]
    pub misbehaviours: Vec<String>,
    /// Modes, isolation and comparison scenarios: also draw the results
    /// as an SVG chart into this file.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Idle scenario: seconds measured (after a settling time).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_seconds: u64,
    /// MQTT scenario: the broker, mqtt://HOST[:PORT].
    #[arg(long, value_name = "URL")]
    pub broker: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// The mode the row measures, or is a baseline for.
    pub mode: String,
    /// `supervised` (the mode through jobvisor), `baseline` (the bare loop
    /// the mode is held against) or `reference` (another bare figure).
    pub kind: &'static str,
    /// What was measured.
    pub name: String,
    /// `sqlite`, `postgresql`, or `none` (no database).
    pub backend: &'static str,
    /// Executions in the throughput phase.
    pub executions: usize,
    /// Throughput (the median of the repeats).
    pub jobs_per_sec: f64,
    /// The mode's baseline's throughput in the same runs (median).
    pub baseline_jobs_per_sec: f64,
    /// jobs_per_sec over baseline_jobs_per_sec, run by run (median).
    pub ratio: f64,
    /// Enqueue (or spawn) to start, one at a time, p50, in ms.
    pub start_p50_ms: f64,
    /// ... p99.
    pub start_p99_ms: f64,
    /// Enqueue to completion written, one at a time, p50, in ms.
    pub total_p50_ms: f64,
    /// ... p99.
    pub total_p99_ms: f64,
    /// Enqueue to start under the throughput load, p50, in ms.
    pub loaded_start_p50_ms: Option<f64>,
    /// Peak resident memory of the supervising process during the row, MiB.
    pub peak_rss_mib: f64,
    /// jobs/s of each repeat, in order.
    pub runs_jobs_per_sec: Vec<f64>,
}

/// Everything `bench --json` prints for the modes scenario.
#[derive(Debug, Serialize)]
pub struct ModesBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// Runs of each row; figures are their medians.
    pub repeat: usize,
    /// The settings of the run.
    pub settings: ModesSettings,
    /// The rows, per mode: baseline first, then references, then the
    /// supervised row.
    pub rows: Vec<BenchRow>,
}

/// The settings a modes run was made with.
#[derive(Debug, Serialize)]
pub struct ModesSettings {
    /// The handler run.
    pub handler: String,
    /// Executions of the inproc and pooled throughput phases.
    pub count: usize,
    /// Executions of the process throughput phase.
    pub process_count: usize,
    /// Inproc executions at once (and the bare loop's claim batch).
    pub concurrency: usize,
    /// Process executions at once.
    pub process_concurrency: usize,
    /// Pooled workers.
    pub pool_size: u32,
    /// Executions timed one at a time.
    pub latency_samples: usize,
    /// Supervisors sharing the database.
    pub nodes: u32,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
}

/// The median of `v` (the mean of the middle two of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One row from the same row of each repeat: every figure their median.
fn merge_runs(runs: &[BenchRow]) -> BenchRow {
    let m = |f: fn(&BenchRow) -> f64| median(runs.iter().map(f).collect());
    let loaded: Vec<f64> = runs.iter().filter_map(|r| r.loaded_start_p50_ms).collect();
    BenchRow {
        jobs_per_sec: m(|r| r.jobs_per_sec),
        baseline_jobs_per_sec: m(|r| r.baseline_jobs_per_sec),
        ratio: m(|r| r.ratio),
        start_p50_ms: m(|r| r.start_p50_ms),
        start_p99_ms: m(|r| r.start_p99_ms),
        total_p50_ms: m(|r| r.total_p50_ms),
        total_p99_ms: m(|r| r.total_p99_ms),
        loaded_start_p50_ms: (!loaded.is_empty()).then(|| median(loaded)),
        peak_rss_mib: m(|r| r.peak_rss_mib),
        runs_jobs_per_sec: runs.iter().map(|r| r.jobs_per_sec).collect(),
        ..runs[0].clone()
    }
}

/// The rows of one mode in one run: its baseline first, then references,
/// then the supervised row; each with the baseline's figure and its ratio.
async fn measure_mode(
    mode: BenchMode,
    a: &BenchArgs,
    db: &str,
    handler: &Arc<dyn Handler>,
    payload: &Value,
    worker: &PathBuf,
) -> Result<Vec<BenchRow>, CliError> {
    let backend = backend_of(db);
    let mut rows = Vec::new();
    reset_peak_rss();
    let (n, concurrency) = match mode {
        BenchMode::Inproc => {
            let mut base =
                bare::bare_sql_loop(db, handler.clone(), payload, a.count, a.concurrency).await?;
            base.backend = backend;
            rows.push(base);
            reset_peak_rss();
            rows.push(baseline_spawn(handler.clone(), payload, a.count).await);
            (a.count, a.concurrency)
        }
        BenchMode::Process => {
            rows.push(
                baseline_process(
                    worker,
                    &a.handler,
                    payload,
                    a.process_count,
                    a.process_concurrency,
                )
                .await?,
            );
            (a.process_count, a.process_concurrency)
        }
        BenchMode::Pooled => {
            rows.push(
                baseline_pooled(worker, &a.handler, payload, a.count, a.pool_size as usize).await?,
            );
            (a.count, a.concurrency)
        }
    };
    reset_peak_rss();
    rows.push(supervised(db, mode, a, n, concurrency, payload, worker).await?);
    let base = rows[0].jobs_per_sec;
    for (i, r) in rows.iter_mut().enumerate() {
        r.mode = mode.to_string();
        r.kind = match (i, r.kind) {
            (0, _) => "baseline",
            (_, "supervised") => "supervised",
            _ => "reference",
        };
        r.baseline_jobs_per_sec = base;
        r.ratio = r.jobs_per_sec / base;
    }
    Ok(rows)
}

/// `sqlite`, `postgresql` or `mysql`, from a database's address.
fn backend_of(db: &str) -> &'static str {
    if db.starts_with("postgres") {
        "postgresql"
    } else if db.starts_with("mysql") || db.starts_with("mariadb") {
        "mysql"
    } else {
        "sqlite"
    }
}

/// Turns the test built-ins on for this process and every supervisor and
/// worker it starts (the isolation scenarios run `misbehave`), with a
/// private directory for `append`, removed when the guard drops.
fn test_builtins_on() -> Result<AppendDir, CliError> {
    use jobvisor_worker::builtins::TestBuiltins;
    use std::os::unix::fs::DirBuilderExt;
    let dir =
        std::env::temp_dir().join(format!("jobvisor-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| crate::failure::input(format!("cannot create {}: {e}", dir.display())))?;
    // Set before any supervisor is built; nothing else reads the
    // environment concurrently at this point.
    std::env::set_var(TestBuiltins::ENV, "1");
    std::env::set_var(TestBuiltins::APPEND_DIR_ENV, &dir);
    Ok(AppendDir(dir))
}

/// A directory removed when dropped.
struct AppendDir(PathBuf);

impl Drop for AppendDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the benchmark and prints the table (or JSON).
pub async fn bench(database: Option<String>, a: BenchArgs) -> Result<(), CliError> {
    // As `serve` does: children inherit the limit instead of each getting
    // it through a hook, so the spawn path measured is the service's.
    jobvisor::runner::isolate::core_dumps_off();
    let _append_dir = test_builtins_on()?;
    // Silent unless asked: JOBVISOR_LOG=sqlx::query=debug shows every
    // statement the supervisor makes, to count them per execution.
    if std::env::var_os("JOBVISOR_LOG").is_some() {
        jobvisor::service::logging::init(jobvisor::service::logging::LogFormat::Auto);
    }
    let charted = matches!(
        a.scenario,
        Scenario::Modes | Scenario::Isolation | Scenario::Comparison
    );
    if a.chart.is_some() && !charted {
        return Err(crate::failure::input(
            "--chart draws the modes, isolation and comparison scenarios only",
        ));
    }
    match a.scenario {
        Scenario::Cron => return bench_cron(database, &a).await,
        Scenario::Rescue => return bench_rescue(database, &a).await,
        Scenario::Spawn => return spawn::bench_spawn(&a).await,
        Scenario::Workflow => return workflow::bench_workflow(database, &a).await,
        Scenario::List => return list::bench_list(database, &a).await,
        Scenario::Flow => return flow::bench_flow(database, &a).await,
        Scenario::Dashboard => return dashboard::bench_dashboard(database, &a).await,
        Scenario::Relay => return relay::bench_relay(database, &a).await,
        Scenario::Wakeup => return wakeup::bench_wakeup(database, &a).await,
        Scenario::Idle => return idle::bench_idle(database, &a).await,
        Scenario::Abuse => return abuse::bench_abuse(database, &a).await,
        Scenario::Peers => return peers::bench_peers(database, &a).await,
        Scenario::Webhooks => return webhooks::bench_webhooks(database, &a).await,
        Scenario::Mqtt => return mqtt::bench_mqtt(database, &a).await,
        Scenario::Traces => return traces::bench_traces(database, &a).await,
        Scenario::Transactions => return transactions::bench_transactions(database, &a).await,
        Scenario::Isolation | Scenario::Modes | Scenario::Comparison => {}
    }
    if a.scenario == Scenario::Isolation {
        let iso = isolation::bench_isolation(database, &a).await?;
        return finish(&a, None, Some(&iso));
    }
    let modes = bench_modes(database.clone(), &a).await?;
    let iso = match a.scenario {
        Scenario::Comparison => Some(isolation::bench_isolation(None, &a).await?),
        _ => None,
    };
    finish(&a, Some(&modes), iso.as_ref())
}

/// Prints what ran (tables, or one JSON document), and draws the chart.
fn finish(
    a: &BenchArgs,
    modes: Option<&ModesBench>,
    iso: Option<&isolation::IsolationBench>,
) -> Result<(), CliError> {
    if a.json {
        let doc = match (modes, iso) {
            (Some(m), Some(i)) => serde_json::json!({ "modes": m, "isolation": i }),
            (Some(m), None) => serde_json::to_value(m).expect("serializes"),
            (None, Some(i)) => serde_json::to_value(i).expect("serializes"),
            (None, None) => serde_json::Value::Null,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("serializes")
        );
    } else {
        if let Some(m) = modes {
            print_table(m);
        }
        if let Some(i) = iso {
            if modes.is_some() {
                println!();
            }
            isolation::print_matrix(i);
        }
    }
    if let Some(path) = &a.chart {
        chart::draw(path, modes, iso)?;
    }
    Ok(())
}

/// The modes scenario: each mode against its baseline, `--repeat` times.
async fn bench_modes(database: Option<String>, a: &BenchArgs) -> Result<ModesBench, CliError> {
    let payload: Value = serde_json::from_str(&a.payload)
        .map_err(|e| crate::failure::input(format!("invalid --payload JSON: {e}")))?;
    let registry = Registry::with_builtins();
    if registry.get(&a.handler).is_none() {
        return Err(jobvisor::Error::UnknownHandler(a.handler.clone()).into());
    }
    if a.count == 0 || a.process_count == 0 || a.latency_samples == 0 {
        return Err(crate::failure::input("counts must be at least 1"));
    }
    if a.repeat == 0 {
        return Err(crate::failure::input("--repeat must be at least 1"));
    }
    let handler = registry.get(&a.handler).expect("checked");
    let worker = jobvisor::worker_program();
    let tmp = tempfile_dir()?;
    let mut runs: Vec<Vec<BenchRow>> = Vec::new();
    for r in 0..a.repeat {
        let mut rows = Vec::new();
        for &mode in &a.modes {
            // A fresh database per mode and run, unless one was given.
            let db = database
                .clone()
                .unwrap_or_else(|| tmp.join(format!("{mode}-{r}.db")).display().to_string());
            rows.extend(measure_mode(mode, a, &db, &handler, &payload, &worker).await?);
        }
        runs.push(rows);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let rows: Vec<BenchRow> = (0..runs[0].len())
        .map(|k| merge_runs(&runs.iter().map(|run| run[k].clone()).collect::<Vec<_>>()))
        .collect();
    let result = ModesBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        repeat: a.repeat,
        settings: ModesSettings {
            handler: a.handler.clone(),
            count: a.count,
            process_count: a.process_count,
            concurrency: a.concurrency,
            process_concurrency: a.process_concurrency,
            pool_size: a.pool_size,
            latency_samples: a.latency_samples,
            nodes: a.nodes,
            backend: backend_of(database.as_deref().unwrap_or("")),
        },
        rows,
    };
    Ok(result)
}

/// Runs `sup` on a task until the returned sender fires (or drops).
/// Figures `v` with `p` decimals, space-separated (one per round).
fn figures(v: &[f64], p: usize) -> String {
    v.iter()
        .map(|x| format!("{x:.p$}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Enqueues `n` no-ops, 1,000 to a transaction.
async fn enqueue_noops(sup: &Supervisor, n: usize) -> Result<(), CliError> {
    enqueue_runs(sup, "noop", n).await
}

/// Enqueues `n` runs of `handler`, 1,000 to a transaction.
async fn enqueue_runs(sup: &Supervisor, handler: &str, n: usize) -> Result<(), CliError> {
    let mut remaining = n;
    while remaining > 0 {
        let k = remaining.min(1000);
        sup.enqueue_many(
            (0..k)
                .map(|_| jobvisor::RunSpec::new(handler, serde_json::Value::Null))
                .collect(),
        )
        .await?;
        remaining -= k;
    }
    Ok(())
}

/// Runs `sup`, enqueues `n` no-ops and waits for their ends; jobs/s from
/// the first enqueue to the last end.
async fn drain_noops(sup: &Supervisor, n: usize) -> Result<f64, CliError> {
    drain(sup, "noop", n).await
}

/// Runs `sup`, enqueues `n` runs of `handler` and waits for their ends;
/// runs/s from the first enqueue to the last end.
async fn drain(sup: &Supervisor, handler: &str, n: usize) -> Result<f64, CliError> {
    let mut ended = sup.subscribe();
    let (stop_tx, runner) = run_in_background(sup);
    let started = std::time::Instant::now();
    let counting = tokio::spawn(async move {
        let mut seen = 0;
        while seen < n {
            match ended.recv().await {
                Ok(_) => seen += 1,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => seen += k as usize,
                Err(_) => break,
            }
        }
    });
    enqueue_runs(sup, handler, n).await?;
    let _ = counting.await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    runner.await.expect("supervisor task")?;
    Ok(rate)
}

fn run_in_background(
    sup: &Supervisor,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), jobvisor::Error>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sup = sup.clone();
    let runner = tokio::spawn(async move {
        sup.run(async {
            let _ = stop_rx.await;
        })
        .await
    });
    (stop_tx, runner)
}

/// A supervisor on `db` with the bench's concurrency, running until the
/// sender fires or drops.
async fn start(
    db: &str,
    a: &BenchArgs,
) -> Result<(Supervisor, tokio::sync::oneshot::Sender<()>), CliError> {
    let sup = Supervisor::builder()
        .database(db)
        .configure(|c| c.concurrency = a.concurrency)
        .build()
        .await?;
    let (stop_tx, _runner) = run_in_background(&sup);
    Ok((sup, stop_tx))
}

/// Enqueues `n` runs made by `spec` (in batches) on the running `sup`;
/// the time from the first enqueue to the last end, in seconds.
async fn run_all(
    sup: &Supervisor,
    n: usize,
    spec: impl Fn(usize) -> RunSpec,
) -> Result<f64, CliError> {
    let mut finished = sup.subscribe();
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        sup.enqueue_many(chunk.iter().map(|i| spec(*i)).collect())
            .await?;
    }
    let mut seen = 0;
    while seen < n {
        match finished.recv().await {
            Ok(_) => seen += 1,
            // Announcements missed still ended.
            Err(RecvError::Lagged(k)) => seen += k as usize,
            Err(RecvError::Closed) => return Err(crate::failure::input("the supervisor stopped")),
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Where a scenario's cases keep their data: the database given, shared
/// in turn, or else a fresh SQLite file per case in a directory of their
/// own, removed when this is dropped.
struct CaseDatabases {
    given: Option<String>,
    dir: PathBuf,
}

impl CaseDatabases {
    fn new(given: Option<String>) -> Result<Self, CliError> {
        Ok(Self {
            given,
            dir: tempfile_dir()?,
        })
    }

    /// The database of case `case`.
    fn of(&self, case: &str) -> String {
        self.given
            .clone()
            .unwrap_or_else(|| self.dir.join(format!("{case}.db")).display().to_string())
    }

    /// `sqlite`, `postgresql` or `mysql`.
    fn kind(&self) -> &'static str {
        backend_of(&self.of("x"))
    }
}

impl Drop for CaseDatabases {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tempfile_dir() -> Result<PathBuf, CliError> {
    let dir =
        std::env::temp_dir().join(format!("jobvisor-bench-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| crate::failure::input(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

fn print_table(r: &ModesBench) {
    let st = &r.settings;
    println!(
        "{} cores | {} | handler {} | inproc and pooled: {} executions, concurrency {}, pool of {} | process: {} executions, concurrency {} | latency: {} one at a time | {} node(s) | median of {} run(s)",
        r.cores, st.backend, st.handler, st.count, st.concurrency, st.pool_size, st.process_count,
        st.process_concurrency, st.latency_samples, st.nodes, r.repeat
    );
    println!(
        "{:<8} {:<46} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "mode",
        "row",
        "jobs/s",
        "ratio",
        "start p50",
        "start p99",
        "total p50",
        "total p99",
        "peak RSS"
    );
    for row in &r.rows {
        println!(
            "{:<8} {:<46} {:>10.0} {:>7.2} {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>8.3}ms {:>6.1}MiB",
            row.mode,
            row.name,
            row.jobs_per_sec,
            row.ratio,
            row.start_p50_ms,
            row.start_p99_ms,
            row.total_p50_ms,
            row.total_p99_ms,
            row.peak_rss_mib,
        );
    }
    println!(
        "ratio: jobs/s over the mode's baseline (its first row), run by run; inproc's is a bare batched SQL loop on the same database, process's a bare spawn + run + wait of jobvisor-worker, pooled's pipes to reused workers."
    );
}

/// Nearest-rank percentile of `ms` (sorted in place).
fn percentile(ms: &mut [f64], p: f64) -> f64 {
    if ms.is_empty() {
        return f64::NAN;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * ms.len() as f64).ceil() as usize;
    ms[rank.clamp(1, ms.len()) - 1]
}

/// Peak RSS resets (Linux: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Enqueue -> start of each started execution, in ms.
fn start_delays_ms(rows: &[jobvisor::Execution]) -> Vec<f64> {
    rows.iter()
        .filter_map(|e| Some((e.started_at?.micros() - e.enqueued_at.micros()) as f64 / 1000.0))
        .collect()
}

/// What a node tells the bench: an execution finished, or `k` finished
/// that its subscription missed.
enum Done {
    One(uuid::Uuid),
    Many(u64),
}

/// A node running in the background: its handle, its stop, its task.
type Node = (
    Supervisor,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), jobvisor::Error>>,
);

async fn supervised(
    db: &str,
    bench_mode: BenchMode,
    a: &BenchArgs,
    n: usize,
    concurrency: usize,
    payload: &Value,
    worker: &std::path::Path,
) -> Result<BenchRow, CliError> {
    let (nodes, mut done_rx) = start_nodes(db, a, concurrency, worker).await?;
    let sup = nodes[0].0.clone();
    let mode = bench_mode.mode();
    if bench_mode == BenchMode::Pooled {
        // The built-in, run on a pool of reused worker processes.
        let spec = jobvisor::model::HandlerSpec {
            name: a.handler.clone(),
            kind: jobvisor::model::HandlerKind::Rust,
            mode,
            limits: jobvisor::model::ProcessLimits {
                pool_size: a.pool_size,
                ..Default::default()
            },
        };
        sup.add_handler(&spec).await?;
    }
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let spec = |job: &str| {
        let mut s = RunSpec::new(a.handler.clone(), payload.clone()).mode(mode);
        s.job = Some(job.to_string());
        s
    };

    // Throughput: enqueue in batches while the supervisor runs them.
    let tjob = format!("bench-{mode}-throughput-{tag}");
    let started = Instant::now();
    let mut remaining = n;
    while remaining > 0 {
        let k = remaining.min(1000);
        sup.enqueue_many((0..k).map(|_| spec(&tjob)).collect())
            .await?;
        remaining -= k;
    }
    let mut finished = 0;
    while finished < n {
        match done_rx.recv().await {
            Some(Done::One(_)) => finished += 1,
            Some(Done::Many(k)) => finished += k as usize,
            None => break,
        }
    }
    let elapsed = started.elapsed();
    // The supervisor's own footprint, before the bench reads rows back.
    let peak = peak_rss_mib();
    let rows = runs_of(&sup, tjob, n).await?;
    let mut loaded = start_delays_ms(&rows);
    let failed = rows
        .iter()
        .filter(|e| e.status != jobvisor::Status::Succeeded)
        .count();
    if failed > 0 {
        return Err(crate::failure::input(format!(
            "{failed} of {n} {mode} executions did not succeed; \
             see `jobvisor exec list --database {}`",
            jobvisor::store::redact(db)
        )));
    }

    // Latency: one at a time on an idle supervisor.
    let ljob = format!("bench-{mode}-latency-{tag}");
    let mut totals = Vec::with_capacity(a.latency_samples);
    while done_rx.try_recv().is_ok() {}
    for _ in 0..a.latency_samples {
        let t0 = Instant::now();
        let id = sup.enqueue(spec(&ljob)).await?;
        loop {
            match done_rx.recv().await {
                Some(Done::One(f)) if f == id => break,
                Some(_) => {}
                None => return Err(crate::failure::input("supervisor stopped")),
            }
        }
        totals.push(ms(t0.elapsed()));
    }
    let mut starts = start_delays_ms(&runs_of(&sup, ljob, a.latency_samples).await?);
    for (_, stop_tx, runner) in nodes {
        let _ = stop_tx.send(());
        runner.await.expect("supervisor task")?;
    }
    Ok(BenchRow {
        mode: bench_mode.to_string(),
        kind: "supervised",
        name: if a.nodes > 1 {
            format!("supervised, {} nodes", a.nodes)
        } else {
            "supervised".into()
        },
        backend: backend_of(db),
        executions: n,
        jobs_per_sec: n as f64 / elapsed.as_secs_f64(),
        baseline_jobs_per_sec: f64::NAN,
        ratio: f64::NAN,
        runs_jobs_per_sec: Vec::new(),
        start_p50_ms: percentile(&mut starts, 50.0),
        start_p99_ms: percentile(&mut starts, 99.0),
        total_p50_ms: percentile(&mut totals, 50.0),
        total_p99_ms: percentile(&mut totals, 99.0),
        loaded_start_p50_ms: Some(percentile(&mut loaded, 50.0)),
        peak_rss_mib: peak,
    })
}

/// Starts `a.nodes` supervisors on `db`, running in the background; every
/// node's completions come merged on the channel given back.
async fn start_nodes(
    db: &str,
    a: &BenchArgs,
    concurrency: usize,
    worker: &std::path::Path,
) -> Result<(Vec<Node>, tokio::sync::mpsc::UnboundedReceiver<Done>), CliError> {
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut nodes = Vec::new();
    for _ in 0..a.nodes {
        let sup = Supervisor::builder()
            .database(db)
            .configure(|c| {
                c.concurrency = concurrency;
                c.worker_program = Some(worker.to_path_buf());
            })
            .build()
            .await?;
        let mut rx = sup.subscribe();
        let tx = done_tx.clone();
        tokio::spawn(async move {
            loop {
                let d = match rx.recv().await {
                    Ok(f) => Done::One(f.id),
                    Err(RecvError::Lagged(k)) => Done::Many(k),
                    Err(RecvError::Closed) => return,
                };
                if tx.send(d).is_err() {
                    return;
                }
            }
        });
        let (stop_tx, runner) = run_in_background(&sup);
        nodes.push((sup, stop_tx, runner));
    }
    Ok((nodes, done_rx))
}

/// Up to `n` executions of bench job `job`.
async fn runs_of(
    sup: &Supervisor,
    job: String,
    n: usize,
) -> Result<Vec<jobvisor::Execution>, CliError> {
    let filter = ExecFilter {
        job: Some(job),
        limit: n,
        ..Default::default()
    };
    Ok(sup.store().executions(&filter).await?)
}
