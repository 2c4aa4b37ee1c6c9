//! The worker host: runs handlers from a [`Registry`] in a child process,
//! speaking the protocol over stdin/stdout.

use crate::handler::{panic_message, Context, ErrorKind, ExecutionInfo, Registry};
use crate::protocol::{
    Hello, ResultMessage, ResultStatus, RunRequest, SnoozeMessage, SupervisorMessage,
    WorkerMessage, PROTOCOL_VERSION,
};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Environment variable through which the supervisor names its own pid, so a
/// worker can tell that the parent it was meant for is already gone.
///
/// ```
/// use jobvisor_worker::host;
/// // Set only in a worker the supervisor started.
/// let supervised = std::env::var(host::SUPERVISOR_PID_ENV).is_ok();
/// # let _ = supervised;
/// ```
pub const SUPERVISOR_PID_ENV: &str = "JOBVISOR_SUPERVISOR_PID";

/// Environment variable naming the `cgroup.procs` file this worker joins
/// at start (its execution's cgroup).
///
/// ```
/// use jobvisor_worker::host;
/// let cgroup = std::env::var_os(host::CGROUP_ENV); // None outside a cgroup-limited execution
/// # let _ = cgroup;
/// ```
pub const CGROUP_ENV: &str = "JOBVISOR_CGROUP";

/// Arranges for this process to be killed when its parent dies, and exits at
/// once if the supervisor that spawned it is already gone; joins the
/// execution's cgroup when told one. A no-op outside a jobvisor execution.
///
/// ```no_run
/// # use jobvisor_worker::{host, Registry};
/// // A worker with a runtime of its own: host::main without the defaults.
/// fn main() -> std::io::Result<()> {
///     host::die_with_parent();
///     let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
///     rt.block_on(host::serve_stdio(Registry::with_builtins()))
/// }
/// ```
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    {
        if std::env::var_os("JOBVISOR_PROTOCOL").is_none() {
            return;
        }
        if let Some(procs) = std::env::var_os(CGROUP_ENV) {
            // Outside its cgroup a worker would escape its limits: fail.
            if let Err(e) = std::fs::write(&procs, "0") {
                eprintln!(
                    "jobvisor-worker: cannot join {}: {e}",
                    std::path::Path::new(&procs).display()
                );
                std::process::exit(71);
            }
        }
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
        if let Some(expected) = std::env::var(SUPERVISOR_PID_ENV)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
        {
            if nix::unistd::getppid().as_raw() != expected {
                std::process::exit(70);
            }
        }
    }
}

/// The `main` of a worker program hosting `registry`: what the supervisor
/// starts for a handler added with `handler add NAME --exec PROGRAM`. It
/// says `hello` as a pooled worker naming the registry's handlers, runs
/// each `run` it is given (one at a time; `--pool-size` keeps it for the
/// next), and exits when stdin closes or its supervisor dies.
///
/// ```no_run
/// use jobvisor_worker::{Context, HandlerError, Registry};
///
/// #[derive(serde::Deserialize)]
/// struct Thumbnail { path: String, size: u32 }
///
/// async fn thumbnail(ctx: Context, args: Thumbnail) -> Result<String, HandlerError> {
///     ctx.step(1, 1, format!("{} at {}px", args.path, args.size)).await;
///     Ok(format!("{}.thumb", args.path))
/// }
///
/// fn main() -> std::process::ExitCode {
///     let mut registry = Registry::new();
///     registry.register("thumbnail", thumbnail);
///     jobvisor_worker::host::main(registry)
/// }
/// ```
pub fn main(registry: Registry) -> std::process::ExitCode {
    use std::process::ExitCode;
    die_with_parent();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("jobvisor-worker: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = runtime.block_on(serve_stdio(registry));
    // A handler's blocking task still running would hold the shutdown.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jobvisor-worker: {e}");
            ExitCode::from(74)
        }
    }
}

/// Runs the stdio protocol loop until stdin closes: announces itself as a
/// pooled worker, runs each `run` it receives (one at a time), relays the
/// handler's progress and logs, and ends each execution with a `result`.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mut registry = jobvisor_worker::Registry::new();
/// registry.register("echo", |_ctx: jobvisor_worker::Context, v: serde_json::Value| async move {
///     Ok::<_, jobvisor_worker::HandlerError>(v)
/// });
/// jobvisor_worker::host::serve_stdio(registry).await
/// # }
/// ```
pub async fn serve_stdio(registry: Registry) -> std::io::Result<()> {
    let (input, output) = private_stdio();
    let (tx, mut rx) = mpsc::channel::<WorkerMessage>(1024);
    let writer = tokio::spawn(async move {
        let mut out = BufWriter::new(output);
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(m) = next {
                let mut line = m.to_line();
                line.push('\n');
                out.write_all(line.as_bytes()).await?;
                next = rx.try_recv().ok();
            }
            // Flush whenever the queue runs dry so progress arrives live.
            out.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    });

    let _ = tx
        .send(WorkerMessage::Hello(Hello {
            protocol: Some(PROTOCOL_VERSION),
            pooled: true,
            handlers: registry.names().map(str::to_string).collect(),
        }))
        .await;

    let mut lines = BufReader::new(input).lines();
    let mut current: Option<(CancellationToken, JoinHandle<()>)> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<SupervisorMessage>(&line) {
                    Ok(SupervisorMessage::Run(req)) => {
                        // The supervisor sends a run only after the previous
                        // result, which that task sent as its last act: it is
                        // finishing, so wait for it rather than racing it.
                        if let Some((_, task)) = current.take() {
                            let _ = task.await;
                        }
                        let token = CancellationToken::new();
                        let task = tokio::spawn(run_one(&registry, req, token.clone(), tx.clone()));
                        current = Some((token, task));
                    }
                    Ok(SupervisorMessage::Cancel { .. }) => {
                        if let Some((token, _)) = &current {
                            token.cancel();
                        }
                    }
                    Err(e) => eprintln!("jobvisor-worker: ignoring an unreadable line: {e}"),
                },
                // Stdin closed (or broken): no more work, exit now.
                Ok(None) | Err(_) => break,
            },
            _ = async { (&mut current.as_mut().expect("guarded").1).await }, if current.is_some() => {
                current = None;
            }
        }
    }
    if let Some((token, task)) = current {
        token.cancel();
        task.abort();
    }
    drop(tx);
    writer.await.unwrap_or(Ok(()))
}

