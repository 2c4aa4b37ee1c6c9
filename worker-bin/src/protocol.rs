//! Protocol version 1: every message the supervisor and a worker exchange.
//!
//! Both sides use these types, so the supervisor's parser and the worker host
//! share one definition of every message (see `shared/PROTOCOL.md`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The protocol version this crate speaks.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let hello = Hello { protocol: Some(PROTOCOL_VERSION), pooled: true, handlers: vec![] };
/// assert_eq!(WorkerMessage::Hello(hello).to_line(), r#"{"type":"hello","protocol":1,"pooled":true}"#);
/// ```
pub const PROTOCOL_VERSION: u32 = 1;

/// Default bound on one stdout/stderr line; longer lines are cut.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// assert_eq!(DEFAULT_MAX_LINE_BYTES, 1 << 20);
/// ```
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// A log level: the seven levels every job can log at.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let levels: Vec<Level> = ["trace", "debug", "info", "warn", "error", "fatal", "panic"]
///     .iter()
///     .map(|s| s.parse().unwrap())
///     .collect();
/// assert!(levels.windows(2).all(|w| w[0] < w[1]), "least severe first");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Finest detail.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the job survived.
    Warn,
    /// An operation failed.
    Error,
    /// The job cannot go on.
    Fatal,
    /// The job's code panicked.
    Panic,
}

impl Level {
    /// All levels, least severe first.
    pub const ALL: [Level; 7] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
        Level::Panic,
    ];

    /// The level's name on the wire and in the database.
    ///
    /// ```
    /// use jobvisor_worker::protocol::*;
    /// assert_eq!(Level::Warn.as_str(), "warn");
    /// assert_eq!(Level::Warn.to_string(), "warn");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
            Level::Panic => "panic",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no level.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let e = "warning".parse::<Level>().unwrap_err();
/// let UnknownLevel(given) = e;
/// assert_eq!(given, "warning");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("unknown log level {0:?} (expected one of trace, debug, info, warn, error, fatal, panic)")]
pub struct UnknownLevel(pub String);

impl FromStr for Level {
    type Err = UnknownLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownLevel(s.to_string()))
    }
}

/// The first message a worker receives: what to run.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let line = r#"{"type":"run","protocol":1,"execution_id":"0b7c","job":"","handler":"resize","attempt":1,"payload":{"w":64}}"#;
/// let SupervisorMessage::Run(run) = serde_json::from_str(line).unwrap() else { panic!() };
/// assert_eq!((run.handler.as_str(), run.attempt, run.timeout_ms), ("resize", 1, None));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Protocol version of the supervisor.
    pub protocol: u32,
    /// The execution's UUID.
    pub execution_id: String,
    /// The job's name.
    pub job: String,
    /// The handler to run (a multi-handler worker dispatches on it).
    pub handler: String,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The job's input.
    #[serde(default)]
    pub payload: Value,
    /// Wall-clock budget, when the execution has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The executions it ran after (its parents), with how they ended.
    /// Absent when it has none; a worker may ignore it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// How many times this run's chain has snoozed before it (absent when
    /// none): "poll until ready, give up after N" reads it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snoozes: u32,
    /// The run's meta (absent when it has none).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    /// The run's tags (absent when it has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The W3C `traceparent` of this attempt's span, when its run is
    /// traced (absent otherwise): a worker's own spans are its children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A parent's end, as its dependent receives it.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let line = r#"{"type":"run","protocol":1,"execution_id":"b","job":"load","handler":"load","attempt":1,"payload":null,
///   "inputs":[{"id":"a","handler":"extract","status":"succeeded","output":{"rows":1200}}]}"#;
/// let SupervisorMessage::Run(run) = serde_json::from_str(line).unwrap() else { panic!() };
/// assert_eq!(run.inputs[0].output["rows"], 1200);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The parent execution's UUID (its last attempt).
    pub id: String,
    /// The parent's handler.
    pub handler: String,
    /// How it ended: `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// Its output (`null` if it gave none).
    #[serde(default)]
    pub output: Value,
}

/// Supervisor -> worker messages.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let cancel: SupervisorMessage = serde_json::from_str(r#"{"type":"cancel","reason":"operator"}"#).unwrap();
/// assert_eq!(cancel, SupervisorMessage::Cancel { reason: Some("operator".into()) });
/// ```
// One message a run, read once: a box would save nothing worth its
// indirection, and would change the variant every worker matches on.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorMessage {
    /// Run one execution.
    Run(RunRequest),
    /// Stop the current execution cooperatively.
    Cancel {
        /// Why, for the worker's logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

/// A worker's announcement of what it can do.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Hello(h)) =
///     parse_worker_line(r#"{"type":"hello","protocol":1,"pooled":true,"handlers":["resize"]}"#)
/// else { panic!() };
/// assert!(h.pooled && h.handlers == ["resize"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version of the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// Whether the worker can run several executions in sequence.
    #[serde(default)]
    pub pooled: bool,
    /// Handlers this worker hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<String>,
}

