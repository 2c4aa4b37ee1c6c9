//! What follows an execution's end, decided over plain data: whether it is
//! tried again, where its unique key goes, which chained jobs it starts,
//! and what becomes of the executions that wait on it. The store reads the
//! facts and carries the decision out in the transaction that records the
//! end; nothing here touches a database.

use super::{AfterPolicy, Chain, Micros, Outcome, Retry, RetryPolicy, Status};
use uuid::Uuid;

/// What the database holds of an execution as it ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct EndFacts {
    /// The attempt that ended.
    pub attempt: u32,
    /// How it is retried.
    pub policy: RetryPolicy,
    /// Its unique key, if any.
    pub key: Option<String>,
    /// How long the key still counts after the end (a throttle), in ms.
    pub hold_ms: Option<i64>,
    /// Whether it was asked to stop.
    pub cancel_requested: bool,
    /// Whether it ran after others.
    pub has_parents: bool,
    /// Whether others run after it.
    pub has_children: bool,
    /// Its job's chain.
    pub chain: Vec<Chain>,
}

/// What follows an end.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AfterEnd {
    /// The final status.
    pub status: Status,
    /// The next attempt, if it is tried again.
    pub retry: Option<Retry>,
    /// Where its unique key goes, if it held one.
    pub key: Option<KeyNext>,
    /// Whether the executions waiting on it count it off now (it ended for
    /// good and some wait on it).
    pub settle_children: bool,
    /// The chained jobs to enqueue after it.
    pub chained: Vec<String>,
}

/// Where an ended execution's unique key goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyNext {
    /// It passes to the execution's retry.
    ToRetry,
    /// It still counts until then (a throttle).
    Hold(Micros),
    /// It is free.
    Free,
}

/// Decides what follows execution `facts` ending with `outcome` at `at`.
/// An execution asked to stop is not tried again; one tried again settles
/// nothing and chains nothing (its retry will, when it ends for good).
pub(crate) fn after_end(facts: &EndFacts, outcome: &Outcome, at: Micros) -> AfterEnd {
    let status = outcome.status();
    let retry = match facts.cancel_requested {
        true => None,
        false => outcome.retry(&facts.policy, facts.attempt, at),
    };
    let for_good = retry.is_none();
    AfterEnd {
        status,
        key: facts
            .key
            .as_ref()
            .map(|_| key_next(!for_good, facts.hold_ms, at)),
        settle_children: for_good && facts.has_children,
        chained: match for_good {
            true => facts
                .chain
                .iter()
                .filter(|c| c.on.matches(status))
                .map(|c| c.job.clone())
                .collect(),
            false => Vec::new(),
        },
        retry,
    }
}

/// Where a key goes when its execution ended at `at`: to its retry, held
/// for `hold_ms` more, or freed.
pub(crate) fn key_next(retried: bool, hold_ms: Option<i64>, at: Micros) -> KeyNext {
    match (retried, hold_ms) {
        (true, _) => KeyNext::ToRetry,
        (false, Some(ms)) => KeyNext::Hold(at.saturating_add(ms.saturating_mul(1000))),
        (false, None) => KeyNext::Free,
    }
}

/// What becomes of an execution waiting on parents, some of which just
/// ended for good.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChildStep {
    /// It counts that many parents off (and runs once none is left).
    CountDown(i64),
    /// It is cancelled, with this reason: it runs only after success, and
    /// a parent did not succeed.
    Cancel(String),
    /// It ends `skipped` without running, with this reason: a condition
    /// answered `false`.
    Skip(String),
    /// It ends `failed` without running, with this error: a condition
    /// failed, or answered neither `true` nor `false`.
    Fail(String),
}

/// A condition that ended, as its dependent weighs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ConditionEnd {
    /// The condition's handler.
    pub handler: String,
    pub status: Status,
    pub output: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// Decides `ChildStep` for a child of policy [`AfterPolicy::Condition`]
/// whose conditions `ended` just ended for good: the first that did not
/// answer `true` decides.
pub(crate) fn settle_condition(ended: &[ConditionEnd]) -> ChildStep {
    use serde_json::Value;
    for c in ended {
        let h = &c.handler;
        match (c.status, &c.output) {
            (Status::Succeeded, None | Some(Value::Null) | Some(Value::Bool(true))) => {}
            (Status::Succeeded, Some(Value::Bool(false))) => {
                return ChildStep::Skip(format!("condition {h} answered false"))
            }
            (Status::Succeeded, Some(other)) => {
                let mut text = other.to_string();
                if text.len() > 200 {
                    let cut = (0..=200)
                        .rev()
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(0);
                    text.truncate(cut);
                    text.push('…');
                }
                return ChildStep::Fail(format!(
                    "condition {h} answered {text}: expected true or false"
                ));
            }
            (Status::Cancelled, _) => {
                return ChildStep::Cancel(format!("condition {h} was cancelled"))
            }
            (_, _) => {
                return ChildStep::Fail(format!(
                    "condition {h} failed: {}",
                    c.error.as_deref().unwrap_or("no error given")
                ))
            }
        }
    }
    ChildStep::CountDown(ended.len() as i64)
}

