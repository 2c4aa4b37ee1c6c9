//! Child `jobvisor serve` processes of the benches that measure the real
//! service from outside (isolation, wake-up).

use crate::failure::CliError;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `jobvisor serve` child of a bench, its stdout counted and the end of
/// its stderr kept; killed if dropped.
pub(super) struct Serve {
    child: Child,
    stdout: Arc<AtomicU64>,
    stderr: Arc<Mutex<Vec<String>>>,
    cgroups: Arc<Mutex<String>>,
    /// The HTTP API's address, once its log says it listens.
    http: Arc<Mutex<Option<String>>>,
    status: Option<std::process::ExitStatus>,
}

/// `exe serve` on `db` with the (empty) config file `config`, loopback port
/// 0, and `extra` flags. The database's URL, which may hold a password,
/// goes in the environment (`JOBVISOR_DATABASE`), never on the command
/// line, which any local user can read.
fn command(exe: &Path, worker: &Path, db: &str, config: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("JOBVISOR_DATABASE", db)
        .env("JOBVISOR_WORKER", worker)
        .env("RUST_BACKTRACE", "0")
        // Plain log lines, read for the HTTP address.
        .env("NO_COLOR", "1")
        // For the isolation matrix, which runs `misbehave` in-process too.
        .env(jobvisor_worker::builtins::MISBEHAVE_INPROC_ENV, "1");
    cmd
}

impl Serve {
    /// Starts `exe serve` on `db` with the (empty) config file `config`,
    /// loopback port 0, and `extra` flags.
    fn start(
        exe: &Path,
        worker: &Path,
        db: &str,
        config: &Path,
        extra: &[&str],
    ) -> Result<Self, CliError> {
        let mut child = command(exe, worker, db, config, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| crate::failure::input(format!("cannot start {}: {e}", exe.display())))?;
        let stdout_bytes = Arc::new(AtomicU64::new(0));
        let mut out = child.stdout.take().expect("piped");
        let counted = stdout_bytes.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                counted.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        let tail = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("piped");
        let kept = tail.clone();
        let cgroups = Arc::new(Mutex::new(String::new()));
        let note = cgroups.clone();
        let http = Arc::new(Mutex::new(None));
        let heard = http.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("HTTP API listening") {
                    let addr = line
                        .split("addr=")
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(str::to_string);
                    *heard.lock().expect("not poisoned") = addr;
                }
                if let Some(at) = line.find("cgroup v2") {
                    let mut n = note.lock().expect("not poisoned");
                    if n.is_empty() {
                        *n = line[at..].to_string();
                    }
                }
                let mut t = kept.lock().expect("not poisoned");
                t.push(line);
                if t.len() > 20 {
                    t.remove(0);
                }
            }
        });
        Ok(Self {
            child,
            stdout: stdout_bytes,
            stderr: tail,
            cgroups,
            http,
            status: None,
        })
    }

    /// The HTTP API's address (waits up to 30 s for the log to say it).
    pub(super) async fn http_addr(&mut self) -> Result<String, CliError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(a) = self.http.lock().expect("not poisoned").clone() {
                return Ok(a);
            }
            if self.exited() || std::time::Instant::now() > deadline {
                return Err(crate::failure::input(format!(
                    "serve did not say where it listens: {}",
                    self.tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn pid(&self) -> i32 {
        self.child.id().map_or(0, |p| p as i32)
    }

    pub(super) fn exited(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status.is_some()
    }

    pub(super) fn exit_text(&self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let s = self.status?;
        Some(match (s.signal(), s.code()) {
            (Some(sig), _) => format!(
                "killed by {}",
                nix::sys::signal::Signal::try_from(sig)
                    .map_or(format!("signal {sig}"), |s| { s.as_str().to_string() })
            ),
            (None, Some(code)) => format!("exit code {code}"),
            (None, None) => "ended".to_string(),
        })
    }

    pub(super) fn stdout_bytes(&self) -> u64 {
        self.stdout.load(Ordering::Relaxed)
    }

    /// SIGTERM, then SIGKILL after 5 s; says so if it took SIGKILL.
    pub(super) async fn stop(&mut self) -> String {
        if self.exited() {
            return self.tail();
        }
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(s) => {
                self.status = s.ok();
                String::new()
            }
            Err(_) => {
                let _ = self.child.kill().await;
                self.status = self.child.try_wait().ok().flatten();
                "the supervisor did not stop on SIGTERM and was killed".to_string()
            }
        }
    }

    pub(super) fn cgroup_note(&self) -> String {
        self.cgroups.lock().expect("not poisoned").clone()
    }

    pub(super) fn tail(&self) -> String {
        self.stderr.lock().expect("not poisoned").join(" | ")
    }
}

/// Where a bench starts `serve` children from: this program, the worker
/// program, and a scratch directory (removed when dropped) holding an empty
/// config file, so that no config file of the machine's applies.
pub(super) struct Place {
    /// This program.
    pub(super) exe: PathBuf,
    /// `jobvisor-worker`.
    pub(super) worker: PathBuf,
    /// The scratch directory.
    pub(super) dir: PathBuf,
    config: PathBuf,
}

impl Place {
    pub(super) fn new() -> Result<Self, CliError> {
        let exe = std::env::current_exe()
            .map_err(|e| crate::failure::input(format!("cannot find this program: {e}")))?;
        let dir = super::tempfile_dir()?;
        let config = dir.join("empty.toml");
        let place = Self {
            exe,
            worker: jobvisor::worker_program(),
            dir,
            config,
        };
        std::fs::write(&place.config, "").map_err(|e| {
            crate::failure::input(format!("cannot write {}: {e}", place.config.display()))
        })?;
        Ok(place)
    }

    /// Starts `serve` on `db` with `extra` flags.
    pub(super) fn serve(&self, db: &str, extra: &[&str]) -> Result<Serve, CliError> {
        Serve::start(&self.exe, &self.worker, db, &self.config, extra)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits for `id` to end, looking every `every`, up to `within`; its row
/// when it did.
pub(super) async fn wait_ended(
    store: &dyn jobvisor::store::Reads,
    id: uuid::Uuid,
    within: Duration,
    every: Duration,
) -> Result<Option<jobvisor::model::Execution>, CliError> {
    let t = std::time::Instant::now();
    loop {
        if let Some(e) = store.execution(id).await? {
            if e.finished_at.is_some() {
                return Ok(Some(e));
            }
        }
        if t.elapsed() >= within {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_password_never_reaches_serves_command_line() {
        let url = "postgres://bench:s3cret@db.internal/jobs";
        let cmd = command(
            Path::new("jobvisor"),
            Path::new("jobvisor-worker"),
            url,
            Path::new("empty.toml"),
            &["--concurrency", "512"],
        );
        let args: Vec<String> = cmd
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.iter().all(|a| !a.contains("s3cret")), "{args:?}");
        assert_eq!(args[0], "serve");
        let env: Vec<_> = cmd.as_std().get_envs().collect();
        assert!(env.contains(&("JOBVISOR_DATABASE".as_ref(), Some(url.as_ref()))));
    }
}
