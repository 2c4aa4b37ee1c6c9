//! `jobvisor handler ...`

use super::args::{HandlerAddArgs, HandlerCmd};
use super::{input, output, CliError};
use crate::model::{now_micros, HandlerKind, HandlerSpec, Mode, ProcessLimits};
use jobvisor_worker::builtins;
use std::path::{Path, PathBuf};

pub(crate) async fn handler(db: &str, cmd: HandlerCmd) -> Result<(), CliError> {
    let store = crate::store::open(db).await?;
    match cmd {
        HandlerCmd::Add(a) => {
            let spec = spec_from_args(a.name.clone(), &a)?;
            if !a.replace && store.handler(&spec.name).await?.is_some() {
                return Err(input(format!(
                    "handler {:?} already exists (use --replace to change it)",
                    spec.name
                )));
            }
            store.put_handler(&spec, now_micros()).await?;
            if let HandlerKind::Exec { program, .. } = &spec.kind {
                println!("handler {} registered: {program}", spec.name);
            }
            Ok(())
        }
        HandlerCmd::List(j) => {
            let mut all = store.handlers().await?;
            for name in builtins::NAMES {
                if !all.iter().any(|h| h.name == name) {
                    all.push(builtin(name));
                }
            }
            all.sort_by(|a, b| a.name.cmp(&b.name));
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
                                HandlerKind::Rust => "built-in / Rust".into(),
                                HandlerKind::Exec { program, args } => {
                                    std::iter::once(program.clone())
                                        .chain(args.iter().map(|a| format!("{a:?}")))
                                        .collect::<Vec<_>>()
                                        .join(" ")
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
            let spec = match store.handler(&n.name).await? {
                Some(s) => s,
                None if builtins::NAMES.contains(&n.name.as_str()) => builtin(&n.name),
                None => return Err(crate::Error::UnknownHandler(n.name).into()),
            };
            if n.json {
                output::json(&spec)
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&spec).expect("serializes")
                );
                Ok(())
            }
        }
        HandlerCmd::Remove { name } => {
            if store.remove_handler(&name).await? {
                println!("handler {name} removed");
                Ok(())
            } else {
                Err(crate::Error::UnknownHandler(name).into())
            }
        }
    }
}

fn builtin(name: &str) -> HandlerSpec {
    HandlerSpec {
        name: name.to_string(),
        kind: HandlerKind::Rust,
        mode: Mode::Inproc,
        limits: ProcessLimits::default(),
    }
}

fn spec_from_args(name: String, a: &HandlerAddArgs) -> Result<HandlerSpec, CliError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(input(format!(
            "invalid handler name {name:?}: use letters, digits, '-', '_' and '.'"
        )));
    }
    let program = resolve_program(&a.exec)?;
    if let Some(dir) = &a.cwd {
        if !Path::new(dir).is_dir() {
            return Err(input(format!("working directory {dir:?} does not exist")));
        }
    }
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    if a.timeout.is_some_and(|t| t.is_zero()) {
        return Err(input("--timeout must be longer than 0"));
    }
    Ok(HandlerSpec {
        name,
        kind: HandlerKind::Exec {
            program: program.display().to_string(),
            args: a.args.clone(),
        },
        mode: Mode::Process,
        limits: ProcessLimits {
            timeout_ms: a.timeout.map(ms),
            cancel_grace_ms: ms(a.cancel_grace),
            kill_grace_ms: ms(a.kill_grace),
            max_line_bytes: a.max_line as usize,
            heartbeat_timeout_ms: a.heartbeat_timeout.map(ms),
            env: a.env.clone(),
            allow_env: a.allow_env.clone(),
            cwd: a.cwd.clone(),
        },
    })
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
