//! What a process-mode child is started with: environment, identity,
//! rlimits, cgroup, death signal, and which of them need a `pre_exec` hook.
//!
//! std spawns with `posix_spawn` (vfork-like, cost independent of the
//! supervisor's size) unless a `pre_exec` hook, uid or gid is set; then it
//! forks, and the fork copies the supervisor's page tables. So the hook is
//! added only for options that need it: `jobvisor-worker` guards itself
//! (death signal, parent check), core dumps are turned off by inheritance
//! (the supervisor lowers its own soft limit once), and everything else an
//! operator asks for (rlimits, run_as, no_new_privs, cgroup placement) goes
//! into one hook. `jobvisor bench spawn` measures each option's cost.

use super::cgroup::{self, Group};
use crate::model::{format_bytes, ProcessLimits};
use jobvisor_worker::shim::{ShimSpec, SHIM_ENV};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::unistd::{Gid, Uid};
use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::process::Command;

/// The PATH a child gets when its handler does not pass one through.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Environment names a handler may neither set nor pass through: the
/// supervisor's own settings and secrets (database URL, API token).
pub fn reserved_env(name: &str) -> bool {
    name.starts_with("JOBVISOR_") || name == "DATABASE_URL"
}

/// Refuses, in a supervisor running as root, a program that others than
/// root could change: one that is group- or world-writable, or whose
/// directory is (they could replace it). Such a program would run
/// whatever its writer put there, as root or as the handler's user.
/// `allow` (`--allow-writable`) skips the check. Symbolic links are
/// followed: the file and directory checked are the real ones.
///
/// ```
/// use jobvisor::runner::isolate::check_program;
/// assert!(check_program("/bin/sh".as_ref(), false).is_ok());
/// ```
pub fn check_program(program: &std::path::Path, allow: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if allow || !Uid::effective().is_root() {
        return Ok(());
    }
    let real = program
        .canonicalize()
        .map_err(|e| format!("program {}: {e}", program.display()))?;
    let writable = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o022 != 0)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let refuse = |what: String| {
        Err(format!(
            "{what} is group- or world-writable: a supervisor running as root refuses to run it \
             (fix its mode, or register it with --allow-writable)"
        ))
    };
    if writable(&real)? {
        return refuse(format!("program {}", real.display()));
    }
    if let Some(dir) = real.parent() {
        if writable(dir)? {
            return refuse(format!(
                "the directory {} of program {}",
                dir.display(),
                real.display()
            ));
        }
    }
    Ok(())
}

/// A resolved `run_as`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id (supplementary groups are dropped).
    pub gid: u32,
}

