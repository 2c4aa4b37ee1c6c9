//! [`Config`]: a supervisor's settings, with the library's defaults and
//! the service's.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`Supervisor`](super::Supervisor).
///
/// ```
/// let config = jobvisor::Config {
///     database: "jobs.db".into(),
///     concurrency: 8,
///     ..jobvisor::Config::default()
/// };
/// let builder = jobvisor::Supervisor::builder().config(config);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Database URL or path.
    pub database: String,
    /// Executions running at once on this node.
    pub concurrency: usize,
    /// Most executions claimed in one query.
    pub claim_batch: usize,
    /// How often to look for work enqueued by other processes.
    pub poll_interval: Duration,
    /// Longest sleep of the scheduler between passes (it also wakes at the
    /// next due time), so jobs added by other processes are seen.
    pub schedule_poll_interval: Duration,
    /// How often to look for cancel requests made through the database.
    pub cancel_poll_interval: Duration,
    /// How often this node renews its heartbeat (at least four times a
    /// lease, whatever this says).
    pub heartbeat_interval: Duration,
    /// A node silent this long is dead; its executions are rescued.
    pub node_lease: Duration,
    /// How long an inproc handler may take to honour a cancel (a handler
    /// stored with `handler add` uses its own cancel grace instead).
    pub inproc_grace: Duration,
    /// The `jobvisor-worker` program hosting built-ins in process mode.
    pub worker_program: Option<PathBuf>,
    /// Relay queue length (back-pressure beyond it).
    pub relay_capacity: usize,
    /// The host name this node registers under (default: the machine's).
    /// Nodes on the same host also judge each other by pid; on different
    /// hosts only by heartbeat.
    pub hostname: Option<String>,
    /// Give each process-mode execution its own cgroup where cgroup v2 is
    /// delegated to the supervisor (limits and whole-tree kill); off means
    /// rlimits and the process group only.
    pub cgroups: bool,
    /// At shutdown, how long running executions may finish before they are
    /// stopped (and recorded as interrupted, to run again). Zero stops them
    /// at once.
    pub drain_timeout: Duration,
    /// Give back the pages of this program's code (`MADV_PAGEOUT`) once
    /// after start-up and again whenever nothing has run for a while, so
    /// that an idle service keeps only what it uses resident. For a
    /// program of its own (the service), not for an embedding one.
    pub trim_when_idle: bool,
    /// The test built-ins (`append`, `panic`, `misbehave`), for tests and
    /// benchmarks only (`serve --test-builtins`): off, they are unknown
    /// handlers here and in this supervisor's worker processes.
    pub test_builtins: Option<jobvisor_worker::builtins::TestBuiltins>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: crate::default_database(),
            concurrency: 32,
            claim_batch: 512,
            poll_interval: Duration::from_millis(250),
            schedule_poll_interval: Duration::from_secs(1),
            cancel_poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(2500),
            node_lease: Duration::from_secs(10),
            inproc_grace: Duration::from_secs(5),
            worker_program: None,
            relay_capacity: 16 * 1024,
            hostname: None,
            cgroups: true,
            drain_timeout: Duration::ZERO,
            trim_when_idle: false,
            test_builtins: jobvisor_worker::builtins::TestBuiltins::from_env(),
        }
    }
}

impl Config {
    /// The settings `jobvisor serve` starts from: the library's defaults,
    /// with a drain at shutdown (a service stopped by systemd lets running
    /// work finish; a library caller decides for itself).
    ///
    /// ```
    /// let c = jobvisor::Config::service();
    /// assert_eq!(c.drain_timeout, std::time::Duration::from_secs(30));
    /// assert_eq!(jobvisor::Config::default().drain_timeout, std::time::Duration::ZERO);
    /// ```
    pub fn service() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            trim_when_idle: true,
            ..Self::default()
        }
    }
}
