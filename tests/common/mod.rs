//! Helpers for the integration tests: a fresh database per test, the real
//! `jobvisor` binary serving it, and polling with generous deadlines.
#![allow(dead_code)]

use jobvisor::model::Execution;
use jobvisor::store::{ExecFilter, Store};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use uuid::Uuid;

/// Generous: a slow shared machine must never flake these tests.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn jobvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jobvisor"))
}

pub fn worker_bin() -> PathBuf {
    let p = jobvisor_bin().with_file_name("jobvisor-worker");
    assert!(
        p.is_file(),
        "{} is missing: run the tests with `cargo test --workspace`",
        p.display()
    );
    p
}

pub fn python() -> String {
    if Path::new("/usr/bin/python3").is_file() {
        return "/usr/bin/python3".into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed for the foreign-worker tests");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A temporary directory with a database path in it.
pub struct Env {
    pub dir: TempDir,
    pub db: String,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("jobvisor.db").display().to_string();
        Self { dir, db }
    }

    /// Runs `jobvisor --database DB ARGS...` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .args(args)
            .env("JOBVISOR_WORKER", worker_bin())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "jobvisor {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Enqueues a run and returns its id.
    pub fn enqueue(&self, args: &[&str]) -> Uuid {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Uuid::parse_str(self.ok(&all).trim()).unwrap()
    }

    /// A path in the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable script into the test directory.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    /// Starts `jobvisor serve` on this database.
    pub fn serve(&self, extra: &[&str]) -> Serve {
        self.serve_env(extra, &[])
    }

    /// Registers a `/bin/sh -c SCRIPT` handler with these `handler add`
    /// flags (inline, so that a handler running as another user needs no
    /// access to the test directory).
    pub fn sh_handler(&self, name: &str, script: &str, flags: &[&str]) {
        let mut args = vec![
            "handler", "add", name, "--exec", "/bin/sh", "--arg", "-c", "--arg", script,
        ];
        args.extend_from_slice(flags);
        self.ok(&args);
    }

    /// Runs built-in handler `name` in process mode on a pool of `size`
    /// workers, with extra `handler add` flags.
    pub fn pooled_builtin(&self, name: &str, size: &str, flags: &[&str]) {
        let mut args = vec![
            "handler",
            "add",
            name,
            "--builtin",
            "--mode",
            "process",
            "--pool-size",
            size,
        ];
        args.extend_from_slice(flags);
        self.ok(&args);
    }

    /// Starts `jobvisor serve` with extra environment variables.
    pub fn serve_env(&self, extra: &[&str], vars: &[(&str, &str)]) -> Serve {
        let log = self
            .dir
            .path()
            .join(format!("serve-{}.log", Uuid::now_v7()));
        let child = Command::new(jobvisor_bin())
            .arg("--database")
            .arg(&self.db)
            .args(["serve", "--poll-interval", "20ms"])
            .args(if extra.contains(&"--listen") {
                &[][..]
            } else {
                &["--listen", "127.0.0.1:0"][..]
            })
            // Tests that stop a busy supervisor do not wait out the
            // 30 s default drain.
            .args(if extra.contains(&"--drain-timeout") {
                &[][..]
            } else {
                &["--drain-timeout", "2s"][..]
            })
            .args(extra)
            .env("JOBVISOR_WORKER", worker_bin())
            .env("RUST_BACKTRACE", "0")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serve { child, log }
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        jobvisor::store::open(&self.db).await.unwrap()
    }
}

/// A `jobvisor serve` child, stopped (SIGKILL) when dropped.
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
}

impl Serve {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP API's address, from the service log.
    pub fn http_addr(&self) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if let Some(addr) = log
                .lines()
                .find(|l| l.contains("HTTP API listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return strip_ansi(addr);
            }
            assert!(start.elapsed() < DEADLINE, "no HTTP address in:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the exit (up to the deadline).
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "serve did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- serve log ({}) ---\n{}", self.log.display(), self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes terminal colour codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

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
pub async fn finished(store: &dyn Store, id: Uuid) -> Execution {
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

/// Waits until the execution is running with a pid; returns it.
pub async fn running_with_pid(store: &dyn Store, id: Uuid) -> Execution {
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
pub async fn attempts(store: &dyn Store, job: &str) -> Vec<Execution> {
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

/// Pids of live processes (not zombies) in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Live processes (not zombies) started for execution `id`: every process
/// of a one-shot execution inherits `JOBVISOR_EXECUTION_ID` (escapees that
/// left its process group too).
pub fn execution_processes(id: Uuid) -> Vec<i32> {
    let needle = format!("JOBVISOR_EXECUTION_ID={id}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// Asserts that no process of execution `id` is alive once it finished:
/// killed processes get a moment (not the long deadline) to be gone.
pub async fn assert_no_survivors(id: Uuid) {
    let start = Instant::now();
    loop {
        let left = execution_processes(id);
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "processes of {id} outlived it: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .is_some_and(|zombie| !zombie)
}

/// Waits for a log line of the execution that `pick` accepts; returns what
/// it picked.
pub async fn log_line<T>(
    store: &dyn Store,
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
pub async fn grandchild_pid(store: &dyn Store, id: Uuid) -> i32 {
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

/// A URL of a fresh database on the test server, or `None` (said loudly).
pub async fn pg_database() -> Option<String> {
    let admin = match std::env::var("JOBVISOR_TEST_POSTGRES") {
        Ok(u) => u,
        Err(_) => match std::env::var("PGHOST") {
            Ok(host) => format!(
                "postgres://{}:{}@{host}:{}/{}",
                std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
                std::env::var("PGPASSWORD").unwrap_or_default(),
                std::env::var("PGPORT").unwrap_or_else(|_| "5432".into()),
                std::env::var("PGDATABASE").unwrap_or_else(|_| "postgres".into()),
            ),
            Err(_) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL is required in CI and none was found: run scripts/test"
                );
                eprintln!("!!! PostgreSQL test SKIPPED: no server (set PGHOST or JOBVISOR_TEST_POSTGRES, or run scripts/test)");
                return None;
            }
        },
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let name = format!("jv_nodes_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}