/// Why a child's isolation cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The user database could not be read.
    #[error("cannot look up {what} {name:?}: {source}")]
    Lookup {
        /// `user` or `group`.
        what: &'static str,
        /// The name given.
        name: String,
        /// Why.
        source: nix::Error,
    },
    /// No such user or group.
    #[error("unknown {what} {name:?}")]
    Unknown {
        /// `user` or `group`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A bare uid with no passwd entry, and no group: its group would be
    /// the supervisor's own (root's, as a service).
    #[error("uid {0} has no passwd entry: give --group")]
    NoPasswd(u32),
    /// A user whose primary group is root, and no group named.
    #[error(
        "user {0}'s primary group is root (gid 0): give --group 0 to mean it, or another group"
    )]
    RootGroup(String),
    /// A change of identity by a supervisor that is not root.
    #[error("cannot run as {user}: the supervisor runs as uid {euid}, and only root may change identity")]
    NotRoot {
        /// Who the child was to run as.
        user: String,
        /// Who the supervisor is.
        euid: u32,
    },
    /// The execution's cgroup could not be made ready.
    #[error("cannot {what} {}: {source}", path.display())]
    Cgroup {
        /// What failed.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Resolves `run_as_user`/`run_as_group` for this supervisor. `None` when
/// the child keeps the supervisor's identity. Refuses unknown names, and
/// any change of identity when the supervisor is not root.
pub fn resolve_identity(
    user: Option<&str>,
    group: Option<&str>,
) -> Result<Option<Identity>, PlanError> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let euid = Uid::effective();
    let egid = Gid::effective();
    let (uid, user_gid, uname) = match user {
        Some(u) => {
            let found = match u.parse::<u32>() {
                Ok(n) => nix::unistd::User::from_uid(Uid::from_raw(n)),
                Err(_) => nix::unistd::User::from_name(u),
            }
            .map_err(|source| PlanError::Lookup {
                what: "user",
                name: u.to_string(),
                source,
            })?;
            match found {
                Some(p) => (p.uid, p.gid, p.name),
                // A bare uid need not have a passwd entry, but then it has
                // no group of its own: one must be named.
                None if group.is_none() && u.parse::<u32>().is_ok() => {
                    return Err(PlanError::NoPasswd(u.parse().unwrap_or(0)))
                }
                None if u.parse::<u32>().is_ok() => {
                    let n = Uid::from_raw(u.parse().unwrap_or(0));
                    (n, egid, u.to_string())
                }
                None => {
                    return Err(PlanError::Unknown {
                        what: "user",
                        name: u.to_string(),
                    })
                }
            }
        }
        None => (euid, egid, euid.to_string()),
    };
    let gid = match group {
        Some(g) => {
            let found = match g.parse::<u32>() {
                Ok(n) => Some(Gid::from_raw(n)),
                Err(_) => nix::unistd::Group::from_name(g)
                    .map_err(|source| PlanError::Lookup {
                        what: "group",
                        name: g.to_string(),
                        source,
                    })?
                    .map(|gr| gr.gid),
            };
            found.ok_or_else(|| PlanError::Unknown {
                what: "group",
                name: g.to_string(),
            })?
        }
        None if user_gid.as_raw() == 0 && uid.as_raw() != 0 && user.is_some() => {
            return Err(PlanError::RootGroup(uname))
        }
        None => user_gid,
    };
    if !euid.is_root() {
        if uid == euid && gid == egid {
            return Ok(None);
        }
        return Err(PlanError::NotRoot {
            user: uname,
            euid: euid.as_raw(),
        });
    }
    Ok(Some(Identity {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    }))
}

/// One rlimit to set in the child.
#[derive(Clone, Copy, Debug)]
struct Rlimit {
    resource: Resource,
    soft: u64,
    hard: u64,
}

/// What the child setup will do, decided before the spawn.
#[derive(Debug, Default)]
pub struct Setup {
    rlimits: Vec<Rlimit>,
    identity: Option<Identity>,
    no_new_privs: bool,
    death_signal: bool,
    cgroup_fd: Option<OwnedFd>,
    /// How each requested limit is enforced here, for the record.
    pub notes: Vec<String>,
    /// The cgroup the child starts in.
    pub cgroup: Option<Group>,
    /// The address-space limit actually set (memory fallback included).
    pub address_space: Option<u64>,
    /// Apply the settings through the exec shim (this program, run with
    /// `--exec-shim`) instead of a `pre_exec` hook.
    shim: Option<PathBuf>,
    /// The child joins its cgroup itself.
    self_join: bool,
}

/// Which options to apply; the bench turns them on one at a time.
#[derive(Clone, Debug)]
pub struct Options {
    /// Put the child in its own cgroup when cgroup v2 is usable.
    pub cgroup: bool,
    /// Set the death signal from the parent side (not needed by programs
    /// that guard themselves).
    pub death_signal: bool,
    /// `jobvisor-worker`, to apply settings through its exec shim rather
    /// than a `pre_exec` hook (which makes std fork the supervisor).
    pub shim: Option<PathBuf>,
    /// The program joins its cgroup itself at start (`jobvisor-worker`
    /// does, from `JOBVISOR_CGROUP`): no hook is needed for it.
    pub self_join: bool,
}

