//! Process mode: the execution runs in a child process that speaks the
//! worker protocol (or nothing at all) over stdin/stdout.
//!
//! A `Worker` is one child: spawned in its own process group (and its own
//! cgroup where cgroup v2 is usable), with a writer task feeding its stdin
//! and two reader tasks draining stdout and stderr line by line into the
//! relay of the execution it is running (they block when the relay is full:
//! back-pressure, never loss). The owning task sends the `run` line and
//! waits for the result or the child's exit. A stop escalates: `cancel`
//! message, then SIGTERM to the group after the cancel grace, then SIGKILL
//! after the kill grace. When the child has exited, whatever is left of its
//! group and cgroup is killed, so no process of the execution outlives it.
//!
//! One-shot workers run one execution each. Handlers with a `pool_size`
//! keep workers that announced `pooled: true` for the next execution (see
//! [`super::pool`]).

mod lines;

use lines::{read_stderr, read_stdout};

use super::escalation::{self, Action, Escalation, Event, Heard, Step};
use super::isolate::{self, Setup, DEFAULT_PATH};
use super::{guardian, os, Ending, Stop};
use crate::engine::relay::{LogSink, RelayMsg};
use crate::model::Outcome;
use crate::model::{format_bytes, now_micros, stream, ProcessLimits};
use crate::store::{Claimed, Completion};
use jobvisor_worker::protocol::{
    parse_worker_line, Final, ParsedLine, RunRequest, SupervisorMessage, WorkerMessage,
    PROTOCOL_VERSION,
};
use jobvisor_worker::Level;
use nix::sys::signal::Signal;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

/// How long output pipes may stay open, with nothing read, after the child
/// exited and its group was killed: longer means a process outside the group
/// holds them (a leak).
pub const LEAK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long after its start a worker that has printed nothing may still
/// say hello: a stop in that time waits for it (up to the cancel grace),
/// so that a protocol worker cancelled while it starts (an interpreter
/// loading its modules) still gets the cooperative step.
pub const HELLO_WINDOW: Duration = Duration::from_secs(1);

/// What to start for one execution.
#[derive(Clone, Debug)]
pub struct ProcessPlan {
    /// The handler's name (for its log lines).
    pub handler: String,
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
    /// Start it in its own cgroup where cgroup v2 is usable.
    pub cgroup: bool,
    /// The worker program hosts the test built-ins too (told through its
    /// environment).
    pub test_builtins: Option<jobvisor_worker::builtins::TestBuiltins>,
    /// The exec shim (`jobvisor-worker`) that applies isolation settings,
    /// if it is installed; otherwise a `pre_exec` hook does.
    pub shim: Option<PathBuf>,
}

impl ProcessPlan {
    /// Workers of plans with the same key are interchangeable.
    ///
    /// ```
    /// use jobvisor::runner::process::ProcessPlan;
    /// let plan = |handler: &str| ProcessPlan {
    ///     handler: handler.into(),
    ///     program: "/usr/local/bin/resize".into(),
    ///     args: vec![],
    ///     limits: Default::default(),
    ///     self_guarding: false,
    ///     cgroup: false,
    ///     shim: None,
    ///     test_builtins: None,
    /// };
    /// assert_eq!(plan("resize").pool_key(), plan("resize").pool_key());
    /// // A worker serves one handler's setup: another handler pools apart.
    /// assert_ne!(plan("resize").pool_key(), plan("thumbnail").pool_key());
    /// ```
    pub fn pool_key(&self) -> String {
        serde_json::json!([
            self.handler,
            self.program,
            self.args,
            self.limits,
            self.self_guarding,
            self.cgroup,
            self.test_builtins.as_ref().map(|t| &t.append_dir)
        ])
        .to_string()
    }
}

#[derive(Default)]
struct ReaderState {
    /// The reader is waiting on the pipe (not on the relay).
    in_pipe: AtomicBool,
    /// Lines read so far.
    lines: AtomicU64,
    /// The pipe reached its end.
    closed: AtomicBool,
}

/// Where a worker's output goes while it runs one execution.
struct Route {
    sink: LogSink,
    result_tx: Mutex<Option<oneshot::Sender<Final>>>,
    last_seen: AtomicI64,
}

