//! Process mode: the execution runs in a child process that speaks the
//! worker protocol (or nothing at all) over stdin/stdout.
//!
//! The owning task spawns the child in its own process group, feeds it the
//! `run` line, and waits for its exit while two reader tasks drain stdout and
//! stderr line by line into the relay (they block when the relay is full:
//! back-pressure, never loss). A stop escalates: `cancel` message, then
//! SIGTERM to the group after the cancel grace, then SIGKILL to the group
//! after the kill grace. When the child has exited, whatever is left of its
//! group is killed, so no process of the execution outlives it.

use super::{os, Ending, Stop};
use crate::model::{now_micros, stream, ProcessLimits, Status};
use crate::relay::{LogSink, RelayMsg};
use crate::store::{Claimed, Completion};
use jobvisor_worker::protocol::{
    parse_worker_line, ParsedLine, ResultMessage, ResultStatus, RunRequest, SupervisorMessage,
    WorkerMessage, PROTOCOL_VERSION,
};
use jobvisor_worker::Level;
use nix::sys::signal::Signal;
use serde_json::{Map, Value};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

/// The PATH a child gets when its handler does not pass one through.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output pipes may stay open, with nothing read, after the child
/// exited and its group was killed: longer means a process outside the group
/// holds them (a leak).
const LEAK_TIMEOUT: Duration = Duration::from_secs(2);

/// What to start for one execution.
#[derive(Clone, Debug)]
pub struct ProcessPlan {
    /// The program (absolute path).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Bounds and environment.
    pub limits: ProcessLimits,
    /// The program sets its own death signal and checks its parent at
    /// start (`jobvisor-worker` does): it can then be started without a
    /// `pre_exec` hook, on std's faster posix_spawn path.
    pub self_guarding: bool,
}

struct ReaderState {
    /// The reader is waiting on the pipe (not on the relay).
    in_pipe: AtomicBool,
    /// Lines read so far.
    lines: AtomicU64,
}

impl ReaderState {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            in_pipe: AtomicBool::new(false),
            lines: AtomicU64::new(0),
        })
    }
}

/// Escalation progress of a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Running,
    Asked,
    Termed,
    Killed,
}

impl Step {
    fn how(self) -> &'static str {
        match self {
            Step::Running | Step::Asked => "cooperative",
            Step::Termed => "sigterm",
            Step::Killed => "sigkill",
        }
    }
}

