//! Domain types shared by the store, the runners and the interfaces.

use jobvisor_worker::protocol::Level;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

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

/// A schema of the OpenAPI document, written as the JSON it is.
pub(crate) fn schema(v: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    serde_json::from_value(v).expect("the schemas written in the code are valid")
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(serde_json::json!({"type": "string", "format": "date-time",
            "description": "RFC 3339, UTC, microseconds"}))
    }
}

impl utoipa::ToSchema for Timestamp {}

/// A list of `[name, value]` pairs, `value` a string of `format` (JSON
/// Schema 2020-12 `prefixItems`: utoipa writes tuples the 3.0 way).
pub(crate) fn pairs_schema(format: Value) -> Value {
    let mut value = serde_json::json!({"type": "string"});
    if let (Some(v), Some(f)) = (value.as_object_mut(), format.as_object()) {
        v.extend(f.clone());
    }
    serde_json::json!({"type": "array", "items": {"type": "array", "minItems": 2, "maxItems": 2,
        "prefixItems": [{"type": "string"}, value]}})
}

fn env_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(pairs_schema(serde_json::json!({})))
}

/// The schema of a [`Level`](jobvisor_worker::Level): its name.
pub(crate) fn level_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    let names = jobvisor_worker::Level::ALL.map(|l| l.as_str());
    schema(serde_json::json!({"type": "string", "enum": names,
        "description": "A log level, least severe first"}))
}

/// Formats a duration in milliseconds the way humans write it (`1.5s`).
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_ms(90_000), "1m 30s");
/// ```
pub fn format_ms(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

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
/// ```
pub fn parse_since(s: &str, now: Micros) -> Result<Micros, ValueError> {
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
const MAX_TIME: Micros = 253_402_300_800_000_000;

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

/// Formats a measured duration: sub-millisecond ones keep their fraction.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!(format_elapsed_ms(0.25), "0.25ms");
/// assert_eq!(format_elapsed_ms(1500.0), "1s 500ms");
/// ```
pub fn format_elapsed_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2}ms")
    } else {
        format_ms(ms.round() as u64)
    }
}

/// Where an execution runs.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!("process".parse::<Mode>().unwrap(), Mode::Process);
/// assert!("thread".parse::<Mode>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A tokio task inside the supervisor ("goroutine-style").
    Inproc,
    /// A child worker process ("process-style").
    Process,
}

impl Mode {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Mode::Inproc.as_str(), "inproc");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inproc => "inproc",
            Mode::Process => "process",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [("inproc", Mode::Inproc), ("process", Mode::Process)];
        parse_name("mode", "inproc or process", &names, s)
    }
}

/// An execution's state.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
///
/// ```
/// use jobvisor::model::*;
/// let s: Status = "snoozed".parse().unwrap();
/// assert!(s.is_terminal());
/// assert_eq!(serde_json::to_string(&Status::Running).unwrap(), r#""running""#);
/// ```
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Held back until other executions end (its parents, or the running
    /// holder of its unique key that it follows); then pending.
    Waiting,
    /// Waiting to be claimed.
    Pending,
    /// Claimed by a node and running.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly (a later attempt may follow).
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Ended by its handler's request to run again later (`snooze`): a new
    /// attempt follows at the time it asked for, without using a retry.
    Snoozed,
}

impl Status {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Status::Cancelled.as_str(), "cancelled");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Waiting => "waiting",
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Snoozed => "snoozed",
        }
    }

    /// Whether the execution is over.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(Status::Failed.is_terminal());
    /// assert!(!Status::Waiting.is_terminal());
    /// ```
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::Failed | Status::Cancelled | Status::Snoozed
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let all = [
            Status::Waiting,
            Status::Pending,
            Status::Running,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
            Status::Snoozed,
        ];
        let names = all.map(|st| (st.as_str(), st));
        let expected = "waiting, pending, running, succeeded, failed, cancelled or snoozed";
        parse_name("status", expected, &names, s)
    }
}

/// What a handler is: code the supervisor has, or a program to start.
///
/// ```
/// use jobvisor::model::*;
/// let h = HandlerSpec::builtin("sleep");
/// assert!(matches!(h.kind, HandlerKind::Rust));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HandlerKind {
    /// A Rust handler: one of the built-ins, or registered by a supervisor
    /// embedding the library. Runs inproc, or in `jobvisor-worker` when it
    /// is a built-in.
    Rust,
    /// An executable in any language, run as a child process.
    Exec {
        /// Absolute path of the program.
        program: String,
        /// Its arguments (never passed through a shell).
        #[serde(default)]
        args: Vec<String>,
    },
}