impl Setup {
    /// Plans the setup of a child for `limits`. `tag` names its cgroup.
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let limits = ProcessLimits { open_files: Some(64), ..ProcessLimits::default() };
    /// let setup = Setup::plan(&limits, opts, "exec-1").unwrap();
    /// assert!(setup.needs_hook(), "an rlimit to set, no shim: a pre_exec hook");
    /// ```
    pub fn plan(limits: &ProcessLimits, opts: Options, tag: &str) -> Result<Setup, PlanError> {
        let mut s = Setup {
            identity: resolve_identity(
                limits.run_as_user.as_deref(),
                limits.run_as_group.as_deref(),
            )?,
            no_new_privs: limits.no_new_privs,
            death_signal: opts.death_signal,
            self_join: opts.self_join,
            ..Setup::default()
        };
        let hierarchy = if opts.cgroup {
            cgroup::detect().hierarchy()
        } else {
            None
        };
        let controllers = hierarchy.map(|h| h.controllers).unwrap_or_default();
        let e = enforcement(limits, controllers);
        s.notes = e.notes;
        let cg = e.cgroup;
        let address_space = e.address_space;
        let processes = e.processes;
        if let Some(n) = limits.cpu_time_s {
            // SIGXCPU at the soft limit; SIGKILL a second later for a
            // process that ignores it.
            s.rlimit(Resource::RLIMIT_CPU, n, n.saturating_add(1));
        }
        if let Some(n) = address_space {
            s.rlimit(Resource::RLIMIT_AS, n, n);
        }
        s.address_space = address_space;
        if let Some(n) = limits.data_size {
            s.rlimit(Resource::RLIMIT_DATA, n, n);
        }
        if let Some(n) = limits.open_files {
            s.rlimit(Resource::RLIMIT_NOFILE, n, n);
        }
        if let Some(n) = processes {
            s.rlimit(Resource::RLIMIT_NPROC, n, n);
        }
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_CORE) {
            if limits.core_dumps {
                // `serve` keeps its own soft limit at 0 (inherited); this
                // handler gets the hard limit back.
                s.rlimit(Resource::RLIMIT_CORE, hard, hard);
            } else if soft != 0 {
                // An embedding application's own limit is its business:
                // the child alone gets 0.
                s.rlimit(Resource::RLIMIT_CORE, 0, hard);
            }
        }
        if let Some(h) = hierarchy {
            let g = Group::create(h, tag, &cg).map_err(|source| PlanError::Cgroup {
                what: "create a cgroup in",
                path: h.base.clone(),
                source,
            })?;
            if opts.shim.is_none() {
                let fd = g.procs_fd().map_err(|source| PlanError::Cgroup {
                    what: "open",
                    path: g.dir().join("cgroup.procs"),
                    source,
                })?;
                s.cgroup_fd = Some(fd);
            }
            s.cgroup = Some(g);
        }
        if s.needs_hook() {
            s.shim = opts.shim;
        }
        Ok(s)
    }

    fn rlimit(&mut self, resource: Resource, soft: u64, hard: u64) {
        self.rlimits.push(Rlimit {
            resource,
            soft,
            hard,
        });
    }

    /// Whether the spawn needs the `pre_exec` hook (and so a fork).
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let opts = Options { death_signal: false, ..opts };
    /// let setup = Setup::plan(&ProcessLimits::default(), opts, "t").unwrap();
    /// assert!(!setup.needs_hook(), "nothing to set");
    /// ```
    pub fn needs_hook(&self) -> bool {
        self.death_signal
            || !self.rlimits.is_empty()
            || self.identity.is_some()
            || self.no_new_privs
            || (self.cgroup.is_some() && !self.self_join)
    }

    /// Whether the settings go through the exec shim.
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let setup = Setup::plan(&ProcessLimits::default(), opts, "t").unwrap();
    /// assert!(!setup.via_shim(), "no shim given");
    /// ```
    pub fn via_shim(&self) -> bool {
        self.shim.is_some()
    }

    /// The command that starts `program`: itself, or the exec shim in
    /// front of it (planned only when there are settings to apply; the shim
    /// goes on as the worker, without a second exec, when `program` is
    /// itself). Set its environment, then call [`Setup::apply`].
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let setup = Setup::plan(&ProcessLimits::default(), opts, "t").unwrap();
    /// let mut cmd = setup.command(std::path::Path::new("/bin/true"), &[]);
    /// setup.apply(&mut cmd);
    /// assert_eq!(cmd.as_std().get_program(), "/bin/true");
    /// ```
    pub fn command(&self, program: &Path, args: &[String]) -> Command {
        match &self.shim {
            Some(shim) => {
                let mut cmd = Command::new(shim);
                cmd.arg("--exec-shim").arg("--").arg(program).args(args);
                cmd
            }
            None => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        }
    }

    /// Installs the child-side hook on `cmd`, if one is needed. The order
    /// matters: join the cgroup and set rlimits while still privileged, then
    /// drop supplementary groups, gid and uid, then `no_new_privs`, then
    /// arm the death signal (a uid change clears it).
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let setup = Setup::plan(&ProcessLimits::default(), opts, "t").unwrap();
    /// let mut cmd = setup.command(std::path::Path::new("/bin/true"), &[]);
    /// setup.apply(&mut cmd); // the child-side settings, if a hook is needed
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// assert!(rt.block_on(async { cmd.status().await }).unwrap().success());
    /// ```
    pub fn apply(&self, cmd: &mut Command) {
        if let (Some(g), true) = (&self.cgroup, self.self_join) {
            cmd.env(cgroup::JOIN_ENV, g.dir().join("cgroup.procs"));
        }
        if !self.needs_hook() {
            return;
        }
        if self.shim.is_some() {
            let spec = ShimSpec {
                cgroup_procs: self
                    .cgroup
                    .as_ref()
                    .map(|g| g.dir().join("cgroup.procs").display().to_string()),
                rlimits: self
                    .rlimits
                    .iter()
                    .map(|r| (r.resource as i32, r.soft, r.hard))
                    .collect(),
                identity: self.identity.map(|id| (id.uid, id.gid)),
                no_new_privs: self.no_new_privs,
                parent: self.death_signal.then(|| std::process::id() as i32),
            };
            cmd.env(SHIM_ENV, serde_json::to_string(&spec).expect("serializes"));
            return;
        }
        let rlimits = self.rlimits.clone();
        let identity = self.identity;
        let no_new_privs = self.no_new_privs;
        let death_signal = self.death_signal;
        let cgroup_fd = self.cgroup_fd.as_ref().map(cgroup::raw);
        let parent = std::process::id() as i32;
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe system calls (write, setrlimit, setgroups,
        // setgid, setuid, prctl, getppid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(fd) = cgroup_fd {
                    cgroup::join_from_child(fd)?;
                }
                for r in &rlimits {
                    setrlimit(r.resource, r.soft, r.hard).map_err(io::Error::from)?;
                }
                if let Some(id) = identity {
                    nix::unistd::setgroups(&[]).map_err(io::Error::from)?;
                    nix::unistd::setgid(Gid::from_raw(id.gid)).map_err(io::Error::from)?;
                    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(io::Error::from)?;
                }
                if no_new_privs {
                    nix::sys::prctl::set_no_new_privs().map_err(io::Error::from)?;
                }
                if death_signal {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(io::Error::from)?;
                    if nix::unistd::getppid().as_raw() != parent {
                        return Err(io::Error::other(
                            "supervisor exited before the child started",
                        ));
                    }
                }
                Ok(())
            });
        }
    }

    /// Closes the parent's copy of the cgroup descriptor (after the spawn).
    ///
    /// ```
    /// use jobvisor::runner::isolate::{Options, Setup};
    /// use jobvisor::model::ProcessLimits;
    /// let opts = Options { cgroup: false, death_signal: true, shim: None, self_join: false };
    /// let mut setup = Setup::plan(&ProcessLimits::default(), opts, "t").unwrap();
    /// let mut cmd = setup.command(std::path::Path::new("/bin/true"), &[]);
    /// setup.apply(&mut cmd);
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// # let _in = rt.enter();
    /// let mut child = cmd.spawn().unwrap();
    /// setup.spawned();
    /// rt.block_on(child.wait()).unwrap();
    /// ```
    pub fn spawned(&mut self) {
        self.cgroup_fd = None;
    }
}