/// A progress report; any subset of the fields.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let p = Progress { done: Some(17), total: Some(40), ..Default::default() };
/// assert_eq!(p.normalized().percent, Some(42.5));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// What the job is doing now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Units of work done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<u64>,
    /// Units of work in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Free-form detail: a JSON object of at most [`MAX_PROGRESS_DATA`]
    /// bytes, kept (replacing the last one) and shown with the progress.
    /// The supervisor drops any other value, and says so in the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// The most bytes a progress report's `data` may take, as JSON.
pub const MAX_PROGRESS_DATA: usize = 64 * 1024;

impl Progress {
    /// The same report with `percent` clamped to 0..=100, or derived from
    /// `done`/`total` when absent. Never fails: odd values are clamped.
    ///
    /// ```
    /// use jobvisor_worker::protocol::*;
    /// let over = Progress { percent: Some(140.0), ..Default::default() };
    /// assert_eq!(over.normalized().percent, Some(100.0));
    /// let derived = Progress { done: Some(1), total: Some(4), ..Default::default() };
    /// assert_eq!(derived.normalized().percent, Some(25.0));
    /// ```
    pub fn normalized(mut self) -> Self {
        self.percent = match self.percent {
            Some(p) if p.is_nan() => None,
            Some(p) => Some(p.clamp(0.0, 100.0)),
            None => match (self.done, self.total) {
                (Some(d), Some(t)) if t > 0 => {
                    Some((d as f64 / t as f64 * 100.0).clamp(0.0, 100.0))
                }
                _ => None,
            },
        };
        self
    }
}

/// A structured log entry from a worker.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Log(l)) =
///     parse_worker_line(r#"{"type":"log","level":"warn","message":"retrying","fields":{"try":2}}"#)
/// else { panic!() };
/// assert_eq!((l.level, l.message.as_str()), (Level::Warn, "retrying"));
/// assert_eq!(l.fields.unwrap()["try"], 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    /// Severity.
    pub level: Level,
    /// The text.
    #[serde(default)]
    pub message: String,
    /// Structured context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Map<String, Value>>,
}

/// How an execution ended, as the worker reports it.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Result(r)) =
///     parse_worker_line(r#"{"type":"result","status":"cancelled"}"#)
/// else { panic!() };
/// assert_eq!(r.status, ResultStatus::Cancelled);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The work was done.
    Succeeded,
    /// The work failed.
    Failed,
    /// The work stopped on a cancel request.
    Cancelled,
}

/// The last message of an execution.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Result(r)) =
///     parse_worker_line(r#"{"type":"result","status":"failed","error":"upstream returned 503","retry":true}"#)
/// else { panic!() };
/// assert_eq!((r.status, r.error.as_deref(), r.retry), (ResultStatus::Failed, Some("upstream returned 503"), Some(true)));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// The outcome.
    pub status: ResultStatus,
    /// The job's output, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `Some(false)`: a permanent failure, not to be retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<bool>,
}

/// A handler's request to run again later, without using a retry: the
/// execution ends as `snoozed`, and a new one of its chain is due after
/// `delay_ms`, with the same attempt number and attempts allowed.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Snooze(s)) =
///     parse_worker_line(r#"{"type":"snooze","delay_ms":30000,"reason":"busy"}"#)
/// else { panic!() };
/// assert_eq!((s.delay_ms, s.reason.as_deref()), (30_000, Some("busy")));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnoozeMessage {
    /// How long from now until it runs again.
    pub delay_ms: u64,
    /// Why, stored on the snoozed execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The message that ends an execution: its result or a snooze.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// fn ends(m: &WorkerMessage) -> Option<Final> {
///     match m {
///         WorkerMessage::Result(r) => Some(Final::Result(r.clone())),
///         WorkerMessage::Snooze(s) => Some(Final::Snooze(s.clone())),
///         _ => None,
///     }
/// }
/// assert!(ends(&WorkerMessage::Heartbeat).is_none());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Final {
    /// `result`.
    Result(ResultMessage),
    /// `snooze`.
    Snooze(SnoozeMessage),
}

/// Worker -> supervisor messages.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let line = WorkerMessage::Progress(Progress { percent: Some(50.0), ..Default::default() }).to_line();
/// assert_eq!(line, r#"{"type":"progress","percent":50.0}"#);
/// assert_eq!(parse_worker_line(&line), ParsedLine::Message(serde_json::from_str(&line).unwrap()));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// Capabilities (first line only).
    Hello(Hello),
    /// Progress report.
    Progress(Progress),
    /// Log entry.
    Log(LogMessage),
    /// Liveness.
    Heartbeat,
    /// Final outcome.
    Result(ResultMessage),
    /// Run again later (final, like a result).
    Snooze(SnoozeMessage),
}

