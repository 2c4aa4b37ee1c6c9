//! Argument definitions.

use clap::{Args, Parser, Subcommand};
use std::time::Duration;

/// jobvisor: run jobs as in-process tasks or isolated worker processes,
/// with everything they do relayed into a database.
#[derive(Debug, Parser)]
#[command(name = "jobvisor", version, propagate_version = true, after_help = super::EXIT_CODES)]
pub struct Cli {
    /// Database: a postgres:// or mysql:// URL, an sqlite:// URL or a file path
    /// [default: the service's, `database` in its config file
    /// ($JOBVISOR_CONFIG or /etc/jobvisor/jobvisor.toml); else
    /// ./jobvisor.db, or $STATE_DIRECTORY/jobvisor.db under systemd]
    #[arg(long, global = true, env = "JOBVISOR_DATABASE")]
    pub database: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor: claim and run executions until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// Create or update the database schema.
    Migrate,
    /// Register and inspect handlers.
    #[command(subcommand)]
    Handler(HandlerCmd),
    /// Enqueue one run of a handler.
    Run(RunArgs),
    /// Inspect, follow and cancel executions.
    #[command(subcommand)]
    Exec(ExecCmd),
    /// Define and manage scheduled jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Inspect and limit queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Execution statistics per job.
    Stats {
        /// Only this job.
        job: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run a DAG of steps (a workflow file) and follow it.
    #[command(subcommand)]
    Workflow(WorkflowCmd),
    /// Post events (a run failed, a job is late...) to URLs. Each
    /// delivery is a run of the built-in handler `webhook` in queue
    /// `webhooks`: retried, logged and listed like any run.
    #[command(subcommand)]
    Webhook(WebhookCmd),
    /// Compare the two modes' cost against bare baselines. Without
    /// --database (or JOBVISOR_DATABASE) it measures on fresh SQLite files in
    /// a temporary directory, never the service's database.
    Bench(crate::bench::BenchArgs),
    /// Check a config file without applying it (exit 0 if valid, 2 with
    /// the line and reason if not), e.g. before `systemctl reload`.
    CheckConfig {
        /// The file [default: /etc/jobvisor/jobvisor.toml].
        path: Option<std::path::PathBuf>,
    },
    /// Print a completion script for a shell, e.g. `jobvisor completions
    /// bash > /etc/bash_completion.d/jobvisor`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages into DIR: jobvisor(1) and one per subcommand, such
    /// as jobvisor-exec-list(1). `packaging/install` puts them in
    /// PREFIX/share/man/man1.
    Man {
        /// Where to write them (made if missing).
        dir: std::path::PathBuf,
    },
}

/// `workflow` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkflowCmd {
    /// Insert a workflow (TOML or JSON: `name`, `[[step]]`s with `name`,
    /// `handler`, `payload`, `mode`, `retries`, `timeout`, `after`,
    /// `after_policy`) in one transaction; print its id.
    Run {
        /// The workflow file, or `-` for stdin.
        file: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show a workflow's steps in dependency order and its overall status.
    Show {
        /// Workflow id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List workflows, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cancel every step that has not ended.
    Cancel {
        /// Workflow id.
        id: String,
        /// Why (recorded).
        #[arg(long, default_value = "requested by operator")]
        reason: String,
        /// Machine-readable output (what the HTTP API answers).
        #[arg(long)]
        json: bool,
    },
}

/// `job list`'s options.
#[derive(Debug, Args)]
pub struct JobListArgs {
    /// At most this many (all if not given).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: Option<u32>,
    /// Only jobs named after NAME (the last of the previous page).
    #[arg(long, value_name = "NAME")]
    pub after: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `job` subcommands.
#[derive(Debug, Subcommand)]
pub enum JobCmd {
    /// Define a job: a handler, a payload, a schedule and a policy.
    Add(Box<JobAddArgs>),
    /// List jobs with their next run time, by name.
    List(JobListArgs),
    /// Show one job with its history summary.
    Show(JobName),
    /// Stop starting new occurrences (a daemon's execution is stopped).
    Pause(JobName),
    /// Start occurrences again.
    Resume(JobName),
    /// Delete a job (its executions stay as history).
    Remove(JobName),
    /// Run a job now, outside its schedule.
    Trigger(JobName),
    /// Show a schedule's next occurrences without adding a job, in UTC and
    /// in its zone.
    Preview(JobPreviewArgs),
}

/// `job preview` options: the schedule options of `job add`, and where to
/// start.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").args(["cron", "every", "at"]).required(true)))]
pub struct JobPreviewArgs {
    /// Cron expression, as in `job add`.
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression.
    #[arg(long, default_value = "UTC", requires = "cron")]
    pub tz: String,
    /// Every DUR, on a grid from --start [default: --from].
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Where the --every grid starts (RFC 3339, `now`, or `+DUR`).
    #[arg(long, value_parser = parse_time, requires = "every")]
    pub start: Option<i64>,
    /// One occurrence at TIME.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<i64>,
    /// Show occurrences strictly after TIME (RFC 3339 or `now`).
    #[arg(long, value_parser = parse_time, default_value = "now")]
    pub from: i64,
    /// How many occurrences to show.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// A JSON array of RFC 3339 UTC times.
    #[arg(long)]
    pub json: bool,
}

/// A job name and `--json`.
#[derive(Debug, Args)]
pub struct JobName {
    /// Job name.
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `job add` options.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("when").args(["cron", "every", "at", "daemon"])))]
pub struct JobAddArgs {
    /// Job name (letters, digits, `-`, `_`, `.`, `:`).
    pub name: String,
    /// Change the job of this name in place: its history and counts stay
    /// with it, and without --start/--at so does its anchor (the interval's
    /// grid when the period stays, or the time of a one-off); a paused job
    /// stays paused.
    #[arg(long)]
    pub replace: bool,
    /// Handler to run.
    #[arg(long)]
    pub handler: String,
    /// Cron expression as in crontab(5) (weekdays 0-7, Sunday 0 and 7; the
    /// day fields OR-ed when both are restricted), 6 fields with seconds
    /// first, or @hourly, @daily ... (`job preview` shows what it does).
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression.
    #[arg(long, default_value = "UTC", requires = "cron")]
    pub tz: String,
    /// Run every DUR (e.g. 30s), starting now or at --start.
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// Run once at TIME (RFC 3339, `now`, or `+DUR`) [default: once, now].
    #[arg(long, value_parser = parse_time)]
    pub at: Option<i64>,
    /// Keep exactly one execution running; restart it when it ends.
    #[arg(long)]
    pub daemon: bool,
    /// JSON input of every execution.
    #[arg(long, default_value = "null")]
    pub payload: String,
    /// inproc or process [default: the handler's].
    #[arg(long)]
    pub mode: Option<jobvisor::model::Mode>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Queue its executions wait in.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Retries of a failed execution.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// First retry delay (doubles, with jitter); a daemon's restart delay.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff: Duration,
    /// Wall-clock limit of each execution.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// When an occurrence meets an active run: skip, queue or allow.
    #[arg(long, default_value = "skip")]
    pub overlap: jobvisor::model::Overlap,
    /// Occurrences missed while no supervisor ran: run-once or skip.
    #[arg(long, default_value = "run-once")]
    pub misfire: jobvisor::schedule::Misfire,
    /// Most executions of this job running at once.
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// The concurrency key of its executions: in a queue with a key limit
    /// (`queue set-key-limit`), at most that many with one key run at once.
    #[arg(long, value_name = "KEY")]
    pub concurrency_key: Option<String>,
    /// Complete the job after this many runs.
    #[arg(long)]
    pub max_runs: Option<u64>,
    /// No occurrence before TIME.
    #[arg(long, value_parser = parse_time)]
    pub start: Option<i64>,
    /// No occurrence after TIME.
    #[arg(long, value_parser = parse_time)]
    pub end: Option<i64>,
    /// Add the job paused.
    #[arg(long)]
    pub paused: bool,
    /// When an execution of this job ends (see --then-on), enqueue one
    /// execution of JOB with it as its parent (repeat for more).
    #[arg(long, value_name = "JOB")]
    pub then: Vec<String>,
    /// Which ends enqueue the --then jobs: success, failure (failed for
    /// good or timed out) or always. Give it once for all, or once per
    /// --then in the same order.
    #[arg(long, value_name = "WHEN", requires = "then")]
    pub then_on: Vec<jobvisor::model::ChainOn>,
    /// What the job is for (shown by `job show`, `job list --json` and the
    /// dashboard; at most 1,024 characters).
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Before each occurrence, run HANDLER (in its own mode, with the
    /// occurrence's payload): output `true` (or a plain program's exit 0)
    /// runs the occurrence, `false` records it as `skipped`, a failure
    /// fails it with the condition's error.
    #[arg(long, value_name = "HANDLER")]
    pub condition: Option<String>,
    /// Retention keeps the job's N newest ended executions however old,
    /// besides those its age rule keeps.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u64>,
    /// Alert `job.failing` once its last N runs have failed (and
    /// `job.failing.recovered` when one succeeds): webhooks hear it, the
    /// dashboard shows it.
    #[arg(long, value_name = "N")]
    pub alert_after: Option<u32>,
    /// Alert `job.late` when a scheduled occurrence has not started DUR
    /// after it was due.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub alert_late: Option<Duration>,
    /// Alert `job.silent` when the job has not succeeded for DUR (a
    /// dead-man switch).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub expect_every: Option<Duration>,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Meta and tags, of a run or of each run of a job.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// A meta pair, found by `exec list --meta KEY=VALUE` (repeatable; at
    /// most 4 KiB in all).
    #[arg(long, value_name = "KEY=VALUE", value_parser = jobvisor::model::parse_meta_pair)]
    pub meta: Vec<(String, String)>,
    /// A tag, found by `exec list --tag TAG` (repeatable; at most 32, each
    /// of at most 64 characters).
    #[arg(long, value_name = "TAG", value_parser = parse_tag)]
    pub tag: Vec<String>,
}

impl LabelArgs {
    /// The meta, each key once (the last value given wins).
    pub fn meta(&self) -> jobvisor::model::Meta {
        self.meta.iter().cloned().collect()
    }
}

/// `queue` subcommands.
#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// List queues with their limits and load.
    List(JsonFlag),
    /// Stop claiming from a queue (running executions go on).
    Pause {
        /// Queue name.
        name: String,
    },
    /// Claim from a queue again.
    Resume {
        /// Queue name.
        name: String,
    },
    /// Limit how many executions of a queue run at once (`none`: no limit).
    SetLimit {
        /// Queue name.
        name: String,
        /// A number, or `none`.
        #[arg(allow_hyphen_values = true)]
        limit: String,
    },
    /// Limit how many executions with one concurrency key run at once in a
    /// queue, across all nodes (`none`: no key limit).
    SetKeyLimit {
        /// Queue name.
        name: String,
        /// A number, or `none`.
        #[arg(allow_hyphen_values = true)]
        limit: String,
    },
    /// Limit how many executions of a queue start in any window of DUR,
    /// across all nodes (`none`: no rate limit).
    SetRate {
        /// Queue name.
        name: String,
        /// N/DUR (e.g. 5/1s, 100/1m), or `none`.
        #[arg(allow_hyphen_values = true)]
        rate: String,
    },
}

/// `serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML) [default: /etc/jobvisor/jobvisor.toml when
    /// it exists]. Flags given here override it.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Executions running at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000),
          help = with_default("Executions running at once", service().concurrency))]
    pub concurrency: Option<u32>,
    /// How often to look for runs enqueued by other processes.
    #[arg(long, value_parser = parse_duration,
          help = with_default(
              "How often to look for runs enqueued by other processes (runs enqueued \
               through this process start at once)",
              humantime::format_duration(service().poll_interval),
          ))]
    pub poll_interval: Option<Duration>,
    /// A node silent this long is dead.
    #[arg(long, value_parser = parse_duration,
          help = with_default(
              "A node silent this long is dead; its running executions are rescued",
              humantime::format_duration(service().node_lease),
          ))]
    pub node_lease: Option<Duration>,
    /// How long running executions may finish at shutdown.
    #[arg(long, value_parser = parse_duration,
          help = with_default(
              "At SIGTERM/SIGINT, how long running executions may finish before they are \
               stopped and recorded as interrupted (a second signal cuts it short)",
              humantime::format_duration(service().drain_timeout),
          ))]
    pub drain_timeout: Option<Duration>,
    /// HTTP API address, or `off`.
    #[arg(long, help = format!(
        "HTTP API address, or `off` [default: {}]. Any address but loopback needs a token \
         (config `token` or JOBVISOR_API_TOKEN)",
        DEFAULT_LISTEN
    ))]
    pub listen: Option<String>,
    /// A host name the API answers to (repeat for more).
    #[arg(
        long = "allowed-host",
        value_name = "NAME[:PORT]",
        help = "A host name the API answers to besides its listen address and localhost, \
                  e.g. the name a reverse proxy or DNS gives it (repeat for more; config `allowed_hosts`)"
    )]
    pub allowed_hosts: Vec<String>,
    /// Connections served at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000),
          help = with_default("HTTP connections served at once (more wait)", jobvisor::http::DEFAULT_MAX_CONNECTIONS))]
    pub max_connections: Option<u32>,
    /// Event streams open at once.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000),
          help = with_default("Server-Sent Event streams open at once (more get 503)", jobvisor::http::DEFAULT_MAX_STREAMS))]
    pub max_streams: Option<u32>,
    /// Failed authentications before an address is shut out.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1_000_000),
          help = with_default("Failed authentications from one address within a minute after which it \
                  gets 429 for a minute (0: never; config `max_auth_failures`)", jobvisor::http::DEFAULT_MAX_AUTH_FAILURES))]
    pub max_auth_failures: Option<u32>,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        help = "Serve HTTPS with this PEM certificate chain (with --tls-key; config `tls_cert`)"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        help = "The PEM private key of --tls-cert (config `tls_key`)"
    )]
    pub tls_key: Option<std::path::PathBuf>,
    /// The test built-ins.
    #[arg(long, env = "JOBVISOR_TEST_BUILTINS", value_parser = clap::builder::FalseyValueParser::new(),
          help = "Register the test built-ins `append`, `panic` and `misbehave` (for tests and \
                  benchmarks; `append` writes under JOBVISOR_APPEND_DIR only, which must be set)")]
    pub test_builtins: bool,
    /// Log format of the service itself [default: auto: journald under
    /// systemd, text otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<jobvisor::service::logging::LogFormat>,
}

