//! How a process-mode execution is stopped and what its end means, as a
//! state machine without I/O: the owner of the execution feeds it
//! [`Event`]s and carries out the [`Action`]s it returns, and at the exit
//! [`Escalation::outcome`] maps how the child ended to the execution's
//! outcome (PROTOCOL.md's outcome table). Unit tests drive every path
//! without a child.

use super::{Ending, StopReason};
use crate::model::Outcome;
use jobvisor_worker::protocol::{Final, ResultStatus};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

/// How far a stop has escalated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
    /// Nothing asked of the worker yet.
    Running,
    /// Asked to cancel (or, after a one-shot result, expected to exit).
    Asked,
    /// Its process group got SIGTERM.
    Termed,
    /// Its process group (and cgroup) got SIGKILL.
    Killed,
}

impl Step {
    /// How a stop that ended at this step is recorded.
    pub(crate) fn how(self) -> &'static str {
        match self {
            Step::Running | Step::Asked => "cooperative",
            Step::Termed => "sigterm",
            Step::Killed => "sigkill",
        }
    }
}

/// What was heard from a worker when a stop began.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Its `hello`: it reads a `cancel` and gets the cancel grace to
    /// answer it.
    Hello,
    /// Something else first, or nothing for too long: a plain program,
    /// which cannot read `cancel`; SIGTERM at once.
    Other,
    /// Nothing yet from a worker that has only just started: a `hello`
    /// (which must be its first line) may still come within this long.
    Nothing { within: Duration },
}

/// What the owner of an execution sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// A stop from outside (cancel, shutdown), the timeout, or the
    /// heartbeat timeout, and what the worker had said by then.
    Stop { ending: Ending, heard: Heard },
    /// The worker's `result` arrived. `keepable`: the worker announced
    /// pooling and the pool would keep it.
    Result { keepable: bool },
    /// The time armed by [`Action::Arm`] came; `hello`: whether the worker
    /// has said hello by now.
    Due { hello: bool },
}

/// What the owner does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Write `cancel` with this reason to the worker.
    AskCancel(String),
    /// Close the worker's stdin: no more work, exit now.
    CloseStdin,
    /// Hand the worker back to its pool: the execution is answered.
    Keep,
    /// SIGTERM to the process group.
    Term,
    /// SIGKILL to the process group and the cgroup.
    Kill,
    /// Send [`Event::Due`] after this long (replacing what was armed).
    Arm(Duration),
    /// Nothing is armed any more.
    Disarm,
}

/// One execution's stop, from its start to its exit.
#[derive(Clone, Debug)]
pub(crate) struct Escalation {
    step: Step,
    ending: Option<Ending>,
    answered: bool,
    /// A stop came before the worker's first line: the armed time is the
    /// wait for its hello, not the cancel grace.
    awaiting_hello: bool,
    cancel_grace: Duration,
    kill_grace: Duration,
}

impl Escalation {
    /// A running execution; `cancel_grace` is how long a worker that read a
    /// `cancel` (or sent its result) has to exit before SIGTERM, and
    /// `kill_grace` how long after SIGTERM before SIGKILL.
    pub(crate) fn new(cancel_grace: Duration, kill_grace: Duration) -> Self {
        Self {
            step: Step::Running,
            ending: None,
            answered: false,
            awaiting_hello: false,
            cancel_grace,
            kill_grace,
        }
    }

    /// A running execution with the graces of `limits`.
    pub(crate) fn for_limits(limits: &crate::model::ProcessLimits) -> Self {
        Self::new(
            Duration::from_millis(limits.cancel_grace_ms),
            Duration::from_millis(limits.kill_grace_ms),
        )
    }

    /// Whether a stop (cancel, shutdown) is still news.
    pub(crate) fn stoppable(&self) -> bool {
        self.ending.is_none()
    }

    /// Whether the timeout and the heartbeat still apply: not once a stop
    /// began or the worker answered.
    pub(crate) fn limits_apply(&self) -> bool {
        self.ending.is_none() && !self.answered
    }

    /// How far the stop escalated.
    pub(crate) fn step(&self) -> Step {
        self.step
    }

