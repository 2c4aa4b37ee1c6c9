//! Cron expressions as crontab(5) defines them, matched on local
//! (zone-less) calendar times.
//!
//! The grammar and the day rule are cronie's and Vixie cron's:
//! - fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or
//!   JAN-DEC, day of week 0-7 (0 and 7 are Sunday) or SUN-SAT; names are
//!   case-insensitive and may end ranges (`MON-FRI`);
//! - `*`, lists, ranges, and steps on `*` or on a range (`*/n`, `a-b/n`);
//! - when both day fields are restricted (neither starts with `*`), a day
//!   matches if **either** matches; otherwise both must match (so a field
//!   such as `*/2` counts as unrestricted, as in cronie);
//! - `@yearly` `@annually` `@monthly` `@weekly` `@daily` `@midnight`
//!   `@hourly`.
//!
//! Extensions, none of which changes the meaning of a plain crontab line:
//! an optional leading seconds field (6 fields), a trailing year field
//! (7 fields), `a/n` for `a-max/n`, `?` for `*` in the day fields, and in
//! the day fields `L` (last day of the month), `LW` (its last weekday),
//! `15W` (the weekday nearest the 15th, within the month), `5L` (the
//! month's last Friday) and `5#2` (its second Friday).

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// A parsed expression. Sets are bit masks indexed by value.
///
/// ```
/// use jobvisor::schedule::CronExpr;
/// use chrono::NaiveDate;
/// let e = CronExpr::parse("30 2 * * 1-5").unwrap();
/// let monday = NaiveDate::from_ymd_opt(2027, 1, 18).unwrap();
/// assert!(e.matches(monday.and_hms_opt(2, 30, 0).unwrap()));
/// assert!(!e.matches(monday.and_hms_opt(2, 31, 0).unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    seconds: u64,
    minutes: u64,
    hours: u32,
    months: u16,
    dom: DaysOfMonth,
    dow: DaysOfWeek,
    /// Years (7-field form), sorted; `None` is every year.
    years: Option<Vec<i32>>,
    /// cronie's DOM_STAR / DOW_STAR: either one makes the day rule AND.
    day_and: bool,
    /// cronie's MIN_STAR / HR_STAR: a job "with '*' in the hour or minute
    /// specifier" follows real time across daylight-saving changes; any
    /// other is a fixed-time job (cron(8)).
    wildcard_time: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DaysOfMonth {
    days: u32,
    last: bool,
    last_weekday: bool,
    /// `NW`: the weekday nearest day N.
    nearest_weekday: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct DaysOfWeek {
    /// Bits 0-6, Sunday first.
    days: u8,
    /// `D#k`: bit k-1 of `nth[D]`.
    nth: [u8; 7],
    /// `DL`: bit D.
    last: u8,
}

/// Why an expression does not parse: which field, and what is wrong.
///
/// ```
/// use jobvisor::schedule::CronExpr;
/// use chrono::NaiveDate;
/// let e = CronExpr::parse("61 * * * *").unwrap_err();
/// assert!(e.to_string().contains("minute"), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not 5, 6 or 7 fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week), \
         6 with seconds first, or 7 with a year last; got {0}"
    )]
    FieldCount(usize),
    /// An `@` word that is not one of crontab(5)'s.
    #[error(
        "unknown macro {0:?} (expected @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly)"
    )]
    Macro(String),
    /// `@reboot` has no place in a supervisor that outlives reboots.
    #[error("@reboot is not supported: use a daemon job (--daemon) for work that starts with the service")]
    Reboot,
    /// One field is wrong.
    #[error("field {index} ({name}) {text:?} is not valid: {reason}")]
    Field {
        /// 1-based position in the expression as written.
        index: usize,
        /// The field's name.
        name: &'static str,
        /// The field's text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Valid fields that select no date at all, such as `0 0 30 2 *`.
    #[error("it never fires: no date matches its day-of-month, month and day-of-week fields")]
    Never,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Second,
    Minute,
    Hour,
    Dom,
    Month,
    Dow,
    Year,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Second => "second",
            Kind::Minute => "minute",
            Kind::Hour => "hour",
            Kind::Dom => "day of month",
            Kind::Month => "month",
            Kind::Dow => "day of week",
            Kind::Year => "year",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Kind::Second | Kind::Minute => (0, 59),
            Kind::Hour => (0, 23),
            Kind::Dom => (1, 31),
            Kind::Month => (1, 12),
            Kind::Dow => (0, 7),
            Kind::Year => (YEAR_MIN, YEAR_MAX),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Kind::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            Kind::Dow => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }
}

