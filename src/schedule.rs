//! Schedules: when a job's occurrences fall due.
//!
//! Pure arithmetic on instants (microseconds since the epoch): no clock is
//! read here, so every rule is tested with chosen "now"s.
//!
//! Cron expressions (crontab(5), see [`cron`]) are read in the job's IANA
//! time zone with cron(8)'s rules at daylight-saving changes:
//! - a job with `*` at the start of its minute or hour field follows real
//!   time: a local time that occurs twice (fall back) fires twice, and one
//!   that does not exist (spring forward) does not fire;
//! - any other job runs at a fixed time: a skipped local time fires once,
//!   at the first instant after the gap, and a repeated one fires once, at
//!   its first occurrence.

pub mod cron;

use crate::model::Micros;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

pub use self::cron::{CronError, CronExpr};
// Plain data of the model, re-exported where the arithmetic on them is.
pub use crate::model::{Misfire, ScheduleSpec};
use std::time::Duration;

/// Why a schedule cannot be used.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let e = CronSchedule::parse("0 25 * * *", "UTC").unwrap_err();
/// assert!(matches!(e, ScheduleError::Cron { .. }));
/// assert!(e.to_string().contains("hour"), "names the field: {e}");
/// assert_eq!(CronSchedule::parse("@daily", "Mars/Olympus").unwrap_err(), ScheduleError::Zone("Mars/Olympus".into()));
/// ```
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScheduleError {
    /// A cron expression that does not parse; names the field.
    #[error("invalid cron expression {expr:?}: {detail}")]
    Cron {
        /// The expression.
        expr: String,
        /// Which field is wrong, and how.
        detail: String,
    },
    /// An unknown IANA zone.
    #[error("unknown time zone {0:?} (expected an IANA name such as Europe/Berlin or UTC)")]
    Zone(String),
    /// An interval of zero.
    #[error("an interval must be longer than 0")]
    ZeroInterval,
}