    /// What to do about `event`.
    pub(crate) fn on(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Stop { ending, heard } => {
                if self.ending.is_some() {
                    return Vec::new();
                }
                let mut actions = vec![Action::AskCancel(ending.cancel_reason())];
                self.ending = Some(ending);
                if self.step == Step::Running {
                    self.step = Step::Asked;
                    // A worker that never said hello may not read stdin:
                    // it is not kept waiting for an answer that cannot
                    // come. One that has said nothing yet, just started,
                    // may still: its hello is waited for, briefly.
                    let grace = match heard {
                        Heard::Hello => self.cancel_grace,
                        Heard::Other => Duration::ZERO,
                        Heard::Nothing { within } => {
                            self.awaiting_hello = true;
                            within.min(self.cancel_grace)
                        }
                    };
                    actions.push(Action::Arm(grace));
                }
                actions
            }
            Event::Result { keepable } => {
                self.answered = true;
                if keepable && self.step <= Step::Asked {
                    return vec![Action::Keep];
                }
                // A one-shot worker is done: it exits, or is stopped if it
                // lingers past the grace.
                let mut actions = vec![Action::CloseStdin];
                if self.step == Step::Running {
                    self.step = Step::Asked;
                    actions.push(Action::Arm(self.cancel_grace));
                }
                actions
            }
            // Its hello came in time: now the cancel grace (the cancel is
            // already written, after the run line it reads first).
            Event::Due { hello: true } if self.awaiting_hello && self.step == Step::Asked => {
                self.awaiting_hello = false;
                vec![Action::Arm(self.cancel_grace)]
            }
            Event::Due { .. } => match self.step {
                Step::Running | Step::Asked => {
                    self.step = Step::Termed;
                    vec![Action::Term, Action::Arm(self.kill_grace)]
                }
                Step::Termed => {
                    self.step = Step::Killed;
                    vec![Action::Kill, Action::Disarm]
                }
                Step::Killed => vec![Action::Disarm],
            },
        }
    }

    /// The outcome, once the child is gone: from its exit status (`None`
    /// if it could not be had), its result, and how far a stop went. Also
    /// the error text, and the exit code and signal name to record.
    pub(crate) fn outcome(&self, status: Option<ExitStatus>, result: Option<Final>) -> Ended {
        let exit_code = status.and_then(|s| s.code());
        let signal = status.and_then(|s| s.signal()).map(super::os::signal_name);
        let ending = self.ending.as_ref();
        // A result counts unless a timeout or heartbeat failure had already
        // begun stopping the worker.
        let stopped_by_limit = matches!(ending, Some(Ending::Timeout(_) | Ending::Heartbeat(_)));
        let failed = |error: String| (Outcome::Failed { retryable: true }, Some(error), None);
        let (mut outcome, error, output) = match (result, ending) {
            // A snooze while a stop is under way is not honoured: the stop
            // decides, as if the worker had said nothing.
            (Some(Final::Snooze(s)), None) => (
                Outcome::Snoozed {
                    delay_ms: s.delay_ms,
                },
                Some(snoozed(s.delay_ms, s.reason)),
                None,
            ),
            (Some(Final::Snooze(_)), Some(e)) => {
                let (o, error) = e.outcome(self.step.how());
                (o, Some(error), None)
            }
            (Some(Final::Result(r)), e) if !stopped_by_limit => match r.status {
                ResultStatus::Succeeded => (Outcome::Succeeded, None, r.output),
                ResultStatus::Failed => (
                    Outcome::Failed {
                        retryable: r.retry.unwrap_or(true),
                    },
                    Some(r.error.unwrap_or_else(|| "failed".into())),
                    None,
                ),
                ResultStatus::Cancelled => match e {
                    Some(e) => {
                        let (o, error) = e.outcome("cooperative");
                        (o, Some(error), None)
                    }
                    None => (
                        Outcome::Cancelled { how: None },
                        r.error.or_else(|| Some("cancelled by the worker".into())),
                        None,
                    ),
                },
            },
            (_, Some(e)) => {
                let (o, error) = e.outcome(self.step.how());
                (o, Some(error), None)
            }
            (_, None) => match (exit_code, &signal) {
                (Some(0), _) => (Outcome::Succeeded, None, None),
                (Some(code), _) => failed(format!("exited with code {code}")),
                (None, Some(sig)) => failed(format!("killed by {sig}")),
                (None, None) => failed("lost track of the child process".into()),
            },
        };
        // Whatever the worker said, the supervisor stopped under it.
        if ending == Some(&Ending::Stop(StopReason::Shutdown))
            && !matches!(outcome, Outcome::Succeeded | Outcome::Snoozed { .. })
        {
            outcome = Outcome::Interrupted;
        }
        Ended {
            outcome,
            error,
            output,
            exit_code,
            signal,
        }
    }
}

