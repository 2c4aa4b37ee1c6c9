//! `jobvisor bench --scenario idle`: what a running `jobvisor serve` with
//! nothing to do costs.
//!
//! A real `serve` (default settings; a copy of this program, so that no
//! page of its code is shared with this process) runs one no-op, so that
//! it is ready and has done its first passes, then is left alone for a
//! settling time and measured from outside over `--idle-seconds`:
//! - CPU: the sum over its threads of the time on CPU from
//!   `/proc/PID/task/*/schedstat` (nanoseconds, unlike the 10 ms ticks of
//!   `/proc/PID/stat`), per minute;
//! - wake-ups: its threads' context switches, per second;
//! - memory at the end: VmRSS, and its anonymous and file-backed parts.

use super::child::{wait_ended, Place};
use super::CaseDatabases;
use crate::failure::CliError;
use jobvisor::{RunSpec, Status, Supervisor};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long the service is left alone before the measurement: its
/// start-up's last work (the release of start-up pages at 2 s) is done.
const SETTLE: Duration = Duration::from_secs(5);

/// Result of the idle scenario.
#[derive(Debug, Serialize)]
pub struct IdleBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// Seconds measured.
    pub seconds: f64,
    /// CPU time of the service over the measurement, per minute, s.
    pub cpu_s_per_min: f64,
    /// Context switches of its threads, per second.
    pub wakeups_per_sec: f64,
    /// Resident memory at the end, MiB.
    pub rss_mib: f64,
    /// ... of which anonymous (heap, stacks), MiB.
    pub rss_anon_mib: f64,
    /// ... and file-backed (the program's code), MiB.
    pub rss_file_mib: f64,
}

pub(super) async fn bench_idle(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    let dbs = CaseDatabases::new(database)?;
    let db = dbs.of("idle-serve");
    let mut place = Place::new()?;
    // A copy of this program: pages of the file that this process maps too
    // could not be given back by the service, and would count as its own.
    let copy = place.dir.join("jobvisor-serve");
    std::fs::copy(&place.exe, &copy)
        .map_err(|e| crate::failure::input(format!("cannot copy {}: {e}", place.exe.display())))?;
    place.exe = copy;
    // Created and migrated before the service starts, as an operator's is.
    let sup = Supervisor::builder().database(&db).build().await?;
    let mut serve = place.serve(&db, &[])?;
    let measured = measure(&sup, serve.pid(), a.idle_seconds).await;
    let tail = serve.stop().await;
    let m = measured.map_err(|e| match tail.is_empty() {
        true => e,
        false => crate::failure::input(format!("{e}; serve said: {tail}")),
    })?;
    let r = IdleBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        seconds: m.seconds,
        cpu_s_per_min: m.cpu_ns as f64 / 1e9 / m.seconds * 60.0,
        wakeups_per_sec: m.switches as f64 / m.seconds,
        rss_mib: m.rss_mib,
        rss_anon_mib: m.rss_anon_mib,
        rss_file_mib: m.rss_file_mib,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
    } else {
        println!(
            "{} cores | {} | an idle jobvisor serve (default settings), {:.0} s measured after {} s left alone",
            r.cores,
            r.backend,
            r.seconds,
            SETTLE.as_secs()
        );
        println!(
            "{:>14} {:>12} {:>9} {:>10} {:>10}",
            "CPU s/minute", "wake-ups/s", "RSS MiB", "anon MiB", "file MiB"
        );
        println!(
            "{:>14.4} {:>12.1} {:>9.1} {:>10.1} {:>10.1}",
            r.cpu_s_per_min, r.wakeups_per_sec, r.rss_mib, r.rss_anon_mib, r.rss_file_mib
        );
    }
    Ok(())
}

/// What was read of the service over the measurement.
struct Measured {
    seconds: f64,
    cpu_ns: u64,
    switches: u64,
    rss_mib: f64,
    rss_anon_mib: f64,
    rss_file_mib: f64,
}

/// Readies the service with one no-op, lets it settle, and measures it.
async fn measure(sup: &Supervisor, pid: i32, seconds: u64) -> Result<Measured, CliError> {
    let id = sup
        .enqueue(RunSpec::new("noop", serde_json::Value::Null))
        .await?;
    let ended = wait_ended(
        sup.store().as_ref(),
        id,
        Duration::from_secs(60),
        Duration::from_millis(20),
    )
    .await?;
    match ended {
        Some(e) if e.status == Status::Succeeded => {}
        Some(e) => {
            return Err(crate::failure::input(format!(
                "a no-op ended {}: {}",
                e.status,
                e.error.unwrap_or_default()
            )))
        }
        None => {
            return Err(crate::failure::input(
                "serve did not run a no-op within 60 s",
            ))
        }
    }
    tokio::time::sleep(SETTLE).await;
    let before = threads(pid)?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let after = threads(pid)?;
    let elapsed = t.elapsed().as_secs_f64();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| crate::failure::input(format!("serve is gone: {e}")))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
            / 1024.0
    };
    // A thread that ended meanwhile is left out: its last moments are lost,
    // which the tokio and SQLite threads of an idle service never do.
    let (mut cpu_ns, mut switches) = (0u64, 0u64);
    for (tid, (ns, sw)) in &after {
        let (ns0, sw0) = before.get(tid).copied().unwrap_or((0, 0));
        cpu_ns += ns.saturating_sub(ns0);
        switches += sw.saturating_sub(sw0);
    }
    Ok(Measured {
        seconds: elapsed,
        cpu_ns,
        switches,
        rss_mib: kib("VmRSS:"),
        rss_anon_mib: kib("RssAnon:"),
        rss_file_mib: kib("RssFile:"),
    })
}

/// Each thread of `pid`: nanoseconds on CPU, and context switches.
pub(super) fn threads(pid: i32) -> Result<HashMap<u32, (u64, u64)>, CliError> {
    let gone = |e: std::io::Error| crate::failure::input(format!("serve is gone: {e}"));
    let mut out = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).map_err(gone)? {
        let task = task.map_err(gone)?;
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let path = task.path();
        // Read together: a thread may end between the two.
        let (Ok(sched), Ok(status)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        let ns = sched
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let switches = status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum();
        out.insert(tid, (ns, switches));
    }
    Ok(out)
}