/// A parsed cron expression with its zone.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
/// // Mondays at 9 in Paris: 8:00 UTC in winter.
/// let monday_nine = CronSchedule::parse("0 9 * * 1", "Europe/Paris").unwrap();
/// assert_eq!(format_micros(monday_nine.next_after(friday).unwrap()), "2027-01-18T08:00:00.000000Z");
/// ```
#[derive(Clone, Debug)]
pub struct CronSchedule {
    expr: CronExpr,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expr` (see [`cron`] for the grammar) in zone `tz`.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert!(CronSchedule::parse("@hourly", "UTC").is_ok());
    /// let never = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap_err();
    /// assert!(never.to_string().contains("it never fires"), "{never}");
    /// ```
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::Zone(tz.to_string()))?;
        let parsed = CronExpr::parse(expr).map_err(|e| ScheduleError::Cron {
            expr: expr.to_string(),
            detail: e.to_string(),
        })?;
        Ok(Self { expr: parsed, tz })
    }

    /// The first occurrence strictly after `after`.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
    /// let s = CronSchedule::parse("*/20 * * * *", "UTC").unwrap();
    /// assert_eq!(format_micros(s.next_after(friday).unwrap()), "2027-01-15T08:20:00.000000Z");
    /// ```
    pub fn next_after(&self, after: Micros) -> Option<Micros> {
        let after_utc = micros_to_utc(after)?;
        // A fall-back change ahead means occurrences whose local times come
        // before `after`'s local time may still lie after it: look back by
        // the offset change.
        let off_now = self.offset_secs(after_utc);
        let off_later = self.offset_secs(after_utc + ChronoDuration::hours(26));
        let back = ChronoDuration::seconds((off_now - off_later).max(0) as i64);
        let local_after = after_utc.with_timezone(&self.tz).naive_local();
        let mut cursor = local_after - back - ChronoDuration::seconds(1);
        let mut best: Option<DateTime<Utc>> = None;
        let mut best_local: Option<NaiveDateTime> = None;
        while let Some(naive) = self.expr.next_after(cursor) {
            cursor = naive;
            if let Some(bl) = best_local {
                // Without an offset change ahead, local order is real order:
                // the first candidate is the answer. Otherwise nothing later
                // in local time can map before `best` once the largest
                // possible offset change has passed.
                if off_now == off_later || naive > bl + ChronoDuration::hours(3) {
                    break;
                }
            }
            for inst in self.instants(naive) {
                if inst > after_utc && best.is_none_or(|b| inst < b) {
                    best = Some(inst);
                    best_local = Some(naive);
                }
            }
        }
        best.map(|b| b.timestamp_micros())
    }

    /// Whether the schedule fires at instant `t`, stated without searching:
    /// `t`'s local time matches (for a fixed-time job, only the first of a
    /// repeated local time), or `t` is the end of a gap that swallowed a
    /// matching local time of a fixed-time job. Property tests hold
    /// [`Self::next_after`] to it.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
    /// let s = CronSchedule::parse("0 8 * * 5", "UTC").unwrap();
    /// assert!(s.fires_at(friday));
    /// assert!(!s.fires_at(friday + 60_000_000));
    /// ```
    pub fn fires_at(&self, t: Micros) -> bool {
        use chrono::LocalResult;
        let Some(utc) = micros_to_utc(t) else {
            return false;
        };
        let local = utc.with_timezone(&self.tz).naive_local();
        let real_time = self.expr.follows_real_time();
        if self.expr.matches(local) {
            return match self.tz.from_local_datetime(&local) {
                LocalResult::Ambiguous(first, _) if !real_time => first.with_timezone(&Utc) == utc,
                _ => true,
            };
        }
        let before = (utc - ChronoDuration::seconds(1))
            .with_timezone(&self.tz)
            .naive_local();
        !real_time
            && local - before > ChronoDuration::seconds(1)
            && self.expr.next_after(before).is_some_and(|n| n < local)
    }

    fn offset_secs(&self, t: DateTime<Utc>) -> i32 {
        self.tz
            .offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The real instants at which local time `naive` fires (cron(8)): a
    /// job with `*` in its minute or hour field follows real time, so a
    /// local time that occurs twice fires twice and one skipped by a
    /// spring-forward change does not fire; a fixed-time job fires once,
    /// at the first of two, or at the change for a skipped one.
    fn instants(&self, naive: NaiveDateTime) -> Vec<DateTime<Utc>> {
        use chrono::LocalResult;
        let real_time = self.expr.follows_real_time();
        match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) => {
                if real_time {
                    vec![a.with_timezone(&Utc), b.with_timezone(&Utc)]
                } else {
                    vec![a.with_timezone(&Utc)]
                }
            }
            LocalResult::None if real_time => Vec::new(),
            LocalResult::None => {
                // In a gap: fire at the moment of the change, the first
                // instant whose local time is at or past `naive`. Search a
                // window that surely starts before it (offsets stay within
                // +-15 h) for the first such second.
                let local = |t: i64| {
                    DateTime::<Utc>::from_timestamp(t, 0)
                        .map(|u| u.with_timezone(&self.tz).naive_local())
                };
                let mut lo = naive.and_utc().timestamp() - 15 * 3600;
                let mut hi = lo + 30 * 3600;
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    match local(mid) {
                        Some(l) if l >= naive => hi = mid,
                        Some(_) => lo = mid,
                        None => return Vec::new(),
                    }
                }
                DateTime::<Utc>::from_timestamp(hi, 0).into_iter().collect()
            }
        }
    }
}

fn micros_to_utc(t: Micros) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_micros(t)
}

/// A job's schedule, ready to compute due times.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
/// let every_hour = Schedule::from_spec(&ScheduleSpec::Interval { every_ms: 3_600_000, anchor: friday }).unwrap();
/// let next: Vec<String> = every_hour.occurrences(friday, 2).into_iter().map(format_micros).collect();
/// assert_eq!(next, ["2027-01-15T09:00:00.000000Z", "2027-01-15T10:00:00.000000Z"]);
/// ```
#[derive(Clone, Debug)]
pub enum Schedule {
    /// One occurrence.
    Once(Micros),
    /// Cron.
    Cron(Box<CronSchedule>),
    /// Fixed period from an anchor.
    Interval {
        /// Period in microseconds.
        every: i64,
        /// First occurrence.
        anchor: Micros,
    },
    /// Kept running.
    Daemon,
}