/// How a process-mode handler is started and bounded.
///
/// ```
/// use jobvisor::model::*;
/// let limits = ProcessLimits { memory_max: Some(512 << 20), ..ProcessLimits::default() };
/// assert_eq!(limits.pool_size, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct ProcessLimits {
    /// Default wall-clock timeout of its executions.
    pub timeout_ms: Option<u64>,
    /// Time between the cancel message and SIGTERM.
    pub cancel_grace_ms: u64,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace_ms: u64,
    /// Bound on one output line; longer lines are cut.
    pub max_line_bytes: usize,
    /// Fail the execution when the worker is silent this long.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Variables set in the child's environment: `[name, value]` pairs.
    #[schema(schema_with = env_schema)]
    pub env: Vec<(String, String)>,
    /// Variables passed through from the supervisor's environment.
    pub allow_env: Vec<String>,
    /// Working directory of the child.
    pub cwd: Option<String>,
    /// Memory limit in bytes: cgroup v2 `memory.max` where a delegated
    /// hierarchy with the memory controller is available, otherwise an
    /// address-space rlimit (said so at start-up and in `handler add`).
    pub memory_max: Option<u64>,
    /// Process (task) limit: cgroup v2 `pids.max`, otherwise RLIMIT_NPROC
    /// (counted per user, not per execution).
    pub pids_max: Option<u64>,
    /// CPU bandwidth in cores (0.5 = half a core): cgroup v2 `cpu.max`;
    /// not enforceable without it (said so, never pretended).
    pub cpu_max: Option<f64>,
    /// CPU time limit in seconds (RLIMIT_CPU: SIGXCPU, then SIGKILL a second
    /// later).
    pub cpu_time_s: Option<u64>,
    /// Address-space limit in bytes (RLIMIT_AS).
    pub address_space: Option<u64>,
    /// Data-segment limit in bytes (RLIMIT_DATA).
    pub data_size: Option<u64>,
    /// Open-file limit (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Process limit of the user (RLIMIT_NPROC).
    pub processes: Option<u64>,
    /// Allow core dumps (off by default).
    pub core_dumps: bool,
    /// Run as this user (name or uid); needs a root supervisor.
    pub run_as_user: Option<String>,
    /// Run with this group (name or gid) [default: the user's].
    pub run_as_group: Option<String>,
    /// Set `no_new_privs`: setuid binaries and file capabilities cannot
    /// raise the child's privileges.
    pub no_new_privs: bool,
    /// Run the program even if it (or its directory) is group- or
    /// world-writable, under a root supervisor (refused otherwise).
    pub allow_writable: bool,
    /// Most log bytes kept per execution; lines beyond it are counted and
    /// the count recorded, not stored.
    pub max_log_bytes: u64,
    /// Worker processes kept per handler for reuse (0: one process per
    /// execution). Used when the worker announces `pooled: true`.
    pub pool_size: u32,
    /// Recycle a pooled worker after this many executions.
    pub max_runs_per_worker: Option<u64>,
    /// Recycle a pooled worker after the execution that left its resident
    /// memory above this many bytes.
    pub max_rss_per_worker: Option<u64>,
    /// The level plain stderr lines are stored at: a script's `disk full`
    /// on stderr is a warning, not chatter.
    #[schema(schema_with = level_schema)]
    pub stderr_level: jobvisor_worker::Level,
}

/// Log bytes kept per execution unless the handler says otherwise, counted
/// as stored (each line's text, fields and row: [`crate::engine::relay::stored_size`]).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

impl Default for ProcessLimits {
    fn default() -> Self {
        Self {
            timeout_ms: None,
            cancel_grace_ms: 5_000,
            kill_grace_ms: 5_000,
            max_line_bytes: jobvisor_worker::protocol::DEFAULT_MAX_LINE_BYTES,
            heartbeat_timeout_ms: None,
            env: Vec::new(),
            allow_env: Vec::new(),
            cwd: None,
            memory_max: None,
            pids_max: None,
            cpu_max: None,
            cpu_time_s: None,
            address_space: None,
            data_size: None,
            open_files: None,
            processes: None,
            core_dumps: false,
            run_as_user: None,
            run_as_group: None,
            no_new_privs: false,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            allow_writable: false,
            pool_size: 0,
            max_runs_per_worker: None,
            max_rss_per_worker: None,
            stderr_level: jobvisor_worker::Level::Warn,
        }
    }
}

/// A registered handler.
///
/// ```
/// use jobvisor::model::*;
/// let spec = HandlerSpec {
///     name: "resize".into(),
///     kind: HandlerKind::Exec { program: "/usr/local/bin/resize".into(), args: vec![] },
///     mode: Mode::Process,
///     limits: ProcessLimits::default(),
/// };
/// assert_eq!(serde_json::to_value(&spec).unwrap()["program"], "/usr/local/bin/resize");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HandlerSpec {
    /// Unique name jobs refer to.
    pub name: String,
    /// What it is.
    #[serde(flatten)]
    pub kind: HandlerKind,
    /// The mode its executions use unless a run says otherwise.
    pub mode: Mode,
    /// Process settings (used in process mode).
    pub limits: ProcessLimits,
}

