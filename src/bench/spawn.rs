//! `jobvisor bench --scenario spawn`: the cost of each process isolation
//! option per spawn, through the runner's own spawn path (spawner thread,
//! piped stdio, the child-side hook), spawning `/bin/true` and waiting for
//! it. Each option is timed alone on top of the bare spawn, then all
//! together; then everything again with `--ballast` of memory resident in
//! this process, because a `pre_exec` hook turns std's `posix_spawn` into
//! fork + exec, and fork copies the parent's page tables.

use super::{percentile, BenchArgs};
use crate::failure::CliError;
use jobvisor::model::{format_bytes, ProcessLimits};
use jobvisor::runner::{cgroup, guardian, isolate, os};
use serde::Serialize;
use std::process::Stdio;
use std::time::Instant;

/// One option's cost.
#[derive(Debug, Serialize)]
pub struct SpawnRow {
    /// The option.
    pub option: String,
    /// Whether it needs settings applied in the child (a `pre_exec` hook,
    /// or the exec shim).
    pub needs_child_setup: bool,
    /// Spawn + wait, median, µs: posix_spawn, or fork + exec with the
    /// `pre_exec` hook.
    pub hook_p50_us: f64,
    /// ... through the exec shim (posix_spawn of the shim, which applies
    /// the settings and execs the program).
    pub shim_p50_us: Option<f64>,
    /// The hook's median with the ballast resident, µs.
    pub hook_ballast_p50_us: Option<f64>,
    /// The shim's median with the ballast resident, µs.
    pub shim_ballast_p50_us: Option<f64>,
    /// Why the option was not measured here, if it was not.
    pub skipped: Option<String>,
}

struct Variant {
    name: &'static str,
    group: bool,
    death_signal: bool,
    cgroup: bool,
    /// Registered with the guardian from spawn to reap, as executions are.
    guardian: bool,
    limits: ProcessLimits,
    skip: Option<String>,
}

fn variants() -> Vec<Variant> {
    let base = || ProcessLimits::default();
    let rlimits = || ProcessLimits {
        cpu_time_s: Some(3600),
        address_space: Some(8 << 30),
        open_files: Some(1024),
        processes: Some(4096),
        ..ProcessLimits::default()
    };
    let root = nix::unistd::Uid::effective().is_root();
    let nobody = || ProcessLimits {
        run_as_user: Some("nobody".into()),
        ..ProcessLimits::default()
    };
    let cgroup_skip = cgroup::detect()
        .hierarchy()
        .is_none()
        .then(|| cgroup::detect().describe());
    let uid_skip = (!root).then(|| "needs a root supervisor".to_string());
    let v = |name, group, death_signal, cgroup, limits, skip| Variant {
        name,
        group,
        death_signal,
        cgroup,
        guardian: false,
        limits,
        skip,
    };
    vec![
        v(
            "bare spawn (posix_spawn, pipes)",
            false,
            false,
            false,
            base(),
            None,
        ),
        v("+ own process group", true, false, false, base(), None),
        v(
            "+ PDEATHSIG + parent check",
            true,
            true,
            false,
            base(),
            None,
        ),
        v(
            "+ rlimits (cpu, as, nofile, nproc)",
            true,
            false,
            false,
            rlimits(),
            None,
        ),
        v(
            "+ no_new_privs",
            true,
            false,
            false,
            ProcessLimits {
                no_new_privs: true,
                ..ProcessLimits::default()
            },
            None,
        ),
        v(
            "+ uid/gid change (nobody)",
            true,
            false,
            false,
            nobody(),
            uid_skip.clone(),
        ),
        v(
            "+ cgroup (create, join, kill, remove)",
            true,
            false,
            true,
            base(),
            cgroup_skip.clone(),
        ),
        Variant {
            guardian: true,
            ..v("+ guardian watch", true, false, false, base(), None)
        },
        Variant {
            guardian: true,
            ..v(
                "all of the above",
                true,
                true,
                cgroup_skip.is_none(),
                ProcessLimits {
                    no_new_privs: true,
                    run_as_user: root.then(|| "nobody".into()),
                    ..rlimits()
                },
                None,
            )
        },
    ]
}

