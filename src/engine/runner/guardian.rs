//! The supervisor's side of the guardian (`jobvisor-worker --guardian`, see
//! [`jobvisor_worker::guardian`]): a small process that kills what is left
//! of this supervisor's executions if the supervisor dies without cleaning
//! up, so that no grandchild outlives a `kill -9` even when nobody
//! restarts the supervisor.
//!
//! Each worker process holds a [`Watch`] from just after its spawn until it
//! is gone: its process group (and cgroup) is live for the guardian while
//! the watch exists. The guardian is started at the first watch, and
//! started again (and told everything live) if it ever dies. Lines go over
//! a non-blocking pipe: a stopped guardian never blocks the supervisor;
//! what it cannot take yet waits in a buffer.

use std::collections::HashSet;
use std::io::{ErrorKind, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The process group (and cgroup) of one worker process, live for the
/// guardian until dropped.
#[derive(Debug)]
pub struct Watch {
    pgid: i32,
    cgroup: Option<PathBuf>,
}

impl Watch {
    /// Tells the guardian that process group `pgid` (and `cgroup`) is live.
    ///
    /// ```no_run
    /// // The guardian kills this process group should the supervisor die.
    /// let watch = jobvisor::runner::guardian::Watch::new(4242, None);
    /// drop(watch); // the group ended: the guardian forgets it
    /// ```
    pub fn new(pgid: i32, cgroup: Option<&Path>) -> Watch {
        let cgroup = cgroup.map(Path::to_path_buf);
        let mut s = state();
        s.groups.insert(pgid);
        let mut line = format!("+g {pgid}\n");
        if let Some(c) = &cgroup {
            s.cgroups.insert(c.clone());
            line.push_str(&format!("+c {}\n", c.display()));
        }
        s.send(line.as_bytes());
        Watch { pgid, cgroup }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut s = state();
        s.groups.remove(&self.pgid);
        let mut line = format!("-g {}\n", self.pgid);
        if let Some(c) = &self.cgroup {
            s.cgroups.remove(c);
            line.push_str(&format!("-c {}\n", c.display()));
        }
        s.send(line.as_bytes());
    }
}

/// The guardian's pid, starting it if need be (`serve` names it at start);
/// `None` where it cannot run.
pub fn pid() -> Option<u32> {
    let mut s = state();
    if s.proc.is_none() {
        s.restart();
    }
    s.proc.as_ref().map(|(c, _)| c.id())
}

#[derive(Default)]
struct State {
    proc: Option<(Child, ChildStdin)>,
    groups: HashSet<i32>,
    cgroups: HashSet<PathBuf>,
    /// Bytes the pipe could not take yet.
    pending: Vec<u8>,
    /// The guardian cannot be started: said once, not tried again.
    unavailable: bool,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn send(&mut self, bytes: &[u8]) {
        if self.unavailable {
            return;
        }
        if self.proc.is_none() {
            // Starting it says everything live, this line included.
            self.restart();
            return;
        }
        self.pending.extend_from_slice(bytes);
        if !self.flush() {
            self.restart();
        }
    }

    /// Writes what is pending; false when the guardian is gone.
    fn flush(&mut self) -> bool {
        let Some((_, stdin)) = self.proc.as_mut() else {
            return false;
        };
        while !self.pending.is_empty() {
            match stdin.write(&self.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Starts a guardian and tells it everything live.
    fn restart(&mut self) {
        if std::env::var_os("JOBVISOR_NO_GUARDIAN").is_some() {
            // For measuring what the guardian costs (`jobvisor bench`).
            self.unavailable = true;
            tracing::warn!("no guardian: turned off by JOBVISOR_NO_GUARDIAN");
            return;
        }
        if let Some((mut old, stdin)) = self.proc.take() {
            drop(stdin);
            let _ = old.try_wait();
            tracing::warn!(
                pid = old.id(),
                "the guardian process is gone; starting another"
            );
        }
        self.pending.clear();
        let program = crate::worker_program();
        let spawned = Command::new(&program)
            .arg(jobvisor_worker::guardian::GUARDIAN_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.unavailable = true;
                tracing::warn!(
                    program = %program.display(),
                    error = %e,
                    "cannot start the guardian: if this process is killed, processes of its \
                     running executions live on until a supervisor starts on this database"
                );
                return;
            }
        };
        let stdin = child.stdin.take().expect("stdin is piped");
        let nonblocking = nix::fcntl::fcntl(stdin.as_fd(), nix::fcntl::FcntlArg::F_GETFL)
            .map(nix::fcntl::OFlag::from_bits_truncate)
            .and_then(|fl| {
                nix::fcntl::fcntl(
                    stdin.as_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(fl | nix::fcntl::OFlag::O_NONBLOCK),
                )
            });
        if let Err(e) = nonblocking {
            tracing::debug!(error = %e, "guardian pipe stays blocking");
        }
        for pg in &self.groups {
            self.pending
                .extend_from_slice(format!("+g {pg}\n").as_bytes());
        }
        for c in &self.cgroups {
            self.pending
                .extend_from_slice(format!("+c {}\n", c.display()).as_bytes());
        }
        self.proc = Some((child, stdin));
        if !self.flush() {
            tracing::warn!("the guardian process died at start");
            self.unavailable = true;
        }
    }
}