/// `handler` subcommands.
#[derive(Debug, Subcommand)]
pub enum HandlerCmd {
    /// Register an executable (any language) as a handler.
    Add(Box<HandlerAddArgs>),
    /// List handlers (registered and built in).
    List(JsonFlag),
    /// Show one handler.
    Show(NameJson),
    /// Remove a registered handler (refused while jobs use it).
    Remove {
        /// Handler name.
        name: String,
        /// Remove it even though jobs use it, and pause those jobs.
        #[arg(long)]
        force: bool,
    },
}

/// `webhook` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhookCmd {
    /// Add a webhook: from the next change of any run, the events it hears
    /// are posted to its URL (docs/WEBHOOKS.md).
    Add(Box<WebhookAddArgs>),
    /// List webhooks (their URLs' paths hidden: they often hold secrets).
    List(JsonFlag),
    /// Show one webhook.
    Show {
        /// Webhook name.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Show the whole URL (without this its path and query are
        /// `<redacted>`).
        #[arg(long)]
        reveal: bool,
    },
    /// Remove a webhook (deliveries it made already stay, and fail when
    /// they run).
    Remove {
        /// Webhook name.
        name: String,
    },
}

/// `webhook add` options (the config file's `[[webhook]]` takes the same,
/// as keys).
#[derive(Debug, Args)]
pub struct WebhookAddArgs {
    /// Webhook name: letters, digits, '-', '_' and '.'.
    pub name: String,
    /// Where events are posted (http:// or https://), or the MQTT broker
    /// they are published to (mqtt://[USER@]HOST[:PORT], or mqtts://).
    #[arg(long)]
    pub url: String,
    /// For an MQTT broker: the topic, where {event}, {job} and {handler}
    /// are filled in [default: jobvisor/{event}].
    #[arg(long)]
    pub topic: Option<String>,
    /// The events it hears, comma-separated: enqueued, started, succeeded,
    /// failed, retrying, cancelled, snoozed, skipped, or all of those
    /// (`all`); and the alerts job.failing, job.late, job.silent,
    /// execution.stuck, each with its `.recovered`.
    #[arg(long, value_delimiter = ',', required = true)]
    pub events: Vec<String>,
    /// Only events of this job (repeat for more; none: every job, and
    /// ad-hoc runs).
    #[arg(long = "job", alias = "jobs", value_name = "JOB")]
    pub jobs: Vec<String>,
    /// Only events of runs in this queue (repeat for more).
    #[arg(long = "queue", alias = "queues", value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Sign each delivery with the secret in this environment variable of
    /// the service (X-Jobvisor-Signature: t=UNIX,v1=HMAC-SHA256 of "t.body");
    /// for an MQTT broker, the variable holds the user's password.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// The body: `json` (the event) or `slack` (a Slack message).
    #[arg(long, default_value = "json")]
    pub format: jobvisor::model::WebhookFormat,
    /// Replace a webhook of the same name.
    #[arg(long)]
    pub replace: bool,
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// A name and `--json`.
#[derive(Debug, Args)]
pub struct NameJson {
    /// Handler name.
    pub name: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
    /// Show the environment's values too (they often hold secrets: without
    /// this each is `<redacted>`).
    #[arg(long)]
    pub reveal: bool,
}

/// `handler add` options.
#[derive(Debug, Args)]
pub struct HandlerAddArgs {
    /// Handler name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The program to run (absolute, relative, or found on PATH).
    #[arg(long, required_unless_present = "builtin", conflicts_with = "builtin")]
    pub exec: Option<String>,
    /// Not a program: a Rust handler of the worker program (a built-in such
    /// as `noop`); sets how its process-mode executions are run.
    #[arg(long)]
    pub builtin: bool,
    /// Mode of its executions unless a run says otherwise [default: process
    /// for programs, inproc for built-ins].
    #[arg(long)]
    pub mode: Option<jobvisor::model::Mode>,
    /// An argument for the program (repeat for more; never through a shell).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// Default timeout of its executions.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Time between the cancel message and SIGTERM (inproc: between the
    /// cancel and dropping the handler's future).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub cancel_grace: Duration,
    /// Time between SIGTERM and SIGKILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub kill_grace: Duration,
    /// Longest output line kept, in bytes; longer lines are cut.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(64..=1024 * 1024 * 1024))]
    pub max_line: u64,
    /// Fail an execution whose worker is silent this long.
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// Set a variable in the child's environment (KEY=VALUE; repeat).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Pass a variable of the supervisor's environment through (repeat).
    #[arg(long)]
    pub allow_env: Vec<String>,
    /// Working directory of the child, where its relative paths start
    /// [default: the directory `handler add` runs in, for a program that
    /// does not --run-as another user (who may not enter it); a config
    /// file's handler: the file's directory]
    #[arg(long = "workdir", alias = "cwd", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Memory limit (e.g. 512M): cgroup memory.max, else an address-space
    /// rlimit.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Most processes and threads: cgroup pids.max, else RLIMIT_NPROC.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub pids: Option<u64>,
    /// CPU bandwidth in cores (e.g. 0.5): cgroup cpu.max only.
    #[arg(long, value_parser = parse_cores)]
    pub cpus: Option<f64>,
    /// CPU time limit (RLIMIT_CPU, whole seconds; e.g. 30s).
    #[arg(long, value_parser = parse_duration)]
    pub cpu_time: Option<Duration>,
    /// Address-space limit (RLIMIT_AS, e.g. 1G).
    #[arg(long, value_parser = parse_size)]
    pub address_space: Option<u64>,
    /// Data-segment limit (RLIMIT_DATA, e.g. 1G).
    #[arg(long, value_parser = parse_size)]
    pub data_size: Option<u64>,
    /// Open-file limit (RLIMIT_NOFILE).
    #[arg(long, value_parser = clap::value_parser!(u64).range(3..))]
    pub open_files: Option<u64>,
    /// Process limit of the user it runs as (RLIMIT_NPROC).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub processes: Option<u64>,
    /// Allow core dumps (off by default).
    #[arg(long)]
    pub core_dumps: bool,
    /// Run as USER or USER:GROUP (names or ids; the supervisor must be root).
    #[arg(long)]
    pub run_as: Option<String>,
    /// The group to run as (a name or id): the same as `--run-as USER:GROUP`.
    /// A uid with no passwd entry needs it.
    #[arg(long, requires = "run_as")]
    pub group: Option<String>,
    /// Set no_new_privs: setuid programs cannot raise its privileges.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Run the program even if it or its directory is group- or
    /// world-writable (a supervisor running as root refuses it otherwise).
    #[arg(long)]
    pub allow_writable: bool,
    /// Most log bytes stored per execution (each line's text, fields and
    /// row); beyond it lines are counted, not stored. In both modes.
    #[arg(long, default_value = "64M", value_parser = parse_size)]
    pub max_log: u64,
    /// Keep this many worker processes for reuse (workers that announce
    /// `pooled: true`); 0 starts one process per execution.
    #[arg(long, default_value_t = 0)]
    pub pool_size: u32,
    /// Recycle a pooled worker after this many executions.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_runs_per_worker: Option<u64>,
    /// Recycle a pooled worker whose resident memory exceeds this after an
    /// execution (e.g. 256M).
    #[arg(long, value_parser = parse_size)]
    pub max_rss_per_worker: Option<u64>,
    /// The level plain stderr lines are stored at (trace, debug, info,
    /// warn, error, fatal, panic).
    #[arg(long, default_value = "warn")]
    pub stderr_level: jobvisor_worker::Level,
    /// Replace a handler of the same name.
    #[arg(long)]
    pub replace: bool,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Handler name.
    pub handler: String,
    /// JSON input.
    #[arg(long, default_value = "null")]
    pub payload: String,
    /// inproc or process [default: the handler's].
    #[arg(long)]
    pub mode: Option<jobvisor::model::Mode>,
    /// Retries after a failed attempt.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Delay before the first retry (doubles, with jitter).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff: Duration,
    /// Wall-clock limit of each attempt.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Queue to wait in.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// At most one pending or running execution with this key: a duplicate
    /// creates nothing, prints the existing execution's id and exits 0.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// With --unique-key: an execution with the key that finished within
    /// this time also makes a duplicate (a throttle).
    #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "unique_key")]
    pub unique_for: Option<Duration>,
    /// With --unique-key: a duplicate replaces the payload and due time of
    /// the execution that has not started (debounce), or, while one runs,
    /// of the one that waits to follow it (made if there is none).
    #[arg(long, requires = "unique_key", conflicts_with = "after")]
    pub replace: bool,
    /// Its concurrency key: in a queue with a key limit (`queue
    /// set-key-limit`), at most that many with one key run at once.
    #[arg(long, value_name = "KEY")]
    pub concurrency_key: Option<String>,
    #[command(flatten)]
    pub labels: LabelArgs,
    /// Run after execution ID has ended (repeat: after all of them); it
    /// waits in status `waiting` and receives their outputs as `inputs`.
    #[arg(long, value_name = "ID")]
    pub after: Vec<String>,
    /// With --after: `success` runs it only if every parent succeeded (else
    /// it is cancelled, and so are its own dependents); `finished` runs it
    /// however they ended; `condition` runs it only if they succeeded
    /// answering `true` (`false` ends it as `skipped`).
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "success",
        requires = "after"
    )]
    pub after_policy: jobvisor::model::AfterPolicy,
    /// Run it not before TIME (RFC 3339, or `+DUR` from now); it waits as
    /// `pending` until then.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<i64>,
    /// Run it not before DUR from now (`10m`).
    #[arg(long = "in", value_name = "DUR", value_parser = parse_duration, conflicts_with = "at")]
    pub in_: Option<Duration>,
    /// Its id (a UUID; one that names an execution already is refused,
    /// exit 2, and nothing is written).
    #[arg(long, value_name = "UUID")]
    pub id: Option<uuid::Uuid>,
    /// Wait for the outcome (exit 0 on success, 1 on failure or cancel).
    #[arg(long)]
    pub wait: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `exec` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExecCmd {
    /// List executions, newest first.
    List(ExecListArgs),
    /// Show one execution.
    Show {
        /// Execution id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print an execution's log.
    Logs {
        /// Execution id.
        id: String,
        /// Keep printing new lines until the execution ends.
        #[arg(long, short)]
        follow: bool,
        /// Only lines at this level or above.
        #[arg(long)]
        level: Option<jobvisor_worker::Level>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an execution (pending: at once; running: through its node),
    /// or every execution the filters match (at least one filter).
    Cancel(ActArgs),
    /// Run a failed, cancelled or interrupted execution again (a new
    /// attempt, due now), or every one the filters match.
    Retry(ActArgs),
    /// Hold a pending or waiting execution: it is never claimed until
    /// released (a running or ended one is refused, exit 2).
    Hold(HoldArgs),
    /// Release a held execution, back to pending (or waiting, while its
    /// parents or a unique key's holder have yet to end).
    Release(HoldArgs),
}

/// The execution `exec hold` or `exec release` acts on.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Execution id (at least 6 of its hex digits).
    pub id: String,
    /// Print what the HTTP API answers: `{"id": ..., "status": ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Which executions: every filter given must match.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only this job.
    #[arg(long)]
    pub job: Option<String>,
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Only this status (repeat for any of several).
    #[arg(long)]
    pub status: Vec<jobvisor::model::Status>,
    /// Only those with this unique key.
    #[arg(long, value_name = "KEY")]
    pub unique_key: Option<String>,
    /// Only those with this concurrency key.
    #[arg(long, value_name = "KEY")]
    pub concurrency_key: Option<String>,
    /// Only those this node ran.
    #[arg(long)]
    pub node: Option<String>,
    /// Only those enqueued since: a duration ago (`1h`) or a time (RFC 3339).
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_since)]
    pub since: Option<i64>,
    /// Only those enqueued before: a duration ago (`1h`), `now`, `+DUR`,
    /// or a time (RFC 3339).
    #[arg(long, value_name = "DUR|TIME", value_parser = parse_until)]
    pub until: Option<i64>,
    /// Only those with this tag (repeat: with every one of them).
    #[arg(long, value_name = "TAG", value_parser = parse_tag)]
    pub tag: Vec<String>,
    /// Only those with this meta pair (repeat: with every one of them).
    #[arg(long, value_name = "KEY=VALUE", value_parser = jobvisor::model::parse_meta_pair)]
    pub meta: Vec<(String, String)>,
    /// Only those that came to be this way: manual, scheduled, triggered,
    /// chained, workflow, retry, snooze, daemon or event (a webhook's delivery).
    #[arg(long)]
    pub origin: Option<jobvisor::model::Origin>,
    /// Only the last attempt of each run (a run retried twice counts once).
    #[arg(long = "final")]
    pub last_attempt: bool,
}

