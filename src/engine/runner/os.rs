//! Process control: spawning from a thread that never exits, signalling
//! process groups, naming signals.
//!
//! PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, not
//! the process. tokio's blocking threads retire after 10 s idle, and a worker
//! thread can be replaced after `block_in_place`; so every child is spawned
//! from dedicated threads that live as long as the process, and the death
//! signal means what it says: the supervisor is gone.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io;
use std::sync::mpsc as std_mpsc;
use std::sync::{Mutex, OnceLock};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Spawning threads: a few, so that spawns (a fork+exec costs about a
/// millisecond) run in parallel; none of them ever exits.
const SPAWNER_THREADS: usize = 4;

fn spawner() -> &'static Mutex<std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for i in 0..SPAWNER_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("jobvisor-spawner-{i}"))
                .spawn(move || loop {
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(mut req) = next else { return };
                    // Registers the child's pipes and exit with the runtime
                    // of the caller.
                    let _guard = req.runtime.enter();
                    let _ = req.reply.send(req.command.spawn());
                })
                .expect("cannot start a spawner thread");
        }
        Mutex::new(tx)
    })
}

/// Spawns `command` from the long-lived spawner thread.
pub async fn spawn(command: Command) -> io::Result<Child> {
    let (reply, rx) = oneshot::channel();
    let req = SpawnRequest {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(req)
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// Sends `signal` to process group `pgid`; whether any process got it.
pub fn signal_group(pgid: i32, signal: Signal) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), signal).is_ok()
}

/// The name of signal number `sig` (`SIGKILL`), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// Whether a process with this pid exists (on this host).
pub fn pid_alive(pid: i64) -> bool {
    if pid <= 0 || pid > i32::MAX as i64 {
        return false;
    }
    match nix::sys::signal::kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

/// This host's name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Hardening for the service process (not for an embedding application,
/// whose descriptors and dump settings are its own):
/// - descriptors inherited from whoever started us (beyond 0-2) are marked
///   close-on-exec, so no child inherits them: a leaked pipe end would
///   hold a child's pipes open, or hand it something it must not have;
/// - the process is made non-dumpable, so a child running as the same
///   (non-root) user cannot read the supervisor's environment or memory
///   through /proc.
pub fn harden_service() {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let fds: Vec<i32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .filter(|fd| *fd > 2)
            .collect();
        for fd in fds {
            // SAFETY: only flips a flag on descriptors this process holds;
            // one that closed since the listing yields EBADF, ignored.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            if let Ok(flags) = fcntl(borrowed, FcntlArg::F_GETFD) {
                let flags = FdFlag::from_bits_truncate(flags) | FdFlag::FD_CLOEXEC;
                let _ = fcntl(borrowed, FcntlArg::F_SETFD(flags));
            }
        }
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    keep_large_allocations_mapped();
}

/// Large allocations (a payload or a log line of a megabyte, read for a
/// moment) are served by their own mappings and given back to the kernel
/// when freed. glibc does this above 128 KiB only until the first such
/// block is freed, then raises its threshold as far as 32 MiB, so that a
/// service that once handled large values keeps their memory resident in
/// its heaps for good. Setting the threshold fixes it at 128 KiB.
fn keep_large_allocations_mapped() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning; called once at
    // start, and any value it refuses leaves the default.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Gives back the resident pages of this program's code (the service does
/// once after start-up, and when idle). Code is mapped from the executable:
/// parsing flags, migrating, building the OpenAPI document, running
/// executions and the like fault in (with the kernel's fault-around, 64 KB
/// at a time) most of the file's 17 MB of text, which would otherwise stay
/// resident, and charged to the service's cgroup, for the life of the
/// process. `MADV_PAGEOUT` reclaims those clean pages; what the service
/// uses next faults back in from the page cache (minor faults). Best
/// effort: errors (an old kernel) are ignored.
pub fn release_code_pages() {
    use nix::sys::mman::{madvise, MmapAdvise};
    let (Ok(exe), Ok(maps)) = (
        std::env::current_exe(),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if fields.nth(3) != Some(exe.as_ref()) || perms.as_bytes().get(1) != Some(&b'-') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let Some(addr) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: advice only, on a read-only mapping of this process's own
        // executable; the contents stay as they are (reclaimed pages are
        // read back from the file when touched).
        let _ = unsafe { madvise(addr, end.saturating_sub(start), MmapAdvise::MADV_PAGEOUT) };
    }
}