/// The protocol's pipes, moved off fds 0 and 1 to close-on-exec
/// descriptors of their own, read and written directly by the runtime
/// (tokio's own `stdin()` reads on a blocking thread: two thread hand-offs
/// per line, which dominated a pooled run). Fd 0 becomes `/dev/null` and
/// fd 1 a copy of stderr, so that:
/// - what a handler prints becomes log lines instead of breaking the
///   protocol's lines;
/// - a process a handler starts never inherits the run lines (nor reads
///   one meant for the next execution) or the result channel;
/// - the non-blocking mode set on the pipes never reaches the handler's
///   own stdout, where a full pipe would fail its prints.
///
/// Where any step fails, that stream stays as it was.
fn private_stdio() -> (
    Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
) {
    use std::os::fd::AsFd;
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(fd)).ok());
    let input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = match input {
        Some(r) => {
            if let Ok(null) = std::fs::File::open("/dev/null") {
                let _ = nix::unistd::dup2_stdin(null);
            }
            Box::new(r)
        }
        None => Box::new(tokio::io::stdin()),
    };
    let output = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| tokio::net::unix::pipe::Sender::from_file(std::fs::File::from(fd)).ok());
    let output: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match output {
        Some(w) => {
            let _ = nix::unistd::dup2_stdout(std::io::stderr());
            Box::new(w)
        }
        None => Box::new(tokio::io::stdout()),
    };
    (input, output)
}

fn run_one(
    registry: &Registry,
    req: RunRequest,
    token: CancellationToken,
    tx: mpsc::Sender<WorkerMessage>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let handler = registry.get(&req.handler);
    async move {
        let result = match handler {
            None => WorkerMessage::Result(ResultMessage {
                status: ResultStatus::Failed,
                output: None,
                error: Some(format!(
                    "this worker has no handler named {:?}",
                    req.handler
                )),
                retry: Some(false),
            }),
            Some(handler) => {
                let info = ExecutionInfo {
                    execution_id: req.execution_id,
                    job: req.job,
                    handler: req.handler,
                    attempt: req.attempt,
                    inputs: req.inputs,
                    snoozes: req.snoozes,
                    meta: req.meta,
                    tags: req.tags,
                };
                let ctx = Context::new(info, token, tx.clone());
                let outcome = AssertUnwindSafe(handler.call(ctx, req.payload))
                    .catch_unwind()
                    .await;
                final_of(outcome)
            }
        };
        let _ = tx.send(result).await;
    }
}

/// Maps a handler's outcome (or its panic) to the protocol's final
/// message: a `result`, or a `snooze`.
pub(crate) fn final_of(
    outcome: Result<crate::handler::HandlerResult, Box<dyn std::any::Any + Send>>,
) -> WorkerMessage {
    if let Ok(Err(e)) = &outcome {
        if let ErrorKind::Snooze(delay) = e.kind {
            return WorkerMessage::Snooze(SnoozeMessage {
                delay_ms: delay.as_millis().min(u64::MAX as u128) as u64,
                reason: Some(e.message.clone()).filter(|r| !r.is_empty()),
            });
        }
    }
    WorkerMessage::Result(match outcome {
        Ok(Ok(output)) => ResultMessage {
            status: ResultStatus::Succeeded,
            output: Some(output),
            error: None,
            retry: None,
        },
        Ok(Err(e)) => match e.kind {
            ErrorKind::Cancelled => ResultMessage {
                status: ResultStatus::Cancelled,
                output: None,
                error: Some(e.message),
                retry: None,
            },
            kind => ResultMessage {
                status: ResultStatus::Failed,
                output: None,
                error: Some(e.message),
                retry: Some(kind == ErrorKind::Retryable),
            },
        },
        Err(payload) => ResultMessage {
            status: ResultStatus::Failed,
            output: None,
            error: Some(format!("panicked: {}", panic_message(payload.as_ref()))),
            retry: Some(true),
        },
    })
}
