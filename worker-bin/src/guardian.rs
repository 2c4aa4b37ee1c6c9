//! The guardian: `jobvisor-worker --guardian`, one per supervisor. It
//! kills what is left of the supervisor's executions when the supervisor
//! dies without cleaning up (SIGKILL, a crash, the OOM killer), with no
//! restart and no systemd needed.
//!
//! The supervisor keeps the write end of the guardian's stdin and tells it,
//! one line each, which process groups and cgroups are live:
//!
//! ```text
//! +g 12345            a process group (its leader's pid)
//! -g 12345            it ended
//! +c /sys/fs/cgroup/…  a cgroup
//! -c /sys/fs/cgroup/…
//! ```
//!
//! End of input means the supervisor is gone (the kernel closes its
//! descriptors however it dies): every live group gets SIGKILL, every live
//! cgroup `cgroup.kill` (escapees that left the process group included),
//! and the guardian exits. After a clean shutdown nothing is live, so it
//! just exits.
//!
//! It runs in its own process group and ignores SIGINT, SIGTERM and
//! SIGHUP, so that a Ctrl-C at a terminal or a stop signal meant for the
//! supervisor does not end it before the supervisor has finished.

use nix::sys::signal::{kill, killpg, signal, SigHandler, Signal};
use nix::unistd::Pid;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The argument that makes `jobvisor-worker` a guardian.
pub const GUARDIAN_ARG: &str = "--guardian";

/// What is live, as the supervisor last said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Process groups.
    pub groups: HashSet<i32>,
    /// Cgroup directories.
    pub cgroups: HashSet<PathBuf>,
}

impl Live {
    /// Applies one line of the supervisor's; an unknown line is ignored
    /// (and said on stderr): the guardian must not die of one.
    ///
    /// ```
    /// let mut live = jobvisor_worker::guardian::Live::default();
    /// live.apply("+g 4242");
    /// live.apply("+c /sys/fs/cgroup/jobvisor/exec-1");
    /// live.apply("-g 4242");
    /// live.apply("nonsense"); // said on stderr, ignored
    /// assert!(live.groups.is_empty() && live.cgroups.len() == 1);
    /// ```
    pub fn apply(&mut self, line: &str) {
        let (op, rest) = line.split_at(line.len().min(3));
        match op {
            "+g " | "-g " => match rest.trim().parse::<i32>() {
                Ok(pg) if pg > 1 => {
                    if op == "+g " {
                        self.groups.insert(pg);
                    } else {
                        self.groups.remove(&pg);
                    }
                }
                _ => eprintln!("jobvisor-worker --guardian: bad process group in {line:?}"),
            },
            "+c " => {
                self.cgroups.insert(PathBuf::from(rest));
            }
            "-c " => {
                self.cgroups.remove(Path::new(rest));
            }
            _ => eprintln!("jobvisor-worker --guardian: unknown line {line:?}"),
        }
    }

    /// Kills everything live: each process group, then each cgroup's
    /// members; removes the emptied cgroups.
    ///
    /// ```
    /// let live = jobvisor_worker::guardian::Live::default();
    /// live.kill_all(); // nothing live: nothing to kill
    /// ```
    pub fn kill_all(&self) {
        for pg in &self.groups {
            let _ = killpg(Pid::from_raw(*pg), Signal::SIGKILL);
        }
        for dir in &self.cgroups {
            kill_cgroup(dir);
        }
    }
}

fn kill_cgroup(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_err() {
        // Before Linux 5.14: member by member, until none is left.
        for _ in 0..100 {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Killed members leave within microseconds; then the directory can go.
    let until = Instant::now() + Duration::from_secs(1);
    while std::fs::remove_dir(dir).is_err() && Instant::now() < until && dir.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs the guardian on stdin until it ends, then kills what is live.
pub fn run() -> ! {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let mut live = Live::default();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => live.apply(line.trim_end_matches('\n')),
        }
    }
    if !live.groups.is_empty() || !live.cgroups.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "jobvisor-worker --guardian: the supervisor is gone; killing {} process groups and {} cgroups",
            live.groups.len(),
            live.cgroups.len()
        );
        live.kill_all();
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_add_and_remove_what_is_live_and_bad_ones_change_nothing() {
        let mut live = Live::default();
        for l in [
            "+g 100",
            "+g 200",
            "+c /sys/fs/cgroup/x/exec-1",
            "-g 100",
            "+g 1",
            "+g -5",
            "+g abc",
            "bogus",
            "",
            "+c /sys/fs/cgroup/x/exec-2",
            "-c /sys/fs/cgroup/x/exec-1",
        ] {
            live.apply(l);
        }
        assert_eq!(live.groups, HashSet::from([200]));
        assert_eq!(
            live.cgroups,
            HashSet::from([PathBuf::from("/sys/fs/cgroup/x/exec-2")])
        );
    }
}
