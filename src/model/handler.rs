//! Handlers: what runs (a built-in or an executable) and its process limits.

use super::schema::{env_schema, level_schema};
use super::status::Mode;
use serde::{Deserialize, Serialize};

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
/// as stored: each line's text, its fields and a row's overhead (the
/// relay's `stored_size`).
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

    /// The built-in handlers' names.
    ///
    /// ```
    /// assert!(jobvisor::model::HandlerSpec::builtin_names().contains(&"sleep"));
    /// ```
    pub fn builtin_names() -> &'static [&'static str] {
        &jobvisor_worker::builtins::NAMES
    }

    /// Whether `name` is a built-in handler's.
    ///
    /// ```
    /// assert!(jobvisor::model::HandlerSpec::is_builtin("echo"));
    /// ```
    pub fn is_builtin(name: &str) -> bool {
        jobvisor_worker::builtins::known(name) || name == super::WEBHOOK_HANDLER
    }
}