/// What the API, the dashboard and `handler show` (without `--reveal`)
/// give in place of an environment value: values often hold secrets.
pub const REDACTED: &str = "<redacted>";

impl HandlerSpec {
    /// The spec with its environment values replaced by [`REDACTED`]
    /// (names kept).
    ///
    /// ```
    /// use jobvisor::model::*;
    /// let mut h = HandlerSpec::builtin("echo");
    /// h.limits.env.push(("API_KEY".into(), "s3cret".into()));
    /// assert_eq!(h.redacted().limits.env, [("API_KEY".to_string(), REDACTED.to_string())]);
    /// ```
    pub fn redacted(mut self) -> Self {
        for (_, v) in &mut self.limits.env {
            *v = REDACTED.to_string();
        }
        self
    }

    /// The spec of built-in handler `name` when none is registered under
    /// its name: Rust, inproc by default, default process settings.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// let echo = HandlerSpec::builtin("echo");
    /// assert_eq!((echo.name.as_str(), echo.mode), ("echo", Mode::Inproc));
    /// ```
    pub fn builtin(name: &str) -> HandlerSpec {
        HandlerSpec {
            name: name.to_string(),
            kind: HandlerKind::Rust,
            mode: Mode::Inproc,
            limits: ProcessLimits::default(),
        }
    }
}

/// Retry policy of an execution chain.
///
/// ```
/// use jobvisor::model::*;
/// let policy = RetryPolicy { max_attempts: 4, ..RetryPolicy::default() };
/// let next = Outcome::Failed { retryable: true }.retry(&policy, 1, 0).unwrap();
/// assert_eq!((next.attempt, next.max_attempts), (2, 4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each attempt.
    pub backoff_base_ms: u64,
    /// Upper bound of the delay.
    pub backoff_cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 1,
            backoff_base_ms: 1_000,
            backoff_cap_ms: 300_000,
        }
    }
}

/// How an execution ended: one value, where a set of flags could contradict
/// itself. [`Outcome::columns`] maps it to the stored columns, and
/// [`Outcome::retry`] decides whether another attempt follows; both are the
/// only places that do.
///
/// ```
/// use jobvisor::model::*;
/// let policy = RetryPolicy { max_attempts: 3, ..RetryPolicy::default() };
/// assert!(Outcome::Failed { retryable: true }.retry(&policy, 1, 0).is_some());
/// assert!(Outcome::Failed { retryable: false }.retry(&policy, 1, 0).is_none(), "permanent");
/// assert!(Outcome::Failed { retryable: true }.retry(&policy, 3, 0).is_none(), "none left");
/// assert_eq!(Outcome::TimedOut.status(), Status::Failed);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ended well.
    Succeeded,
    /// It failed; a `retryable` failure runs again while attempts remain.
    Failed {
        /// Whether another attempt may follow.
        retryable: bool,
    },
    /// Its timeout ended it: a failure that may be retried.
    TimedOut,
    /// A cancel ended it. `how` names the step that did (`cooperative`,
    /// `sigterm`, `sigkill`, `abort`, `before-start`); `None` when the worker
    /// cancelled itself unasked.
    Cancelled {
        /// The step that ended it.
        how: Option<&'static str>,
    },
    /// The supervisor stopped under it (shutdown, a dead node). Not the
    /// job's failure: it always runs again, on an attempt of its own.
    Interrupted,
    /// Its handler asked to run again after `delay_ms`: the next execution
    /// of the chain keeps the attempt number and `max_attempts`.
    Snoozed {
        /// How long from the end until the next execution is due.
        delay_ms: u64,
    },
}

/// Snoozes one execution chain may take; the next one fails it.
pub const MAX_SNOOZES: u32 = 1_000;

/// The longest snooze: a longer delay is cut to it.
pub const MAX_SNOOZE_MS: u64 = 366 * 24 * 3600 * 1000;

/// An outcome as the execution row stores it.
///
/// ```
/// use jobvisor::model::*;
/// let c = Outcome::TimedOut.columns();
/// assert_eq!((c.status, c.timed_out), (Status::Failed, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutcomeColumns {
    /// `status`.
    pub status: Status,
    /// `timed_out`.
    pub timed_out: bool,
    /// `interrupted`.
    pub interrupted: bool,
    /// `cancel_outcome`.
    pub cancel_outcome: Option<&'static str>,
}

/// The next attempt of a failed execution.
///
/// ```
/// use jobvisor::model::*;
/// let r = Outcome::Snoozed { delay_ms: 30_000 }.retry(&RetryPolicy::default(), 1, 0).unwrap();
/// assert_eq!((r.attempt, r.run_at, r.snooze), (1, 30_000_000, true));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Its attempt number.
    pub attempt: u32,
    /// Attempts in all, counting it (an interruption adds one).
    pub max_attempts: u32,
    /// When it is due.
    pub run_at: Micros,
    /// Whether a snooze asked for it (counted against [`MAX_SNOOZES`]).
    pub snooze: bool,
}

