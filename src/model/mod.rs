//! Domain types shared by the store, the runners and the interfaces.
//!
//! One file a concept: [`time`], [`value`], [`status`], [`execution`], [`handler`],
//! [`outcome`], [`rate`], [`job`], [`labels`], [`webhook`] (and `schema`, the OpenAPI pieces); each is
//! re-exported here, so that `model::Execution` names it wherever it lives.

mod ending;
pub mod execution;
pub mod handler;
pub mod job;
pub mod labels;
pub mod outcome;
pub mod rate;
mod schema;
pub mod status;
pub mod time;
pub mod trace;
pub mod value;
pub mod webhook;

pub(crate) use ending::*;
pub use execution::*;
pub use handler::*;
pub use job::*;
/// What the worker protocol defines and the model records: log levels and
/// a step's inputs.
pub use jobvisor_worker::{Input, Level};
pub use labels::*;
pub use outcome::*;
pub use rate::*;
pub(crate) use schema::*;
pub use status::*;
pub use time::*;
pub use trace::{RemoteSpan, SpanOf, TraceContext};
pub use value::*;
pub use webhook::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_stay_micros_and_are_written_as_rfc3339_at_the_edge() {
        let t = Timestamp(1_764_000_000_123_456);
        assert_eq!(t.to_string(), "2025-11-24T16:00:00.123456Z");
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            "2025-11-24T16:00:00.123456Z"
        );
        assert!(Timestamp(1) < t);
    }

    #[test]
    fn outcomes_map_to_columns_and_retries_in_one_place() {
        let p = RetryPolicy {
            max_attempts: 3,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 1_000,
        };
        let failed = Outcome::Failed { retryable: true };
        // Retryable failures and timeouts run again while attempts remain.
        for o in [&failed, &Outcome::TimedOut] {
            let r = o.retry(&p, 2, 10_000_000).unwrap();
            assert_eq!((r.attempt, r.max_attempts), (3, 3));
            assert!((10_500_000..=11_000_000).contains(&r.run_at), "{r:?}");
            assert_eq!(o.retry(&p, 3, 0), None);
        }
        // An interruption always does, at once, on an attempt of its own.
        let r = Outcome::Interrupted.retry(&p, 3, 5).unwrap();
        assert_eq!((r.attempt, r.max_attempts, r.run_at), (4, 4, 5));
        for o in [
            Outcome::Succeeded,
            Outcome::Failed { retryable: false },
            Outcome::Cancelled {
                how: Some("sigterm"),
            },
        ] {
            assert_eq!(o.retry(&p, 1, 0), None, "{o:?}");
        }
        let cols = |o: Outcome| {
            let c = o.columns();
            (c.status, c.timed_out, c.interrupted, c.cancel_outcome)
        };
        assert_eq!(cols(Outcome::TimedOut), (Status::Failed, true, false, None));
        assert_eq!(
            cols(Outcome::Interrupted),
            (Status::Failed, false, true, None)
        );
        assert_eq!(
            cols(Outcome::Cancelled { how: Some("abort") }),
            (Status::Cancelled, false, false, Some("abort"))
        );
        assert_eq!(cols(failed), (Status::Failed, false, false, None));
        // A snooze runs again after its delay, even on the last attempt,
        // keeping the attempt number and the attempts allowed.
        let snooze = Outcome::Snoozed { delay_ms: 1_500 };
        let r = snooze.retry(&p, 3, 10_000_000).unwrap();
        assert_eq!((r.attempt, r.max_attempts, r.run_at), (3, 3, 11_500_000));
        assert_eq!(cols(snooze), (Status::Snoozed, false, false, None));
        assert!(Status::Snoozed.is_terminal());
    }

    #[test]
    fn rates_read_as_count_per_duration_and_refuse_what_could_never_start() {
        let r: Rate = "5/1s".parse().unwrap();
        assert_eq!((r.n, r.per_ms), (5, 1_000));
        assert_eq!(r.to_string(), "5/1s");
        let r: Rate = "100/1m".parse().unwrap();
        assert_eq!(
            (r.n, r.per_ms, r.to_string()),
            (100, 60_000, "100/1m".into())
        );
        assert_eq!("1000/500ms".parse::<Rate>().unwrap().per_ms, 500);
        for bad in [
            "0/1s", "5/0s", "5", "/1s", "-1/1s", "x/1s", "5/abc", "5/1s/2", "5/500us", "", "1/367d",
        ] {
            let e = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(e.starts_with("invalid rate"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn retry_delays_double_up_to_the_cap_with_bounded_jitter() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
        };
        for _ in 0..200 {
            for (attempt, full) in [(2, 100), (3, 200), (4, 400), (5, 800), (6, 1000), (9, 1000)] {
                let d = p.delay_before(attempt).as_millis() as u64;
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert!(p.delay_before(u32::MAX).as_millis() <= 1_000);
    }
}
