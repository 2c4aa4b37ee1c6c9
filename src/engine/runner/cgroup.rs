//! cgroup v2: one cgroup per process-mode execution (or per pooled worker),
//! for limits (`memory.max`, `pids.max`, `cpu.max`) and for killing
//! everything the execution started, `setsid` escapees included
//! (`cgroup.kill`).
//!
//! The supervisor needs a writable cgroup v2 directory: under systemd,
//! `Delegate=yes` gives the service its own subtree. Detection runs once per
//! process and says what it found; where a part is missing (no v2
//! hierarchy, not writable, a controller not delegated), limits fall back to
//! rlimits and the process group, and the logs say so. A limit is never
//! reported as enforced when it is not.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The controllers jobvisor uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controllers {
    /// `memory.max`.
    pub memory: bool,
    /// `pids.max`.
    pub pids: bool,
    /// `cpu.max`.
    pub cpu: bool,
}

/// A usable cgroup v2 directory for executions.
#[derive(Debug)]
pub struct Hierarchy {
    /// The directory execution cgroups are created in (no process of its own).
    pub base: PathBuf,
    /// Controllers enabled for execution cgroups.
    pub controllers: Controllers,
    /// The kernel has `cgroup.kill` (5.14+); otherwise members are killed
    /// one by one until none is left.
    pub kill_file: bool,
}

/// What detection found.
#[derive(Debug)]
pub enum Availability {
    /// cgroups can be used, with these controllers.
    Available(Hierarchy),
    /// They cannot; why.
    Unavailable(String),
}

impl Availability {
    /// The hierarchy, if usable.
    ///
    /// ```
    /// let cgroups = jobvisor::runner::cgroup::detect().hierarchy().is_some();
    /// println!("one cgroup per execution: {cgroups}");
    /// ```
    pub fn hierarchy(&self) -> Option<&Hierarchy> {
        match self {
            Availability::Available(h) => Some(h),
            Availability::Unavailable(_) => None,
        }
    }

    /// One line for the start-up log.
    ///
    /// ```
    /// println!("{}", jobvisor::runner::cgroup::detect().describe());
    /// ```
    pub fn describe(&self) -> String {
        match self {
            Availability::Unavailable(why) => format!(
                "cgroup v2 not available ({why}): memory, pids and cpu limits fall back to rlimits, \
                 and escapees from the process group are found through the pipes they hold"
            ),
            Availability::Available(h) => {
                let c = h.controllers;
                let (on, off): (Vec<_>, Vec<_>) =
                    [("memory", c.memory), ("pids", c.pids), ("cpu", c.cpu)]
                        .into_iter()
                        .partition(|(_, on)| *on);
                let names = |v: Vec<(&'static str, bool)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
                let (on, off) = (names(on), names(off));
                let mut s = format!(
                    "cgroup v2 in {}: one cgroup per execution, killed as a whole{}",
                    h.base.display(),
                    if h.kill_file {
                        " (cgroup.kill)"
                    } else {
                        ""
                    }
                );
                if !on.is_empty() {
                    s.push_str(&format!("; controllers: {}", on.join(", ")));
                }
                if !off.is_empty() {
                    s.push_str(&format!(
                        "; not delegated here: {} (those limits fall back to rlimits, cpu.max is not enforced)",
                        off.join(", ")
                    ));
                }
                s
            }
        }
    }
}

/// The controllers this process's cgroup could hand to executions, read
/// without changing anything (for `handler add`'s notes).
pub fn probe() -> Controllers {
    own_cgroup_dir()
        .map(|own| read_controllers(&own.join("cgroup.controllers")))
        .unwrap_or_default()
}

/// Detects (once per process) whether and how cgroup v2 can be used.
pub fn detect() -> &'static Availability {
    static DETECTED: OnceLock<Availability> = OnceLock::new();
    DETECTED.get_or_init(|| match try_detect() {
        Ok(h) => Availability::Available(h),
        Err(why) => Availability::Unavailable(why),
    })
}

/// Removes this process's cgroup directory (at exit, once no execution
/// runs; executions' groups are gone by then).
pub fn release() {
    if let Some(h) = detect().hierarchy() {
        let _ = fs::remove_dir(&h.base);
    }
}