/// A tag, as `--tag` takes it.
pub fn parse_tag(s: &str) -> Result<String, String> {
    jobvisor::model::check_tags(&[s.to_string()]).map(|()| s.to_string())
}

impl FilterArgs {
    /// As the store's filter.
    pub fn filter(&self) -> jobvisor::store::ExecFilter {
        jobvisor::store::ExecFilter {
            statuses: self.status.clone(),
            job: self.job.clone(),
            queue: self.queue.clone(),
            handler: self.handler.clone(),
            node: self.node.clone(),
            unique_key: self.unique_key.clone(),
            concurrency_key: self.concurrency_key.clone(),
            since: self.since,
            until: self.until,
            before: None,
            limit: 0,
            clip: None,
            tags: self.tag.clone(),
            meta: self.meta.iter().cloned().collect(),
            origin: self.origin,
            last_attempt: self.last_attempt,
        }
    }
}

/// `exec list` options.
#[derive(Debug, Args)]
pub struct ExecListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only those older than execution ID (the last of the previous page).
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// A JSON array.
    #[arg(long, conflicts_with = "jsonl")]
    pub json: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub jsonl: bool,
}

/// `exec cancel` and `exec retry`: one execution, or those the filters
/// match.
#[derive(Debug, Args)]
pub struct ActArgs {
    /// Execution id (or give filters instead).
    pub id: Option<String>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// List what the filters match; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Why (recorded; cancel only).
    #[arg(long, default_value = "requested by operator")]
    pub reason: String,
    /// Machine-readable output (what the HTTP API answers).
    #[arg(long)]
    pub json: bool,
}