impl Outcome {
    /// The final status.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Outcome::Interrupted.status(), Status::Failed);
    /// assert_eq!(Outcome::Succeeded.status(), Status::Succeeded);
    /// ```
    pub fn status(&self) -> Status {
        self.columns().status
    }

    /// The stored columns.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(Outcome::Interrupted.columns().interrupted);
    /// ```
    pub fn columns(&self) -> OutcomeColumns {
        let (status, timed_out, interrupted, cancel_outcome) = match self {
            Outcome::Succeeded => (Status::Succeeded, false, false, None),
            Outcome::Failed { .. } => (Status::Failed, false, false, None),
            Outcome::TimedOut => (Status::Failed, true, false, None),
            Outcome::Cancelled { how } => (Status::Cancelled, false, false, *how),
            Outcome::Interrupted => (Status::Failed, false, true, None),
            Outcome::Snoozed { .. } => (Status::Snoozed, false, false, None),
        };
        OutcomeColumns {
            status,
            timed_out,
            interrupted,
            cancel_outcome,
        }
    }

    /// Whether attempt `attempt`, which ended so at `finished_at` under
    /// `policy`, runs again, and when.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// // An interruption (a node stopped under it) runs again, adding an attempt.
    /// let r = Outcome::Interrupted.retry(&RetryPolicy::default(), 1, 0).unwrap();
    /// assert_eq!((r.attempt, r.max_attempts), (2, 2));
    /// ```
    pub fn retry(&self, policy: &RetryPolicy, attempt: u32, finished_at: Micros) -> Option<Retry> {
        let next = attempt.saturating_add(1);
        match self {
            Outcome::Interrupted => Some(Retry {
                attempt: next,
                max_attempts: policy.max_attempts.max(next),
                run_at: finished_at,
                snooze: false,
            }),
            Outcome::Snoozed { delay_ms } => Some(Retry {
                attempt,
                max_attempts: policy.max_attempts,
                run_at: finished_at.saturating_add((*delay_ms).min(MAX_SNOOZE_MS) as Micros * 1000),
                snooze: true,
            }),
            Outcome::Failed { retryable: true } | Outcome::TimedOut
                if attempt < policy.max_attempts =>
            {
                Some(Retry {
                    attempt: next,
                    max_attempts: policy.max_attempts,
                    run_at: finished_at
                        .saturating_add(policy.delay_before(next).as_micros() as Micros),
                    snooze: false,
                })
            }
            _ => None,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 = first retry):
    /// exponential, capped, with "equal jitter" (half fixed, half random) so
    /// that a burst of failures does not retry in lockstep.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// use std::time::Duration;
    /// let policy = RetryPolicy { max_attempts: 10, backoff_base_ms: 1_000, backoff_cap_ms: 60_000 };
    /// let d = policy.delay_before(3); // the second retry: about 2 s
    /// assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2));
    /// assert!(policy.delay_before(30) <= Duration::from_secs(60), "capped");
    /// ```
    pub fn delay_before(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(40);
        let full = self
            .backoff_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.backoff_cap_ms);
        let half = full / 2;
        Duration::from_millis(half + fastrand::u64(0..=full - half))
    }
}

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

/// A request to run a handler once.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// // What RunSpec becomes: the row as inserted.
/// let id = sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// let e = sup.store().execution(id).await?.unwrap();
/// assert_eq!((e.attempt, e.max_attempts), (1, 1));
/// # Ok(()) }
/// ```
#[allow(missing_docs)]
pub struct NewExecution {
    /// Chosen by the caller (time-ordered UUIDv7).
    pub id: Uuid,
    /// The job it belongs to; `None` for an ad-hoc run.
    pub job: Option<String>,
    pub handler: String,
    /// Inproc or process.
    pub mode: Mode,
    pub payload: Value,
    pub retry: RetryPolicy,
    /// Wall-clock budget.
    pub timeout_ms: Option<u64>,
    /// Higher runs first.
    pub priority: i32,
    /// Not before this time.
    pub run_at: Micros,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The attempt this one retries.
    pub previous_id: Option<Uuid>,
    /// The queue it waits in.
    pub queue: String,
    /// The scheduled occurrence it runs (unique per job), if any.
    pub occurrence: Option<Micros>,
    /// Its unique key, if it has one.
    pub unique: Option<UniqueKey>,
    /// Its concurrency key: the queue's key limit caps how many executions
    /// with the same key run at once.
    pub concurrency_key: Option<String>,
    /// Executions it runs after (it waits until they have all ended).
    pub after: Vec<Uuid>,
    /// What its parents' ends must be for it to run.
    pub after_policy: AfterPolicy,
    /// The workflow and step it is, if it is a workflow's step.
    pub step: Option<(Uuid, String)>,
}

