//! The shapes of the HTTP API's inputs that a plain type does not say:
//! names, free text, durations, rates and time bounds. Each is a named
//! schema of the OpenAPI document (`#/components/schemas/Name`, ...), and
//! requests are checked against that document, so that what it states is
//! exactly what the API accepts. The parsers here read what the schemas
//! let through.
//!
//! The API's syntax is narrower than the CLI's: a duration is one number
//! and one unit (`90s`, `2h`), not humantime's full grammar, so that the
//! document can state it as a pattern.

use crate::model::{schema, Micros, Rate, ValueError};
use serde_json::json;
use std::time::Duration as StdDuration;
use utoipa::openapi::{schema::Schema, RefOr};

/// One number (1 to 999,999) and a unit: `ms`, `s`, `m`, `h`, `d` or `w`.
pub const DURATION_PATTERN: &str = "^[1-9][0-9]{0,5}(ms|s|m|h|d|w)$";

/// `N/DURATION`, N from 1 to 999,999,999 and a window of at most 99 days
/// (the store allows 366): each unit has as many digits as stay inside.
pub const RATE_PATTERN: &str =
    "^[1-9][0-9]{0,8}/([1-9][0-9]{0,5}(ms|s)|[1-9][0-9]{0,4}m|[1-9][0-9]{0,2}h|[1-9][0-9]?d)$";

/// Printable: no control characters (PostgreSQL refuses NUL in text).
pub const NAME_PATTERN: &str = "^[^\\x00-\\x1f\\x7f]+$";

/// Longest name.
pub const NAME_MAX: u64 = 200;

/// Longest free text (a cancel reason).
pub const TEXT_MAX: u64 = 4096;

/// Most retries of one run.
pub const MAX_RETRIES: u32 = 10_000;

/// Longest timeout: 366 days.
pub const MAX_TIMEOUT_MS: u64 = 366 * 24 * 3600 * 1000;

/// Largest queue limit (stored as a 32-bit integer).
pub const MAX_LIMIT: u32 = i32::MAX as u32;