use jobvisor::model::ValueError;

/// Parses a time: RFC 3339 (`2026-11-22T12:00:00Z`; without a zone, UTC),
/// `now`, or `+DUR` from now.
pub fn parse_time(s: &str) -> Result<i64, ValueError> {
    jobvisor::model::parse_time(s, jobvisor::model::now_micros())
}

/// Parses a point in the past: a duration ago (`1h`) or a time.
pub fn parse_since(s: &str) -> Result<i64, ValueError> {
    jobvisor::model::parse_since(s, jobvisor::model::now_micros())
}

/// Parses an upper bound: a duration ago (`1h`), `now`, `+DUR` or a time.
pub fn parse_until(s: &str) -> Result<i64, ValueError> {
    jobvisor::model::parse_until(s, jobvisor::model::now_micros())
}

/// Parses a human duration (`30s`, `5m`, `250ms`).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    jobvisor::model::parse_duration(s)
}

/// Parses a byte size such as `64M` or `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    jobvisor::model::parse_bytes(s)
}

fn parse_cores(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=4096.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid CPU count {s:?}: expected cores such as 0.5 or 2"
        )),
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// `serve`'s defaults, shown in its help: one source, `Config::service()`.
fn service() -> jobvisor::supervisor::Config {
    jobvisor::supervisor::Config::service()
}

/// A help line ending in its default, as clap shows them.
fn with_default(text: &str, value: impl std::fmt::Display) -> String {
    format!("{text} [default: {value}]")
}

/// Where the HTTP API listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7180";
