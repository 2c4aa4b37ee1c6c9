//! `bench --scenario cron`: many cron jobs due each minute, on time and at
//! what cost.

use super::*;

/// Result of the cron scenario.
#[derive(Debug, Serialize)]
pub struct CronBench {
    /// Jobs defined.
    pub jobs: usize,
    /// Minute boundaries measured.
    pub minutes: u32,
    /// Executions started for occurrences in the window.
    pub executions: usize,
    /// CPU seconds (user + system) of the whole supervisor per minute of wall
    /// time: scheduling, claiming, running and recording the noop runs.
    pub cpu_s_per_minute: f64,
    /// The same supervisor's CPU per minute while no occurrence was due
    /// (heartbeats and polls), measured just before.
    pub idle_cpu_s_per_minute: f64,
    /// Occurrence due time to execution start, p50, ms.
    pub due_to_start_p50_ms: f64,
    /// ... p99, ms.
    pub due_to_start_p99_ms: f64,
    /// ... max, ms.
    pub due_to_start_max_ms: f64,
    /// Peak resident memory of the supervisor, MiB.
    pub peak_rss_mib: f64,
}

pub(super) fn cpu_seconds() -> f64 {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// User and system CPU seconds of `who` (this process, or its reaped
/// children), from getrusage.
pub(super) fn rusage_seconds(who: nix::sys::resource::UsageWho) -> f64 {
    let usage = nix::sys::resource::getrusage(who);
    usage.map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

pub(super) async fn bench_cron(database: Option<String>, a: &BenchArgs) -> Result<(), CliError> {
    if a.jobs == 0 || a.minutes == 0 {
        return Err(crate::failure::input(
            "--jobs and --minutes must be at least 1",
        ));
    }
    let tmp = tempfile_dir()?;
    let db = database.unwrap_or_else(|| tmp.join("cron.db").display().to_string());
    let sup = Supervisor::builder()
        .database(&db)
        .configure(|c| c.concurrency = a.concurrency)
        .build()
        .await?;
    define_jobs(&sup, a).await?;
    let (stop_tx, runner) = run_in_background(&sup);
    // Measure from just before one minute boundary to just before the
    // boundary `minutes` later: exactly `minutes` occurrences per job.
    let minute = 60_000_000i64;
    let now = jobvisor::model::now_micros();
    let mut first = (now / minute + 1) * minute;
    if first - now < 5_000_000 {
        first += minute;
    }
    let start = first - 2_000_000;
    let end = start + a.minutes as i64 * minute;
    eprintln!(
        "measuring {} minute boundaries from {} ...",
        a.minutes,
        jobvisor::model::format_micros(start)
    );
    let idle_cpu = idle_cpu_before(start).await;
    sleep_until_micros(start).await;
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    sleep_until_micros(end).await;
    let cpu = cpu_seconds() - cpu0;
    let wall = wall0.elapsed();
    let peak = peak_rss_mib();
    let _ = stop_tx.send(());
    runner.await.expect("supervisor task")?;
    let rows = sup
        .store()
        .executions(&ExecFilter {
            limit: a.jobs * (a.minutes as usize + 2),
            ..Default::default()
        })
        .await?;
    let mut delays: Vec<f64> = rows
        .iter()
        .filter(|e| e.occurrence.is_some_and(|o| o >= start && o < end))
        .filter_map(|e| {
            let at = if a.hold {
                Some(e.enqueued_at)
            } else {
                e.started_at
            };
            Some((at?.micros() - e.occurrence?) as f64 / 1000.0)
        })
        .collect();
    let result = CronBench {
        jobs: a.jobs,
        minutes: a.minutes,
        executions: delays.len(),
        cpu_s_per_minute: cpu / (wall.as_secs_f64() / 60.0),
        idle_cpu_s_per_minute: idle_cpu,
        due_to_start_p50_ms: percentile(&mut delays, 50.0),
        due_to_start_p99_ms: percentile(&mut delays, 99.0),
        due_to_start_max_ms: percentile(&mut delays, 100.0),
        peak_rss_mib: peak,
    };
    let _ = std::fs::remove_dir_all(&tmp);
    report(&result, a);
    Ok(())
}

/// Defines `a.jobs` jobs due every minute; with `--hold`, in a paused
/// queue, every occurrence let in.
async fn define_jobs(sup: &Supervisor, a: &BenchArgs) -> Result<(), CliError> {
    use jobvisor::model::{JobSpec, Overlap};
    use jobvisor::schedule::ScheduleSpec;
    let store = sup.store().store().clone();
    let local = |n: &str| jobvisor_worker::builtins::known(n);
    let queue = if a.hold {
        "bench-held"
    } else {
        jobvisor::model::DEFAULT_QUEUE
    };
    if a.hold {
        let pause = jobvisor::store::QueueChange {
            paused: Some(true),
            ..Default::default()
        };
        store.set_queue(queue, &pause).await?;
    }
    let tag = uuid::Uuid::now_v7().simple().to_string();
    eprintln!("defining {} cron jobs ...", a.jobs);
    for i in 0..a.jobs {
        let every_minute = ScheduleSpec::Cron {
            expr: "* * * * *".into(),
            tz: "UTC".into(),
        };
        let spec = JobSpec {
            mode: Some(Mode::Inproc),
            queue: queue.into(),
            // Held executions stay pending: let every occurrence in.
            overlap: if a.hold {
                Overlap::Allow
            } else {
                Overlap::Skip
            },
            ..JobSpec::new(format!("cron-{tag}-{i}"), "noop", every_minute)
        };
        jobvisor::job::add(store.as_ref(), &local, spec).await?;
    }
    Ok(())
}

/// The idle cost, CPU seconds per minute, measured over the quiet stretch
/// before the window that starts at `start` (NaN: too short to measure).
async fn idle_cpu_before(start: i64) -> f64 {
    let idle_from = jobvisor::model::now_micros() + 2_000_000;
    let idle_len = (start - idle_from - 1_000_000).clamp(0, 20_000_000);
    if idle_len < 5_000_000 {
        return f64::NAN;
    }
    sleep_until_micros(idle_from).await;
    let c0 = cpu_seconds();
    tokio::time::sleep(Duration::from_micros(idle_len as u64)).await;
    (cpu_seconds() - c0) / (idle_len as f64 / 60e6)
}

async fn sleep_until_micros(at: i64) {
    let left = (at - jobvisor::model::now_micros()).max(0) as u64;
    tokio::time::sleep(Duration::from_micros(left)).await;
}

fn report(result: &CronBench, a: &BenchArgs) {
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(result).expect("serializes")
        );
        return;
    }
    println!(
        "{} cron jobs (* * * * *), {} minute boundaries: {} executions (expected {})",
        result.jobs,
        result.minutes,
        result.executions,
        result.jobs * result.minutes as usize
    );
    let (what, delay) = if a.hold {
        (
            "scheduling only: executions held in a paused queue",
            "due -> enqueued",
        )
    } else {
        ("scheduling + running the noop executions", "due -> start")
    };
    println!(
        "supervisor CPU: {:.3} s per minute of wall time ({what})",
        result.cpu_s_per_minute
    );
    // (Not measured with --hold.)
    if result.idle_cpu_s_per_minute.is_finite() {
        println!(
            "  of which idle (polls, heartbeats; measured before the window): {:.3} s per minute; the occurrences' own cost: {:.3} s",
            result.idle_cpu_s_per_minute,
            result.cpu_s_per_minute - result.idle_cpu_s_per_minute
        );
    }
    println!(
        "{delay}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        result.due_to_start_p50_ms, result.due_to_start_p99_ms, result.due_to_start_max_ms
    );
    println!("peak RSS: {:.1} MiB", result.peak_rss_mib);
}