macro_rules! named_schema {
    ($(#[$doc:meta])* $name:ident, $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                schema($schema)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

named_schema!(
    /// A job, handler, queue, step or key name.
    Name,
    json!({"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": NAME_PATTERN,
           "description": "A name: printable, 1 to 200 characters"})
);

named_schema!(
    /// Free text: anything but NUL.
    Text,
    json!({"type": "string", "maxLength": TEXT_MAX, "pattern": "^[^\\x00]*$"})
);

/// What a tag or a meta key cannot hold: white space, control characters
/// and a byte-order mark (`\s` is ECMAScript's, as JSON Schema reads it),
/// and the separators of the filters.
const LABEL_CHARS: &str = "[^\\s\\x00-\\x1f\\x7f-\\x9f";

/// A tag.
fn tag_schema() -> serde_json::Value {
    json!({"type": "string", "minLength": 1, "maxLength": crate::model::MAX_LABEL_CHARS,
           "pattern": format!("^{LABEL_CHARS},]+$"), "examples": ["billing"],
           "description": "1 to 64 characters: no space, comma or control character"})
}

named_schema!(
    /// A run's tags.
    Tags,
    json!({"type": "array", "maxItems": crate::model::MAX_TAGS, "uniqueItems": true,
           "items": tag_schema(), "description": "At most 32 tags, none twice"})
);

named_schema!(
    /// Tags to filter by, comma-separated.
    TagList,
    json!({"type": "array", "maxItems": crate::model::MAX_TAGS, "items": tag_schema()})
);

named_schema!(
    /// A run's meta.
    MetaObject,
    json!({"type": "object", "maxProperties": 64,
           "additionalProperties": {"type": "string", "maxLength": crate::model::META_BYTES,
                                    "pattern": "^[^\\x00]*$"},
           "examples": [{"customer": "42"}],
           "description": "String values by key (keys of 1 to 64 characters, no space, \
                           `=`, `:`, comma or control character); at most 4 KiB as JSON"})
);

/// What a meta key may be, for the document's `propertyNames` (which the
/// schema type cannot hold; [`declare`] writes it in).
fn meta_key_schema() -> serde_json::Value {
    json!({"minLength": 1, "maxLength": crate::model::MAX_LABEL_CHARS,
           "pattern": format!("^{LABEL_CHARS},=:]+$")})
}

/// Writes into `doc` what the schema types cannot hold.
pub(crate) fn declare(doc: &mut serde_json::Value) {
    if let Some(meta) = doc.pointer_mut("/components/schemas/MetaObject") {
        meta["propertyNames"] = meta_key_schema();
    }
}

named_schema!(
    /// A meta filter.
    MetaPair,
    json!({"type": "string", "maxLength": 8192,
           "pattern": format!("^{LABEL_CHARS},=:]{{1,64}}:[^\\x00]*$"), "examples": ["customer:42"],
           "description": "KEY:VALUE"})
);

/// The cron grammar `CronExpr::parse` reads, as an ECMAScript pattern: 5
/// fields, 6 with seconds first or 7 with a year last, each a list of `*`,
/// `?` (day fields), a value or a range with an optional step, the day
/// fields' `L`, `LW`, `NW`, `NL` and `N#K`, names of months and days in any
/// case, leading zeros; or a macro. Every value within its field's range.
/// What it cannot say (a range that runs backwards, a schedule that never
/// fires) the parser refuses with a 422.
pub fn cron_pattern() -> String {
    // A word in any case, as the parser upper-cases it.
    let ci = |w: &str| -> String {
        w.chars()
            .map(|c| match c.is_ascii_alphabetic() {
                true => format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()),
                false => c.to_string(),
            })
            .collect()
    };
    let words = |ws: &str| ws.split(' ').map(ci).collect::<Vec<_>>().join("|");
    let z = "0*";
    let sec = format!("{z}(?:[1-5]?[0-9])");
    let hour = format!("{z}(?:1?[0-9]|2[0-3])");
    let dom = format!("{z}(?:[1-9]|[12][0-9]|3[01])");
    let month = format!(
        "{z}(?:[1-9]|1[0-2])|{}",
        words("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC")
    );
    let dow = format!("{z}[0-7]|{}", words("SUN MON TUE WED THU FRI SAT"));
    let year = format!("{z}(?:19[7-9][0-9]|2[01][0-9][0-9])");
    let step = format!("(?:/{z}[1-9][0-9]*)");
    let field = |v: &str, day: bool, extras: &[String]| {
        let base = if day { "\\*|\\?" } else { "\\*" };
        let mut item = format!("(?:(?:{base}|(?:{v})(?:-(?:{v}))?){step}?");
        for e in extras {
            item.push('|');
            item.push_str(e);
        }
        item.push(')');
        format!("{item}(?:,{item})*")
    };
    let minute = field(&sec, false, &[]);
    let fields5 = [
        minute.clone(),
        field(&hour, false, &[]),
        field(
            &dom,
            true,
            &[ci("L"), ci("LW"), format!("(?:{dom}){}", ci("W"))],
        ),
        field(&month, false, &[]),
        field(
            &dow,
            true,
            &[
                format!("(?:{dow}){}", ci("L")),
                format!("(?:{dow})#{z}[1-5]"),
            ],
        ),
    ];
    let s = "\\s+";
    let five = fields5.join(s);
    let six = format!("{minute}{s}{five}");
    let seven = format!("{six}{s}{}", field(&year, false, &[]));
    let macros = format!(
        "@(?:{})",
        words("yearly annually monthly weekly daily midnight hourly")
    );
    format!("^\\s*(?:{macros}|{five}|{six}|{seven})\\s*$")
}

named_schema!(
    /// A cron expression.
    CronText,
    json!({"type": "string", "pattern": cron_pattern(), "maxLength": 1000,
           "examples": ["30 9 * * 1-5", "@daily", "0 0 12 * * MON-FRI"],
           "description": "A cron expression as in crontab(5): 5 fields, 6 with seconds first, 7 with a year last, or @hourly, @daily ..."})
);

named_schema!(
    /// An IANA time zone, as the schedules read one: exactly the names the
    /// time zone database has (aliases included; case matters).
    TimeZone,
    json!({"type": "string",
           "enum": chrono_tz::TZ_VARIANTS.iter().map(|z| z.name()).collect::<Vec<_>>(),
           "examples": ["Europe/Berlin", "UTC"]})
);

named_schema!(
    /// A duration.
    Duration,
    json!({"type": "string", "pattern": DURATION_PATTERN, "examples": ["30s", "10m"],
           "description": "A number and a unit: ms, s, m, h, d or w"})
);

named_schema!(
    /// A rate limit.
    RateText,
    json!({"type": "string", "pattern": RATE_PATTERN, "examples": ["1000/1s", "10/1m"],
           "description": "Starts allowed per sliding window: N/DURATION, the window at most 99 days"})
);

named_schema!(
    /// The lower time bound of a filter.
    Since,
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": DURATION_PATTERN}],
        "examples": ["1h", "2026-12-01T00:00:00Z"],
        "description": "An RFC 3339 time, or a duration: that long before now"})
);

