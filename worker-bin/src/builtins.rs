//! Built-in handlers, present in both modes: the demo vocabulary (`noop`,
//! `echo`, `sleep`, `progress`, `logs`, `fail`), and the test built-ins
//! (`append`, `panic`, and `misbehave`, the faults that `bench --scenario
//! isolation` runs in each mode). The test built-ins can hurt the host (a
//! file written, a process crashed), so they exist only where asked for
//! ([`TestBuiltins`]: `serve --test-builtins`), and `append` writes only
//! under the directory it is given.

use crate::handler::{decode, Context, HandlerError, HandlerResult, Registry};
use crate::protocol::Level;
use serde::Deserialize;
use serde_json::{json, Value};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

/// Names of the built-in handlers every supervisor and worker has.
///
/// ```
/// use jobvisor_worker::builtins;
/// let registry = jobvisor_worker::Registry::with_builtins();
/// assert!(builtins::NAMES.iter().all(|n| registry.get(n).is_some()));
/// assert!(registry.get("append").is_none());
/// ```
pub const NAMES: [&str; 6] = ["noop", "echo", "sleep", "progress", "logs", "fail"];

/// Names of the test built-ins, present only with [`TestBuiltins`].
///
/// ```
/// assert!(jobvisor_worker::builtins::TEST_NAMES.contains(&"append"));
/// ```
pub const TEST_NAMES: [&str; 3] = ["append", "panic", "misbehave"];

/// Adds the built-in handlers of [`NAMES`] to `registry`.
///
/// ```
/// use jobvisor_worker::builtins;
/// let mut registry = jobvisor_worker::Registry::new();
/// builtins::register_all(&mut registry);
/// assert_eq!(registry.names().count(), builtins::NAMES.len());
/// ```
pub fn register_all(registry: &mut Registry) {
    registry
        .register("noop", noop)
        .register("echo", echo)
        .register("sleep", sleep)
        .register("progress", progress)
        .register("logs", logs)
        .register("fail", fail);
}

/// The test built-ins turned on: by `serve --test-builtins` for the
/// supervisor, and through [`TestBuiltins::ENV`] for the worker processes
/// it starts and for the CLI's commands.
///
/// ```
/// use jobvisor_worker::builtins::{self, TestBuiltins};
/// let mut registry = jobvisor_worker::Registry::with_builtins();
/// TestBuiltins { append_dir: Some("/tmp".into()) }.register(&mut registry);
/// assert!(builtins::TEST_NAMES.iter().all(|n| registry.get(n).is_some()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TestBuiltins {
    /// The only directory `append` writes under (none: it fails).
    pub append_dir: Option<std::path::PathBuf>,
}

impl TestBuiltins {
    /// Set (to anything but `0` or nothing), the test built-ins are on.
    pub const ENV: &'static str = "JOBVISOR_TEST_BUILTINS";
    /// The directory `append` may write under.
    pub const APPEND_DIR_ENV: &'static str = "JOBVISOR_APPEND_DIR";

    /// Whether [`Self::ENV`] turns them on, and [`Self::APPEND_DIR_ENV`]'s
    /// directory.
    ///
    /// ```
    /// let on = jobvisor_worker::builtins::TestBuiltins::from_env().is_some();
    /// # let _ = on;
    /// ```
    pub fn from_env() -> Option<TestBuiltins> {
        let on = std::env::var_os(Self::ENV).is_some_and(|v| !v.is_empty() && v != "0");
        on.then(|| TestBuiltins {
            append_dir: std::env::var_os(Self::APPEND_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(Into::into),
        })
    }

    /// Adds the test built-ins to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let dir = self.append_dir.clone();
        registry
            .register("append", move |ctx, payload: Value| {
                append(dir.clone(), ctx, payload)
            })
            .register("panic", panic)
            .register("misbehave", misbehave);
    }
}