/// When an execution with parents runs.
///
/// ```
/// use jobvisor::model::*;
/// assert_eq!("finished".parse::<AfterPolicy>().unwrap(), AfterPolicy::Finished);
/// assert_eq!(AfterPolicy::default(), AfterPolicy::Success);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AfterPolicy {
    /// Only if every parent succeeded; if one fails for good or is
    /// cancelled, it is cancelled (`upstream ID failed`), and so are its
    /// own dependents of this policy.
    #[default]
    Success,
    /// Once every parent has ended, however.
    Finished,
}

impl AfterPolicy {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(AfterPolicy::Finished.as_str(), "finished");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            AfterPolicy::Success => "success",
            AfterPolicy::Finished => "finished",
        }
    }
}

impl fmt::Display for AfterPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AfterPolicy {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [AfterPolicy::Success, AfterPolicy::Finished].map(|p| (p.as_str(), p));
        parse_name("after policy", "success or finished", &names, s)
    }
}

/// A job chained to another: when an execution of the other ends as `on`
/// says, one execution of `job` is enqueued with it as its parent.
///
/// ```
/// use jobvisor::model::*;
/// let mut nightly = JobSpec::new("extract", "echo", jobvisor::schedule::ScheduleSpec::Daemon);
/// nightly.then.push(Chain { job: "load".into(), on: ChainOn::Success });
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Chain {
    /// The job to enqueue.
    pub job: String,
    /// Which ends trigger it.
    pub on: ChainOn,
}

/// Which ends of an execution trigger a chained job.
///
/// ```
/// use jobvisor::model::*;
/// assert!(ChainOn::Failure.matches(Status::Failed));
/// assert!(!ChainOn::Success.matches(Status::Cancelled));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChainOn {
    /// It succeeded.
    #[default]
    Success,
    /// It failed for good (its last attempt failed or timed out).
    Failure,
    /// Any end: succeeded, failed, or cancelled.
    Always,
}

impl ChainOn {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(ChainOn::Always.as_str(), "always");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ChainOn::Success => "success",
            ChainOn::Failure => "failure",
            ChainOn::Always => "always",
        }
    }

    /// Whether an execution that ended with `status` triggers it.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert!(ChainOn::Always.matches(Status::Cancelled));
    /// ```
    pub fn matches(self, status: Status) -> bool {
        match self {
            ChainOn::Success => status == Status::Succeeded,
            ChainOn::Failure => status == Status::Failed,
            ChainOn::Always => status.is_terminal(),
        }
    }
}

impl FromStr for ChainOn {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [ChainOn::Success, ChainOn::Failure, ChainOn::Always].map(|o| (o.as_str(), o));
        parse_name("chain condition", "success, failure or always", &names, s)
    }
}

/// A unique key: while an execution holding it is pending or running (and
/// for `hold_ms` after it ends, if set), another enqueue with the same key
/// creates nothing and gets the holder instead. Its retries keep the key.
///
/// ```
/// use jobvisor::model::*;
/// // At most one report per customer per hour.
/// let key = UniqueKey { key: "report:42".into(), hold_ms: Some(3_600_000), replace: false };
/// # let _ = key;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    /// The key.
    pub key: String,
    /// How long after the holder ends the key still counts (a throttle).
    pub hold_ms: Option<u64>,
    /// A duplicate replaces instead: the payload and due time of a holder
    /// that has not started, or else of the one execution that waits to
    /// follow the running holder (made if there is none).
    pub replace: bool,
}

/// What an enqueue made of one execution.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let spec = || jobvisor::RunSpec::new("noop", serde_json::Value::Null).unique_key("k");
/// let out = sup.submit_many(vec![spec(), spec()]).await?;
/// assert_eq!((out[0].duplicate, out[1].duplicate), (false, true));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Enqueued {
    /// The execution inserted, or for a duplicate the one holding its key.
    pub id: Uuid,
    /// Whether its unique key was held, so that nothing was inserted.
    pub duplicate: bool,
    /// Whether, as a duplicate, it replaced the payload and due time of
    /// execution `id` (`replace`). Written only when it did, so that a
    /// duplicate reads `{"id": ..., "duplicate": true}` as pinned.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replaced: bool,
}

/// The default queue.
pub const DEFAULT_QUEUE: &str = "default";

/// What a job does when an occurrence falls due while a run is active.
///
/// ```
/// use jobvisor::model::*;
/// let mut sync = JobSpec::new("sync", "noop", jobvisor::schedule::ScheduleSpec::Daemon);
/// sync.overlap = "queue".parse().unwrap();
/// assert_eq!(sync.overlap, Overlap::Queue);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the new occurrence.
    #[default]
    Skip,
    /// Queue it: it runs after the active one (one at a time).
    Queue,
    /// Run it in parallel.
    Allow,
}