/// The error text of a snoozed execution: for how long, and why.
pub(crate) fn snoozed(delay_ms: u64, reason: Option<String>) -> String {
    let d = crate::model::format_ms(delay_ms);
    match reason.filter(|r| !r.is_empty()) {
        Some(r) => format!("snoozed for {d}: {r}"),
        None => format!("snoozed for {d}"),
    }
}

/// An execution's end, as [`Escalation::outcome`] makes it out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Ended {
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) output: Option<serde_json::Value>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CANCEL: Duration = Duration::from_secs(5);
    const KILL: Duration = Duration::from_secs(3);

    fn exited(code: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(code << 8))
    }

    fn signalled(sig: i32) -> Option<ExitStatus> {
        Some(ExitStatus::from_raw(sig))
    }

    fn result(line: &str) -> Option<Final> {
        use jobvisor_worker::protocol::{parse_worker_line, ParsedLine, WorkerMessage};
        match parse_worker_line(line) {
            ParsedLine::Message(WorkerMessage::Result(r)) => Some(Final::Result(r)),
            ParsedLine::Message(WorkerMessage::Snooze(z)) => Some(Final::Snooze(z)),
            other => panic!("not a final message: {other:?}"),
        }
    }

    #[test]
    fn a_snooze_ends_it_as_snoozed_unless_a_stop_is_under_way() {
        let m = Escalation::new(CANCEL, KILL);
        let e = m.outcome(
            exited(0),
            result(r#"{"type":"snooze","delay_ms":1500,"reason":"busy"}"#),
        );
        assert_eq!(e.outcome, Outcome::Snoozed { delay_ms: 1500 });
        assert_eq!(e.error.as_deref(), Some("snoozed for 1s 500ms: busy"));
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(cancel("stop", true));
        let e = m.outcome(exited(0), result(r#"{"type":"snooze","delay_ms":10}"#));
        assert!(matches!(e.outcome, Outcome::Cancelled { .. }), "{e:?}");
    }

    fn cancel(reason: &str, hello: bool) -> Event {
        Event::Stop {
            ending: Ending::Stop(StopReason::Cancel(reason.into())),
            heard: if hello { Heard::Hello } else { Heard::Other },
        }
    }

    #[test]
    fn a_stop_before_a_new_workers_first_line_waits_briefly_for_its_hello() {
        let within = Duration::from_millis(700);
        let early = Event::Stop {
            ending: Ending::Stop(StopReason::Cancel("stop".into())),
            heard: Heard::Nothing { within },
        };
        // The hello came in the wait: the cancel grace, then as usual.
        let mut m = Escalation::new(CANCEL, KILL);
        assert_eq!(
            m.on(early.clone()),
            vec![Action::AskCancel("stop".into()), Action::Arm(within)]
        );
        assert_eq!(m.on(Event::Due { hello: true }), vec![Action::Arm(CANCEL)]);
        assert_eq!(
            m.on(Event::Due { hello: true }),
            vec![Action::Term, Action::Arm(KILL)]
        );
        let e = m.outcome(exited(0), None);
        assert!(matches!(e.outcome, Outcome::Cancelled { .. }), "{e:?}");
        // None came: SIGTERM at the wait's end, as for any plain program.
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(early);
        assert_eq!(
            m.on(Event::Due { hello: false }),
            vec![Action::Term, Action::Arm(KILL)]
        );
        assert_eq!(m.step().how(), "sigterm");
        // The wait is never longer than the cancel grace.
        let mut m = Escalation::new(Duration::from_millis(100), KILL);
        let actions = m.on(Event::Stop {
            ending: Ending::Timeout(10),
            heard: Heard::Nothing { within },
        });
        assert_eq!(actions[1], Action::Arm(Duration::from_millis(100)));
    }

    fn summary(e: &Ended) -> (Outcome, Option<&str>) {
        (e.outcome.clone(), e.error.as_deref())
    }

    // PROTOCOL.md, "Outcome when no `result` arrives", row by row.

    #[test]
    fn exit_code_zero_succeeds_and_any_other_fails_naming_it() {
        let m = Escalation::new(CANCEL, KILL);
        let e = m.outcome(exited(0), None);
        assert_eq!(summary(&e), (Outcome::Succeeded, None));
        assert_eq!(e.exit_code, Some(0));
        let e = m.outcome(exited(3), None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Failed { retryable: true },
                Some("exited with code 3")
            )
        );
        assert_eq!((e.exit_code, e.signal), (Some(3), None));
    }

    #[test]
    fn a_signal_without_a_cancel_fails_naming_the_signal() {
        let e = Escalation::new(CANCEL, KILL).outcome(signalled(11), None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Failed { retryable: true },
                Some("killed by SIGSEGV")
            )
        );
        assert_eq!((e.exit_code, e.signal.as_deref()), (None, Some("SIGSEGV")));
    }

    #[test]
    fn after_a_cancel_any_end_is_cancelled_with_how_it_ended() {
        // A worker that said hello answers within the grace and exits 0.
        let mut m = Escalation::new(CANCEL, KILL);
        assert_eq!(
            m.on(cancel("stop", true)),
            vec![Action::AskCancel("stop".into()), Action::Arm(CANCEL)]
        );
        let e = m.outcome(exited(0), None);
        let how = Some("cooperative");
        assert_eq!(
            summary(&e),
            (Outcome::Cancelled { how }, Some("cancelled (cooperative)"))
        );
        // A worker that exits 1 on its own after the cancel: cancelled too.
        let e = m.outcome(exited(1), None);
        assert_eq!(e.outcome, Outcome::Cancelled { how });
        assert_eq!(e.exit_code, Some(1));
    }

    #[test]
    fn a_timeout_fails_marked_timed_out_and_escalates_as_a_cancel() {
        let mut m = Escalation::new(CANCEL, KILL);
        assert!(m.limits_apply());
        let actions = m.on(Event::Stop {
            ending: Ending::Timeout(1500),
            heard: Heard::Hello,
        });
        assert_eq!(
            actions,
            vec![
                Action::AskCancel("timed out after 1s 500ms".into()),
                Action::Arm(CANCEL)
            ]
        );
        assert!(!m.limits_apply() && !m.stoppable());
        assert_eq!(
            m.on(Event::Due { hello: false }),
            vec![Action::Term, Action::Arm(KILL)]
        );
        let e = m.outcome(signalled(15), None);
        assert_eq!(
            summary(&e),
            (Outcome::TimedOut, Some("timed out after 1s 500ms"))
        );
        assert_eq!(e.signal.as_deref(), Some("SIGTERM"));
        // A result that comes after the timeout began changes nothing.
        let e = m.outcome(
            exited(0),
            result(r#"{"type":"result","status":"succeeded"}"#),
        );
        assert_eq!(e.outcome, Outcome::TimedOut);
    }

    #[test]
    fn a_silent_worker_fails_for_its_heartbeat_and_escalates_as_a_cancel() {
        let mut m = Escalation::new(CANCEL, KILL);
        let ending = Ending::Heartbeat(2000);
        let actions = m.on(Event::Stop {
            ending,
            heard: Heard::Other,
        });
        assert_eq!(
            actions,
            vec![
                Action::AskCancel("no heartbeat for 2s".into()),
                Action::Arm(Duration::ZERO)
            ]
        );
        let e = m.outcome(signalled(9), None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Failed { retryable: true },
                Some("no heartbeat for 2s")
            )
        );
    }

    #[test]
    fn no_exit_status_at_all_is_a_retryable_failure() {
        let e = Escalation::new(CANCEL, KILL).outcome(None, None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Failed { retryable: true },
                Some("lost track of the child process")
            )
        );
    }

    // The worker's `result`, which decides when it arrives.

    #[test]
    fn a_result_decides_whatever_the_exit() {
        let m = Escalation::new(CANCEL, KILL);
        let ok = m.outcome(
            exited(7),
            result(r#"{"type":"result","status":"succeeded","output":{"n":1}}"#),
        );
        assert_eq!(
            (ok.outcome.clone(), ok.output.clone()),
            (Outcome::Succeeded, Some(json!({"n": 1})))
        );
        assert_eq!(
            ok.exit_code,
            Some(7),
            "the exit code is recorded all the same"
        );
        let permanent = m.outcome(
            exited(0),
            result(r#"{"type":"result","status":"failed","error":"bad input","retry":false}"#),
        );
        assert_eq!(
            summary(&permanent),
            (Outcome::Failed { retryable: false }, Some("bad input"))
        );
        let unasked = m.outcome(
            exited(0),
            result(r#"{"type":"result","status":"cancelled"}"#),
        );
        assert_eq!(
            summary(&unasked),
            (
                Outcome::Cancelled { how: None },
                Some("cancelled by the worker")
            )
        );
    }

    // Escalation paths.

    #[test]
    fn a_worker_without_hello_gets_sigterm_at_once_then_sigkill() {
        let mut m = Escalation::new(CANCEL, KILL);
        assert_eq!(
            m.on(cancel("stop", false)),
            vec![
                Action::AskCancel("stop".into()),
                Action::Arm(Duration::ZERO)
            ]
        );
        assert_eq!(
            m.on(Event::Due { hello: false }),
            vec![Action::Term, Action::Arm(KILL)]
        );
        assert_eq!(m.step(), Step::Termed);
        let e = m.outcome(signalled(15), None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Cancelled {
                    how: Some("sigterm")
                },
                Some("cancelled (sigterm)")
            )
        );
        // It ignores SIGTERM: SIGKILL after the kill grace, then nothing more.
        assert_eq!(
            m.on(Event::Due { hello: false }),
            vec![Action::Kill, Action::Disarm]
        );
        assert_eq!(m.on(Event::Due { hello: false }), vec![Action::Disarm]);
        let e = m.outcome(signalled(9), None);
        assert_eq!(
            e.outcome,
            Outcome::Cancelled {
                how: Some("sigkill")
            }
        );
    }

    #[test]
    fn a_second_stop_changes_nothing_and_the_first_reason_stays() {
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(cancel("first", true));
        assert!(m.on(cancel("second", true)).is_empty());
        let timeout = Event::Stop {
            ending: Ending::Timeout(10),
            heard: Heard::Hello,
        };
        assert!(m.on(timeout).is_empty());
        assert_eq!(
            m.outcome(exited(0), None).error.as_deref(),
            Some("cancelled (cooperative)")
        );
    }

    #[test]
    fn a_one_shot_worker_that_lingers_after_its_result_is_stopped() {
        let mut m = Escalation::new(CANCEL, KILL);
        let actions = m.on(Event::Result { keepable: false });
        assert_eq!(actions, vec![Action::CloseStdin, Action::Arm(CANCEL)]);
        assert!(!m.limits_apply(), "no timeout once it answered");
        assert!(m.stoppable(), "a cancel still counts");
        assert_eq!(
            m.on(Event::Due { hello: false }),
            vec![Action::Term, Action::Arm(KILL)]
        );
        let done = result(r#"{"type":"result","status":"succeeded"}"#);
        assert_eq!(m.outcome(signalled(15), done).outcome, Outcome::Succeeded);
    }

    #[test]
    fn a_pooled_worker_is_kept_unless_it_was_signalled() {
        let mut m = Escalation::new(CANCEL, KILL);
        assert_eq!(m.on(Event::Result { keepable: true }), vec![Action::Keep]);
        // Asked to cancel, it answered cooperatively: still kept.
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(cancel("stop", true));
        assert_eq!(m.on(Event::Result { keepable: true }), vec![Action::Keep]);
        // Escalated to SIGTERM: replaced, not kept.
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(cancel("stop", true));
        m.on(Event::Due { hello: false });
        assert_eq!(
            m.on(Event::Result { keepable: true }),
            vec![Action::CloseStdin]
        );
    }

    #[test]
    fn at_shutdown_anything_but_a_success_is_interrupted() {
        let shutdown = || Event::Stop {
            ending: Ending::Stop(StopReason::Shutdown),
            heard: Heard::Hello,
        };
        let mut m = Escalation::new(CANCEL, KILL);
        m.on(shutdown());
        let e = m.outcome(exited(0), None);
        assert_eq!(
            summary(&e),
            (
                Outcome::Interrupted,
                Some("interrupted: supervisor shutting down (cooperative)")
            )
        );
        let failed = result(r#"{"type":"result","status":"failed","retry":false}"#);
        assert_eq!(m.outcome(exited(1), failed).outcome, Outcome::Interrupted);
        let ok = result(r#"{"type":"result","status":"succeeded"}"#);
        assert_eq!(m.outcome(exited(0), ok).outcome, Outcome::Succeeded);
    }
}