/// Whether `name` is a built-in here: one of [`NAMES`], or of
/// [`TEST_NAMES`] where [`TestBuiltins::from_env`] turns them on.
///
/// ```
/// assert!(jobvisor_worker::builtins::known("echo"));
/// ```
pub fn known(name: &str) -> bool {
    NAMES.contains(&name) || (TEST_NAMES.contains(&name) && TestBuiltins::from_env().is_some())
}

/// Does nothing and succeeds: the unit of overhead in benchmarks.
pub(crate) async fn noop(_ctx: Context, _payload: Value) -> HandlerResult {
    Ok(Value::Null)
}

/// Returns its payload as its output.
pub(crate) async fn echo(_ctx: Context, payload: Value) -> HandlerResult {
    Ok(payload)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepArgs {
    /// Milliseconds to sleep (default 1000).
    ms: Option<u64>,
}

/// Sleeps `{"ms": N}` milliseconds; stops early, cancelled, on a cancel.
pub(crate) async fn sleep(ctx: Context, payload: Value) -> HandlerResult {
    let args: SleepArgs = decode(payload)?;
    let ms = args.ms.unwrap_or(1000);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(json!({ "slept_ms": ms })),
        _ = ctx.cancelled() => Err(HandlerError::cancelled()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressArgs {
    /// Number of steps (default 10).
    steps: Option<u64>,
    /// Pause after each step, in milliseconds (default 100).
    delay_ms: Option<u64>,
    /// Also log each step as an info line (default no).
    log: Option<bool>,
}

/// Reports `{"steps": N}` steps of progress, `delay_ms` apart (and with
/// `"log": true` a log line each); honours cancel.
pub(crate) async fn progress(ctx: Context, payload: Value) -> HandlerResult {
    let args: ProgressArgs = decode(payload)?;
    let steps = args.steps.unwrap_or(10);
    let delay = Duration::from_millis(args.delay_ms.unwrap_or(100));
    for i in 1..=steps {
        ctx.step(i, steps, format!("step {i} of {steps}")).await;
        if args.log == Some(true) {
            ctx.log(Level::Info, format!("step {i} of {steps} done"))
                .await;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.cancelled() => return Err(HandlerError::cancelled()),
        }
    }
    Ok(json!({ "steps": steps }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsArgs {
    /// Number of lines (default 10).
    count: Option<u64>,
    /// A level, or `all` to cycle through the seven (default `info`).
    level: Option<String>,
    /// Text of each line; the line number is appended.
    message: Option<String>,
}

/// Writes `{"count": N, "level": L}` log lines.
pub(crate) async fn logs(ctx: Context, payload: Value) -> HandlerResult {
    let args: LogsArgs = decode(payload)?;
    let count = args.count.unwrap_or(10);
    let level = args.level.unwrap_or_else(|| "info".into());
    let fixed = if level == "all" {
        None
    } else {
        Some(
            level
                .parse::<Level>()
                .map_err(HandlerError::invalid_payload)?,
        )
    };
    let text = args.message.unwrap_or_else(|| "line".into());
    for i in 0..count {
        let l = fixed.unwrap_or(Level::ALL[(i % 7) as usize]);
        ctx.log(l, format!("{text} {i}")).await;
    }
    Ok(json!({ "lines": count }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendArgs {
    /// The file to append to (required).
    path: Option<String>,
    /// Numbered log lines to write first (default 0).
    lines: Option<u64>,
    /// Milliseconds to sleep after the log lines, before the append.
    ms: Option<u64>,
}

/// A side effect outside the database, for counting how often work really
/// ran: logs `{"lines": N}` numbered lines, sleeps `{"ms": M}`, then
/// appends one line, `EXECUTION_ID ATTEMPT JOB`, to the file `{"path": P}`
/// (one `write` in append mode: lines from concurrent runs never mix).
/// `P` must lie under `dir` (relative paths are taken from it); anything
/// else, a symbolic link on the way out of it included, fails for good.
pub(crate) async fn append(
    dir: Option<std::path::PathBuf>,
    ctx: Context,
    payload: Value,
) -> HandlerResult {
    use std::io::Write;
    let args: AppendArgs = decode(payload)?;
    let path = args
        .path
        .ok_or_else(|| HandlerError::invalid_payload("\"path\" is required"))?;
    let Some(dir) = dir else {
        return Err(HandlerError::permanent(format!(
            "append has no directory to write in: the supervisor needs {}",
            TestBuiltins::APPEND_DIR_ENV
        )));
    };
    let target = inside(&dir, &path).map_err(HandlerError::permanent)?;
    let lines = args.lines.unwrap_or(0);
    for i in 1..=lines {
        ctx.log(Level::Info, format!("append line {i} of {lines}"))
            .await;
    }
    if let Some(ms) = args.ms {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            _ = ctx.cancelled() => return Err(HandlerError::cancelled()),
        }
    }
    let e = ctx.execution();
    let line = format!("{} {} {}\n", e.execution_id, e.attempt, e.job);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&target)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|err| HandlerError::retryable(format!("cannot append to {path}: {err}")))?;
    Ok(json!({ "appended": path, "lines": lines }))
}

/// `path` resolved under `dir`: its parent must resolve (symbolic links
/// followed) to `dir` or below, and its last part must be a plain name.
fn inside(dir: &std::path::Path, path: &str) -> Result<std::path::PathBuf, String> {
    use std::path::Component;
    let outside = || {
        format!(
            "{path:?} is outside {} (the only directory append writes under)",
            dir.display()
        )
    };
    let root = dir
        .canonicalize()
        .map_err(|e| format!("append's directory {}: {e}", dir.display()))?;
    let p = std::path::Path::new(path);
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    let Some(Component::Normal(name)) = joined.components().next_back() else {
        return Err(outside());
    };
    let parent = joined.parent().ok_or_else(outside)?;
    let parent = parent.canonicalize().map_err(|_| outside())?;
    if !parent.starts_with(&root) {
        return Err(outside());
    }
    Ok(parent.join(name))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailArgs {
    /// The error message (default "failed on purpose").
    message: Option<String>,
    /// Whether a retry may help (default true).
    retry: Option<bool>,
}

/// Fails with `{"message": M, "retry": bool}`.
pub(crate) async fn fail(_ctx: Context, payload: Value) -> HandlerResult {
    let args: FailArgs = decode(payload)?;
    let message = args.message.unwrap_or_else(|| "failed on purpose".into());
    Err(if args.retry.unwrap_or(true) {
        HandlerError::retryable(message)
    } else {
        HandlerError::permanent(message)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PanicArgs {
    message: Option<String>,
}

/// Panics with `{"message": M}`: for testing that a panic stays contained.
pub(crate) async fn panic(_ctx: Context, payload: Value) -> HandlerResult {
    let args: PanicArgs = decode(payload)?;
    let message = args.message.unwrap_or_else(|| "panicked on purpose".into());
    std::panic::panic_any(message)
}

/// Set (to anything) in a supervisor's environment, this lets `misbehave`
/// run in-process there, where its faults take the supervisor down:
/// `bench --scenario isolation` sets it for the supervisors it starts.
/// Without it a supervisor with the test built-ins does not register
/// `misbehave` for inproc mode; its worker processes host it.
///
/// ```
/// use jobvisor_worker::builtins;
/// // A supervisor registers `misbehave` in-process only where this is set.
/// let inproc = std::env::var_os(builtins::MISBEHAVE_INPROC_ENV).is_some();
/// # let _ = inproc;
/// ```
pub const MISBEHAVE_INPROC_ENV: &str = "JOBVISOR_MISBEHAVE_INPROC";

/// The faults `misbehave` commits, by `{"do": NAME}`.
///
/// ```
/// use jobvisor_worker::builtins;
/// assert!(builtins::MISBEHAVIOURS.contains(&"segfault"));
/// ```
pub const MISBEHAVIOURS: [&str; 10] = [
    "panic",
    "abort",
    "segfault",
    "oom",
    "loop",
    "fds",
    "grandchild",
    "flood",
    "stdin",
    "block",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MisbehaveArgs {
    /// Which fault (one of [`MISBEHAVIOURS`]).
    #[serde(rename = "do")]
    what: Option<String>,
    /// `grandchild`: the seconds argument of the `sleep` left behind, by
    /// which it is found again (default "3600").
    mark: Option<String>,
    /// `flood`: bytes written to stdout (default 256 MiB).
    bytes: Option<u64>,
    /// `fds`: descriptors opened and never closed (default 1000).
    count: Option<u64>,
    /// `stdin`: ignored filler, so that the run line is larger than a pipe.
    #[allow(dead_code)]
    filler: Option<String>,
}

/// Commits the fault `{"do": NAME}` of [`MISBEHAVIOURS`], as a hostile or
/// broken handler would, so that what each mode contains can be measured
/// (`jobvisor bench --scenario isolation`). None of them honours a cancel:
///
/// - `panic`: panics; `abort`: aborts the process; `segfault`: writes
///   through an unmapped address;
/// - `oom`: allocates and touches memory 16 MiB at a time until that fails;
/// - `loop`: spins forever, yielding to the runtime between rounds;
/// - `block`: spins forever without ever yielding (a blocked runtime);
/// - `fds`: opens `/dev/null` `count` times, closes none, and succeeds;
/// - `grandchild`: starts `sleep MARK`, never waits for it, and succeeds;
/// - `flood`: writes `bytes` of lines straight to stdout, then succeeds;
/// - `stdin`: waits forever on nothing, reading no input.
pub(crate) async fn misbehave(_ctx: Context, payload: Value) -> HandlerResult {
    let args: MisbehaveArgs = decode(payload)?;
    let what = args.what.unwrap_or_default();
    match what.as_str() {
        "panic" => std::panic::panic_any("misbehaving on purpose".to_string()),
        "abort" => std::process::abort(),
        "segfault" => {
            // A write to the first page, which is never mapped: a real
            // fault, not a raised signal.
            let p = std::ptr::without_provenance_mut::<u8>(8);
            // SAFETY: none; crashing is the point.
            unsafe { p.write_volatile(1) };
            unreachable!("the write faults")
        }
        "oom" => {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(vec![1u8; 16 << 20]);
                tokio::task::yield_now().await;
            }
        }
        "loop" => loop {
            for _ in 0..100_000 {
                std::hint::spin_loop();
            }
            tokio::task::yield_now().await;
        },
        "block" => loop {
            std::hint::spin_loop();
        },
        "fds" => {
            let n = args.count.unwrap_or(1000);
            for _ in 0..n {
                let f = std::fs::File::open("/dev/null")
                    .map_err(|e| HandlerError::retryable(format!("open /dev/null: {e}")))?;
                std::mem::forget(f);
            }
            Ok(json!({ "leaked": n }))
        }
        "grandchild" => {
            let mark = args.mark.unwrap_or_else(|| "3600".into());
            let child = std::process::Command::new("sleep")
                .arg(&mark)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| HandlerError::retryable(format!("cannot start sleep: {e}")))?;
            let pid = child.id();
            // Never waited for: left behind on purpose.
            std::mem::forget(child);
            Ok(json!({ "left_behind": pid }))
        }
        "flood" => {
            use std::io::Write;
            let total = args.bytes.unwrap_or(256 << 20);
            let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
            let block = line.repeat(655);
            let mut out = std::io::stdout().lock();
            let mut written = 0u64;
            while written < total {
                if out.write_all(&block).is_err() {
                    break;
                }
                written += block.len() as u64;
            }
            let _ = out.flush();
            Ok(json!({ "written": written }))
        }
        "stdin" => std::future::pending().await,
        other => Err(HandlerError::invalid_payload(format!(
            "\"do\" must be one of {}, not {other:?}",
            MISBEHAVIOURS.join(", ")
        ))),
    }
}