impl WorkerMessage {
    /// The message as one protocol line, without the newline.
    ///
    /// ```
    /// use jobvisor_worker::protocol::*;
    /// assert_eq!(WorkerMessage::Heartbeat.to_line(), r#"{"type":"heartbeat"}"#);
    /// ```
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("protocol messages always serialize")
    }
}

/// What the supervisor makes of one stdout line.
///
/// ```
/// use jobvisor_worker::protocol::*;
/// assert_eq!(parse_worker_line("hello there"), ParsedLine::Plain);
/// assert_eq!(parse_worker_line(r#"{"type":"log"}"#), ParsedLine::Plain, "no level");
/// assert_eq!(parse_worker_line(r#"{"type":"future"}"#), ParsedLine::Unknown("future".into()));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ParsedLine {
    /// A known protocol message (progress already normalized, log level
    /// mapped: an unknown level becomes `info` with the original kept in
    /// `fields.level`).
    Message(WorkerMessage),
    /// A well-formed envelope of a type from a future version: stored as a
    /// debug log, otherwise ignored.
    Unknown(String),
    /// Not a protocol message: stored as an `info` log of the stream.
    Plain,
}

#[derive(Deserialize)]
struct RawLog {
    level: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    fields: Option<Value>,
}

/// Parses one worker stdout line. Never fails: anything that is not a
/// well-formed known message is [`ParsedLine::Plain`].
///
/// ```
/// use jobvisor_worker::protocol::*;
/// let ParsedLine::Message(WorkerMessage::Log(l)) =
///     parse_worker_line(r#" {"type":"log","level":"loud","message":"hi"} "#)
/// else { panic!() };
/// // An unknown level is stored as info, the original kept in the fields.
/// assert_eq!(l.level, Level::Info);
/// assert_eq!(l.fields.unwrap()["level"], "loud");
/// ```
pub fn parse_worker_line(line: &str) -> ParsedLine {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return ParsedLine::Plain;
    }
    let Ok(mut map) = serde_json::from_str::<Map<String, Value>>(trimmed) else {
        return ParsedLine::Plain;
    };
    let kind = match map.remove("type") {
        Some(Value::String(s)) => s,
        _ => return ParsedLine::Plain,
    };
    let body = Value::Object(map);
    let parsed = match kind.as_str() {
        "hello" => serde_json::from_value(body).map(WorkerMessage::Hello).ok(),
        "progress" => serde_json::from_value::<Progress>(body)
            .map(|p| WorkerMessage::Progress(p.normalized()))
            .ok(),
        "heartbeat" => Some(WorkerMessage::Heartbeat),
        "result" => serde_json::from_value(body).map(WorkerMessage::Result).ok(),
        "snooze" => serde_json::from_value(body).map(WorkerMessage::Snooze).ok(),
        "log" => serde_json::from_value::<RawLog>(body)
            .ok()
            .map(log_from_raw),
        _ => return ParsedLine::Unknown(kind),
    };
    parsed.map_or(ParsedLine::Plain, ParsedLine::Message)
}

fn log_from_raw(raw: RawLog) -> WorkerMessage {
    let mut fields = match raw.fields {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(other) => Some(Map::from_iter([("fields".to_string(), other)])),
    };
    let level = raw.level.parse().unwrap_or_else(|_| {
        fields
            .get_or_insert_with(Map::new)
            .insert("level".to_string(), Value::String(raw.level.clone()));
        Level::Info
    });
    WorkerMessage::Log(LogMessage {
        level,
        message: raw.message.unwrap_or_default(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_percent_is_derived_and_clamped() {
        let p = Progress {
            done: Some(1),
            total: Some(4),
            ..Default::default()
        };
        assert_eq!(p.normalized().percent, Some(25.0));
        let p = Progress {
            percent: Some(250.0),
            ..Default::default()
        };
        assert_eq!(p.normalized().percent, Some(100.0));
    }

    #[test]
    fn an_unknown_level_becomes_info_and_keeps_the_original() {
        let ParsedLine::Message(WorkerMessage::Log(l)) =
            parse_worker_line(r#"{"type":"log","level":"shout","message":"x"}"#)
        else {
            panic!("not a log")
        };
        assert_eq!(l.level, Level::Info);
        assert_eq!(l.fields.unwrap()["level"], "shout");
    }

    #[test]
    fn messages_round_trip_through_lines() {
        let m = WorkerMessage::Result(ResultMessage {
            status: ResultStatus::Failed,
            output: None,
            error: Some("boom".into()),
            retry: Some(false),
        });
        assert_eq!(parse_worker_line(&m.to_line()), ParsedLine::Message(m));
        let r = SupervisorMessage::Cancel { reason: None };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"type":"cancel"}"#);
    }
}