impl Schedule {
    /// Validates and prepares a spec.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert_eq!(
    ///     Schedule::from_spec(&ScheduleSpec::Interval { every_ms: 0, anchor: 0 }).unwrap_err(),
    ///     ScheduleError::ZeroInterval
    /// );
    /// ```
    pub fn from_spec(spec: &ScheduleSpec) -> Result<Self, ScheduleError> {
        Ok(match spec {
            ScheduleSpec::Once { at } => Schedule::Once(*at),
            ScheduleSpec::Cron { expr, tz } => {
                Schedule::Cron(Box::new(CronSchedule::parse(expr, tz)?))
            }
            ScheduleSpec::Interval { every_ms, anchor } => {
                if *every_ms == 0 {
                    return Err(ScheduleError::ZeroInterval);
                }
                Schedule::Interval {
                    every: (*every_ms).min(i64::MAX as u64 / 1000) as i64 * 1000,
                    anchor: *anchor,
                }
            }
            ScheduleSpec::Daemon => Schedule::Daemon,
        })
    }

    /// Up to `n` occurrences strictly after `from`, in order (what `job
    /// preview` prints and the dashboard shows).
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
    /// // crontab(5): with both day fields restricted, either one matching fires.
    /// let s = Schedule::from_spec(&ScheduleSpec::Cron { expr: "0 0 13 * 5".into(), tz: "UTC".into() }).unwrap();
    /// let days: Vec<String> = s.occurrences(friday, 3).into_iter().map(|t| format_micros(t)[..10].to_string()).collect();
    /// assert_eq!(days, ["2027-01-22", "2027-01-29", "2027-02-05"]);
    /// ```
    pub fn occurrences(&self, from: Micros, n: usize) -> Vec<Micros> {
        std::iter::successors(self.next_after(from), |t| self.next_after(*t))
            .take(n)
            .collect()
    }

    /// The first occurrence strictly after `after` (none for daemons and
    /// for a past one-off).
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
    /// let once = Schedule::from_spec(&ScheduleSpec::Once { at: friday }).unwrap();
    /// assert_eq!(once.next_after(friday - 1), Some(friday));
    /// assert_eq!(once.next_after(friday), None);
    /// assert_eq!(Schedule::from_spec(&ScheduleSpec::Daemon).unwrap().next_after(friday), None);
    /// ```
    pub fn next_after(&self, after: Micros) -> Option<Micros> {
        match self {
            Schedule::Once(at) => (*at > after).then_some(*at),
            Schedule::Cron(c) => c.next_after(after),
            Schedule::Interval { every, anchor } => {
                if after < *anchor {
                    Some(*anchor)
                } else {
                    // None past the end of time (an absurd interval).
                    let k = (after - anchor) / every + 1;
                    k.checked_mul(*every).and_then(|d| anchor.checked_add(d))
                }
            }
            Schedule::Daemon => None,
        }
    }

    /// The first occurrence at or after `t`.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
    /// let s = Schedule::from_spec(&ScheduleSpec::Cron { expr: "0 8 * * *".into(), tz: "UTC".into() }).unwrap();
    /// assert_eq!(s.first_at_or_after(friday), Some(friday));
    /// ```
    pub fn first_at_or_after(&self, t: Micros) -> Option<Micros> {
        self.next_after(t - 1)
    }
}

/// Occurrences later than this are missed (misfired), not merely late.
pub const MISFIRE_GRACE: Duration = Duration::from_secs(60);

/// The decision for a job whose next occurrence `due` is at or before
/// `now`: which occurrence (if any) to run, and the next due time after.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
/// // Down for two and a half hours: an hourly job missed 8:00, 9:00, 10:00.
/// let hourly = Schedule::from_spec(&ScheduleSpec::Interval { every_ms: 3_600_000, anchor: friday }).unwrap();
/// let now = friday + 9_000_000_000;
/// let eleven = Some(friday + 3 * 3_600_000_000);
/// let f = fire(&hourly, friday, now, Misfire::RunOnce); // the latest runs
/// assert_eq!((f.run, f.missed, f.next), (Some(friday + 2 * 3_600_000_000), 2, eleven));
/// let f = fire(&hourly, friday, now, Misfire::Skip); // none runs
/// assert_eq!((f.run, f.missed, f.next), (None, 3, eleven));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fire {
    /// The occurrence to run now, if any.
    pub run: Option<Micros>,
    /// How many occurrences were passed over without running.
    pub missed: u64,
    /// The next occurrence after `now`.
    pub next: Option<Micros>,
}