fn try_detect() -> Result<Hierarchy, String> {
    if std::env::var_os("JOBVISOR_NO_CGROUP").is_some() {
        return Err("turned off by JOBVISOR_NO_CGROUP".into());
    }
    let own = own_cgroup_dir()?;
    let wanted = read_controllers(&own.join("cgroup.controllers"));
    let enabled = read_controllers(&own.join("cgroup.subtree_control"));
    let missing = Controllers {
        memory: wanted.memory && !enabled.memory,
        pids: wanted.pids && !enabled.pids,
        cpu: wanted.cpu && !enabled.cpu,
    };
    if missing != Controllers::default() && own != own_root()? {
        // A process may not sit in a cgroup whose controllers it hands to
        // children (the "no internal processes" rule): under a delegated
        // service cgroup, the supervisor moves itself into a leaf first,
        // as systemd's delegation guide asks.
        if enable(&own, missing).is_err() {
            let leaf = own.join("supervisor");
            let _ = fs::create_dir(&leaf);
            if fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).is_ok() {
                let _ = enable(&own, missing);
            }
        }
    }
    remove_stale(&own);
    let base = own.join(format!("jobvisor-{}", std::process::id()));
    match fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(format!(
                "{} is not writable: {e}; under systemd, set Delegate=yes",
                own.display()
            ))
        }
    }
    let available = read_controllers(&base.join("cgroup.controllers"));
    let mut controllers = Controllers::default();
    for (name, on, slot) in [
        ("memory", available.memory, &mut controllers.memory),
        ("pids", available.pids, &mut controllers.pids),
        ("cpu", available.cpu, &mut controllers.cpu),
    ] {
        if on && write_file(&base.join("cgroup.subtree_control"), &format!("+{name}")).is_ok() {
            *slot = true;
        }
    }
    Ok(Hierarchy {
        kill_file: base.join("cgroup.kill").exists(),
        base,
        controllers,
    })
}

fn enable(dir: &Path, c: Controllers) -> io::Result<()> {
    let mut s = Vec::new();
    for (name, on) in [("memory", c.memory), ("pids", c.pids), ("cpu", c.cpu)] {
        if on {
            s.push(format!("+{name}"));
        }
    }
    write_file(&dir.join("cgroup.subtree_control"), &s.join(" "))
}

fn read_controllers(path: &Path) -> Controllers {
    let text = fs::read_to_string(path).unwrap_or_default();
    let has = |n: &str| text.split_whitespace().any(|w| w == n);
    Controllers {
        memory: has("memory"),
        pids: has("pids"),
        cpu: has("cpu"),
    }
}

/// The cgroup2 mount point and the mount's root path within the hierarchy.
fn cgroup2_mount() -> Result<(PathBuf, String), String> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    for line in info.lines() {
        // id parent major:minor root mountpoint options ... - fstype source ...
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let f: Vec<&str> = left.split_whitespace().collect();
        if f.len() >= 5 {
            return Ok((PathBuf::from(unescape(f[4])), unescape(f[3])));
        }
    }
    Err("no cgroup2 file system is mounted".into())
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t")
}

fn own_root() -> Result<PathBuf, String> {
    Ok(cgroup2_mount()?.0)
}

fn own_cgroup_dir() -> Result<PathBuf, String> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("this process is in no cgroup v2 hierarchy")?;
    let (mount, root) = cgroup2_mount()?;
    let rel = rel.strip_prefix(root.as_str()).unwrap_or(rel);
    let dir = mount.join(rel.trim_start_matches('/'));
    if !dir.is_dir() {
        return Err(format!(
            "{} is not visible in this mount namespace",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Removes `jobvisor-PID` directories left by supervisors that are gone,
/// killing anything still in them.
fn remove_stale(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("jobvisor-"))
            .and_then(|p| p.parse::<i64>().ok())
        else {
            continue;
        };
        if pid == std::process::id() as i64 || super::os::pid_alive(pid) {
            continue;
        }
        if let Ok(children) = fs::read_dir(e.path()) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let g = Group {
                    dir: c.path(),
                    kill_file: c.path().join("cgroup.kill").exists(),
                };
                g.kill();
                g.remove();
                std::mem::forget(g);
            }
        }
        let _ = fs::remove_dir(e.path());
    }
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Limits to put on one cgroup.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// `memory.max` in bytes (and `memory.swap.max` 0).
    pub memory_max: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<u64>,
    /// `cpu.max` in cores.
    pub cpu_max: Option<f64>,
}

/// One execution's (or pooled worker's) cgroup. Dropping it kills whatever
/// is left in it and removes it.
#[derive(Debug)]
pub struct Group {
    dir: PathBuf,
    kill_file: bool,
}

/// Counters of a group's limit events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Processes the memory limit killed (`memory.events` oom_kill).
    pub oom_kills: u64,
    /// Forks refused by the pids limit (`pids.events` max).
    pub pids_refused: u64,
}

