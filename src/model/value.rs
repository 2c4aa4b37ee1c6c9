//! Values given as text (sizes, names) and why one is refused.

/// Formats a byte count with a binary unit (`64 MiB`).
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_bytes(64 << 20), "64 MiB");
/// assert_eq!(format_bytes(1536), "1.5 KiB");
/// assert_eq!(format_bytes(1000), "1000 B");
/// ```
pub fn format_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size && n.is_multiple_of((size / 1024).max(1)) {
            let v = n as f64 / size as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{n} B")
}

/// A value from outside (a flag, a config entry, a stored column) that
/// does not parse. (The humantime errors are in the text, not sources, so
/// that a chain of causes does not say them twice.)
///
/// ```
/// use jobvisor::model::*;
/// let e = parse_bytes("12 parsecs").unwrap_err();
/// println!("{e}"); // one line that says what was wrong
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// A name outside its set.
    #[error("unknown {what} {text:?} (expected {expected})")]
    Unknown {
        /// What it names (`mode`, `status`, ...).
        what: &'static str,
        /// The text given.
        text: String,
        /// The names there are.
        expected: &'static str,
    },
    /// Not a duration.
    #[error("{0} (expected e.g. 30s, 5m, 250ms)")]
    Duration(humantime::DurationError),
    /// Not a point in time.
    #[error("{0} (expected RFC 3339 like 2026-11-22T12:00:00Z, `now` or `+5m`)")]
    Time(humantime::TimestampError),
    /// `+DUR` beyond what RFC 3339 can write.
    #[error("+{0} is too far in the future")]
    TooFar(String),
    /// A time before the epoch.
    #[error("times before 1970 are not supported")]
    BeforeEpoch,
    /// A lower bound after now, which nothing could match.
    #[error("{0} is after now: give a duration ago (1h) or a time")]
    Future(String),
    /// Not a rate (`N/DUR`).
    #[error("invalid rate {text:?}: {why} (expected N/DUR, e.g. 5/1s or 100/1m)")]
    Rate {
        /// The text given.
        text: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not a number with a unit.
    #[error("invalid size {0:?}: expected a number with an optional unit (K, M, G, T)")]
    SizeNumber(String),
    /// An unknown size unit.
    #[error("invalid size {text:?}: unknown unit {unit:?}")]
    SizeUnit {
        /// The text given.
        text: String,
        /// Its unit.
        unit: String,
    },
    /// A size below one byte or beyond 2^64.
    #[error("invalid size {0:?}")]
    SizeRange(String),
}

/// Parses a byte count: `1048576`, `512K`, `64M`, `64MiB`, `1.5G`, `2GB`
/// (binary units throughout).
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(parse_bytes("512K").unwrap(), 512 << 10);
/// assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
/// assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| ValueError::SizeNumber(s.to_string()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(ValueError::SizeUnit {
                text: s.to_string(),
                unit: other.to_string(),
            })
        }
    };
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(ValueError::SizeRange(s.to_string()));
    }
    Ok(bytes as u64)
}

/// Parses one of a fixed set of names.
pub(crate) fn parse_name<T: Copy>(
    what: &'static str,
    expected: &'static str,
    names: &[(&str, T)],
    text: &str,
) -> Result<T, ValueError> {
    names
        .iter()
        .find(|(n, _)| *n == text)
        .map(|(_, v)| *v)
        .ok_or_else(|| ValueError::Unknown {
            what,
            text: text.to_string(),
            expected,
        })
}