/// Decides `ChildStep` for a child whose parents `ended` (each with its
/// status, in the order they were read) just ended for good, under
/// `policy`.
pub(crate) fn settle_child(ended: &[(Uuid, Status)], policy: AfterPolicy) -> ChildStep {
    let failed = ended.iter().find(|(_, s)| *s != Status::Succeeded);
    match failed {
        Some((parent, _)) if policy == AfterPolicy::Success => {
            ChildStep::Cancel(format!("upstream {parent} failed"))
        }
        _ => ChildStep::CountDown(ended.len() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChainOn;

    fn facts() -> EndFacts {
        EndFacts {
            attempt: 1,
            policy: RetryPolicy {
                max_attempts: 3,
                backoff_base_ms: 1_000,
                backoff_cap_ms: 60_000,
            },
            ..Default::default()
        }
    }

    fn chain(job: &str, on: ChainOn) -> Chain {
        Chain {
            job: job.into(),
            on,
        }
    }

    #[test]
    fn a_retryable_failure_with_attempts_left_is_tried_again_and_ends_nothing() {
        let f = EndFacts {
            key: Some("k".into()),
            has_children: true,
            chain: vec![chain("report", ChainOn::Always)],
            ..facts()
        };
        let a = after_end(&f, &Outcome::Failed { retryable: true }, 5_000_000);
        let retry = a.retry.expect("retried");
        assert_eq!((retry.attempt, retry.max_attempts), (2, 3));
        assert!(retry.run_at > 5_000_000, "after a backoff");
        assert_eq!(a.key, Some(KeyNext::ToRetry));
        assert!(!a.settle_children && a.chained.is_empty());
    }

    #[test]
    fn the_last_attempt_ends_for_good_settles_and_chains_by_status() {
        let f = EndFacts {
            attempt: 3,
            has_children: true,
            chain: vec![
                chain("on-fail", ChainOn::Failure),
                chain("on-ok", ChainOn::Success),
                chain("always", ChainOn::Always),
            ],
            ..facts()
        };
        let a = after_end(&f, &Outcome::Failed { retryable: true }, 0);
        assert_eq!(a.retry, None);
        assert_eq!(a.status, Status::Failed);
        assert!(a.settle_children);
        assert_eq!(a.chained, ["on-fail", "always"]);
    }

    #[test]
    fn an_execution_asked_to_stop_is_never_tried_again() {
        let f = EndFacts {
            cancel_requested: true,
            ..facts()
        };
        assert_eq!(after_end(&f, &Outcome::Interrupted, 0).retry, None);
        assert!(after_end(&facts(), &Outcome::Interrupted, 0)
            .retry
            .is_some());
    }

    #[test]
    fn a_key_is_held_for_its_throttle_or_freed() {
        assert_eq!(key_next(false, Some(1_500), 10), KeyNext::Hold(1_500_010));
        assert_eq!(key_next(false, None, 10), KeyNext::Free);
        assert_eq!(key_next(true, Some(1_500), 10), KeyNext::ToRetry);
        assert_eq!(
            key_next(false, Some(i64::MAX), i64::MAX - 1),
            KeyNext::Hold(i64::MAX),
            "saturates, never wraps into the past"
        );
        let no_key = after_end(&facts(), &Outcome::Succeeded, 0);
        assert_eq!(no_key.key, None);
    }

    #[test]
    fn a_condition_runs_skips_fails_or_cancels_its_occurrence() {
        use serde_json::json;
        let end = |status, output: Option<serde_json::Value>, error: Option<&str>| ConditionEnd {
            handler: "check".into(),
            status,
            output,
            error: error.map(str::to_string),
        };
        let ok = Status::Succeeded;
        for yes in [None, Some(json!(null)), Some(json!(true))] {
            assert_eq!(
                settle_condition(&[end(ok, yes, None)]),
                ChildStep::CountDown(1)
            );
        }
        assert_eq!(
            settle_condition(&[end(ok, Some(json!(false)), None)]),
            ChildStep::Skip("condition check answered false".into())
        );
        assert_eq!(
            settle_condition(&[end(ok, Some(json!("false")), None)]),
            ChildStep::Fail("condition check answered \"false\": expected true or false".into())
        );
        assert_eq!(
            settle_condition(&[end(Status::Failed, None, Some("disk full"))]),
            ChildStep::Fail("condition check failed: disk full".into())
        );
        assert_eq!(
            settle_condition(&[end(Status::Cancelled, None, None)]),
            ChildStep::Cancel("condition check was cancelled".into())
        );
        let long = json!("é".repeat(300));
        let ChildStep::Fail(why) = settle_condition(&[end(ok, Some(long), None)]) else {
            panic!()
        };
        assert!(why.len() < 300 && why.contains('…'), "{why}");
    }

    #[test]
    fn a_child_after_success_is_cancelled_naming_the_first_parent_that_did_not_succeed() {
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let ended = [
            (a, Status::Succeeded),
            (b, Status::Failed),
            (c, Status::Cancelled),
        ];
        assert_eq!(
            settle_child(&ended, AfterPolicy::Success),
            ChildStep::Cancel(format!("upstream {b} failed"))
        );
        assert_eq!(
            settle_child(&ended, AfterPolicy::Finished),
            ChildStep::CountDown(3)
        );
        assert_eq!(
            settle_child(&ended[..1], AfterPolicy::Success),
            ChildStep::CountDown(1)
        );
    }
}
