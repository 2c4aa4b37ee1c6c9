//! `jobvisor bench --scenario isolation`: what each mode contains when a
//! handler misbehaves, from real runs.
//!
//! Each cell runs one fault of the built-in `misbehave` handler in one mode
//! under a fresh `jobvisor serve` (its own SQLite database), while no-op
//! executions of the same mode keep being enqueued beside it. The cell
//! reports whether the fault stayed inside its execution: the execution
//! ended and said why, the supervisor survived, the other executions kept
//! succeeding, and nothing was left behind (processes, descriptors, CPU
//! still burning, bytes on the supervisor's own stdout); and how long the
//! end took to be recorded and the execution's processes to be gone. A
//! supervisor that died is started again, and the time until its lost
//! execution is rescued is reported too.
//!
//! The supervisors run with an address-space ceiling (2 GiB), so that an
//! in-process allocation cannot take the machine down with them.

use super::child::{wait_ended, Place, Serve};
use crate::failure::CliError;
use jobvisor::model::Execution;
use jobvisor::runner::isolate::alive;
use jobvisor::{RunSpec, Status, Supervisor};
use jobvisor_worker::builtins::MISBEHAVIOURS;
use serde::Serialize;
use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;
use uuid::Uuid;

/// The misbehaving execution's timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// The timeout of `oom`, whose end the memory limit should bring.
const OOM_TIMEOUT: Duration = Duration::from_secs(30);
/// Cancel grace and kill grace of the misbehaving handler.
const GRACE: &str = "500ms";
/// The process modes' memory limit (`oom`).
const MEMORY: &str = "256M";
/// Address space each supervisor may map.
const SUPERVISOR_AS: u64 = 2 << 30;
/// The node lease of the supervisors, so that a dead one's executions are
/// rescued within seconds.
const NODE_LEASE: &str = "2s";
/// How often an execution's row is looked at while it is waited for.
const LOOK_EVERY: Duration = Duration::from_millis(10);
/// The supervisors' flags: quick polls and drains, and a short lease.
const SERVE_FLAGS: [&str; 6] = [
    "--poll-interval",
    "20ms",
    "--drain-timeout",
    "1s",
    "--node-lease",
    NODE_LEASE,
];
/// How long a fault gets, beyond its timeout, to end its execution before
/// the cell says it never did.
const END_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes the `flood` writes.
const FLOOD_BYTES: u64 = 64 << 20;
/// Descriptors the `fds` fault leaks.
const LEAKED_FDS: u64 = 1000;
/// Bytes of filler that make `stdin`'s run line larger than a pipe.
const STDIN_FILLER: usize = 1 << 20;

/// One cell of the matrix.
#[derive(Debug, Serialize)]
pub struct IsolationRow {
    /// The fault (one of `misbehave`'s).
    pub misbehaviour: String,
    /// `inproc`, `process` or `pooled`.
    pub mode: String,
    /// All of the below held: the fault stayed inside its execution.
    pub contained: bool,
    /// Why not, one clause per failed check; empty when contained.
    pub not_contained: Vec<String>,
    /// The supervisor was still running at the end of the cell.
    pub supervisor_survived: bool,
    /// How the supervisor ended, when it did not survive.
    pub supervisor_exit: Option<String>,
    /// Other executions enqueued while the fault ran that succeeded.
    pub others_succeeded: usize,
    /// Other executions enqueued while the fault ran.
    pub others_total: usize,
    /// The misbehaving execution's status at the end of the cell.
    pub status: String,
    /// Its recorded error.
    pub error: Option<String>,
    /// From its start to its end recorded (detection), ms.
    pub detect_ms: Option<f64>,
    /// From its end recorded until its processes were seen gone, ms (an
    /// upper bound: they are looked for every 5 ms from soon after the end).
    pub cleanup_ms: Option<f64>,
    /// Its processes still alive 5 s after its end (the bench kills them).
    pub left_behind: usize,
    /// Descriptors held by the supervisor and its workers after the fault,
    /// less before it.
    pub fds_delta: i64,
    /// CPU the supervisor and its workers used in the second after the
    /// end, in cores.
    pub cpu_after: f64,
    /// Bytes the supervisor wrote to its own stdout during the cell.
    pub supervisor_stdout_bytes: u64,
    /// A supervisor that died was started again: time until the lost
    /// execution was rescued, ms.
    pub rescued_ms: Option<f64>,
}