/// How `limits` are enforced with these controllers.
pub struct Enforcement {
    /// What goes into the cgroup.
    pub cgroup: cgroup::Limits,
    /// The address-space rlimit (explicit, or the memory fallback).
    pub address_space: Option<u64>,
    /// RLIMIT_NPROC (explicit, or the pids fallback).
    pub processes: Option<u64>,
    /// Each limit enforced other than its name says, or not at all.
    pub notes: Vec<String>,
}

/// Decides how each limit is enforced given the cgroup controllers.
pub fn enforcement(limits: &ProcessLimits, controllers: cgroup::Controllers) -> Enforcement {
    let mut e = Enforcement {
        cgroup: cgroup::Limits::default(),
        address_space: limits.address_space,
        processes: limits.processes,
        notes: Vec::new(),
    };
    if let Some(max) = limits.memory_max {
        if controllers.memory {
            e.cgroup.memory_max = Some(max);
        } else {
            e.address_space = Some(e.address_space.map_or(max, |a| a.min(max)));
            e.notes.push(format!(
                "memory limit {} enforced as an address-space rlimit (no cgroup v2 memory controller here)",
                format_bytes(max)
            ));
        }
    }
    if let Some(max) = limits.pids_max {
        if controllers.pids {
            e.cgroup.pids_max = Some(max);
        } else {
            e.processes = Some(e.processes.map_or(max, |p| p.min(max)));
            e.notes.push(format!(
                "pids limit {max} enforced as RLIMIT_NPROC, which counts all processes of the user \
                 and does not bind root (no cgroup v2 pids controller here)"
            ));
        }
    }
    if let Some(cores) = limits.cpu_max {
        if controllers.cpu {
            e.cgroup.cpu_max = Some(cores);
        } else {
            e.notes.push(format!(
                "cpu limit {cores} cores NOT enforced: no cgroup v2 cpu controller here"
            ));
        }
    }
    e
}