impl Overlap {
    /// The name stored in the database.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// assert_eq!(Overlap::Queue.as_str(), "queue");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

impl FromStr for Overlap {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let names = [Overlap::Skip, Overlap::Queue, Overlap::Allow].map(|o| (o.as_str(), o));
        parse_name("overlap policy", "skip, queue or allow", &names, s)
    }
}

/// How a job recurs.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// let spec: ScheduleSpec = serde_json::from_str(r#"{"kind": "cron", "expr": "*/15 * * * *", "tz": "UTC"}"#).unwrap();
/// assert_eq!(spec.kind(), "cron");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ScheduleSpec {
    /// One occurrence at `at`.
    Once {
        /// Due time.
        at: Micros,
    },
    /// A cron expression in a time zone.
    Cron {
        /// 5 fields (minute first), 6 (seconds first), or `@hourly` ...
        expr: String,
        /// IANA zone (default UTC).
        tz: String,
    },
    /// Every `every_ms`, anchored at `anchor`: occurrences are
    /// `anchor + k * every`, so lateness never accumulates.
    Interval {
        /// Period.
        every_ms: u64,
        /// First occurrence.
        anchor: Micros,
    },
    /// One execution kept running.
    Daemon,
}

impl ScheduleSpec {
    /// The name stored in `jobs.kind`.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert_eq!(ScheduleSpec::Daemon.kind(), "daemon");
    /// assert_eq!(ScheduleSpec::Interval { every_ms: 1000, anchor: 0 }.kind(), "interval");
    /// ```
    pub fn kind(&self) -> &'static str {
        match self {
            ScheduleSpec::Once { .. } => "once",
            ScheduleSpec::Cron { .. } => "cron",
            ScheduleSpec::Interval { .. } => "interval",
            ScheduleSpec::Daemon => "daemon",
        }
    }
}

/// What to do with occurrences missed while no supervisor ran.
///
/// ```
/// use jobvisor::schedule::*;
/// use jobvisor::model::{format_micros, parse_time};
/// assert_eq!("skip".parse::<Misfire>().unwrap(), Misfire::Skip);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Misfire {
    /// Run one execution for the latest missed occurrence, then go on.
    #[default]
    RunOnce,
    /// Run none of them.
    Skip,
}

impl Misfire {
    /// The name stored and accepted on the command line.
    ///
    /// ```
    /// use jobvisor::schedule::*;
    /// use jobvisor::model::{format_micros, parse_time};
    /// assert_eq!(Misfire::RunOnce.as_str(), "run-once");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Misfire::RunOnce => "run-once",
            Misfire::Skip => "skip",
        }
    }
}

impl FromStr for Misfire {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let names = [Misfire::RunOnce, Misfire::Skip].map(|m| (m.as_str(), m));
        parse_name("misfire policy", "run-once or skip", &names, s)
    }
}

/// A job's definition: what runs, when, and under which policy.
///
/// ```
/// let spec: jobvisor::model::JobSpec = serde_json::from_value(serde_json::json!({
///     "name": "nightly", "handler": "backup", "mode": null, "payload": {"full": true},
///     "schedule": {"kind": "cron", "expr": "0 3 * * *", "tz": "UTC"},
///     "priority": 0, "queue": "default", "retries": 2, "backoff_ms": 1000, "timeout_ms": null,
///     "overlap": "skip", "misfire": "run-once", "max_parallel": null, "max_runs": null,
///     "start_at": null, "end_at": null, "paused": false
/// })).unwrap();
/// assert_eq!(spec.retries, 2);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobSpec {
    /// Unique name.
    pub name: String,
    /// Handler to run.
    pub handler: String,
    /// Mode; the handler's default when `None`.
    pub mode: Option<Mode>,
    /// Input of every execution.
    pub payload: Value,
    /// When it runs.
    pub schedule: ScheduleSpec,
    /// Higher runs first.
    pub priority: i32,
    /// Queue its executions wait in.
    pub queue: String,
    /// Retries of each failed execution.
    pub retries: u32,
    /// First retry delay (doubles, with jitter).
    pub backoff_ms: u64,
    /// Wall-clock budget of each execution.
    pub timeout_ms: Option<u64>,
    /// When an occurrence meets an active run.
    pub overlap: Overlap,
    /// What happens to occurrences missed while no supervisor ran.
    pub misfire: Misfire,
    /// Most executions of this job running at once.
    pub max_parallel: Option<u32>,
    /// After this many runs the job is complete.
    pub max_runs: Option<u64>,
    /// No occurrence before this time.
    pub start_at: Option<Micros>,
    /// No occurrence after this time.
    pub end_at: Option<Micros>,
    /// Paused jobs start nothing.
    pub paused: bool,
    /// Jobs enqueued when one of its executions ends (`--then`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Chain>,
    /// The concurrency key of its executions (the queue's key limit caps
    /// how many with one key run at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