/// Runs one execution as a child process, to its end.
pub async fn run(plan: &ProcessPlan, claimed: &Claimed, stop: &Stop, sink: &LogSink) -> Completion {
    let limits = &plan.limits;
    let mut cmd = tokio::process::Command::new(&plan.program);
    cmd.args(&plan.args).env_clear().env("PATH", DEFAULT_PATH);
    for key in &limits.allow_env {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in &limits.env {
        cmd.env(k, v);
    }
    cmd.env("JOBVISOR_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("JOBVISOR_EXECUTION_ID", claimed.id.to_string())
        .env("JOBVISOR_JOB", &claimed.job)
        .env("JOBVISOR_HANDLER", &claimed.handler)
        .env("JOBVISOR_ATTEMPT", claimed.attempt.to_string())
        .env(
            jobvisor_worker::host::SUPERVISOR_PID_ENV,
            std::process::id().to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &limits.cwd {
        cmd.current_dir(dir);
    }
    if !plan.self_guarding {
        os::die_with_supervisor(&mut cmd);
    }

    let mut child = match os::spawn(cmd).await {
        Ok(child) => child,
        Err(e) => {
            let mut c = Completion::new(claimed.id, Status::Failed, now_micros());
            c.error = Some(format!("cannot start {}: {e}", plan.program.display()));
            // Resource exhaustion may pass; a missing program will not.
            c.retryable = matches!(
                e.raw_os_error(),
                Some(nix::libc::EAGAIN | nix::libc::ENOMEM | nix::libc::EMFILE | nix::libc::ENFILE)
            );
            return c;
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    // Kills what is left of the group however this task ends.
    let _group = GroupGuard(pid);
    sink.relay()
        .send(RelayMsg::Pid(claimed.id, pid as i64))
        .await;

    // Stdin: the run line, then any cancel; a writer task so that a child
    // that never reads cannot block us.
    let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<String>();
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdin_task = tokio::spawn(async move {
        while let Some(line) = stdin_rx.recv().await {
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let run = SupervisorMessage::Run(RunRequest {
        protocol: PROTOCOL_VERSION,
        execution_id: claimed.id.to_string(),
        job: claimed.job.clone(),
        handler: claimed.handler.clone(),
        attempt: claimed.attempt,
        payload: claimed.payload.clone(),
        timeout_ms: claimed.timeout_ms,
    });
    let mut stdin_tx = Some(stdin_tx);
    send_line(&stdin_tx, &run);

    let last_seen = Arc::new(AtomicI64::new(now_micros()));
    let (result_tx, mut result_rx) = oneshot::channel::<ResultMessage>();
    let out_state = ReaderState::new();
    let err_state = ReaderState::new();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut out_task = tokio::spawn(read_stdout(
        BufReader::with_capacity(64 * 1024, stdout),
        sink.clone(),
        limits.max_line_bytes,
        result_tx,
        last_seen.clone(),
        out_state.clone(),
    ));
    let mut err_task = tokio::spawn(read_stderr(
        BufReader::with_capacity(64 * 1024, stderr),
        sink.clone(),
        limits.max_line_bytes,
        err_state.clone(),
    ));

    let cancel_grace = Duration::from_millis(limits.cancel_grace_ms);
    let kill_grace = Duration::from_millis(limits.kill_grace_ms);
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let deadline = claimed
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let heartbeat = limits.heartbeat_timeout_ms;
    let mut heartbeat_tick = tokio::time::interval(Duration::from_millis(
        heartbeat.map(|ms| (ms / 4).clamp(10, 1000)).unwrap_or(1000),
    ));
    let mut ending: Option<Ending> = None;
    let mut result: Option<ResultMessage> = None;
    let mut result_open = true;
    let mut step = Step::Running;
    let mut next_step_at: Option<Instant> = None;

    let status: Option<ExitStatus> = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            r = &mut result_rx, if result_open => {
                result_open = false;
                if let Ok(r) = r {
                    result = Some(r);
                    // A one-shot worker is done: close its stdin, and stop it
                    // if it lingers past the grace.
                    stdin_tx = None;
                    if step == Step::Running {
                        step = Step::Asked;
                        next_step_at = Some(Instant::now() + cancel_grace);
                    }
                }
            }
            _ = stop.requested(), if ending.is_none() => {
                let e = Ending::Stop(stop.reason().cloned().unwrap_or(super::StopReason::Shutdown));
                begin_stop(e, &mut ending, &mut step, &mut next_step_at, &stdin_tx, cancel_grace);
            }
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && ending.is_none() && result.is_none() => {
                let e = Ending::Timeout(claimed.timeout_ms.unwrap_or(0));
                begin_stop(e, &mut ending, &mut step, &mut next_step_at, &stdin_tx, cancel_grace);
            }
            _ = heartbeat_tick.tick(), if heartbeat.is_some() && ending.is_none() && result.is_none() => {
                let ms = heartbeat.unwrap_or(0);
                let silent_us = now_micros() - last_seen.load(Ordering::Relaxed);
                if silent_us > ms as i64 * 1000 {
                    begin_stop(Ending::Heartbeat(ms), &mut ending, &mut step, &mut next_step_at, &stdin_tx, cancel_grace);
                }
            }
            _ = sleep_until(next_step_at.unwrap_or(far)), if next_step_at.is_some() => {
                match step {
                    Step::Running | Step::Asked => {
                        os::signal_group(pid, Signal::SIGTERM);
                        step = Step::Termed;
                        next_step_at = Some(Instant::now() + kill_grace);
                        sink.note(Level::Warn, format!("sent SIGTERM to process group {pid}")).await;
                    }
                    Step::Termed => {
                        os::signal_group(pid, Signal::SIGKILL);
                        step = Step::Killed;
                        next_step_at = None;
                        sink.note(Level::Warn, format!("sent SIGKILL to process group {pid}")).await;
                    }
                    Step::Killed => next_step_at = None,
                }
            }
        }
    };
    // Whatever else of the group is alive (grandchildren) dies with it.
    os::signal_group(pid, Signal::SIGKILL);
    drop(stdin_tx);

    // Drain the output. A reader that waits on a pipe which stays silent
    // after the group is gone is held open by an escapee.
    let mut out_done = false;
    let mut err_done = false;
    let mut seen = (u64::MAX, u64::MAX);
    let mut quiet_since = Instant::now();
    while !(out_done && err_done) {
        tokio::select! {
            _ = &mut out_task, if !out_done => out_done = true,
            _ = &mut err_task, if !err_done => err_done = true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = (out_state.lines.load(Ordering::Relaxed), err_state.lines.load(Ordering::Relaxed));
                let waiting = (!out_done && out_state.in_pipe.load(Ordering::Relaxed))
                    || (!err_done && err_state.in_pipe.load(Ordering::Relaxed));
                if now != seen || !waiting {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= LEAK_TIMEOUT {
                    out_task.abort();
                    err_task.abort();
                    sink.note(Level::Warn, format!(
                        "leak: output pipes still open {} after the worker exited; another process holds them",
                        crate::model::format_ms(LEAK_TIMEOUT.as_millis() as u64)
                    )).await;
                    break;
                }
            }
        }
    }
    stdin_task.abort();
    if result.is_none() {
        result = result_rx.try_recv().ok();
    }
    let mut c = outcome(claimed, status, result, ending.as_ref(), step);
    if let (Some(Ending::Stop(super::StopReason::Shutdown)), false) = (&ending, c.interrupted) {
        // Whatever the worker said, the supervisor stopped under it.
        if c.status != Status::Succeeded {
            c.status = Status::Failed;
            c.interrupted = true;
            c.retryable = true;
        }
    }
    c
}

fn begin_stop(
    e: Ending,
    ending: &mut Option<Ending>,
    step: &mut Step,
    next_step_at: &mut Option<Instant>,
    stdin: &Option<mpsc::UnboundedSender<String>>,
    cancel_grace: Duration,
) {
    send_line(
        stdin,
        &SupervisorMessage::Cancel {
            reason: Some(e.cancel_reason()),
        },
    );
    *ending = Some(e);
    if *step == Step::Running {
        *step = Step::Asked;
        *next_step_at = Some(Instant::now() + cancel_grace);
    }
}

fn send_line(stdin: &Option<mpsc::UnboundedSender<String>>, msg: &SupervisorMessage) {
    if let Some(tx) = stdin {
        let mut line = serde_json::to_string(msg).expect("protocol messages serialize");
        line.push('\n');
        let _ = tx.send(line);
    }
}

/// Maps how the child ended to the execution's outcome (PROTOCOL.md's
/// outcome table). Exit code and signal are always recorded.
fn outcome(
    claimed: &Claimed,
    status: Option<ExitStatus>,
    result: Option<ResultMessage>,
    ending: Option<&Ending>,
    step: Step,
) -> Completion {
    let mut c = Completion::new(claimed.id, Status::Failed, now_micros());
    c.exit_code = status.and_then(|s| s.code());
    c.signal = status.and_then(|s| s.signal()).map(os::signal_name);
    // A result counts unless a timeout or heartbeat failure had already
    // begun stopping the worker.
    let stopped_by_limit = matches!(ending, Some(Ending::Timeout(_) | Ending::Heartbeat(_)));
    match (result, ending) {
        (Some(r), e) if !stopped_by_limit => match r.status {
            ResultStatus::Succeeded => {
                c.status = Status::Succeeded;
                c.output = r.output;
            }
            ResultStatus::Failed => {
                c.status = Status::Failed;
                c.error = Some(r.error.unwrap_or_else(|| "failed".into()));
                c.retryable = r.retry.unwrap_or(true);
            }
            ResultStatus::Cancelled => match e {
                Some(e) => e.apply(&mut c, "cooperative"),
                None => {
                    c.status = Status::Cancelled;
                    c.error = r.error.or_else(|| Some("cancelled by the worker".into()));
                }
            },
        },
        (_, Some(e)) => e.apply(&mut c, step.how()),
        (_, None) => match (c.exit_code, &c.signal) {
            (Some(0), _) => c.status = Status::Succeeded,
            (Some(code), _) => {
                c.error = Some(format!("exited with code {code}"));
                c.retryable = true;
            }
            (None, Some(sig)) => {
                c.error = Some(format!("killed by {sig}"));
                c.retryable = true;
            }
            (None, None) => {
                c.error = Some("lost track of the child process".into());
                c.retryable = true;
            }
        },
    }
    c
}

/// Kills the whole process group when dropped.
struct GroupGuard(i32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        os::signal_group(self.0, Signal::SIGKILL);
    }
}

/// Reads one line of at most `max` bytes into `buf` (without the newline).
/// Returns `None` at end of input, else whether the line was cut; the rest
/// of a cut line is skipped.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut any = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(any.then_some(truncated));
        }
        any = true;
        let (chunk, used, end) = match memchr::memchr(b'\n', available) {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if end {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(truncated));
        }
    }
}

fn truncated_fields(max: usize) -> Map<String, Value> {
    Map::from_iter([
        ("truncated".to_string(), Value::Bool(true)),
        ("limit_bytes".to_string(), Value::from(max)),
    ])
}

async fn read_stdout<R: AsyncBufRead + Unpin>(
    mut r: R,
    sink: LogSink,
    max: usize,
    result_tx: oneshot::Sender<ResultMessage>,
    last_seen: Arc<AtomicI64>,
    state: Arc<ReaderState>,
) {
    let mut result_tx = Some(result_tx);
    let mut buf = Vec::with_capacity(1024);
    loop {
        state.in_pipe.store(true, Ordering::Relaxed);
        let line = read_line(&mut r, &mut buf, max).await;
        state.in_pipe.store(false, Ordering::Relaxed);
        let truncated = match line {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => break,
        };
        state.lines.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if truncated {
            sink.log(
                Level::Info,
                stream::STDOUT,
                text,
                Some(truncated_fields(max)),
            )
            .await;
            continue;
        }
        match parse_worker_line(&text) {
            ParsedLine::Message(msg) => {
                last_seen.store(now_micros(), Ordering::Relaxed);
                match msg {
                    WorkerMessage::Progress(p) => sink.progress(p).await,
                    WorkerMessage::Log(l) => {
                        sink.log(l.level, stream::LOG, l.message, l.fields).await
                    }
                    WorkerMessage::Heartbeat => {}
                    // Capabilities matter to pooling, not to this one-shot
                    // run; not stored, so that every execution of a built-in
                    // does not carry the same line.
                    WorkerMessage::Hello(h) => {
                        tracing::trace!(pooled = h.pooled, handlers = ?h.handlers, "worker hello");
                    }
                    WorkerMessage::Result(res) => match result_tx.take() {
                        Some(tx) => {
                            let _ = tx.send(res);
                        }
                        None => {
                            let mut f = Map::new();
                            f.insert("ignored".into(), "a result after the final result".into());
                            sink.log(Level::Info, stream::STDOUT, text, Some(f)).await;
                        }
                    },
                }
            }
            ParsedLine::Unknown(kind) => {
                let mut f = Map::new();
                f.insert("unknown_type".into(), Value::String(kind));
                sink.log(Level::Debug, stream::STDOUT, text, Some(f)).await;
            }
            ParsedLine::Plain => sink.log(Level::Info, stream::STDOUT, text, None).await,
        }
    }
}

async fn read_stderr<R: AsyncBufRead + Unpin>(
    mut r: R,
    sink: LogSink,
    max: usize,
    state: Arc<ReaderState>,
) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        state.in_pipe.store(true, Ordering::Relaxed);
        let line = read_line(&mut r, &mut buf, max).await;
        state.in_pipe.store(false, Ordering::Relaxed);
        let truncated = match line {
            Ok(Some(t)) => t,
            Ok(None) | Err(_) => break,
        };
        state.lines.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&buf).into_owned();
        let fields = truncated.then(|| truncated_fields(max));
        sink.log(Level::Info, stream::STDERR, text, fields).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_the_rest_skipped() {
        let input: &[u8] = b"short\nabcdefghij\nlast";
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf, 5).await.unwrap(), Some(false));
        assert_eq!(buf, b"short");
        assert_eq!(read_line(&mut r, &mut buf, 5).await.unwrap(), Some(true));
        assert_eq!(buf, b"abcde");
        assert_eq!(read_line(&mut r, &mut buf, 5).await.unwrap(), Some(false));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut r, &mut buf, 5).await.unwrap(), None);
    }
}