/// Times `n` spawns of `/bin/true` with this variant; µs each.
async fn time_variant(
    v: &Variant,
    shim: Option<&std::path::Path>,
    n: usize,
) -> Result<(bool, Vec<f64>), String> {
    let mut samples = Vec::with_capacity(n);
    let mut hook = false;
    for _ in 0..n {
        let t0 = Instant::now();
        let mut setup = isolate::Setup::plan(
            &v.limits,
            isolate::Options {
                cgroup: v.cgroup,
                death_signal: v.death_signal,
                shim: shim.map(|p| p.to_path_buf()),
                self_join: false,
            },
            "bench",
        )
        .map_err(|e| e.to_string())?;
        hook = setup.needs_hook();
        let mut cmd = setup.command(std::path::Path::new("/bin/true"), &[]);
        cmd.env_clear()
            .env("PATH", isolate::DEFAULT_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if v.group {
            cmd.process_group(0);
        }
        setup.apply(&mut cmd);
        let mut child = os::spawn(cmd).await.map_err(|e| e.to_string())?;
        setup.spawned();
        let watch = v.guardian.then(|| {
            let pid = child.id().unwrap_or(0) as i32;
            guardian::Watch::new(pid, setup.cgroup.as_ref().map(|g| g.dir()))
        });
        let status = child.wait().await.map_err(|e| e.to_string())?;
        drop(watch);
        if !status.success() {
            return Err(format!("/bin/true ended with {status}"));
        }
        // The cgroup is killed and removed with the setup: part of the cost.
        drop(setup);
        samples.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    Ok((hook, samples))
}

/// Median µs of `n` spawns (after a few warm-up ones).
async fn p50(
    v: &Variant,
    shim: Option<&std::path::Path>,
    n: usize,
) -> Result<(bool, f64), CliError> {
    time_variant(v, shim, 10.min(n))
        .await
        .map_err(crate::failure::input)?;
    let (hook, mut s) = time_variant(v, shim, n)
        .await
        .map_err(crate::failure::input)?;
    Ok((hook, percentile(&mut s, 50.0)))
}

pub(super) async fn bench_spawn(a: &BenchArgs) -> Result<(), CliError> {
    if a.spawns == 0 {
        return Err(crate::failure::input("--spawns must be at least 1"));
    }
    let worker = jobvisor::worker_program();
    if !worker.is_file() {
        return Err(crate::failure::input(format!(
            "{} is missing: build it with `cargo build --release`",
            worker.display()
        )));
    }
    let vs = variants();
    let mut rows: Vec<SpawnRow> = vs
        .iter()
        .map(|v| SpawnRow {
            option: v.name.to_string(),
            needs_child_setup: false,
            hook_p50_us: f64::NAN,
            shim_p50_us: None,
            hook_ballast_p50_us: None,
            shim_ballast_p50_us: None,
            skipped: v.skip.clone(),
        })
        .collect();
    let mut ballast = Vec::new();
    for pass in [false, true] {
        if pass {
            if a.ballast == 0 {
                break;
            }
            // Resident, not just reserved: touch every page.
            ballast = vec![0u8; a.ballast as usize];
            for i in (0..ballast.len()).step_by(4096) {
                ballast[i] = 1;
            }
        }
        for (v, row) in vs.iter().zip(rows.iter_mut()) {
            if v.skip.is_some() {
                continue;
            }
            let (needs, hook) = p50(v, None, a.spawns).await?;
            let shim = if needs {
                Some(p50(v, Some(&worker), a.spawns).await?.1)
            } else {
                None
            };
            if pass {
                row.hook_ballast_p50_us = Some(hook);
                row.shim_ballast_p50_us = shim;
            } else {
                row.needs_child_setup = needs;
                row.hook_p50_us = hook;
                row.shim_p50_us = shim;
            }
        }
    }
    std::hint::black_box(&ballast);
    drop(ballast);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("serializes")
        );
        return Ok(());
    }
    println!(
        "spawn + wait of /bin/true through the runner's spawn path: median µs of {} spawns; \
         settings applied by a pre_exec hook (std forks) or by the exec shim (posix_spawn + one more exec)",
        a.spawns
    );
    let big = format_bytes(a.ballast);
    println!(
        "{:<40} {:>10} {:>10} {:>16} {:>16}",
        "option",
        "pre_exec",
        "shim",
        format!("pre_exec +{big}"),
        format!("shim +{big}")
    );
    let cell = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
    for r in &rows {
        if let Some(why) = &r.skipped {
            println!("{:<40} skipped: {why}", r.option);
            continue;
        }
        println!(
            "{:<40} {:>10} {:>10} {:>16} {:>16}",
            r.option,
            cell(Some(r.hook_p50_us)),
            cell(r.shim_p50_us),
            cell(r.hook_ballast_p50_us),
            cell(r.shim_ballast_p50_us)
        );
    }
    println!(
        "'-' under shim: the option needs nothing in the child, so it is a plain posix_spawn either way."
    );
    Ok(())
}