impl JobSpec {
    /// A job running `handler` on `schedule`, with the defaults of `job
    /// add`: no payload, the handler's mode, the default queue, no retries
    /// (1 s backoff), overlap `skip`, misfire `run-once`, no window or limit.
    ///
    /// ```
    /// use jobvisor::model::JobSpec;
    /// use jobvisor::schedule::ScheduleSpec;
    /// let mut nightly = JobSpec::new("nightly-backup", "backup", ScheduleSpec::Cron {
    ///     expr: "30 2 * * *".into(),
    ///     tz: "Europe/Paris".into(),
    /// });
    /// nightly.retries = 3;
    /// assert_eq!(nightly.queue, "default");
    /// ```
    pub fn new(
        name: impl Into<String>,
        handler: impl Into<String>,
        schedule: ScheduleSpec,
    ) -> Self {
        JobSpec {
            name: name.into(),
            handler: handler.into(),
            mode: None,
            payload: Value::Null,
            schedule,
            priority: 0,
            queue: DEFAULT_QUEUE.into(),
            retries: 0,
            backoff_ms: 1000,
            timeout_ms: None,
            overlap: Overlap::Skip,
            misfire: Misfire::RunOnce,
            max_parallel: None,
            max_runs: None,
            start_at: None,
            end_at: None,
            paused: false,
            then: Vec::new(),
            concurrency_key: None,
        }
    }
}

/// A stored job: its definition and its scheduling state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// use jobvisor::{model::{Job, JobSpec}, schedule::ScheduleSpec};
/// sup.add_job(JobSpec::new("tick", "noop", ScheduleSpec::Interval { every_ms: 60_000, anchor: 0 })).await?;
/// let job: Job = sup.store().job("tick").await?.unwrap();
/// assert!(job.next_run_at.is_some());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Job {
    /// The definition.
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Occurrences that produced an execution.
    pub runs: u64,
    /// Occurrences passed over (misfire, overlap skip).
    pub missed: u64,
    /// Next due occurrence.
    pub next_run_at: Option<Micros>,
    /// When the job ran out of occurrences (end, max runs, once done).
    pub completed_at: Option<Micros>,
    /// Consecutive short runs of a daemon (drives its restart backoff).
    pub daemon_streak: u32,
}

impl Job {
    /// What an occurrence of this job runs as (`None`: a run that is no
    /// scheduled occurrence, such as a chained one).
    pub(crate) fn execution(&self, occurrence: Option<Micros>, run_at: Micros) -> NewExecution {
        let spec = &self.spec;
        // Resolved when the job was added.
        let mode = spec.mode.unwrap_or(Mode::Inproc);
        let daemon = matches!(spec.schedule, ScheduleSpec::Daemon);
        NewExecution {
            id: uuid::Uuid::now_v7(),
            job: Some(spec.name.clone()),
            handler: spec.handler.clone(),
            mode,
            payload: spec.payload.clone(),
            retry: RetryPolicy {
                // A daemon's restarts are its retries.
                max_attempts: if daemon {
                    1
                } else {
                    spec.retries.saturating_add(1)
                },
                backoff_base_ms: spec.backoff_ms,
                backoff_cap_ms: RetryPolicy::default().backoff_cap_ms,
            },
            timeout_ms: spec.timeout_ms,
            priority: spec.priority,
            run_at,
            attempt: 1,
            previous_id: None,
            queue: spec.queue.clone(),
            occurrence,
            unique: None,
            concurrency_key: spec.concurrency_key.clone(),
            after: Vec::new(),
            after_policy: Default::default(),
            step: None,
        }
    }
}

/// The latest progress of an execution.
///
/// ```
/// use jobvisor::model::*;
/// let mut p = ProgressState::default();
/// p.merge(&jobvisor_worker::Progress { done: Some(3), total: Some(10), ..Default::default() });
/// p.merge(&jobvisor_worker::Progress { message: Some("copying".into()), ..Default::default() });
/// assert_eq!((p.done, p.total, p.message.as_deref()), (Some(3), Some(10), Some("copying")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProgressState {
    /// 0..=100.
    pub percent: Option<f64>,
    /// What the job is doing.
    pub message: Option<String>,
    /// Units done.
    pub done: Option<i64>,
    /// Units in all.
    pub total: Option<i64>,
}