impl Route {
    /// The worker's final message (`result` or `snooze`) for this
    /// execution; one after it is kept as a log line, and ignored.
    async fn end(&self, last: Final, text: &str) {
        let tx = self
            .result_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match tx {
            Some(tx) => {
                let _ = tx.send(last);
            }
            None => {
                let mut f = Map::new();
                f.insert("ignored".into(), "a result after the final result".into());
                self.log(Level::Info, stream::STDOUT, text.to_string(), Some(f))
                    .await;
            }
        }
    }
}

/// One execution's side of a worker: where its output goes, and its
/// result.
pub(crate) struct Attempt {
    route: Arc<Route>,
    result_rx: oneshot::Receiver<Final>,
}

impl Attempt {
    /// Output routing for one execution logging into `sink`.
    pub(crate) fn new(sink: &LogSink) -> Attempt {
        let (result_tx, result_rx) = oneshot::channel();
        let route = Arc::new(Route {
            sink: sink.clone(),
            result_tx: Mutex::new(Some(result_tx)),
            last_seen: AtomicI64::new(now_micros()),
        });
        Attempt { route, result_rx }
    }
}

impl Route {
    async fn log(
        &self,
        level: Level,
        stream: &'static str,
        text: impl Into<Cow<'_, str>>,
        fields: Option<Map<String, Value>>,
    ) {
        // The sink holds the execution's log budget.
        self.sink.log(level, stream, text, fields).await;
    }
}

/// State shared by a worker's owner and its reader tasks.
#[derive(Default)]
struct Shared {
    route: Mutex<Option<Arc<Route>>>,
    /// The worker announced `pooled: true`.
    pooled: AtomicBool,
    /// The worker said `hello`: it speaks the protocol and may stop
    /// cooperatively. A plain program cannot read `cancel`, so it gets
    /// SIGTERM at once.
    hello: AtomicBool,
    /// Told when the worker says hello.
    hello_seen: tokio::sync::Notify,
    out: ReaderState,
    err: ReaderState,
}