/// Above this resident size, settings go through the exec shim: a fork
/// costs about 45 µs per MiB resident on the machines measured (`jobvisor
/// bench --scenario spawn`), the shim a constant ~1 ms more than a fork of
/// a small process; they cross near 20 MiB.
pub const SHIM_ABOVE_RSS: u64 = 24 << 20;

/// Whether to apply child settings through the exec shim now:
/// `JOBVISOR_CHILD_SETUP=shim` or `hook` forces a way; by default the shim
/// is used once the supervisor is larger than [`SHIM_ABOVE_RSS`].
pub fn prefer_shim() -> bool {
    match std::env::var("JOBVISOR_CHILD_SETUP").as_deref() {
        Ok("shim") => true,
        Ok("hook") => false,
        _ => rss_bytes(std::process::id() as i32).is_some_and(|rss| rss > SHIM_ABOVE_RSS),
    }
}

/// Logs each fallback note once per handler and process.
pub fn warn_once(handler: &str, notes: &[String]) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    if notes.is_empty() {
        return;
    }
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    for n in notes {
        if seen.insert(format!("{handler}\0{n}")) {
            tracing::warn!(handler, "{n}");
        }
    }
}

/// Turns core dumps off for the service process and, by inheritance,
/// every child (handlers that allow them raise the soft limit back), so
/// that no child needs a setting of its own for it. Called by `serve`
/// only: an embedding application keeps its own limit, and its children
/// get 0 one by one.
pub fn core_dumps_off() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_CORE) {
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, hard);
    }
}

/// Resident memory of `pid` in bytes (from /proc), if it can be read.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

/// CPU time (user + system) of `pid` so far, in milliseconds.
pub fn cpu_time_ms(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces).
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / clock_ticks())
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(4096)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// Live (not zombie) descendants of `pid`, from the children each of its
/// threads started (`/proc/PID/task/TID/children`).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
            {
                todo.push(c);
                if alive(c) {
                    found.push(c);
                }
            }
        }
    }
    found
}

/// Whether `pid` exists and is not a zombie (one that has ended and waits
/// only for its parent's wait).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t.get(t.rfind(')')? + 2..)?;
            Some(!rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Pids of processes (other than this one) holding the pipe whose inode is
/// `inode`: after the worker and its group are gone, these are escapees.
pub fn pipe_holders(inode: u64) -> Vec<i32> {
    let me = std::process::id() as i32;
    let target = format!("pipe:[{inode}]");
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        if fds
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
        {
            found.push(pid);
        }
    }
    found
}
