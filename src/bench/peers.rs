//! `bench --scenario peers`: jobvisor against graphile-worker, the
//! PostgreSQL job queue with the strongest published figures, on the same
//! database with the same work, in turns.
//!
//! Each round, for each system: `count` no-op jobs enqueued in bulk with no
//! worker running, then the worker started, and the drain timed from the
//! first job's start to the last job's end as recorded. graphile-worker
//! runs with its documented fast settings (24 jobs at once, a local queue
//! of 500, completions batched); jobvisor is a real `serve` with
//! `--concurrency` (512 unless given). Give it a database of its own: a
//! jobvisor drain ends when nothing in it is pending or running.

use super::child::Place;
use super::BenchArgs;
use crate::failure::CliError;
use jobvisor::model::Mode;
use jobvisor::store::ExecFilter;
use jobvisor::{RunSpec, Status};
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The graphile-worker measured, pinned so that runs compare.
const GRAPHILE: &str = "graphile-worker@0.17.3";

/// Its side of the bench, run by node (`src/bench/peers_graphile.cjs`).
const GRAPHILE_RUNNER: &str = include_str!("peers_graphile.cjs");

/// What `bench --scenario peers --json` prints.
#[derive(Debug, Serialize)]
pub struct PeersBench {
    /// Jobs per drain.
    pub jobs: usize,
    /// jobvisor's `serve --concurrency`.
    pub concurrency: usize,
    /// Every drain, in the order run.
    pub drains: Vec<Drain>,
    /// The median of each system's drains, jobs/s.
    pub jobvisor_per_s: f64,
    /// The same for graphile-worker.
    pub graphile_per_s: f64,
    /// jobvisor's over graphile-worker's.
    pub ratio: f64,
}

/// One drain.
#[derive(Debug, Serialize)]
pub struct Drain {
    /// `jobvisor` or `graphile-worker`.
    pub system: &'static str,
    /// Its round, from 1.
    pub round: usize,
    /// From the first start to the last recorded end, ms.
    pub drain_ms: f64,
    /// Jobs per second over the drain.
    pub per_s: f64,
    /// CPU the PostgreSQL server spent while the worker ran, per job, µs.
    pub server_cpu_us: f64,
    /// CPU the worker process spent (its start-up and shutdown included),
    /// per job, µs.
    pub worker_cpu_us: f64,
}

/// How long a worker's server backends are given to end after it did, so
/// that the postmaster has reaped them (and counts their CPU) when the
/// drain's CPU is read.
const REAP: Duration = Duration::from_millis(300);

/// CPU seconds spent so far: by the PostgreSQL server on this machine
/// (every process named `postgres`, with what its postmaster reaped of
/// backends that have ended) and by this bench's children that it reaped
/// (a worker counts once it has been waited for).
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    workers: f64,
}

impl Cpu {
    fn now() -> Cpu {
        let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        let mut server = 0u64;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ..."; comm may hold spaces, so split
            // after its closing parenthesis.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if !head.ends_with("(postgres") {
                continue;
            }
            // utime, stime, cutime, cstime: fields 14-17, the 12th-15th
            // after the state.
            let f: Vec<&str> = rest.split_whitespace().collect();
            server += f
                .get(11..15)
                .unwrap_or(&[])
                .iter()
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
        }
        Cpu {
            server: server as f64 / tick,
            workers: super::cron::rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_CHILDREN),
        }
    }

    /// What was spent since `self`, per job, µs: (server, workers).
    fn per_job_since(self, jobs: usize) -> (f64, f64) {
        let now = Cpu::now();
        let per = |s: f64| s * 1e6 / jobs.max(1) as f64;
        (
            per(now.server - self.server),
            per(now.workers - self.workers),
        )
    }
}