/// Everything `bench --scenario isolation --json` prints.
#[derive(Debug, Serialize)]
pub struct IsolationBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// The misbehaving execution's timeout, ms.
    pub timeout_ms: u64,
    /// The process modes' memory limit.
    pub memory_limit: &'static str,
    /// What the supervisors said at start about cgroup v2, which the
    /// process modes' limits and kills use where it is delegated (otherwise
    /// rlimits and process groups).
    pub cgroups: String,
    /// One row per misbehaviour and mode.
    pub rows: Vec<IsolationRow>,
}

/// Runs the matrix (the misbehaviours and modes `a` names).
pub(super) async fn bench_isolation(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<IsolationBench, CliError> {
    if database.is_some() {
        return Err(crate::failure::input(
            "--scenario isolation makes its own SQLite databases; leave out --database",
        ));
    }
    // Clap has checked the names.
    let only = &a.misbehaviours;
    let modes: Vec<String> = a.modes.iter().map(|m| m.to_string()).collect();
    // Each supervisor inherits this ceiling (the bench itself maps far
    // less): an allocation in-process fails there, not in the machine.
    cap_address_space();
    let place = Place::new()?;
    let mut rows = Vec::new();
    let mut cgroups = String::new();
    for what in MISBEHAVIOURS {
        if !only.is_empty() && !only.iter().any(|m| m == what) {
            continue;
        }
        for mode in &modes {
            let cell = Cell {
                place: &place,
                what,
                mode,
            };
            let (row, said) = cell.run().await?;
            rows.push(row);
            if cgroups.is_empty() {
                cgroups = said;
            }
        }
    }
    let r = IsolationBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        timeout_ms: TIMEOUT.as_millis() as u64,
        memory_limit: MEMORY,
        cgroups,
        rows,
    };
    Ok(r)
}

/// The matrix as a table.
pub(super) fn print_matrix(r: &IsolationBench) {
    println!(
        "{} cores | each fault of `misbehave` in each mode under a fresh `jobvisor serve` (SQLite), no-ops enqueued beside it | timeout {} ms (oom: {} s), grace {GRACE}, process memory limit {}, supervisor address space {} GiB, node lease {NODE_LEASE}\n{}",
        r.cores,
        r.timeout_ms,
        OOM_TIMEOUT.as_secs(),
        r.memory_limit,
        SUPERVISOR_AS >> 30,
        r.cgroups
    );
    println!(
        "{:<11} {:<8} {:<9} {:<10} {:>7} {:>9} {:>9}  outcome",
        "fault", "mode", "contained", "supervisor", "others", "detected", "cleaned"
    );
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}ms"));
    for row in &r.rows {
        let outcome = if row.contained {
            format!("{}: {}", row.status, row.error.as_deref().unwrap_or(""))
        } else {
            row.not_contained.join("; ")
        };
        println!(
            "{:<11} {:<8} {:<9} {:<10} {:>7} {:>9} {:>9}  {}",
            row.misbehaviour,
            row.mode,
            if row.contained { "yes" } else { "NO" },
            if row.supervisor_survived {
                "survived"
            } else {
                "died"
            },
            format!("{}/{}", row.others_succeeded, row.others_total),
            ms(row.detect_ms),
            ms(row.cleanup_ms),
            one_line(&outcome, 110),
        );
    }
    println!(
        "contained: the execution ended and said why, the supervisor survived, the other executions kept succeeding, and no process, descriptor, busy CPU or supervisor stdout outlived it. detected: start to end recorded; cleaned: end recorded to its processes seen gone (at most)."
    );
}

