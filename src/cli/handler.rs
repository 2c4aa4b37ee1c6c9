//! `jobvisor handler ...`

use super::args::{HandlerAddArgs, HandlerCmd};
use super::{input, output, CliError};
use jobvisor::model::{HandlerKind, HandlerSpec, Mode, ProcessLimits};
use jobvisor::runner::isolate;
use jobvisor_worker::builtins;
use std::path::{Path, PathBuf};

pub(crate) async fn handler(db: &str, cmd: HandlerCmd) -> Result<(), CliError> {
    // Only `serve` and `migrate` create a database.
    let store = jobvisor::store::open_existing(db).await?;
    match cmd {
        HandlerCmd::Add(a) => {
            let spec = spec_from_args(a.name.clone(), &a)?;
            if !a.replace && store.handler(&spec.name).await?.is_some() {
                return Err(input(format!(
                    "handler {:?} already exists (use --replace to change it)",
                    spec.name
                )));
            }
            jobvisor::Client::connect(store.clone())
                .await
                .add_handler(&spec)
                .await?;
            match &spec.kind {
                HandlerKind::Exec { program, .. } => {
                    println!("handler {} registered: {program}", spec.name);
                    if let Some(dir) = &spec.limits.cwd {
                        println!("working directory: {dir}");
                    }
                }
                HandlerKind::Rust => println!("handler {} registered (built-in)", spec.name),
            }
            if builtins::known(&spec.name) {
                eprintln!(
                    "jobvisor: note: handler {0} overrides the built-in {0} for every job and run \
                     (`handler remove {0}` restores it)",
                    spec.name
                );
            }
            for note in enforcement_notes(&spec) {
                eprintln!("jobvisor: note: {note}");
            }
            Ok(())
        }
        HandlerCmd::List(j) => {
            let registered: std::collections::HashSet<String> = store
                .handlers()
                .await?
                .into_iter()
                .map(|h| h.name)
                .collect();
            let all: Vec<_> = jobvisor::store::all_handlers(store.as_ref())
                .await?
                .into_iter()
                .map(jobvisor::model::HandlerSpec::redacted)
                .collect();
            if j.json {
                output::json(&all)
            } else {
                let rows = all
                    .iter()
                    .map(|h| {
                        vec![
                            h.name.clone(),
                            h.mode.to_string(),
                            match &h.kind {
                                HandlerKind::Rust
                                    if builtins::known(&h.name) && registered.contains(&h.name) =>
                                {
                                    format!(
                                        "built-in, overridden ({} mode for every job and run)",
                                        h.mode
                                    )
                                }
                                HandlerKind::Rust => "built-in / Rust".into(),
                                HandlerKind::Exec { program, args } => {
                                    let line = std::iter::once(program.clone())
                                        .chain(args.iter().map(|a| format!("{a:?}")))
                                        .collect::<Vec<_>>()
                                        .join(" ");
                                    let over = match builtins::known(&h.name) {
                                        true => " (overrides the built-in)",
                                        false => "",
                                    };
                                    match &h.limits.cwd {
                                        Some(dir) => format!("{line} (in {dir}){over}"),
                                        None => format!("{line}{over}"),
                                    }
                                }
                            },
                        ]
                    })
                    .collect();
                output::table(&["NAME", "MODE", "RUNS"], rows);
                Ok(())
            }
        }
        HandlerCmd::Show(n) => {
            let spec = match jobvisor::store::handler_or_builtin(store.as_ref(), &n.name).await? {
                Some(s) if n.reveal => s,
                Some(s) => s.redacted(),
                None => return Err(jobvisor::Error::UnknownHandler(n.name).into()),
            };
            // Pretty JSON either way: --json says it will stay so.
            output::json(&spec)
        }
        HandlerCmd::Remove { name, force } => {
            if store.handler(&name).await?.is_none() {
                return Err(jobvisor::Error::UnknownHandler(name).into());
            }
            // Jobs that would be left without it (a built-in of the same
            // name takes over, so those are fine).
            let users: Vec<String> = if builtins::known(&name) {
                Vec::new()
            } else {
                store
                    .jobs()
                    .await?
                    .into_iter()
                    .filter(|j| j.spec.handler == name)
                    .map(|j| j.spec.name)
                    .collect()
            };
            if !users.is_empty() && !force {
                return Err(input(format!(
                    "handler {name} is used by job{} {} (change or remove {}, or --force, \
                     which pauses {})",
                    if users.len() == 1 { "" } else { "s" },
                    users.join(", "),
                    if users.len() == 1 { "it" } else { "them" },
                    if users.len() == 1 { "it" } else { "them" },
                )));
            }
            let client = jobvisor::Client::connect(store.clone()).await;
            client.remove_handler(&name).await?;
            for job in &users {
                client.pause_job(job).await?;
            }
            println!("handler {name} removed");
            if !users.is_empty() {
                println!("paused the jobs that used it: {}", users.join(", "));
            }
            Ok(())
        }
    }
}