pub(super) async fn bench_peers(database: Option<String>, a: &BenchArgs) -> Result<(), CliError> {
    let url = match database {
        Some(d) if d.starts_with("postgres://") || d.starts_with("postgresql://") => d,
        _ => {
            println!("peers: skipped: needs --database postgres://... (graphile-worker runs on PostgreSQL only)");
            return Ok(());
        }
    };
    for tool in ["node", "npm"] {
        if !on_path(tool) {
            println!("peers: skipped: {tool} is not on PATH (graphile-worker runs on Node.js)");
            return Ok(());
        }
    }
    if a.count == 0 {
        return Err(crate::failure::input("--count must be at least 1"));
    }
    let place = Place::new()?;
    let gw = place.dir.join("graphile");
    install(&gw).await?;
    let concurrency = a.concurrency;
    let mut drains = Vec::new();
    for round in 1..=a.repeat.max(2) {
        eprintln!("round {round}: graphile-worker ...");
        node(&gw, "enqueue", &url, a.count).await?;
        let cpu = Cpu::now();
        let ms = graphile_drain(&gw, &url, a.count).await?;
        tokio::time::sleep(REAP).await;
        drains.push(drain("graphile-worker", round, ms, a.count, cpu));
        eprintln!("round {round}: jobvisor ...");
        let (ms, cpu) = jobvisor_drain(&place, &url, a.count, concurrency).await?;
        tokio::time::sleep(REAP).await;
        drains.push(drain("jobvisor", round, ms, a.count, cpu));
    }
    let median = |system: &str| {
        super::median(
            drains
                .iter()
                .filter(|d| d.system == system)
                .map(|d| d.per_s)
                .collect(),
        )
    };
    let (jobvisor_per_s, graphile_per_s) = (median("jobvisor"), median("graphile-worker"));
    let r = PeersBench {
        jobs: a.count,
        concurrency,
        drains,
        jobvisor_per_s,
        graphile_per_s,
        ratio: jobvisor_per_s / graphile_per_s,
    };
    report(&r, a.json);
    Ok(())
}

/// A drain of `jobs` in `drain_ms`, its CPU counted from `cpu` (taken
/// before its worker started; the worker has been reaped since, and the
/// server's backends that served it have ended: see [`REAP`]).
fn drain(system: &'static str, round: usize, drain_ms: f64, jobs: usize, cpu: Cpu) -> Drain {
    let (server_cpu_us, worker_cpu_us) = cpu.per_job_since(jobs);
    Drain {
        system,
        round,
        drain_ms,
        per_s: jobs as f64 / (drain_ms / 1000.0),
        server_cpu_us,
        worker_cpu_us,
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
}

/// Installs graphile-worker into `dir`, with its runner beside it.
async fn install(dir: &Path) -> Result<(), CliError> {
    eprintln!("installing {GRAPHILE} with npm ...");
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::failure::input(format!("cannot create {}: {e}", dir.display())))?;
    let mut npm = tokio::process::Command::new("npm");
    npm.args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(dir)
        .arg(GRAPHILE)
        .stdin(std::process::Stdio::null());
    succeeded(npm, "npm", &format!("npm could not install {GRAPHILE}")).await?;
    std::fs::write(dir.join("runner.cjs"), GRAPHILE_RUNNER)
        .map_err(|e| crate::failure::input(format!("cannot write the runner: {e}")))
}

/// Runs the graphile-worker runner's `mode` in `dir`; its stdout.
async fn node(dir: &Path, mode: &str, url: &str, count: usize) -> Result<String, CliError> {
    let cmd = runner_command(dir, mode, url, count);
    succeeded(cmd, "node", &format!("graphile-worker's {mode} failed")).await
}