impl ProgressState {
    /// Folds a newer report in: fields it carries replace older values.
    ///
    /// ```
    /// use jobvisor::model::*;
    /// let mut p = ProgressState { percent: Some(10.0), ..Default::default() };
    /// p.merge(&jobvisor_worker::Progress { percent: Some(20.0), ..Default::default() });
    /// assert_eq!(p.percent, Some(20.0));
    /// ```
    pub fn merge(&mut self, p: &jobvisor_worker::Progress) {
        if p.percent.is_some() {
            self.percent = p.percent;
        }
        if p.message.is_some() {
            self.message.clone_from(&p.message);
        }
        if let Some(d) = p.done {
            self.done = Some(d.min(i64::MAX as u64) as i64);
        }
        if let Some(t) = p.total {
            self.total = Some(t.min(i64::MAX as u64) as i64);
        }
    }
}

/// One execution (one attempt of a job).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// let id = sup.enqueue(jobvisor::RunSpec::new("echo", serde_json::json!([1, 2]))).await?;
/// use jobvisor::{model::Execution, Status};
/// let e: Execution = sup.store().execution(id).await?.unwrap();
/// assert_eq!((e.handler.as_str(), e.status, e.payload.clone()), ("echo", Status::Pending, serde_json::json!([1, 2])));
/// assert!(e.job.is_none(), "an ad-hoc run");
/// # Ok(()) }
/// ```
#[allow(missing_docs)]
pub struct Execution {
    pub id: Uuid,
    /// The job it belongs to; `None` for an ad-hoc run.
    pub job: Option<String>,
    pub handler: String,
    pub mode: Mode,
    pub status: Status,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// The attempt this one retries.
    pub previous_id: Option<Uuid>,
    /// The attempt that retried this one.
    pub next_id: Option<Uuid>,
    pub payload: Value,
    /// In a list, `payload` was cut: it is the beginning of its JSON text,
    /// as a string; the execution's own route has it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub payload_truncated: bool,
    /// Higher runs first.
    pub priority: i32,
    /// The queue it waits in.
    pub queue: String,
    /// Its unique key, if it has one.
    pub unique_key: Option<String>,
    /// Its concurrency key, if it has one.
    pub concurrency_key: Option<String>,
    /// Snoozes in its chain before it.
    pub snoozes: u32,
    /// With parents: what their ends must be for it to run.
    pub after_policy: Option<AfterPolicy>,
    /// Parents that have not ended yet (while `waiting`).
    pub waiting_on: u64,
    /// The workflow it is a step of.
    pub workflow_id: Option<Uuid>,
    /// Its step's name in that workflow.
    pub step: Option<String>,
    /// The scheduled occurrence it runs, if any: the due time in
    /// microseconds, or for a daemon its generation number.
    pub occurrence: Option<i64>,
    /// Wall-clock budget.
    pub timeout_ms: Option<u64>,
    /// When it was inserted.
    pub enqueued_at: Timestamp,
    pub run_at: Timestamp,
    /// When a node claimed it.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// The node that ran it.
    pub node: Option<String>,
    /// The child's pid (process mode).
    pub pid: Option<i64>,
    /// The child's exit code.
    pub exit_code: Option<i64>,
    /// The signal that ended the child (`SIGKILL`).
    pub signal: Option<String>,
    pub progress: ProgressState,
    /// Output on success.
    pub output: Option<Value>,
    /// In a list, `output` was cut: it is the beginning of its JSON text,
    /// as a string; the execution's own route has it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// Why it failed or how it was cancelled.
    pub error: Option<String>,
    /// Whether the timeout ended it.
    pub timed_out: bool,
    /// Whether its supervisor stopped under it.
    pub interrupted: bool,
    /// When a cancel was requested.
    pub cancel_requested_at: Option<Timestamp>,
    /// Why.
    pub cancel_reason: Option<String>,
    /// How the cancel ended it: `cooperative`, `sigterm`, `sigkill`,
    /// `abort` (inproc), `before-start`.
    pub cancel_outcome: Option<String>,
    /// Duration in milliseconds, once finished.
    pub duration_ms: Option<f64>,
}

/// One stored log line.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// fn show(line: &jobvisor::model::LogEntry) -> String {
///     format!("{} {:>5} {}", line.ts, line.level, line.message)
/// }
/// ```
#[allow(missing_docs)]
pub struct LogEntry {
    /// Position within the execution, from 1.
    pub seq: i64,
    /// When the supervisor received it.
    pub ts: Timestamp,
    #[schema(schema_with = level_schema)]
    pub level: Level,
    /// `log` (structured), `stdout`, `stderr` or `supervisor`.
    pub stream: String,
    pub message: String,
    /// Structured context.
    pub fields: Option<Map<String, Value>>,
}

/// Log streams.
pub mod stream {
    /// A structured `log` message (either mode).
    pub const LOG: &str = "log";
    /// A plain line on the child's stdout.
    pub const STDOUT: &str = "stdout";
    /// A line on the child's stderr.
    pub const STDERR: &str = "stderr";
    /// A note the supervisor adds (escalations, leaks).
    pub const SUPERVISOR: &str = "supervisor";
}