pub(crate) fn spec_from_args(name: String, a: &HandlerAddArgs) -> Result<HandlerSpec, CliError> {
    jobvisor::model::refuse_webhook_handler(&name).map_err(input)?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(input(format!(
            "invalid handler name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let kind = match &a.exec {
        Some(exec) => {
            let program = resolve_program(exec)?;
            isolate::check_program(&program, a.allow_writable).map_err(input)?;
            HandlerKind::Exec {
                program: program.display().to_string(),
                args: a.args.clone(),
            }
        }
        None if builtins::known(&name) => HandlerKind::Rust,
        None => {
            return Err(input(format!(
                "{name:?} is not a built-in handler (built-ins: {})",
                builtins::NAMES.join(", ")
            )))
        }
    };
    // Stored absolute, so that it means the same whoever starts `serve`
    // from wherever.
    let workdir = match &a.workdir {
        Some(dir) if !Path::new(dir).is_dir() => {
            return Err(input(format!("working directory {dir:?} does not exist")))
        }
        Some(dir) => {
            Some(std::path::absolute(dir).map_err(|e| input(format!("--workdir {dir:?}: {e}")))?)
        }
        None if matches!(kind, HandlerKind::Exec { .. }) && a.run_as.is_none() => Some(
            std::env::current_dir().map_err(|e| input(format!("the current directory: {e}")))?,
        ),
        None => None,
    };
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    if a.timeout.is_some_and(|t| t.is_zero()) {
        return Err(input("--timeout must be longer than 0"));
    }
    if a.cpu_time.is_some_and(|t| t.as_secs() == 0) {
        return Err(input("--cpu-time must be at least 1s"));
    }
    for key in a.allow_env.iter().chain(a.env.iter().map(|(k, _)| k)) {
        if isolate::reserved_env(key) {
            return Err(input(format!(
                "environment variable {key} is reserved for the supervisor and never passed to a child"
            )));
        }
    }
    let (run_as_user, run_as_group) = match a.run_as.as_deref() {
        None => (None, None),
        Some(s) => match s.split_once(':') {
            Some((u, g)) if !u.is_empty() && !g.is_empty() => {
                (Some(u.to_string()), Some(g.to_string()))
            }
            Some(_) => {
                return Err(input(format!(
                    "invalid --run-as {s:?}: expected USER or USER:GROUP"
                )))
            }
            None if !s.is_empty() => (Some(s.to_string()), None),
            None => return Err(input("--run-as needs a user")),
        },
    };
    let run_as_group = match (run_as_group, &a.group) {
        (Some(_), Some(_)) => {
            return Err(input(
                "give the group once: --run-as USER:GROUP or --group GROUP",
            ))
        }
        (None, Some(g)) if g.is_empty() => return Err(input("--group needs a group")),
        (g, flag) => g.or_else(|| flag.clone()),
    };
    isolate::resolve_identity(run_as_user.as_deref(), run_as_group.as_deref())
        .map_err(|e| input(e.to_string()))?;
    let mode = a.mode.unwrap_or(match kind {
        HandlerKind::Exec { .. } => Mode::Process,
        HandlerKind::Rust => Mode::Inproc,
    });
    if mode == Mode::Inproc && matches!(kind, HandlerKind::Exec { .. }) {
        return Err(input("a program handler runs in process mode only"));
    }
    Ok(HandlerSpec {
        name,
        kind,
        mode,
        limits: ProcessLimits {
            timeout_ms: a.timeout.map(ms),
            cancel_grace_ms: ms(a.cancel_grace),
            kill_grace_ms: ms(a.kill_grace),
            max_line_bytes: a.max_line as usize,
            heartbeat_timeout_ms: a.heartbeat_timeout.map(ms),
            env: a.env.clone(),
            allow_env: a.allow_env.clone(),
            cwd: workdir.map(|d| d.display().to_string()),
            memory_max: a.memory,
            pids_max: a.pids,
            cpu_max: a.cpus,
            cpu_time_s: a.cpu_time.map(|d| d.as_secs()),
            address_space: a.address_space,
            data_size: a.data_size,
            open_files: a.open_files,
            processes: a.processes,
            core_dumps: a.core_dumps,
            run_as_user,
            run_as_group,
            no_new_privs: a.no_new_privs,
            allow_writable: a.allow_writable,
            max_log_bytes: a.max_log,
            pool_size: a.pool_size,
            max_runs_per_worker: a.max_runs_per_worker,
            max_rss_per_worker: a.max_rss_per_worker,
            stderr_level: a.stderr_level,
        },
    })
}

/// How this host would enforce the handler's limits, when that differs
/// from what the flag names (no cgroup v2 controller): said at once.
fn enforcement_notes(spec: &HandlerSpec) -> Vec<String> {
    let l = &spec.limits;
    if l.memory_max.is_none() && l.pids_max.is_none() && l.cpu_max.is_none() {
        return Vec::new();
    }
    isolate::enforcement(l, jobvisor::runner::cgroup::probe()).notes
}

/// Resolves a program to an absolute path now, so that what runs later does
/// not depend on the supervisor's PATH or working directory.
fn resolve_program(exec: &str) -> Result<PathBuf, CliError> {
    use std::os::unix::fs::PermissionsExt;
    let candidate = if exec.contains('/') {
        Some(PathBuf::from(exec))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(exec))
                .find(|p| p.is_file())
        })
    };
    let Some(path) = candidate else {
        return Err(input(format!("program {exec:?} not found on PATH")));
    };
    let meta =
        std::fs::metadata(&path).map_err(|e| input(format!("program {}: {e}", path.display())))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(input(format!(
            "program {} is not an executable file",
            path.display()
        )));
    }
    Ok(std::path::absolute(&path).unwrap_or(path))
}