impl Shared {
    fn route(&self) -> Option<Arc<Route>> {
        self.route.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One child process able to run executions.
pub(crate) struct Worker {
    child: Child,
    pid: i32,
    stdin_tx: Option<mpsc::UnboundedSender<String>>,
    stdin_task: JoinHandle<()>,
    out_task: JoinHandle<()>,
    err_task: JoinHandle<()>,
    out_inode: u64,
    err_inode: u64,
    shared: Arc<Shared>,
    setup: Setup,
    /// Its group and cgroup stay live for the guardian until it is dropped
    /// (after `Drop` killed the group).
    _watch: guardian::Watch,
    /// Executions it has run.
    pub runs: u64,
    /// When it last finished one.
    pub idle_since: Instant,
    /// When it was started: a stop in its first moments waits briefly for
    /// its hello.
    spawned: Instant,
}

/// A spawn that failed, as the execution's completion.
fn spawn_failed(claimed: &Claimed, plan: &ProcessPlan, e: &std::io::Error) -> Completion {
    // Resource exhaustion may pass; a missing program will not.
    let retryable = matches!(
        e.raw_os_error(),
        Some(nix::libc::EAGAIN | nix::libc::ENOMEM | nix::libc::EMFILE | nix::libc::ENFILE)
    );
    let error = format!("cannot start {}: {e}", plan.program.display());
    Completion::failed(claimed.id, retryable, error)
}

impl Worker {
    /// Starts a worker for `plan`; `claimed` is the execution a one-shot
    /// worker is for (its id goes into the environment), `None` for a
    /// pooled one.
    /// Output goes to `attempt` from the first line on (a child may write
    /// before it reads its `run`).
    pub(crate) async fn spawn(
        plan: &ProcessPlan,
        claimed: Option<&Claimed>,
        attempt: &Attempt,
    ) -> Result<Worker, std::io::Error> {
        let limits = &plan.limits;
        let mut setup = Setup::plan(
            limits,
            isolate::Options {
                cgroup: plan.cgroup,
                death_signal: !plan.self_guarding,
                // The shim goes on as the worker when it is the program
                // itself: then it costs no exec of its own, and is cheaper
                // than a fork for a supervisor of any size.
                shim: plan.shim.clone().filter(|shim| {
                    (*shim == plan.program && plan.args.is_empty()) || isolate::prefer_shim()
                }),
                self_join: plan.self_guarding,
            },
            if claimed.is_some() { "exec" } else { "worker" },
        )
        .map_err(std::io::Error::other)?;
        // What another user could have replaced since `handler add`.
        if !plan.self_guarding {
            isolate::check_program(&plan.program, limits.allow_writable)
                .map_err(std::io::Error::other)?;
        }
        isolate::warn_once(&plan.handler, &setup.notes);
        let mut cmd = setup.command(&plan.program, &plan.args);
        worker_env(&mut cmd, plan, claimed);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = &limits.cwd {
            cmd.current_dir(dir);
        }
        setup.apply(&mut cmd);
        let mut child = os::spawn(cmd).await?;
        setup.spawned();
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let watch = guardian::Watch::new(pid, setup.cgroup.as_ref().map(|g| g.dir()));

        // Stdin: run lines and cancels, from a writer task so that a child
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
        let shared = Arc::new(Shared {
            route: Mutex::new(Some(attempt.route.clone())),
            ..Shared::default()
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let inode = |fd: std::os::fd::BorrowedFd<'_>| {
            nix::sys::stat::fstat(fd).map(|s| s.st_ino).unwrap_or(0)
        };
        let (out_inode, err_inode) = (inode(stdout.as_fd()), inode(stderr.as_fd()));
        let max_line = limits.max_line_bytes;
        let out_task = tokio::spawn(read_stdout(
            BufReader::with_capacity(64 * 1024, stdout),
            shared.clone(),
            max_line,
            pid,
        ));
        let err_task = tokio::spawn(read_stderr(
            BufReader::with_capacity(64 * 1024, stderr),
            shared.clone(),
            max_line,
            limits.stderr_level,
            pid,
        ));
        Ok(Worker {
            child,
            pid,
            stdin_tx: Some(stdin_tx),
            stdin_task,
            out_task,
            err_task,
            out_inode,
            err_inode,
            shared,
            setup,
            _watch: watch,
            runs: 0,
            idle_since: Instant::now(),
            spawned: Instant::now(),
        })
    }

    /// Its pid (and process group id).
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Whether it can take another execution: it announced pooling and has
    /// neither exited nor closed its output.
    pub(crate) fn reusable(&mut self) -> bool {
        self.shared.pooled.load(Ordering::Relaxed)
            && !self.shared.out.closed.load(Ordering::Relaxed)
            && matches!(self.child.try_wait(), Ok(None))
    }

    /// Closes stdin (the protocol's "no more work, exit now"), waits up to
    /// `grace` for the exit, then kills what is left.
    pub(crate) async fn retire(mut self, grace: Duration) {
        self.stdin_tx = None;
        let _ = tokio::time::timeout(grace, self.child.wait()).await;
        os::signal_group(self.pid, Signal::SIGKILL);
        let _ = self.child.wait().await;
        self.stdin_task.abort();
        // The cgroup (if any) is killed and removed with the setup.
    }
}

/// How an execution on a worker ended.
pub(crate) enum Ended {
    /// The worker answered and can run another execution.
    Answered(Completion, Box<Worker>),
    /// The worker is gone (or was never reusable); its processes are dead.
    Done(Completion),
}

/// Runs one execution as a one-shot child process, to its end.
pub async fn run(plan: &ProcessPlan, claimed: &Claimed, stop: &Stop, sink: &LogSink) -> Completion {
    let attempt = Attempt::new(sink);
    let worker = match Worker::spawn(plan, Some(claimed), &attempt).await {
        Ok(w) => w,
        Err(e) => return spawn_failed(claimed, plan, &e),
    };
    match run_on(worker, attempt, false, &plan.limits, claimed, stop, sink).await {
        Ended::Answered(c, _) | Ended::Done(c) => c,
    }
}

/// Spawns a worker for a pooled handler, or the failed completion.
pub(crate) async fn spawn_pooled(
    plan: &ProcessPlan,
    claimed: &Claimed,
    attempt: &Attempt,
) -> Result<Worker, Completion> {
    Worker::spawn(plan, None, attempt)
        .await
        .map_err(|e| spawn_failed(claimed, plan, &e))
}

/// Runs `claimed` on `w`. With `keep`, a worker that announced pooling and
/// answered without being signalled is handed back for the next execution.
pub(crate) async fn run_on(
    mut w: Worker,
    attempt: Attempt,
    keep: bool,
    limits: &ProcessLimits,
    claimed: &Claimed,
    stop: &Stop,
    sink: &LogSink,
) -> Ended {
    let pid = w.pid;
    let Attempt {
        route,
        mut result_rx,
    } = attempt;
    begin(&w, &route, claimed, sink).await;
    let had = if keep {
        own_beside(&w).await
    } else {
        Vec::new()
    };
    send_line(&w.stdin_tx, &run_request(claimed));

    let mut m = Escalation::for_limits(limits);
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let deadline = claimed
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let heartbeat = limits.heartbeat_timeout_ms;
    // Looks for silence four times per allowed silence (10 ms to 1 s).
    let mut heartbeat_tick = tokio::time::interval(Duration::from_millis(
        heartbeat.map_or(1000, |ms| (ms / 4).clamp(10, 1000)),
    ));
    // The CPU time a process has used cannot be read once it is reaped;
    // sample it, to tell a CPU-limit SIGKILL from others.
    let mut cpu_tick = tokio::time::interval(Duration::from_millis(200));
    let mut cpu_used_ms = 0u64;
    let mut result: Option<Final> = None;
    let mut result_open = true;
    let mut due: Option<Instant> = None;

    let hello = || w.shared.hello.load(Ordering::Relaxed);
    let heard = || heard_from(&w.shared, w.spawned);
    let status: Option<ExitStatus> = loop {
        let event = tokio::select! {
            status = w.child.wait() => break status.ok(),
            r = &mut result_rx, if result_open => {
                result_open = false;
                let Ok(r) = r else { continue };
                result = Some(r);
                Event::Result { keepable: keep && w.shared.pooled.load(Ordering::Relaxed) }
            }
            _ = stop.requested(), if m.stoppable() => {
                let reason = stop.reason().cloned().unwrap_or(super::StopReason::Shutdown);
                Event::Stop { ending: Ending::Stop(reason), heard: heard() }
            }
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && m.limits_apply() => {
                Event::Stop { ending: Ending::Timeout(claimed.timeout_ms.unwrap_or(0)), heard: heard() }
            }
            _ = heartbeat_tick.tick(), if heartbeat.is_some() && m.limits_apply() => {
                let ms = heartbeat.unwrap_or(0);
                let silent_us = now_micros() - route.last_seen.load(Ordering::Relaxed);
                if silent_us <= ms as i64 * 1000 {
                    continue;
                }
                Event::Stop { ending: Ending::Heartbeat(ms), heard: heard() }
            }
            _ = cpu_tick.tick(), if limits.cpu_time_s.is_some() => {
                if let Some(ms) = isolate::cpu_time_ms(pid) {
                    cpu_used_ms = ms;
                }
                continue;
            }
            _ = sleep_until(due.unwrap_or(far)), if due.is_some() => Event::Due { hello: hello() },
        };
        for action in m.on(event) {
            match action {
                Action::AskCancel(reason) => send_line(&w.stdin_tx, &cancel_message(reason)),
                Action::CloseStdin => w.stdin_tx = None,
                Action::Keep => {
                    // The worker stays; nothing else the execution started
                    // may outlive it.
                    free_for_next(&mut w, &had, sink).await;
                    let facts = EndReport {
                        events: None,
                        address_space: w.setup.address_space,
                        cpu_used_ms,
                        step: m.step(),
                        reported: result.is_some(),
                    };
                    let c = completion(claimed, m.outcome(None, result));
                    return Ended::Answered(finish_record(c, facts, limits).await, Box::new(w));
                }
                Action::Term => signal_noted(&w, Signal::SIGTERM, sink).await,
                Action::Kill => signal_noted(&w, Signal::SIGKILL, sink).await,
                Action::Arm(after) => due = Some(Instant::now() + after),
                Action::Disarm => due = None,
            }
        }
    };
    let events = w.setup.cgroup.as_ref().map(|g| g.events());
    reap(&mut w, sink).await;
    if result.is_none() {
        result = result_rx.try_recv().ok();
    }
    let facts = EndReport {
        events,
        address_space: w.setup.address_space,
        cpu_used_ms,
        step: m.step(),
        reported: result.is_some(),
    };
    Ended::Done(
        finish_record(
            completion(claimed, m.outcome(status, result)),
            facts,
            limits,
        )
        .await,
    )
}

/// The run of `claimed` on worker `w` begins: its pid is recorded, and
/// what the worker says is routed to this run.
async fn begin(w: &Worker, route: &Arc<Route>, claimed: &Claimed, sink: &LogSink) {
    sink.relay()
        .send(RelayMsg::Pid(claimed.id, w.pid as i64))
        .await;
    *w.shared.route.lock().unwrap_or_else(|e| e.into_inner()) = Some(route.clone());
}

/// What a kept worker has beside it before its run, which is its own. A
/// new one is given its first run once it said hello (or after
/// HELLO_WINDOW): its start-up, helpers and all, is over by then.
async fn own_beside(w: &Worker) -> Vec<i32> {
    if w.runs == 0 && !w.shared.hello.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(HELLO_WINDOW, w.shared.hello_seen.notified()).await;
    }
    beside(w)
}

/// A worker's environment: nothing of the supervisor's but `PATH` and what
/// the handler allows, then its own variables (never a reserved
/// `JOBVISOR_*`), then the protocol's, and the execution's for a worker of
/// one run.
fn worker_env(cmd: &mut tokio::process::Command, plan: &ProcessPlan, claimed: Option<&Claimed>) {
    let limits = &plan.limits;
    cmd.env_clear().env("PATH", DEFAULT_PATH);
    for key in &limits.allow_env {
        if isolate::reserved_env(key) {
            continue;
        }
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    for (k, v) in &limits.env {
        if !isolate::reserved_env(k) {
            cmd.env(k, v);
        }
    }
    cmd.env("JOBVISOR_PROTOCOL", PROTOCOL_VERSION.to_string())
        .env("JOBVISOR_HANDLER", &plan.handler)
        .env(
            jobvisor_worker::host::SUPERVISOR_PID_ENV,
            std::process::id().to_string(),
        );
    if let Some(t) = &plan.test_builtins {
        use jobvisor_worker::builtins::TestBuiltins;
        cmd.env(TestBuiltins::ENV, "1");
        if let Some(dir) = &t.append_dir {
            cmd.env(TestBuiltins::APPEND_DIR_ENV, dir);
        }
    }
    if let Some(c) = claimed {
        cmd.env("JOBVISOR_EXECUTION_ID", c.id.to_string())
            .env("JOBVISOR_JOB", &c.job)
            .env("JOBVISOR_ATTEMPT", c.attempt.to_string())
            .env("JOBVISOR_SNOOZES", c.snoozes.to_string());
        if let Some(tp) = traceparent(c) {
            cmd.env("TRACEPARENT", tp);
        }
    }
}

/// The W3C `traceparent` of `c`'s attempt span, if its run has a trace:
/// what the worker's own spans are children of.
fn traceparent(c: &Claimed) -> Option<String> {
    let t = c.trace?;
    Some(t.traceparent(crate::model::trace::span_id(
        c.id,
        crate::model::SpanOf::Attempt,
    )))
}

/// The `cancel` message, saying why.
fn cancel_message(reason: String) -> SupervisorMessage {
    SupervisorMessage::Cancel {
        reason: Some(reason),
    }
}

/// The `run` message for `claimed`.
fn run_request(claimed: &Claimed) -> SupervisorMessage {
    SupervisorMessage::Run(RunRequest {
        protocol: PROTOCOL_VERSION,
        execution_id: claimed.id.to_string(),
        job: claimed.job.clone(),
        handler: claimed.handler.clone(),
        attempt: claimed.attempt,
        payload: claimed.payload.clone(),
        timeout_ms: claimed.timeout_ms,
        inputs: claimed.inputs.clone(),
        snoozes: claimed.snoozes,
        meta: claimed.meta.clone(),
        tags: claimed.tags.clone(),
        traceparent: traceparent(claimed),
    })
}

/// What was heard from a worker (its `shared` state; `spawned` then) when a
/// stop begins: read then, since the hello may arrive at any time before,
/// and a worker that has printed nothing since it started moments ago may
/// still send one.
fn heard_from(shared: &Shared, spawned: Instant) -> Heard {
    if shared.hello.load(Ordering::Relaxed) {
        Heard::Hello
    } else {
        let within = HELLO_WINDOW.saturating_sub(spawned.elapsed());
        if shared.out.lines.load(Ordering::Relaxed) > 0 || within.is_zero() {
            Heard::Other
        } else {
            Heard::Nothing { within }
        }
    }
}

/// A pooled worker that answered stays for the next run: what the run
/// started beside it (all but what it `had` before) is killed, and it is
/// idle from now on.
async fn free_for_next(w: &mut Worker, had: &[i32], sink: &LogSink) {
    let left = kill_left_behind(w, had);
    if !left.is_empty() {
        sink.note(
            Level::Warn,
            format!(
                "killed {} process(es) the execution left running beside pooled worker {} (pids {})",
                left.len(),
                w.pid,
                join_pids(&left)
            ),
        )
        .await;
    }
    *w.shared.route.lock().unwrap_or_else(|e| e.into_inner()) = None;
    w.runs += 1;
    w.idle_since = Instant::now();
}

/// Sends `sig` to worker `w`'s process group (SIGKILL kills its cgroup
/// too), noted in the execution's log.
async fn signal_noted(w: &Worker, sig: Signal, sink: &LogSink) {
    os::signal_group(w.pid, sig);
    if sig == Signal::SIGKILL {
        if let Some(g) = &w.setup.cgroup {
            g.kill();
        }
    }
    sink.note(
        Level::Warn,
        format!("sent {sig} to process group {}", w.pid),
    )
    .await;
}

/// The completion of `claimed` that ended so.
fn completion(claimed: &Claimed, e: escalation::Ended) -> Completion {
    let mut c = Completion::new(claimed.id, e.outcome, now_micros());
    (c.error, c.output, c.exit_code, c.signal) = (e.error, e.output, e.exit_code, e.signal);
    c
}

/// After the worker exited: kills what is left of its group and cgroup,
/// then drains its output. A pipe that stays open and silent after the
/// group is gone is held by an escapee, which is found and killed.
async fn reap(w: &mut Worker, sink: &LogSink) {
    let pid = w.pid;
    os::signal_group(pid, Signal::SIGKILL);
    w.stdin_tx = None;
    if let Some(g) = w.setup.cgroup.as_ref().filter(|g| g.populated()) {
        let escapees: Vec<i32> = g
            .pids()
            .into_iter()
            .filter(|p| {
                nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(*p)))
                    .is_ok_and(|pg| pg.as_raw() != pid)
            })
            .collect();
        g.kill();
        if !escapees.is_empty() {
            sink.note(
                Level::Warn,
                format!(
                    "killed {} process(es) that had left the process group (pids {}), through the execution's cgroup",
                    escapees.len(),
                    join_pids(&escapees)
                ),
            )
            .await;
        }
    }

    let mut out_done = false;
    let mut err_done = false;
    let mut seen = (u64::MAX, u64::MAX);
    let mut quiet_since = Instant::now();
    let shared = w.shared.clone();
    while !(out_done && err_done) {
        tokio::select! {
            _ = &mut w.out_task, if !out_done => out_done = true,
            _ = &mut w.err_task, if !err_done => err_done = true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                let now = (shared.out.lines.load(Ordering::Relaxed), shared.err.lines.load(Ordering::Relaxed));
                let waiting = (!out_done && shared.out.in_pipe.load(Ordering::Relaxed))
                    || (!err_done && shared.err.in_pipe.load(Ordering::Relaxed));
                if now != seen || !waiting {
                    seen = now;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= LEAK_TIMEOUT {
                    let inodes = [w.out_inode, w.err_inode];
                    let holders = tokio::task::spawn_blocking(move || {
                        let mut h: Vec<i32> = inodes.iter().filter(|i| **i != 0).flat_map(|i| isolate::pipe_holders(*i)).collect();
                        h.sort_unstable();
                        h.dedup();
                        h
                    }).await.unwrap_or_default();
                    for p in &holders {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
                    }
                    let what = if holders.is_empty() {
                        "their holder could not be found".to_string()
                    } else {
                        format!("killed the process(es) holding them (pids {})", join_pids(&holders))
                    };
                    sink.note(Level::Warn, format!(
                        "leak: output pipes still open {} after the worker exited; {what}",
                        crate::model::format_ms(LEAK_TIMEOUT.as_millis() as u64)
                    )).await;
                    w.out_task.abort();
                    w.err_task.abort();
                    break;
                }
            }
        }
    }
    w.stdin_task.abort();
}

/// The processes beside a worker: the others of its cgroup or, without
/// one, its descendants.
fn beside(w: &Worker) -> Vec<i32> {
    match &w.setup.cgroup {
        Some(g) => g.pids().into_iter().filter(|p| *p != w.pid).collect(),
        None => isolate::descendants(w.pid),
    }
}

/// Kills what an execution started beside a pooled worker that is kept:
/// the processes beside it that it did not already have when its run was
/// written (those are its own, such as a helper it started at start-up).
/// Returns their pids.
fn kill_left_behind(w: &Worker, had: &[i32]) -> Vec<i32> {
    let started: Vec<i32> = beside(w).into_iter().filter(|p| !had.contains(p)).collect();
    for p in &started {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), Signal::SIGKILL);
    }
    started
}