/// A few words for a chart's cell: how the fault ended when contained,
/// else the first thing that was not.
pub(super) fn short(row: &IsolationRow) -> String {
    if row.contained {
        let how = match row.error.as_deref() {
            Some(e) if e.contains("timed out") => "timed out",
            Some(e) if e.contains("SIGSEGV") => "SIGSEGV",
            Some(e) if e.contains("SIGABRT") => "SIGABRT",
            Some(e) if e.contains("SIGKILL") => "SIGKILL",
            Some(e) if e.contains("panicked") => "panic caught",
            _ => row.status.as_str(),
        };
        return match row.detect_ms {
            Some(ms) => format!("{how}, {ms:.0} ms"),
            None => how.to_string(),
        };
    }
    if !row.supervisor_survived {
        return match row.rescued_ms {
            Some(ms) if ms < 1000.0 => {
                format!("supervisor died; rescued {ms:.0} ms after restart")
            }
            Some(ms) => format!(
                "supervisor died; rescued {:.1} s after restart",
                ms / 1000.0
            ),
            None => "supervisor died".to_string(),
        };
    }
    if row.detect_ms.is_none() {
        return "never ended: a runtime thread lost".to_string();
    }
    if row.left_behind > 0 {
        return format!("{} process left behind", row.left_behind);
    }
    if row.fds_delta >= (LEAKED_FDS / 2) as i64 {
        return format!("+{} descriptors kept", row.fds_delta);
    }
    if row.supervisor_stdout_bytes > 0 {
        return format!(
            "{:.0} MiB on the supervisor's stdout",
            row.supervisor_stdout_bytes as f64 / 1048576.0
        );
    }
    row.not_contained.first().cloned().unwrap_or_default()
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= max {
        s
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

/// One fault in one mode.
struct Cell<'a> {
    place: &'a Place,
    what: &'a str,
    mode: &'a str,
}

/// What was seen while the fault ran and in the second after its end.
struct Seen {
    /// Its end as recorded (none: never recorded in time).
    ended: Option<Execution>,
    /// The supervisor died.
    died: bool,
    /// No-ops enqueued beside it, from its start to a second after its end.
    others: Vec<Uuid>,
    /// Of those, the ones that succeeded while the supervisor ran.
    others_succeeded: usize,
    /// Cores the supervisor and its workers used in the second after.
    cpu_after: f64,
    /// The fault's processes: how long until gone after its end (ms), and
    /// those still alive 5 s after it.
    cleanup_ms: Option<f64>,
    left: Vec<i32>,
}

impl Cell<'_> {
    /// The cell's row, and what its supervisor said about cgroups.
    async fn run(&self) -> Result<(IsolationRow, String), CliError> {
        let db = self
            .place
            .dir
            .join(format!("{}-{}.db", self.what, self.mode))
            .display()
            .to_string();
        // The argument by which the fault's processes are found again.
        let mark = format!("3600.{:06}", Uuid::now_v7().as_u128() % 1_000_000);
        let (mut serve, sup) = self.start(&db, &mark).await?;
        let before = Tree::of(serve.pid());
        let (bad, timeout) = self.misbehave(&sup, &mark).await?;
        let seen = self.watch(&sup, &mut serve, bad, timeout, &mark).await?;
        let died = seen.died;
        let fds_delta = match died {
            true => 0,
            false => Tree::of(serve.pid()).fds as i64 - before.fds as i64,
        };
        let stdout_bytes = serve.stdout_bytes();
        let supervisor_exit = if died { serve.exit_text() } else { None };
        // A supervisor that died is started again, as systemd would: how
        // long until its lost execution is rescued.
        let rescued_ms = match died {
            true => self.restart(&db, &mut serve, sup.store(), bad).await?,
            false => None,
        };
        let stuck_note = serve.stop().await;
        for pid in marked(&mark).into_iter().chain(seen.left.iter().copied()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let e = sup.store().execution(bad).await?;
        let status = e.as_ref().map_or("missing".to_string(), |e| {
            if died && rescued_ms.is_some() {
                format!("{} (after a restart)", e.status)
            } else {
                e.status.to_string()
            }
        });
        let mut not = self.not_contained(&seen, &supervisor_exit, fds_delta, stdout_bytes);
        if !died && seen.ended.is_none() {
            not.insert(
                0,
                format!(
                    "its end was never recorded (still {} after {} s{})",
                    status,
                    (timeout + END_DEADLINE).as_secs(),
                    if stuck_note.is_empty() {
                        String::new()
                    } else {
                        format!("; {stuck_note}")
                    }
                ),
            );
        }
        let row = IsolationRow {
            misbehaviour: self.what.to_string(),
            mode: self.mode.to_string(),
            contained: not.is_empty(),
            not_contained: not,
            supervisor_survived: !died,
            supervisor_exit,
            others_succeeded: seen.others_succeeded,
            others_total: seen.others.len(),
            status,
            error: e.as_ref().and_then(|e| e.error.clone()),
            detect_ms: seen.ended.as_ref().and_then(|e| {
                Some((e.finished_at?.micros() - e.started_at?.micros()) as f64 / 1000.0)
            }),
            cleanup_ms: seen.cleanup_ms,
            left_behind: seen.left.len(),
            fds_delta,
            cpu_after: seen.cpu_after,
            supervisor_stdout_bytes: stdout_bytes,
            rescued_ms,
        };
        Ok((row, serve.cgroup_note()))
    }

    /// Registers the cell's handlers and starts its supervisor, ready once
    /// a no-op has run.
    async fn start(&self, db: &str, mark: &str) -> Result<(Serve, Supervisor), CliError> {
        self.register(db, mark).await?;
        let mut serve = self.place.serve(db, &SERVE_FLAGS)?;
        let sup = Supervisor::builder().database(db).build().await?;
        let first = sup
            .enqueue(RunSpec::new("noop", serde_json::Value::Null))
            .await?;
        let ready = wait_ended(
            sup.store().as_ref(),
            first,
            Duration::from_secs(30),
            LOOK_EVERY,
        )
        .await?;
        if ready.is_none_or(|e| e.status != Status::Succeeded) {
            let tail = serve.stop().await;
            return Err(crate::failure::input(format!(
                "the supervisor for {} in {} did not run a no-op: {tail}",
                self.what, self.mode
            )));
        }
        Ok((serve, sup))
    }

    /// Enqueues the fault; gives its id and its timeout.
    async fn misbehave(&self, sup: &Supervisor, mark: &str) -> Result<(Uuid, Duration), CliError> {
        let payload = match self.what {
            "grandchild" => serde_json::json!({ "do": "grandchild", "mark": mark }),
            "flood" => serde_json::json!({ "do": "flood", "bytes": FLOOD_BYTES }),
            "fds" => serde_json::json!({ "do": "fds", "count": LEAKED_FDS }),
            "stdin" => serde_json::json!({ "do": "stdin", "filler": "x".repeat(STDIN_FILLER) }),
            other => serde_json::json!({ "do": other }),
        };
        let mut spec = RunSpec::new("misbehave", payload);
        let timeout = if self.what == "oom" {
            OOM_TIMEOUT
        } else {
            TIMEOUT
        };
        spec.timeout = Some(timeout);
        Ok((sup.enqueue(spec).await?, timeout))
    }

    /// Follows the fault to its end with a no-op every 100 ms beside it,
    /// then the second after: CPU still used, more no-ops, whether each
    /// no-op succeeded, and whether the fault's processes went.
    async fn watch(
        &self,
        sup: &Supervisor,
        serve: &mut Serve,
        bad: Uuid,
        timeout: Duration,
        mark: &str,
    ) -> Result<Seen, CliError> {
        let mut others = Vec::new();
        let t0 = Instant::now();
        let (mut ended, mut died) = (None::<Execution>, false);
        // Looked at every 10 ms, so that the watch of its processes starts
        // soon after its end.
        let mut polls = 0u32;
        while t0.elapsed() < timeout + END_DEADLINE {
            if polls.is_multiple_of(10) {
                others.push(noop(sup).await?);
            }
            polls += 1;
            if let Some(e) = sup.store().execution(bad).await? {
                if e.finished_at.is_some() {
                    ended = Some(e);
                    break;
                }
            }
            if serve.exited() {
                died = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ended_at = Instant::now();
        // Its processes, watched from its end: the worker (unless a pooled
        // one lives on) and anything started under the mark.
        let worker_pid = ended
            .as_ref()
            .and_then(|e| e.pid)
            .filter(|_| self.mode == "process" || self.what == "stdin")
            .map(|p| p as i32);
        let watcher = ended
            .is_some()
            .then(|| tokio::spawn(watch_gone(mark.to_string(), worker_pid)));
        let cpu0 = Tree::of(serve.pid()).cpu_ms;
        for _ in 0..10 {
            if serve.exited() {
                died = true;
                break;
            }
            others.push(noop(sup).await?);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cpu_after = if died {
            0.0
        } else {
            (Tree::of(serve.pid()).cpu_ms.saturating_sub(cpu0)) as f64
                / ended_at.elapsed().as_millis().max(1) as f64
        };
        // The others: each must end, and succeed, while this supervisor
        // still runs.
        let mut others_succeeded = 0;
        if !died {
            for id in &others {
                let left = Duration::from_secs(10).saturating_sub(ended_at.elapsed());
                if let Some(e) = wait_ended(sup.store().as_ref(), *id, left, LOOK_EVERY).await? {
                    others_succeeded += usize::from(e.status == Status::Succeeded);
                }
            }
        }
        died |= serve.exited();
        let (cleanup_ms, left) = match (watcher, &ended) {
            (Some(w), Some(e)) => {
                let (gone, left) = w.await.expect("the watcher does not panic");
                let end = e.finished_at.map_or(0, |f| f.micros());
                (gone.map(|g| (g - end).max(0) as f64 / 1000.0), left)
            }
            _ => {
                let mut left = marked(mark);
                left.extend(worker_pid.filter(|p| alive(*p)));
                (None, left)
            }
        };
        Ok(Seen {
            ended,
            died,
            others,
            others_succeeded,
            cpu_after,
            cleanup_ms,
            left,
        })
    }

    /// Starts the supervisor that died again; how long until execution
    /// `bad` is no longer running (rescued), ms.
    async fn restart(
        &self,
        db: &str,
        serve: &mut Serve,
        store: &jobvisor::store::Database,
        bad: Uuid,
    ) -> Result<Option<f64>, CliError> {
        serve.stop().await;
        let restarted = Instant::now();
        *serve = self.place.serve(db, &SERVE_FLAGS)?;
        while restarted.elapsed() < Duration::from_secs(30) {
            if let Some(e) = store.execution(bad).await? {
                if e.status != Status::Running {
                    return Ok(Some(restarted.elapsed().as_secs_f64() * 1000.0));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(None)
    }

    /// Why the fault was not contained, one clause per failed check (but
    /// an end never recorded, which the caller words).
    fn not_contained(
        &self,
        seen: &Seen,
        supervisor_exit: &Option<String>,
        fds_delta: i64,
        stdout_bytes: u64,
    ) -> Vec<String> {
        let mut not = Vec::new();
        if seen.died {
            not.push(format!(
                "the supervisor died ({})",
                supervisor_exit.as_deref().unwrap_or("exited")
            ));
        }
        if !seen.died && seen.others_succeeded < seen.others.len() {
            not.push(format!(
                "other executions stalled ({}/{} succeeded)",
                seen.others_succeeded,
                seen.others.len()
            ));
        }
        if !seen.left.is_empty() {
            not.push(format!(
                "{} process(es) left behind 5 s after its end",
                seen.left.len()
            ));
        }
        if fds_delta >= (LEAKED_FDS / 2) as i64 {
            not.push(format!(
                "{fds_delta} more descriptors stayed open in the {}",
                if self.mode == "inproc" {
                    "supervisor"
                } else {
                    "supervisor's workers"
                }
            ));
        }
        if seen.cpu_after >= 0.5 {
            not.push(format!(
                "still burning {:.1} core(s) after its end",
                seen.cpu_after
            ));
        }
        if stdout_bytes > 0 {
            not.push(format!(
                "{:.1} MiB written to the supervisor's own stdout",
                stdout_bytes as f64 / 1048576.0
            ));
        }
        not
    }

    /// The `misbehave` and `noop` handlers in this cell's mode.
    async fn register(&self, db: &str, mark: &str) -> Result<(), CliError> {
        let mut bad: Vec<String> = vec!["handler".into(), "add".into(), "misbehave".into()];
        if self.what == "stdin" && self.mode != "inproc" {
            // A program that never reads its stdin at all, given a run line
            // larger than the pipe.
            bad.extend(["--exec".into(), "sleep".into(), "--arg".into(), mark.into()]);
        } else {
            bad.push("--builtin".into());
        }
        let mode_flags: &[&str] = match self.mode {
            "inproc" => &["--mode", "inproc"],
            "process" => &["--mode", "process"],
            _ => &["--mode", "process", "--pool-size", "2"],
        };
        bad.extend(mode_flags.iter().map(|s| s.to_string()));
        bad.extend(
            ["--cancel-grace", GRACE, "--kill-grace", GRACE]
                .iter()
                .map(|s| s.to_string()),
        );
        if self.mode != "inproc" {
            bad.extend(["--memory".into(), MEMORY.into()]);
        }
        let mut noop: Vec<String> = ["handler", "add", "noop", "--builtin"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        noop.extend(mode_flags.iter().map(|s| s.to_string()));
        // The cell's database is made first: only `migrate` and `serve`
        // create one.
        for args in [vec!["migrate".to_string()], bad, noop] {
            let out = Command::new(&self.place.exe)
                .arg("--database")
                .arg(db)
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| {
                    crate::failure::input(format!("cannot run {}: {e}", self.place.exe.display()))
                })?;
            if !out.status.success() {
                return Err(crate::failure::input(format!(
                    "{} failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }
}

/// Watches a fault's processes from its end: when the last was gone
/// (µs since the epoch), and which were still alive 5 s later.
async fn watch_gone(mark: String, worker: Option<i32>) -> (Option<i64>, Vec<i32>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = marked(&mark);
        left.extend(worker.filter(|p| alive(*p)));
        if left.is_empty() {
            return (Some(jobvisor::model::now_micros()), left);
        }
        if Instant::now() > deadline {
            return (None, left);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A process and its descendants: descriptors held and CPU used so far.
#[derive(Default)]
struct Tree {
    fds: usize,
    cpu_ms: u64,
}

impl Tree {
    fn of(root: i32) -> Self {
        let mut t = Tree::default();
        if root <= 0 {
            return t;
        }
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some(ppid) = parent_of(pid) {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
        let mut todo = vec![root];
        while let Some(pid) = todo.pop() {
            t.fds += std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
            t.cpu_ms += jobvisor::runner::isolate::cpu_time_ms(pid).unwrap_or(0);
            todo.extend(children.get(&pid).into_iter().flatten());
        }
        t
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes whose command line is `sleep MARK`.
fn marked(mark: &str) -> Vec<i32> {
    let want = format!("sleep\0{mark}\0");
    let mut found = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes())
                && alive(pid)
            {
                found.push(pid);
            }
        }
    }
    found
}

/// Lowers this process's soft address-space limit to [`SUPERVISOR_AS`]
/// (never raises it), for the supervisors it starts to inherit.
fn cap_address_space() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_AS) {
        let cap = SUPERVISOR_AS.min(soft).min(hard);
        let _ = setrlimit(Resource::RLIMIT_AS, cap, hard);
    }
}

/// Enqueues a no-op beside the fault.
async fn noop(sup: &Supervisor) -> Result<Uuid, CliError> {
    Ok(sup
        .enqueue(RunSpec::new("noop", serde_json::Value::Null))
        .await?)
}