/// Runs `cmd` (the program `program`) to its end; its stdout, or an error
/// that says `failed` with the last line of its stderr.
async fn succeeded(
    mut cmd: tokio::process::Command,
    program: &str,
    failed: &str,
) -> Result<String, CliError> {
    let out = cmd
        .output()
        .await
        .map_err(|e| crate::failure::input(format!("cannot run {program}: {e}")))?;
    if !out.status.success() {
        return Err(crate::failure::input(format!(
            "{failed}: {}",
            last_line(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `node runner.cjs MODE COUNT` in `dir`. The database's URL, which may
/// hold a password, goes in the environment (`DATABASE_URL`), never on the
/// command line, which any local user can read.
fn runner_command(dir: &Path, mode: &str, url: &str, count: usize) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(dir)
        .arg("runner.cjs")
        .args([mode, &count.to_string()])
        .env("DATABASE_URL", url)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().rev().find(|l| !l.trim().is_empty());
    line.unwrap_or("(nothing on stderr)").trim().to_string()
}

/// graphile-worker's drain of what `enqueue` left, ms.
async fn graphile_drain(dir: &Path, url: &str, count: usize) -> Result<f64, CliError> {
    #[derive(serde::Deserialize)]
    struct Said {
        drain_ms: f64,
    }
    let out = node(dir, "drain", url, count).await?;
    let said: Said = serde_json::from_str(out.trim())
        .map_err(|e| crate::failure::input(format!("graphile-worker's drain said {out:?}: {e}")))?;
    Ok(said.drain_ms)
}

/// jobvisor's drain: `count` no-ops enqueued in bulk with no node running,
/// then a `serve` started; from the first start to the last end as
/// recorded, ms; and the CPU counts from just before `serve` started.
async fn jobvisor_drain(
    place: &Place,
    url: &str,
    count: usize,
    concurrency: usize,
) -> Result<(f64, Cpu), CliError> {
    let db = jobvisor::store::open(url).await?;
    let client = jobvisor::Client::connect(db.clone()).await;
    let job = format!("bench-peers-{}", Uuid::now_v7().simple());
    let spec = || {
        let mut s = RunSpec::new("noop", serde_json::Value::Null).mode(Mode::Inproc);
        s.job = Some(job.clone());
        s
    };
    let mut left = count;
    while left > 0 {
        let k = left.min(5_000);
        client
            .enqueue_many((0..k).map(|_| spec()).collect())
            .await?;
        left -= k;
    }
    let cpu = Cpu::now();
    let mut serve = place.serve(url, &["--concurrency", &concurrency.to_string()])?;
    // The drain is read from the rows' own times; these looks only decide
    // when to read them, and must cost the database next to nothing (a
    // look at the claim's index, then at the few running rows), or they
    // would slow what they measure.
    let store = db.store();
    let running = ExecFilter {
        statuses: vec![Status::Running],
        limit: 1,
        ..Default::default()
    };
    let t0 = Instant::now();
    loop {
        let due = store.has_due(jobvisor::model::now_micros()).await?;
        if !due && store.executions(&running).await?.is_empty() {
            break;
        }
        if serve.exited() || t0.elapsed() > Duration::from_secs(600) {
            let tail = serve.stop().await;
            return Err(crate::failure::input(format!(
                "jobvisor did not drain {count} no-ops: {tail}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(if due { 50 } else { 5 })).await;
    }
    serve.stop().await;
    let rows = db
        .executions(&ExecFilter {
            job: Some(job),
            limit: count,
            ..Default::default()
        })
        .await?;
    if rows.iter().any(|e| e.status != Status::Succeeded) || rows.len() != count {
        return Err(crate::failure::input(format!(
            "jobvisor's drain: {} of {count} no-ops succeeded",
            rows.iter()
                .filter(|e| e.status == Status::Succeeded)
                .count()
        )));
    }
    let first = rows.iter().filter_map(|e| e.started_at).min();
    let last = rows.iter().filter_map(|e| e.finished_at).max();
    match (first, last) {
        (Some(f), Some(l)) => Ok(((l.micros() - f.micros()) as f64 / 1000.0, cpu)),
        _ => Err(crate::failure::input(
            "jobvisor's drain recorded no start or end",
        )),
    }
}

fn report(r: &PeersBench, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(r).expect("serializes"));
        return;
    }
    println!(
        "{} no-op jobs enqueued in bulk, then drained (first start -> last recorded end), same PostgreSQL, in turns",
        r.jobs
    );
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>12} {:>12}",
        "system", "round", "drain", "jobs/s", "server CPU", "worker CPU"
    );
    for d in &r.drains {
        println!(
            "{:<16} {:>5} {:>8.0}ms {:>10.0} {:>8.1}us/j {:>8.1}us/j",
            d.system, d.round, d.drain_ms, d.per_s, d.server_cpu_us, d.worker_cpu_us
        );
    }
    println!(
        "CPU per job while each worker ran: every postgres process on this machine; the worker process, its start-up and shutdown included"
    );
    println!(
        "median: jobvisor (serve --concurrency {}) {:.0}/s, {GRAPHILE} (24 at once, local queue 500) {:.0}/s: {:.2}x",
        r.concurrency, r.jobvisor_per_s, r.graphile_per_s, r.ratio
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_password_never_reaches_the_runners_command_line() {
        let url = "postgres://bench:s3cret@db.internal/peers";
        let cmd = runner_command(Path::new("/tmp"), "drain", url, 20_000);
        let args: Vec<_> = cmd.as_std().get_args().collect();
        assert_eq!(args, ["runner.cjs", "drain", "20000"]);
        let env: Vec<_> = cmd.as_std().get_envs().collect();
        assert!(env.contains(&("DATABASE_URL".as_ref(), Some(url.as_ref()))));
    }
}