fn send_line(stdin: &Option<mpsc::UnboundedSender<String>>, msg: &SupervisorMessage) {
    if let Some(tx) = stdin {
        let mut line = serde_json::to_string(msg).expect("protocol messages serialize");
        line.push('\n');
        let _ = tx.send(line);
    }
}

fn join_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is known about how the child ended, beyond its exit status.
struct EndReport {
    /// Its cgroup's limit events (when it had one).
    events: Option<super::cgroup::Events>,
    /// The address-space rlimit it ran under.
    address_space: Option<u64>,
    /// The CPU time it had used at the last sample.
    cpu_used_ms: u64,
    /// How far a stop had escalated.
    step: Step,
    /// Whether the worker reported its end itself (a `result` line).
    reported: bool,
}

/// Adds what the limits explain to the completion, and a note for output
/// beyond the log budget.
async fn finish_record(mut c: Completion, facts: EndReport, limits: &ProcessLimits) -> Completion {
    let EndReport {
        events,
        address_space,
        cpu_used_ms,
        step,
        reported,
    } = facts;
    if let Outcome::Succeeded
    | Outcome::TimedOut
    | Outcome::Interrupted
    | Outcome::Cancelled { how: Some(_) } = c.outcome
    {
        return c;
    }
    let events = events.unwrap_or_default();
    let ours = step == Step::Killed;
    let cause = match c.signal.as_deref() {
        Some("SIGXCPU") => limits.cpu_time_s.map(|s| format!("CPU time limit {s} s")),
        Some("SIGKILL") if !ours && events.oom_kills > 0 => limits
            .memory_max
            .map(|m| format!("memory limit {}", format_bytes(m))),
        Some("SIGKILL") if !ours => limits
            .cpu_time_s
            .filter(|s| cpu_used_ms + 400 >= s * 1000)
            .map(|s| format!("CPU time limit {s} s")),
        _ => None,
    };
    let mut context = Vec::new();
    if events.oom_kills > 0 && cause.is_none() {
        if let Some(m) = limits.memory_max {
            context.push(format!(
                "memory limit {} killed {} process(es)",
                format_bytes(m),
                events.oom_kills
            ));
        }
    }
    if events.pids_refused > 0 {
        if let Some(p) = limits.pids_max {
            context.push(format!(
                "pids limit {p} refused {} fork(s)",
                events.pids_refused
            ));
        }
    }
    let base = c.error.take().unwrap_or_else(|| "failed".into());
    // The rlimit shows only as a failed allocation: worth naming for a
    // crash or an error about memory, noise on a failure the worker
    // reported for reasons of its own.
    if cause.is_none() && (!reported || about_memory(&base)) {
        if let Some(a) = address_space {
            context.push(format!(
                "address-space limit {} was in force",
                format_bytes(a)
            ));
        }
    }
    let mut error = match cause {
        Some(cause) => format!("{base}: {cause}"),
        None => base,
    };
    if !context.is_empty() {
        error = format!("{error} ({})", context.join("; "));
    }
    c.error = Some(error);
    c
}

/// Whether an error text speaks of memory or of allocating it
/// (`MemoryError`, `Cannot allocate memory`, `ENOMEM`, `memory allocation
/// of 64 bytes failed`, `out of memory`).
fn about_memory(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    ["memory", "alloc", "enomem"].iter().any(|w| e.contains(w))
}

impl Drop for Worker {
    /// Kills the whole process group (the cgroup goes with the setup).
    fn drop(&mut self) {
        os::signal_group(self.pid, Signal::SIGKILL);
        self.stdin_task.abort();
        self.out_task.abort();
        self.err_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::lines::read_line;
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
