//! Time: microseconds since the epoch, timestamps, durations and their text.

use super::schema::schema;
use super::value::ValueError;
use serde::Serialize;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: how every timestamp is stored.
pub type Micros = i64;

/// The current time in [`Micros`].
///
/// ```
/// use jobvisor::model::*;
/// let t = now_micros();
/// assert!(t > 1_700_000_000_000_000, "after November 2023");
/// ```
pub fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

/// Formats [`Micros`] as RFC 3339 (UTC, microseconds).
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_micros(1_800_000_000_000_000), "2027-01-15T08:00:00.000000Z");
/// ```
pub fn format_micros(t: Micros) -> String {
    let d = Duration::from_micros(t.max(0) as u64);
    humantime::format_rfc3339_micros(UNIX_EPOCH + d).to_string()
}

/// Formats [`Micros`] as RFC 3339 in UTC with only the fraction of a
/// second it has: as `job preview --json` and `GET /v1/preview` write
/// occurrences.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_rfc3339(1_800_000_000_000_000), "2027-01-15T08:00:00Z");
/// assert_eq!(format_rfc3339(1_800_000_000_500_000), "2027-01-15T08:00:00.500Z");
/// ```
pub fn format_rfc3339(t: Micros) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_micros(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| t.to_string())
}

/// A point in time: kept as [`Micros`], written as RFC 3339 (UTC,
/// microseconds) only at the edge (JSON, the terminal).
///
/// ```
/// use jobvisor::model::*;
/// let t = Timestamp(1_800_000_000_000_000);
/// assert_eq!(t.to_string(), "2027-01-15T08:00:00.000000Z");
/// assert_eq!(serde_json::to_string(&t).unwrap(), r#""2027-01-15T08:00:00.000000Z""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub Micros);

impl Timestamp {
    /// Microseconds since the epoch.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Timestamp(42).micros(), 42);
    /// ```
    pub fn micros(self) -> Micros {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_micros(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(serde_json::json!({"type": "string", "format": "date-time",
            "description": "RFC 3339, UTC, microseconds"}))
    }
}

impl utoipa::ToSchema for Timestamp {}

/// Formats a duration in milliseconds the way humans write it (`1.5s`).
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_ms(90_000), "1m 30s");
/// ```
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Parses a human duration (`30s`, `5m`, `250ms`).
///
/// ```
/// use jobvisor::model::*;
/// use std::time::Duration;
/// assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
/// assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s).map_err(ValueError::Duration)
}

/// Parses a point in the past: a duration before `now` (`1h`), or a time
/// as [`parse_time`] reads it.
///
/// ```
/// use jobvisor::model::*;
/// let now = 1_800_000_000_000_000;
/// assert_eq!(parse_since("1h", now).unwrap(), now - 3_600_000_000);
/// assert_eq!(parse_since("2027-01-15T08:00:00Z", now).unwrap(), now);
/// assert!(parse_since("+5m", now).is_err(), "after now: nothing could match");
/// ```
pub fn parse_since(s: &str, now: Micros) -> Result<Micros, ValueError> {
    if s.starts_with('+') {
        return Err(ValueError::Future(s.to_string()));
    }
    parse_until(s, now)
}

/// Parses an upper time bound: a duration before `now` (`1h`), or a time
/// as [`parse_time`] reads it (`now`, `+DUR`, RFC 3339).
///
/// ```
/// use jobvisor::model::*;
/// let now = 1_800_000_000_000_000;
/// assert_eq!(parse_until("1h", now).unwrap(), now - 3_600_000_000);
/// assert_eq!(parse_until("+10m", now).unwrap(), now + 600_000_000);
/// assert_eq!(parse_until("now", now).unwrap(), now);
/// ```
pub fn parse_until(s: &str, now: Micros) -> Result<Micros, ValueError> {
    match parse_duration(s) {
        Ok(d) => Ok(now.saturating_sub(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))),
        Err(_) => parse_time(s, now),
    }
}

/// Parses a point in time: RFC 3339 (any offset; a space for the `T` and
/// no offset, meaning UTC, are accepted too), `now`, or `+DUR` from `now`.
///
/// ```
/// use jobvisor::model::*;
/// let now = 1_800_000_000_000_000;
/// assert_eq!(parse_time("now", now).unwrap(), now);
/// assert_eq!(parse_time("+10m", now).unwrap(), now + 600_000_000);
/// assert_eq!(parse_time("2027-01-15T09:00:00+01:00", now).unwrap(), now);
/// ```
pub fn parse_time(s: &str, now: Micros) -> Result<Micros, ValueError> {
    if s == "now" {
        return Ok(now);
    }
    if let Some(rel) = s.strip_prefix('+') {
        let d = parse_duration(rel)?;
        return i64::try_from(d.as_micros())
            .ok()
            .and_then(|us| now.checked_add(us))
            .filter(|t| *t < MAX_TIME)
            .ok_or_else(|| ValueError::TooFar(rel.to_string()));
    }
    // RFC 3339 with any offset (chrono), else humantime's weak form: a
    // space for the `T`, no offset meaning UTC.
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        let us = t.timestamp_micros();
        return match us {
            ..0 => Err(ValueError::BeforeEpoch),
            us if us >= MAX_TIME => Err(ValueError::TooFar(s.to_string())),
            us => Ok(us),
        };
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(ValueError::Time)?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .map_err(|_| ValueError::BeforeEpoch)
}

/// Times from here on cannot be written as RFC 3339 (year 10000).
pub(crate) const MAX_TIME: Micros = 253_402_300_800_000_000;