/// Decides what to run when the scheduler finds occurrence `due` at `now`:
/// an occurrence within the grace runs; older ones are missed, and of
/// those `run-once` runs the latest one, `skip` none. At most one runs.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let friday = parse_time("2027-01-15T08:00:00Z", 0).unwrap();
/// let hourly = Schedule::from_spec(&ScheduleSpec::Interval { every_ms: 3_600_000, anchor: friday }).unwrap();
/// // Ten seconds late is within the grace: it runs.
/// let f = fire(&hourly, friday, friday + 10_000_000, Misfire::Skip);
/// assert_eq!((f.run, f.missed, f.next), (Some(friday), 0, Some(friday + 3_600_000_000)));
/// ```
pub fn fire(schedule: &Schedule, due: Micros, now: Micros, misfire: Misfire) -> Fire {
    let grace = MISFIRE_GRACE.as_micros() as Micros;
    let mut latest = due;
    let mut count: u64 = 1;
    let mut next = schedule.next_after(due);
    // Walk to the latest occurrence at or before now (bounded: a 1-second
    // schedule after a long outage is skipped over arithmetically where it
    // can be).
    if let (Schedule::Interval { every, anchor }, Some(n)) = (schedule, next) {
        if n <= now {
            // `n <= now` bounds every term by `now`.
            let k = (now - anchor) / every;
            let last = anchor + k * every;
            count += ((last - due) / every) as u64;
            latest = last;
            next = last.checked_add(*every);
        }
    } else {
        let mut steps = 0;
        while let Some(n) = next {
            if n > now || steps > 1_000_000 {
                break;
            }
            latest = n;
            count += 1;
            steps += 1;
            next = schedule.next_after(n);
        }
    }
    let within_grace = now - latest <= grace;
    let run = if within_grace || misfire == Misfire::RunOnce {
        Some(latest)
    } else {
        None
    };
    Fire {
        run,
        missed: count - u64::from(run.is_some()),
        next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Micros {
        humantime::parse_rfc3339(s)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as Micros
    }

    fn iso(m: Micros) -> String {
        DateTime::<Utc>::from_timestamp_micros(m)
            .unwrap()
            .to_rfc3339()
    }

    fn occurrences(c: &CronSchedule, from: Micros, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut at = from;
        for _ in 0..n {
            at = c.next_after(at).unwrap();
            out.push(iso(at));
        }
        out
    }

    #[test]
    fn a_daily_cron_fires_once_a_day_across_both_dst_changes_in_berlin() {
        let c = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        // Spring forward 2026-03-29: 02:30 does not exist; it fires at the
        // change (03:00 CEST = 01:00Z).
        assert_eq!(
            occurrences(&c, t("2026-03-27T12:00:00Z"), 3),
            [
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00"
            ]
        );
        // Fall back 2026-10-25: 02:30 happens twice; it fires once, at the
        // first (CEST).
        assert_eq!(
            occurrences(&c, t("2026-10-23T12:00:00Z"), 3),
            [
                "2026-10-24T00:30:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-26T01:30:00+00:00"
            ]
        );
    }

    #[test]
    fn an_hourly_cron_fires_every_real_hour_across_dst_changes() {
        let c = CronSchedule::parse("0 * * * *", "Europe/Berlin").unwrap();
        for from in ["2026-03-28T20:00:00Z", "2026-10-24T20:00:00Z"] {
            let occ = occurrences(&c, t(from), 12);
            let ts: Vec<Micros> = occ.iter().map(|s| t(s)).collect();
            for w in ts.windows(2) {
                assert_eq!(w[1] - w[0], 3_600_000_000, "{occ:?}");
            }
        }
    }

    #[test]
    fn cron_accepts_five_and_six_fields_and_macros_and_names_the_bad_field() {
        let c = CronSchedule::parse("*/15 * * * * *", "UTC").unwrap();
        assert_eq!(
            c.next_after(t("2026-01-01T00:00:01Z")),
            Some(t("2026-01-01T00:00:15Z"))
        );
        let c = CronSchedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(
            c.next_after(t("2026-01-01T00:00:01Z")),
            Some(t("2026-01-01T01:00:00Z"))
        );
        let c = CronSchedule::parse("0 9 * * MON-FRI", "America/New_York").unwrap();
        // Saturday 2026-11-21 -> Monday 09:00 EST = 14:00Z.
        assert_eq!(
            c.next_after(t("2026-11-21T12:00:00Z")),
            Some(t("2026-11-23T14:00:00Z"))
        );

        let err = CronSchedule::parse("0 25 * * *", "UTC")
            .unwrap_err()
            .to_string();
        assert!(err.contains("field 2 (hour) \"25\""), "{err}");
        let err = CronSchedule::parse("* * * *", "UTC")
            .unwrap_err()
            .to_string();
        assert!(err.contains("got 4"), "{err}");
        let err = CronSchedule::parse("@fortnightly", "UTC")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown macro"), "{err}");
        assert_eq!(
            CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err(),
            ScheduleError::Zone("Mars/Olympus".into())
        );
    }

    #[test]
    fn interval_occurrences_stay_on_their_grid_however_late_the_scheduler_is() {
        let anchor = t("2026-01-01T00:00:00Z");
        let s = Schedule::from_spec(&ScheduleSpec::Interval {
            every_ms: 30_000,
            anchor,
        })
        .unwrap();
        let mut due = s.first_at_or_after(anchor).unwrap();
        assert_eq!(due, anchor);
        for i in 1..1000 {
            // The scheduler looks a little late each time (up to 20 s).
            let late = due + (i * 7_919 % 20_000) * 1000;
            due = s.next_after(late).unwrap();
            assert_eq!((due - anchor) % 30_000_000, 0, "drifted off the grid");
        }
        assert_eq!(
            due,
            anchor + 999 * 30_000_000,
            "no occurrence skipped, none added"
        );
        assert_eq!(
            Schedule::from_spec(&ScheduleSpec::Interval {
                every_ms: 0,
                anchor
            })
            .unwrap_err(),
            ScheduleError::ZeroInterval
        );
    }

    #[test]
    fn after_a_three_hour_outage_run_once_runs_the_latest_and_skip_runs_none() {
        let s = Schedule::Cron(Box::new(CronSchedule::parse("* * * * *", "UTC").unwrap()));
        let due = t("2026-06-01T09:00:00Z");
        let now = t("2026-06-01T12:00:30Z");
        let f = fire(&s, due, now, Misfire::RunOnce);
        assert_eq!(f.run, Some(t("2026-06-01T12:00:00Z")));
        assert_eq!(f.missed, 180);
        assert_eq!(f.next, Some(t("2026-06-01T12:01:00Z")));
        let f = fire(&s, due, now, Misfire::Skip);
        // 12:00:00 is within the grace: it is late, not missed.
        assert_eq!(f.run, Some(t("2026-06-01T12:00:00Z")));
        assert_eq!(f.missed, 180);
        let f = fire(&s, due, t("2026-06-01T12:01:59Z"), Misfire::Skip);
        assert_eq!(f.run, Some(t("2026-06-01T12:01:00Z")));
        let hourly = Schedule::Cron(Box::new(CronSchedule::parse("0 * * * *", "UTC").unwrap()));
        let f = fire(&hourly, due, now, Misfire::Skip);
        assert_eq!((f.run, f.missed), (Some(t("2026-06-01T12:00:00Z")), 3));
        let f = fire(&hourly, due, t("2026-06-01T12:05:00Z"), Misfire::Skip);
        assert_eq!((f.run, f.missed), (None, 4));
        assert_eq!(f.next, Some(t("2026-06-01T13:00:00Z")));
        // Intervals skip arithmetically, however many were missed.
        let every = Schedule::Interval {
            every: 1_000_000,
            anchor: due,
        };
        let f = fire(&every, due, now, Misfire::RunOnce);
        assert_eq!(f.run, Some(now));
        assert_eq!(f.missed, 3 * 3600 + 30);
        assert_eq!(f.next, Some(now + 1_000_000));
    }
}