named_schema!(
    /// The upper time bound of a filter.
    Until,
    json!({"anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "enum": ["now"]},
        {"type": "string", "pattern": "^\\+[1-9][0-9]{0,5}(ms|s|m|h|d|w)$"}],
        "examples": ["now", "2026-12-01T00:00:00Z"],
        "description": "An RFC 3339 time, `now`, or `+DURATION` from now"})
);

/// Reads a [`Duration`].
pub fn duration(s: &str) -> Result<StdDuration, ValueError> {
    crate::model::parse_duration(s)
}

/// Reads a [`RateText`].
pub fn rate(s: &str) -> Result<Rate, ValueError> {
    s.parse()
}

/// Reads a [`Since`] (`since`) or an [`Until`]: any RFC 3339 time (before
/// the epoch too: as a bound it matches nothing or everything), a
/// duration before now, `now`, or `+DURATION` after now.
pub fn time_bound(s: &str, now: Micros, since: bool) -> Result<Micros, String> {
    let micros = |d: StdDuration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    if since {
        if let Ok(d) = duration(s) {
            return Ok(now.saturating_sub(micros(d)));
        }
    } else if s == "now" {
        return Ok(now);
    } else if let Some(rel) = s.strip_prefix('+') {
        let d = duration(rel).map_err(|e| e.to_string())?;
        return Ok(now.saturating_add(micros(d)));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cron_pattern_takes_what_the_parser_takes() {
        let schema = serde_json::json!({"type": "string", "pattern": cron_pattern()});
        let v = jsonschema::validator_for(&schema).unwrap();
        if let Ok(out) = std::env::var("JOBVISOR_CRON_PATTERN_OUT") {
            std::fs::write(out, cron_pattern()).unwrap();
        }
        for ok in [
            "30 9 * * 1-5",
            "@daily",
            "@Hourly",
            "0 0 12 * * MON-FRI",
            "0 0 0 1 1 * 2030",
            "*/15 0-5,22 L * fri#2",
            "0 0 15W jan-Mar 5L",
            "007 07 ? * ?",
        ] {
            assert!(v.is_valid(&serde_json::json!(ok)), "{ok}");
            assert!(
                crate::schedule::CronSchedule::parse(ok, "UTC").is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "61 * * * *",
            "* * *",
            "@reboot",
            "* * * 13 *",
            "* * * * 8",
            "0 0 32 * *",
        ] {
            assert!(!v.is_valid(&serde_json::json!(bad)), "{bad}");
        }
    }

    #[test]
    fn time_bounds_read_rfc_3339_with_any_offset_and_relative_forms() {
        let now = 1_000_000_000_000;
        assert_eq!(
            time_bound("1970-01-01T01:00:00+01:00", now, true).unwrap(),
            0
        );
        assert_eq!(
            time_bound("1969-12-31t23:59:59z", now, false).unwrap(),
            -1_000_000
        );
        assert_eq!(time_bound("1s", now, true).unwrap(), now - 1_000_000);
        assert_eq!(time_bound("now", now, false).unwrap(), now);
        assert_eq!(time_bound("+1ms", now, false).unwrap(), now + 1_000);
        assert!(time_bound("now", now, true).is_err());
        assert!(time_bound("1s", now, false).is_err());
    }
}
