//! The exec shim: `jobvisor-worker --exec-shim -- PROGRAM ARGS...` applies
//! a child's isolation settings to itself, then replaces itself with the
//! program.
//!
//! Why: settings such as rlimits, a uid change or a cgroup must be applied
//! between fork and exec. Done from the supervisor with a `pre_exec` hook,
//! they make std fork the supervisor, which costs in proportion to its
//! memory (tens of milliseconds for a supervisor with a gigabyte resident).
//! Starting this small program with `posix_spawn` and letting it apply the
//! settings costs one extra exec, whatever the supervisor's size.
//! (`jobvisor bench --scenario spawn` measures both.)

use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;

/// The environment variable carrying the [`ShimSpec`] (removed before the
/// program starts).
pub const SHIM_ENV: &str = "JOBVISOR_SHIM";

/// What the shim applies, in this order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShimSpec {
    /// `cgroup.procs` of the execution's cgroup, to join first.
    #[serde(default)]
    pub cgroup_procs: Option<String>,
    /// `(resource, soft, hard)`, resource as the `RLIMIT_*` number.
    #[serde(default)]
    pub rlimits: Vec<(i32, u64, u64)>,
    /// `(uid, gid)`: supplementary groups are dropped, then gid, then uid.
    #[serde(default)]
    pub identity: Option<(u32, u32)>,
    /// Set `no_new_privs`.
    #[serde(default)]
    pub no_new_privs: bool,
    /// The supervisor's pid: arm the death signal (after any uid change,
    /// which clears it) and refuse to start if the parent is not it.
    #[serde(default)]
    pub parent: Option<i32>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("jobvisor-shim: {what}: {e}");
    std::process::exit(127)
}

/// Applies the spec from the environment and execs `argv[0]`. When that is
/// this very program with no arguments (the supervisor starting
/// `jobvisor-worker` itself through its shim), it returns instead: the
/// caller goes on as the worker, settings applied, without a second exec
/// of the same file (about a millisecond per execution).
pub fn exec_shim(argv: &[OsString]) {
    let Some(program) = argv.first() else {
        fail("usage", "jobvisor-worker --exec-shim -- PROGRAM [ARGS...]")
    };
    let spec: ShimSpec = match std::env::var(SHIM_ENV) {
        Ok(s) => serde_json::from_str(&s).unwrap_or_else(|e| fail("invalid spec", e)),
        Err(_) => ShimSpec::default(),
    };
    std::env::remove_var(SHIM_ENV);
    if let Some(procs) = &spec.cgroup_procs {
        std::fs::write(procs, "0").unwrap_or_else(|e| fail(&format!("cannot join {procs}"), e));
    }
    for &(resource, soft, hard) in &spec.rlimits {
        let lim = nix::libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: a plain system call with a valid pointer.
        if unsafe { nix::libc::setrlimit(resource as _, &lim) } != 0 {
            fail(
                &format!("cannot set rlimit {resource}"),
                std::io::Error::last_os_error(),
            );
        }
    }
    if let Some((uid, gid)) = spec.identity {
        nix::unistd::setgroups(&[]).unwrap_or_else(|e| fail("cannot drop groups", e));
        nix::unistd::setgid(nix::unistd::Gid::from_raw(gid))
            .unwrap_or_else(|e| fail("cannot set gid", e));
        nix::unistd::setuid(nix::unistd::Uid::from_raw(uid))
            .unwrap_or_else(|e| fail("cannot set uid", e));
    }
    if spec.no_new_privs {
        nix::sys::prctl::set_no_new_privs().unwrap_or_else(|e| fail("cannot set no_new_privs", e));
    }
    if let Some(parent) = spec.parent {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .unwrap_or_else(|e| fail("cannot set the death signal", e));
        if nix::unistd::getppid().as_raw() != parent {
            fail("not started", "the supervisor exited first");
        }
    }
    if argv.len() == 1 && is_this_program(program) {
        return;
    }
    let c =
        |s: &OsString| CString::new(s.as_bytes()).unwrap_or_else(|e| fail("invalid argument", e));
    let args: Vec<CString> = argv.iter().map(c).collect();
    // Rust ignores SIGPIPE in its own programs, and an ignored signal
    // stays ignored across exec: give the program the default, as
    // std::process::Command does (else `yes | head` says "Broken pipe").
    // SAFETY: setting a disposition to the default installs no handler.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .unwrap_or_else(|e| fail("cannot reset SIGPIPE", e));
    let e = nix::unistd::execvp(&args[0], &args).unwrap_err();
    fail(&format!("cannot execute {}", program.to_string_lossy()), e)
}

/// Whether `program` names the file this process runs (the same device
/// and inode, however the path is spelled).
fn is_this_program(program: &OsString) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(this), Ok(that)) = (
        std::fs::metadata("/proc/self/exe"),
        std::fs::metadata(program),
    ) else {
        return false;
    };
    (this.dev(), this.ino()) == (that.dev(), that.ino())
}
