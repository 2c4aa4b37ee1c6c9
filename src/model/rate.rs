//! Rates: at most N starts per window.

use super::schema::schema;
use super::value::ValueError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The longest rate window.
pub const MAX_RATE_WINDOW_MS: u64 = 366 * 24 * 3600 * 1000;

/// A queue's rate limit: at most `n` executions start in any window of
/// `per_ms` (a sliding window, across all nodes).
///
/// ```
/// use jobvisor::model::*;
/// let rate: Rate = "100/1m".parse().unwrap();
/// assert_eq!((rate.n, rate.per_ms), (100, 60_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Starts allowed per window (at least 1).
    pub n: u32,
    /// The window, in milliseconds (at least 1).
    pub per_ms: u64,
}

impl Rate {
    /// Refuses a rate that could never start anything or whose window is
    /// out of range (what parsing refuses too, for rates built in code).
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(Rate { n: 0, per_ms: 1000 }.check().is_err());
    /// assert!(Rate { n: 5, per_ms: 1000 }.check().is_ok());
    /// ```
    pub fn check(&self) -> Result<(), ValueError> {
        self.check_as(&format!("{}/{}ms", self.n, self.per_ms))
    }

    /// [`Rate::check`], naming the rate as `text`.
    fn check_as(&self, text: &str) -> Result<(), ValueError> {
        let bad = |why| ValueError::Rate {
            text: text.to_string(),
            why,
        };
        if self.n == 0 {
            return Err(bad("the count must be at least 1"));
        }
        if self.per_ms == 0 {
            return Err(bad("the window must be at least 1ms"));
        }
        if self.per_ms > MAX_RATE_WINDOW_MS {
            return Err(bad("the window must be at most 366 days"));
        }
        Ok(())
    }
}

impl FromStr for Rate {
    type Err = ValueError;
    /// `N/DUR`, e.g. `5/1s` or `100/1m`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |why: &'static str| ValueError::Rate {
            text: s.to_string(),
            why,
        };
        let (n, per) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        let per = humantime::parse_duration(per.trim())
            .map_err(|_| bad("the window is not a duration"))?;
        if per.subsec_nanos() % 1_000_000 != 0 {
            return Err(bad("the window must be a whole number of milliseconds"));
        }
        let per_ms = u64::try_from(per.as_millis()).map_err(|_| bad("the window is too long"))?;
        let rate = Rate { n, per_ms };
        rate.check_as(s)?;
        Ok(rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = humantime::format_duration(Duration::from_millis(self.per_ms));
        write!(f, "{}/{per}", self.n)
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl utoipa::PartialSchema for Rate {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(
            serde_json::json!({"type": "string", "examples": ["1000/1s", "10/1m 30s"],
            "description": "Starts allowed per sliding window: N/DURATION"}),
        )
    }
}

impl utoipa::ToSchema for Rate {}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