const YEAR_MIN: u32 = 1970;
const YEAR_MAX: u32 = 2199;
/// No date pattern of the Gregorian calendar takes longer than one cycle
/// of 400 years to come round again.
const SEARCH_YEARS: i32 = 400;

/// What one field's text selects.
#[derive(Default)]
struct FieldSet {
    /// Bit per value (years: offset by YEAR_MIN, so u256 is emulated by Vec).
    values: Vec<bool>,
    dom: DaysOfMonth,
    dow: DaysOfWeek,
}

fn parse_field(text: &str, kind: Kind) -> Result<FieldSet, String> {
    let (lo, hi) = kind.range();
    let mut set = FieldSet {
        values: vec![false; hi as usize + 1],
        ..Default::default()
    };
    if text.is_empty() {
        return Err("empty".into());
    }
    for item in text.split(',') {
        parse_item(item, kind, lo, hi, &mut set)?;
    }
    Ok(set)
}

fn parse_item(item: &str, kind: Kind, lo: u32, hi: u32, set: &mut FieldSet) -> Result<(), String> {
    let upper = item.to_ascii_uppercase();
    let item = upper.as_str();
    if item.is_empty() {
        return Err("empty list item".into());
    }
    let day_field = matches!(kind, Kind::Dom | Kind::Dow);
    // The day-field extensions: none of them takes a step.
    if kind == Kind::Dom {
        if item == "L" {
            set.dom.last = true;
            return Ok(());
        }
        if item == "LW" {
            set.dom.last_weekday = true;
            return Ok(());
        }
        if let Some(day) = item.strip_suffix('W') {
            let d = number(day, kind, lo, hi)?;
            set.dom.nearest_weekday |= 1 << d;
            return Ok(());
        }
    }
    if kind == Kind::Dow {
        if let Some(day) = item.strip_suffix('L') {
            let d = value(day, kind, lo, hi)? % 7;
            set.dow.last |= 1 << d;
            return Ok(());
        }
        if let Some((day, nth)) = item.split_once('#') {
            let d = value(day, kind, lo, hi)? % 7;
            let n: u32 = nth
                .parse()
                .ok()
                .filter(|n| (1..=5).contains(n))
                .ok_or_else(|| format!("{nth:?} after # must be 1 to 5"))?;
            set.dow.nth[d as usize] |= 1 << (n - 1);
            return Ok(());
        }
    }
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let step: u32 = s
                .parse()
                .ok()
                .filter(|&s| s > 0)
                .ok_or_else(|| format!("step {s:?} must be a whole number above 0"))?;
            (r, Some(step))
        }
        None => (item, None),
    };
    let (from, to) = if range == "*" || (range == "?" && day_field) {
        (lo, hi)
    } else if let Some((a, b)) = range.split_once('-') {
        let (a, b) = (value(a, kind, lo, hi)?, value(b, kind, lo, hi)?);
        if a > b {
            return Err(format!("range {range} runs backwards"));
        }
        (a, b)
    } else {
        let a = value(range, kind, lo, hi)?;
        // `a/n` is `a-max/n` (an extension: Vixie cron rejects it).
        (a, if step.is_some() { hi } else { a })
    };
    let step = step.unwrap_or(1) as usize;
    for v in (from..=to).step_by(step) {
        set.values[v as usize] = true;
    }
    Ok(())
}

/// A number or (months, weekdays) a name, within the field's range.
fn value(text: &str, kind: Kind, lo: u32, hi: u32) -> Result<u32, String> {
    if let Some(i) = kind.names().iter().position(|n| *n == text) {
        return Ok(i as u32 + if kind == Kind::Month { 1 } else { 0 });
    }
    number(text, kind, lo, hi)
}

fn number(text: &str, kind: Kind, lo: u32, hi: u32) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let names = kind.names();
        return Err(if names.is_empty() {
            format!("{text:?} is not a number")
        } else {
            format!(
                "{text:?} is neither a number nor a name ({}-{})",
                names[0],
                names[names.len() - 1]
            )
        });
    }
    match text.parse::<u32>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(format!("{text} is out of range {lo}-{hi}")),
    }
}