impl Group {
    /// Creates a new cgroup under the hierarchy with these limits.
    ///
    /// ```no_run
    /// # fn demo(h: &jobvisor::runner::cgroup::Hierarchy, limits: &jobvisor::runner::cgroup::Limits) {
    /// let group = jobvisor::runner::cgroup::Group::create(h, "exec-1", limits).unwrap();
    /// println!("{}", group.dir().display());
    /// # }
    /// ```
    pub fn create(h: &Hierarchy, tag: &str, limits: &Limits) -> io::Result<Group> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = h.base.join(format!("{tag}-{n}"));
        fs::create_dir(&dir)?;
        let g = Group {
            dir,
            kill_file: h.kill_file,
        };
        if let (Some(max), true) = (limits.memory_max, h.controllers.memory) {
            write_file(&g.dir.join("memory.max"), &max.to_string())?;
            // Without this a memory limit only moves pages to swap.
            let _ = write_file(&g.dir.join("memory.swap.max"), "0");
        }
        if let (Some(max), true) = (limits.pids_max, h.controllers.pids) {
            write_file(&g.dir.join("pids.max"), &max.to_string())?;
        }
        if let (Some(cores), true) = (limits.cpu_max, h.controllers.cpu) {
            let period = 100_000u64;
            let quota = ((cores * period as f64) as u64).max(1_000);
            write_file(&g.dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        Ok(g)
    }

    /// Its directory.
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// let procs = g.dir().join("cgroup.procs");
    /// # }
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An open `cgroup.procs` for the child to write "0" into between fork
    /// and exec, so that it starts inside the group (its first fork too).
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// let fd = g.procs_fd().unwrap(); // a child joins through it before exec
    /// # }
    /// ```
    pub fn procs_fd(&self) -> io::Result<OwnedFd> {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        Ok(OwnedFd::from(f))
    }

    /// Pids in the group now.
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// for pid in g.pids() {
    ///     println!("still in the group: {pid}");
    /// }
    /// # }
    /// ```
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Limit events so far.
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// let events = g.events();
    /// println!("{events:?}");
    /// # }
    /// ```
    pub fn events(&self) -> Events {
        let field = |file: &str, key: &str| {
            fs::read_to_string(self.dir.join(file))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().unwrap_or(0)))
                .unwrap_or(0)
        };
        Events {
            oom_kills: field("memory.events", "oom_kill "),
            pids_refused: field("pids.events", "max "),
        }
    }

    /// Kills every process in the group, escapees from the process group
    /// included.
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// g.kill(); // every process in it, escapees included
    /// # }
    /// ```
    pub fn kill(&self) {
        if self.kill_file && write_file(&self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // Old kernels: kill members until none is left (a forking member
        // may add one while we read).
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Whether any process is in the group.
    ///
    /// ```no_run
    /// # fn demo(g: &jobvisor::runner::cgroup::Group) {
    /// while g.populated() {
    ///     std::thread::sleep(std::time::Duration::from_millis(10));
    /// }
    /// # }
    /// ```
    pub fn populated(&self) -> bool {
        fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|t| t.lines().any(|l| l.trim() == "populated 1"))
            .unwrap_or(false)
    }

    /// Removes the (emptied) group; waits briefly for killed members to
    /// leave it.
    fn remove(&self) {
        let until = Instant::now() + Duration::from_secs(2);
        while self.populated() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cannot remove an execution's cgroup");
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.populated() {
            self.kill();
        }
        // Killed members leave within microseconds; one stuck in the
        // kernel is waited for off the async threads.
        if fs::remove_dir(&self.dir).is_err() {
            let g = Group {
                dir: std::mem::take(&mut self.dir),
                kill_file: self.kill_file,
            };
            std::thread::spawn(move || {
                g.remove();
                std::mem::forget(g);
            });
        }
    }
}

/// The environment variable through which a program that guards itself
/// (`jobvisor-worker`) is told the `cgroup.procs` to join at start, so that
/// it can be started with `posix_spawn` instead of a `pre_exec` hook.
pub const JOIN_ENV: &str = jobvisor_worker::host::CGROUP_ENV;

/// Writes "0" (this process) to an inherited `cgroup.procs` descriptor.
/// Async-signal-safe: meant for the child between fork and exec.
pub fn join_from_child(fd: i32) -> io::Result<()> {
    // SAFETY: writes one byte from a static buffer to a descriptor the
    // caller keeps open across the fork.
    let n = unsafe { nix::libc::write(fd, b"0".as_ptr().cast(), 1) };
    if n == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raw fd of an owned descriptor (for the child-side hook).
pub fn raw(fd: &OwnedFd) -> i32 {
    fd.as_raw_fd()
}
