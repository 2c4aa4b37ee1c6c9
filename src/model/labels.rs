//! What a run carries to be found again: its tags and its meta, with their
//! limits, and how it came to be (its origin).

use super::value::{parse_name, ValueError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A run's meta: string values by key, at most [`META_BYTES`] as JSON.
pub type Meta = BTreeMap<String, String>;

/// At most this many tags a run or job.
pub const MAX_TAGS: usize = 32;
/// At most this many characters a tag, or a meta key.
pub const MAX_LABEL_CHARS: usize = 64;
/// At most this many bytes of meta, written as a JSON object.
pub const META_BYTES: usize = 4096;

/// At most this many characters a name: of a job, handler, queue,
/// concurrency key or workflow step. Every backend indexes them, and
/// MySQL's indexed columns hold 255 characters.
pub(crate) const MAX_NAME_CHARS: usize = 255;
/// At most this many characters a unique key (MySQL's key column holds
/// 700).
pub(crate) const MAX_UNIQUE_KEY_CHARS: usize = 700;

/// Checks that `text`, a `what`, has at most `max` characters.
pub(crate) fn check_chars(what: &str, text: &str, max: usize) -> Result<(), String> {
    let chars = text.chars().count();
    if chars > max {
        let head: String = text.chars().take(16).collect();
        return Err(format!(
            "{what} {head:?}… is {chars} characters: at most {max} are allowed"
        ));
    }
    Ok(())
}

/// Checks a name (see [`MAX_NAME_CHARS`]).
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    check_chars(what, name, MAX_NAME_CHARS)
}

/// Checks `tags`: at most [`MAX_TAGS`], each of 1 to [`MAX_LABEL_CHARS`]
/// characters with no white space, comma, control character or byte-order
/// mark (a filter writes several as `a,b`), and none twice: what the HTTP
/// API's schema states.
///
/// ```
/// use jobvisor::model::check_tags;
/// assert!(check_tags(&["billing".into(), "eu-west".into()]).is_ok());
/// assert!(check_tags(&["two words".into()]).is_err());
/// assert!(check_tags(&vec!["t".to_string(); 2]).is_err());
/// ```
pub fn check_tags(tags: &[String]) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags: at most {MAX_TAGS} are allowed",
            tags.len()
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        check_label("tag", t, &[','])?;
        if tags[..i].contains(t) {
            return Err(format!("tag {t:?} is given twice"));
        }
    }
    Ok(())
}

/// Checks `meta`: keys of 1 to [`MAX_LABEL_CHARS`] characters with no
/// space, `=`, `:`, comma or control character (filters write a pair as
/// `K=V` or `K:V`), values of any text, and at most [`META_BYTES`] in all
/// as JSON.
///
/// ```
/// use jobvisor::model::{check_meta, Meta};
/// let mut meta = Meta::new();
/// meta.insert("customer".into(), "42".into());
/// assert!(check_meta(&meta).is_ok());
/// meta.insert("big".into(), "x".repeat(5000));
/// assert!(check_meta(&meta).is_err());
/// ```
pub fn check_meta(meta: &Meta) -> Result<(), String> {
    for key in meta.keys() {
        check_label("meta key", key, &['=', ':', ','])?;
    }
    let bytes = serde_json::to_string(meta).map_or(usize::MAX, |j| j.len());
    if bytes > META_BYTES {
        return Err(format!(
            "meta is {bytes} bytes as JSON: at most {META_BYTES} are allowed"
        ));
    }
    Ok(())
}

fn check_label(what: &str, text: &str, also: &[char]) -> Result<(), String> {
    let chars = text.chars().count();
    if chars == 0 {
        return Err(format!("a {what} cannot be empty"));
    }
    if chars > MAX_LABEL_CHARS {
        return Err(format!(
            "{what} {:?}… is {chars} characters: at most {MAX_LABEL_CHARS} are allowed",
            text.chars().take(16).collect::<String>()
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '\u{feff}' || also.contains(c))
    {
        return Err(format!("{what} {text:?} cannot hold {c:?}"));
    }
    Ok(())
}

/// Parses `KEY=VALUE` (a flag) into a meta pair.
///
/// ```
/// use jobvisor::model::parse_meta_pair;
/// assert_eq!(parse_meta_pair("region=eu=1").unwrap(), ("region".into(), "eu=1".into()));
/// assert!(parse_meta_pair("region").is_err());
/// ```
pub fn parse_meta_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) => {
            check_label("meta key", k, &['=', ':', ','])?;
            Ok((k.to_string(), v.to_string()))
        }
        None => Err(format!("meta {text:?} is not KEY=VALUE")),
    }
}

/// How an execution came to be.
///
/// ```
/// use jobvisor::model::Origin;
/// assert_eq!("snooze".parse::<Origin>().unwrap(), Origin::Snooze);
/// assert_eq!(Origin::default(), Origin::Manual);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Enqueued by a caller: `run`, `POST /v1/executions`, the library.
    #[default]
    Manual,
    /// A job's scheduled occurrence (cron, interval, once).
    Scheduled,
    /// A job run on request (`job trigger`).
    Triggered,
    /// A job run because another job it is chained to ended (`then`).
    Chained,
    /// A workflow's step.
    Workflow,
    /// A retry of a failed attempt, automatic or `exec retry`.
    Retry,
    /// The next attempt after its handler asked to snooze.
    Snooze,
    /// A daemon's run (its first, or a restart).
    Daemon,
    /// A webhook's delivery of an event (handler `webhook`).
    Event,
}

impl Origin {
    /// Every origin.
    pub const ALL: [Origin; 9] = [
        Origin::Manual,
        Origin::Scheduled,
        Origin::Triggered,
        Origin::Chained,
        Origin::Workflow,
        Origin::Retry,
        Origin::Snooze,
        Origin::Daemon,
        Origin::Event,
    ];

    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Manual => "manual",
            Origin::Scheduled => "scheduled",
            Origin::Triggered => "triggered",
            Origin::Chained => "chained",
            Origin::Workflow => "workflow",
            Origin::Retry => "retry",
            Origin::Snooze => "snooze",
            Origin::Daemon => "daemon",
            Origin::Event => "event",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Origin {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = Origin::ALL.map(|o| (o.as_str(), o));
        parse_name(
            "origin",
            "manual, scheduled, triggered, chained, workflow, retry, snooze, daemon or event",
            &names,
            s,
        )
    }
}