/// The values of a field of at most 64 values (all but the year) as a bit
/// mask; each field's range fits the narrower type it is stored in.
fn mask(set: &FieldSet) -> u64 {
    set.values
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .fold(0, |m, (i, _)| m | 1 << i)
}

impl CronExpr {
    /// Parses an expression: 5 fields, 6 with seconds first, 7 with a year
    /// last, or a macro.
    ///
    /// ```
    /// use jobvisor::schedule::CronExpr;
    /// use chrono::NaiveDate;
    /// for ok in ["@weekly", "*/5 9-17 * * mon-fri", "0 0 L * *", "0 0 * * 5L", "0 0 15W * *", "0 0 * * 1#2", "*/10 * * * * *"] {
    ///     assert!(CronExpr::parse(ok).is_ok(), "{ok}");
    /// }
    /// assert!(CronExpr::parse("* * *").is_err());
    /// ```
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let trimmed = expr.trim();
        let expanded;
        let fields: Vec<&str> = if let Some(word) = trimmed.strip_prefix('@') {
            expanded = match word.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                "reboot" => return Err(CronError::Reboot),
                _ => return Err(CronError::Macro(trimmed.to_string())),
            };
            expanded.split_whitespace().collect()
        } else {
            trimmed.split_whitespace().collect()
        };
        let kinds: &[Kind] = match fields.len() {
            5 => &[Kind::Minute, Kind::Hour, Kind::Dom, Kind::Month, Kind::Dow],
            6 => &[
                Kind::Second,
                Kind::Minute,
                Kind::Hour,
                Kind::Dom,
                Kind::Month,
                Kind::Dow,
            ],
            7 => &[
                Kind::Second,
                Kind::Minute,
                Kind::Hour,
                Kind::Dom,
                Kind::Month,
                Kind::Dow,
                Kind::Year,
            ],
            n => return Err(CronError::FieldCount(n)),
        };
        let mut out = CronExpr {
            seconds: 1,
            minutes: 0,
            hours: 0,
            months: 0,
            dom: DaysOfMonth::default(),
            dow: DaysOfWeek::default(),
            years: None,
            day_and: false,
            wildcard_time: false,
        };
        let star = |f: &str| f.starts_with('*') || f.starts_with('?');
        for (i, (text, kind)) in fields.iter().zip(kinds).enumerate() {
            let set = parse_field(text, *kind).map_err(|reason| CronError::Field {
                index: i + 1,
                name: kind.name(),
                text: text.to_string(),
                reason,
            })?;
            match kind {
                Kind::Second => out.seconds = mask(&set),
                Kind::Minute => out.minutes = mask(&set),
                Kind::Hour => out.hours = mask(&set) as u32,
                Kind::Month => out.months = mask(&set) as u16,
                Kind::Dom => {
                    out.dom = set.dom.clone();
                    out.dom.days = mask(&set) as u32;
                }
                Kind::Dow => {
                    out.dow = set.dow.clone();
                    let bits = mask(&set);
                    // 7 is Sunday too.
                    out.dow.days = (bits & 0x7f) as u8 | ((bits >> 7) & 1) as u8;
                }
                Kind::Year => {
                    out.years = Some(
                        set.values
                            .iter()
                            .enumerate()
                            .filter(|(_, on)| **on)
                            .map(|(y, _)| y as i32)
                            .collect(),
                    )
                }
            }
        }
        let at = |k: Kind| {
            fields[kinds
                .iter()
                .position(|x| *x == k)
                .expect("every form has it")]
        };
        out.day_and = star(at(Kind::Dom)) || star(at(Kind::Dow));
        out.wildcard_time = at(Kind::Minute).starts_with('*') || at(Kind::Hour).starts_with('*');
        if !out.any_day_in_a_cycle() {
            return Err(CronError::Never);
        }
        Ok(out)
    }

    /// Whether daylight-saving changes are crossed in real time (see
    /// `wildcard_time`).
    ///
    /// ```
    /// use jobvisor::schedule::CronExpr;
    /// use chrono::NaiveDate;
    /// // A job with `*` starting its minute or hour field runs by real time at a
    /// // DST change (cron(8)); any other keeps to wall-clock times.
    /// assert!(CronExpr::parse("*/10 * * * *").unwrap().follows_real_time());
    /// assert!(!CronExpr::parse("30 2 * * *").unwrap().follows_real_time());
    /// ```
    pub fn follows_real_time(&self) -> bool {
        self.wildcard_time
    }

    fn any_day_in_a_cycle(&self) -> bool {
        let start = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid date");
        let mut d = start;
        while d.year() < 2000 + SEARCH_YEARS {
            if self.months & (1 << d.month()) == 0 {
                d = first_of_next_month(d);
                continue;
            }
            if self.day_matches(d) {
                return true;
            }
            d = d.succ_opt().expect("in range");
        }
        false
    }

    /// Whether date `d` is one of the expression's days (the month aside).
    ///
    /// ```
    /// use jobvisor::schedule::CronExpr;
    /// use chrono::NaiveDate;
    /// let e = CronExpr::parse("0 0 13 * 5").unwrap(); // the 13th, or a Friday
    /// assert!(e.day_matches(NaiveDate::from_ymd_opt(2027, 1, 13).unwrap())); // a Wednesday
    /// assert!(e.day_matches(NaiveDate::from_ymd_opt(2027, 1, 15).unwrap())); // a Friday
    /// assert!(!e.day_matches(NaiveDate::from_ymd_opt(2027, 1, 14).unwrap()));
    /// ```
    pub fn day_matches(&self, d: NaiveDate) -> bool {
        let dom = self.dom_matches(d);
        let dow = self.dow_matches(d);
        if self.day_and {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn dom_matches(&self, d: NaiveDate) -> bool {
        let day = d.day();
        if self.dom.days & (1 << day) != 0 {
            return true;
        }
        let last = days_in_month(d.year(), d.month());
        if self.dom.last && day == last {
            return true;
        }
        if self.dom.last_weekday && day == nearest_weekday(d.year(), d.month(), last) {
            return true;
        }
        if self.dom.nearest_weekday != 0 && is_weekday(d) {
            // Day N's nearest weekday lies within N-2..=N+2.
            let lo = day.saturating_sub(2).max(1);
            for n in lo..=(day + 2).min(31) {
                if self.dom.nearest_weekday & (1 << n) != 0
                    && n <= last
                    && nearest_weekday(d.year(), d.month(), n) == day
                {
                    return true;
                }
            }
        }
        false
    }

    fn dow_matches(&self, d: NaiveDate) -> bool {
        let wd = d.weekday().num_days_from_sunday() as usize;
        if self.dow.days & (1 << wd) != 0 {
            return true;
        }
        if self.dow.nth[wd] & (1 << ((d.day() - 1) / 7)) != 0 {
            return true;
        }
        self.dow.last & (1 << wd) != 0 && d.day() + 7 > days_in_month(d.year(), d.month())
    }

    /// Whether local time `t` (to the second) is one the expression
    /// selects.
    ///
    /// ```
    /// use jobvisor::schedule::CronExpr;
    /// use chrono::NaiveDate;
    /// let e = CronExpr::parse("0 12 * * *").unwrap();
    /// assert!(e.matches(NaiveDate::from_ymd_opt(2027, 6, 1).unwrap().and_hms_opt(12, 0, 0).unwrap()));
    /// ```
    pub fn matches(&self, t: NaiveDateTime) -> bool {
        t.nanosecond() == 0
            && self.seconds & (1 << t.second()) != 0
            && self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << t.month()) != 0
            && self.years.as_ref().is_none_or(|y| y.contains(&t.year()))
            && self.day_matches(t.date())
    }

    /// The first local time strictly after `after` that the expression
    /// selects, within 400 years.
    ///
    /// ```
    /// use jobvisor::schedule::CronExpr;
    /// use chrono::NaiveDate;
    /// let e = CronExpr::parse("0 0 L * *").unwrap(); // the last day of the month
    /// let t = NaiveDate::from_ymd_opt(2027, 2, 1).unwrap().and_hms_opt(0, 0, 0).unwrap();
    /// assert_eq!(e.next_after(t).unwrap().date(), NaiveDate::from_ymd_opt(2027, 2, 28).unwrap());
    /// ```
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_nanosecond(0)? + Duration::seconds(1);
        let limit = after.year() + SEARCH_YEARS;
        loop {
            if t.year() > limit {
                return None;
            }
            if let Some(years) = &self.years {
                let y = t.year();
                match years.iter().find(|&&v| v >= y) {
                    None => return None,
                    Some(&v) if v > y => {
                        t = NaiveDate::from_ymd_opt(v, 1, 1)?.and_time(NaiveTime::MIN);
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let date = t.date();
            if self.months & (1 << t.month()) == 0 {
                t = first_of_next_month(date).and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(date) {
                t = date.succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            let Some(h) = next_bit(self.hours as u64, t.hour()) else {
                t = date.succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            };
            if h != t.hour() {
                t = date.and_hms_opt(h, 0, 0)?;
            }
            let Some(m) = next_bit(self.minutes, t.minute()) else {
                t = date.and_hms_opt(h, 0, 0)? + Duration::hours(1);
                continue;
            };
            if m != t.minute() {
                t = date.and_hms_opt(h, m, 0)?;
            }
            let Some(s) = next_bit(self.seconds, t.second()) else {
                t = date.and_hms_opt(h, m, 0)? + Duration::minutes(1);
                continue;
            };
            return date.and_hms_opt(h, m, s);
        }
    }
}

/// The lowest set bit at or above `from`.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    let rest = mask.checked_shr(from)?;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

fn first_of_next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year() + 1, 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).expect("valid date")
}

fn days_in_month(y: i32, m: u32) -> u32 {
    let next = first_of_next_month(NaiveDate::from_ymd_opt(y, m, 1).expect("valid date"));
    next.pred_opt().expect("valid date").day()
}

fn is_weekday(d: NaiveDate) -> bool {
    d.weekday().num_days_from_monday() < 5
}

/// The weekday (Monday to Friday) nearest day `n` of the month, without
/// leaving the month: Saturday goes back to Friday unless that is the
/// previous month, Sunday forward to Monday unless that is the next.
fn nearest_weekday(y: i32, m: u32, n: u32) -> u32 {
    let last = days_in_month(y, m);
    let d = NaiveDate::from_ymd_opt(y, m, n.min(last)).expect("valid date");
    match d.weekday().num_days_from_monday() {
        5 if d.day() == 1 => 3,
        5 => d.day() - 1,
        6 if d.day() == last => d.day() - 2,
        6 => d.day() + 1,
        _ => d.day(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(expr: &str, after: &str) -> String {
        let e = CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let t = NaiveDateTime::parse_from_str(after, "%Y-%m-%d %H:%M:%S").unwrap();
        e.next_after(t)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S %a").to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_issue_table_matches_crontab_5() {
        // Wednesday 2026-11-25.
        let now = "2026-11-25 12:00:00";
        assert_eq!(next("0 9 * * 1", now), "2026-11-30 09:00:00 Mon");
        assert_eq!(next("0 9 * * 0", now), "2026-11-29 09:00:00 Sun");
        assert_eq!(next("0 9 * * 7", now), "2026-11-29 09:00:00 Sun");
        assert_eq!(next("0 0 13 * 5", now), "2026-11-27 00:00:00 Fri");
        assert_eq!(next("0 0 1,15 * 1", now), "2026-11-30 00:00:00 Mon");
    }

    #[test]
    fn extensions_select_the_documented_days() {
        let now = "2026-11-25 12:00:00";
        assert_eq!(next("0 0 L * *", now), "2026-11-30 00:00:00 Mon");
        assert_eq!(next("0 0 LW 2 *", now), "2027-02-26 00:00:00 Fri");
        // 2027-05-01 is a Saturday: 1W is Monday the 3rd.
        assert_eq!(next("0 0 1W 5 *", now), "2027-05-03 00:00:00 Mon");
        // 2027-10-31 is a Sunday: 31W is Friday the 29th.
        assert_eq!(next("0 0 31W 10 *", now), "2027-10-29 00:00:00 Fri");
        assert_eq!(next("0 0 ? * 5L", now), "2026-11-27 00:00:00 Fri");
        assert_eq!(next("0 0 * * 1#1", now), "2026-12-07 00:00:00 Mon");
        assert_eq!(next("0 0 * 2 MON#5", now), "2044-02-29 00:00:00 Mon");
    }

    #[test]
    fn impossible_dates_are_refused_and_rare_ones_found() {
        assert_eq!(CronExpr::parse("0 0 30 2 *"), Err(CronError::Never));
        assert_eq!(CronExpr::parse("0 0 31 4,6,9,11 *"), Err(CronError::Never));
        assert_eq!(
            next("0 0 29 2 *", "2097-01-01 00:00:00"),
            "2104-02-29 00:00:00 Fri"
        );
        // The OR rule rescues an impossible day of month.
        assert_eq!(
            next("0 0 30 2 1", "2026-11-25 00:00:00"),
            "2027-02-01 00:00:00 Mon"
        );
    }
}
