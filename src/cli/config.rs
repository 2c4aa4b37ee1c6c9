//! The service's configuration file (TOML): settings, queue limits,
//! retention, and declarative `[[handler]]` and `[[job]]` tables.
//!
//! A `[[handler]]` or `[[job]]` table takes exactly the options of
//! `jobvisor handler add` / `jobvisor job add`, spelled with underscores
//! (`cancel_grace = "2s"`, `max_runs_per_worker = 100`, `env = { K = "v" }`,
//! `meta = { K = "v" }`, `tag = ["a", "b"]`, `payload = { any = "TOML" }`). Each table is turned into those command
//! lines and parsed by the same code, so the file and the CLI accept and
//! reject the same things. The whole file is checked before anything is
//! applied: one bad table rejects the file, with its line and the reason.

use super::args::{HandlerAddArgs, JobAddArgs, WebhookAddArgs};
use jobvisor::model::{HandlerKind, HandlerSpec, JobSpec, Mode};
use jobvisor::service::declare::{
    check_handlers, Declarations, JobDecl, QueueDecl, SyncError, DEFAULT_RETENTION,
};
use jobvisor::service::logging::LogFormat;
use jobvisor::service::mqtt::MqttSubscription;
use jobvisor::store::Reads;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::{Spanned, Table, Value};

/// Where `serve` looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/jobvisor/jobvisor.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    database: Option<String>,
    listen: Option<String>,
    token: Option<String>,
    token_readonly: Option<String>,
    concurrency: Option<u32>,
    poll_interval: Option<String>,
    node_lease: Option<String>,
    drain_timeout: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    max_connections: Option<u32>,
    max_streams: Option<u32>,
    max_auth_failures: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    test_builtins: Option<bool>,
    #[serde(default)]
    queues: BTreeMap<String, Spanned<RawQueue>>,
    retention: Option<RawRetentionValue>,
    #[serde(default, rename = "handler")]
    handlers: Vec<Spanned<Table>>,
    #[serde(default, rename = "job")]
    jobs: Vec<Spanned<Table>>,
    #[serde(default, rename = "webhook")]
    webhooks: Vec<Spanned<Table>>,
    #[serde(default)]
    mqtt: RawMqtt,
}

/// `[[mqtt.subscribe]]` and `[[mqtt.publish]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    #[serde(default)]
    subscribe: Vec<Spanned<RawSubscribe>>,
    #[serde(default)]
    publish: Vec<Spanned<RawPublish>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubscribe {
    broker: String,
    password_env: Option<String>,
    topic: String,
    handler: String,
    queue: Option<String>,
    unique_key_from: Option<String>,
    unique_for: Option<String>,
    #[serde(default, alias = "tag")]
    tags: Vec<String>,
    shared: Option<bool>,
    client_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    name: Option<String>,
    broker: String,
    password_env: Option<String>,
    topic: Option<String>,
    events: Vec<String>,
    #[serde(default, alias = "job")]
    jobs: Vec<String>,
    #[serde(default, alias = "queue")]
    queues: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    limit: Option<u32>,
    key_limit: Option<u32>,
    rate: Option<String>,
    paused: Option<bool>,
}

/// `retention = "off"` (or a duration), or a `[retention]` table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRetentionValue {
    Word(String),
    Table(RawRetention),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    executions: Option<String>,
    every: Option<String>,
}

/// Service settings from the file (flags override them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// Database URL or path.
    pub database: Option<String>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// Bearer token of the HTTP API.
    pub token: Option<String>,
    /// A second token that may read (GET) but not act.
    pub token_readonly: Option<String>,
    /// Executions at once.
    pub concurrency: Option<u32>,
    /// Poll interval.
    pub poll_interval: Option<Duration>,
    /// Node lease.
    pub node_lease: Option<Duration>,
    /// Drain timeout.
    pub drain_timeout: Option<Duration>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Host names the API answers to besides its address and loopback.
    pub allowed_hosts: Vec<String>,
    /// Connections at once.
    pub max_connections: Option<u32>,
    /// Event streams at once.
    pub max_streams: Option<u32>,
    /// Failed authentications before an address is shut out.
    pub max_auth_failures: Option<u32>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// The test built-ins.
    pub test_builtins: Option<bool>,
}

/// A checked configuration file.
#[derive(Clone, Debug)]
pub struct ServiceFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Settings.
    pub settings: Settings,
    /// What it declares.
    pub declared: Declarations,
}

/// A configuration file refused: where, and why, in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Refused at a line (line 1 for settings of the whole file).
    #[error("{}:{line}: {reason}", path.display())]
    At {
        /// The file.
        path: PathBuf,
        /// Its line.
        line: usize,
        /// Why.
        reason: String,
    },
    /// Its `listen` cannot be served.
    #[error("{}: {source}", path.display())]
    Listen {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ListenError,
    },
    /// Its declarations cannot be applied.
    #[error(transparent)]
    Declarations(SyncError),
}

impl ConfigError {
    /// A refused declaration of `file`, with its line where it has one.
    pub fn declarations(file: &ServiceFile, e: SyncError) -> Self {
        match e {
            SyncError::UnknownHandler { line, .. } => ConfigError::At {
                path: file.path.clone(),
                line,
                reason: e.to_string(),
            },
            e => ConfigError::Declarations(e),
        }
    }
}

/// Why the HTTP API cannot listen where it is told to.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Not an address.
    #[error("invalid listen address {listen:?}: {source}")]
    Invalid {
        /// What was given.
        listen: String,
        /// Why.
        source: std::net::AddrParseError,
    },
    /// Not loopback, and no token.
    #[error(transparent)]
    NeedsToken(#[from] jobvisor::http::NeedsToken),
    /// A read-only token is set, but no token: nothing would be guarded.
    #[error("a read-only token (`token_readonly` or JOBVISOR_API_TOKEN_READONLY) needs a token (`token` or JOBVISOR_API_TOKEN)")]
    ReadonlyAlone,
    /// Both tokens are the same.
    #[error("the read-only token must differ from the token")]
    SameTokens,
}

/// The variable that names the service's config file.
pub const CONFIG_ENV: &str = "JOBVISOR_CONFIG";

/// The file to read: `--config`, else $JOBVISOR_CONFIG, else the default
/// path if it exists.
pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
    match flag {
        Some(p) => Some(p.to_path_buf()),
        None => match std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
        },
    }
}

/// The `database` the service's config file names, for the commands that
/// act on the service's database: read leniently (only that key; a file
/// that cannot be read or parsed names none, and `check-config` is the
/// place to hear why).
pub fn database_of_service() -> Option<String> {
    let path = locate(None)?;
    let text = std::fs::read_to_string(path).ok()?;
    let table: Table = text.parse().ok()?;
    match table.get("database") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn duration(what: &str, s: &Option<String>) -> Result<Option<Duration>, String> {
    s.as_deref()
        .map(|v| super::args::parse_duration(v).map_err(|e| format!("{what}: {e}")))
        .transpose()
}

/// Reads and checks a configuration file. The error is one line:
/// `PATH:LINE: reason` where a line is known.
pub fn load(path: &Path) -> Result<ServiceFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// A retention: `off` (keep everything) or a duration.
fn retention_word(what: &str, w: &str) -> Result<Option<Duration>, String> {
    if w == "off" {
        return Ok(None);
    }
    match duration(what, &Some(w.to_string()))? {
        Some(d) if d.is_zero() => Err(format!(
            "{what}: must be longer than 0 (or \"off\" to keep everything)"
        )),
        d => Ok(d),
    }
}

/// Checks a configuration file's text.
pub fn parse(path: &Path, text: &str) -> Result<ServiceFile, ConfigError> {
    // Where its programs start unless they say: the file's directory.
    let dir = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/"));
    let at = |line: usize, reason: String| ConfigError::At {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        at(line, e.message().trim().to_string())
    })?;
    let settings = settings(&raw).map_err(|e| at(1, e))?;
    let (retention, raw_retention) = match raw.retention {
        None => (Some(DEFAULT_RETENTION), RawRetention::default()),
        Some(RawRetentionValue::Word(w)) => (
            retention_word("retention", &w).map_err(|e| at(1, e))?,
            RawRetention::default(),
        ),
        Some(RawRetentionValue::Table(t)) => {
            let keep = match &t.executions {
                None => Some(DEFAULT_RETENTION),
                Some(w) => retention_word("retention.executions", w).map_err(|e| at(1, e))?,
            };
            (keep, t)
        }
    };
    let retention_every = duration("retention.every", &raw_retention.every)
        .map_err(|e| at(1, e))?
        .unwrap_or(Declarations::default().retention_every)
        .max(Duration::from_secs(1));
    let mut queues = Vec::with_capacity(raw.queues.len());
    for (name, q) in raw.queues {
        let line = line_of(text, q.span().start);
        let q = q.into_inner();
        for (what, v) in [("limit", q.limit), ("key_limit", q.key_limit)] {
            if v == Some(0) {
                return Err(at(line, format!("queues.{name}.{what} must be at least 1")));
            }
        }
        let rate = q
            .rate
            .as_deref()
            .map(|r| r.parse::<jobvisor::model::Rate>())
            .transpose()
            .map_err(|e| at(line, format!("queues.{name}.rate: {e}")))?;
        queues.push(QueueDecl {
            name,
            limit: q.limit,
            key_limit: q.key_limit,
            rate,
            paused: q.paused,
        });
    }

    let mut handlers = Vec::new();
    for t in &raw.handlers {
        let line = line_of(text, t.span().start);
        let spec = handler(t.get_ref(), &dir).map_err(|e| at(line, e))?;
        if handlers.iter().any(|h: &HandlerSpec| h.name == spec.name) {
            return Err(at(
                line,
                format!("handler {:?} is declared twice", spec.name),
            ));
        }
        handlers.push(spec);
    }
    let mut jobs: Vec<JobDecl> = Vec::new();
    let mut job_retention = HashMap::new();
    for t in &raw.jobs {
        let line = line_of(text, t.span().start);
        let mut table = t.get_ref().clone();
        let keep = table.remove("retention");
        let fixed_start = table.contains_key("start") || table.contains_key("at");
        let spec = job(&table, &handlers).map_err(|e| at(line, e))?;
        if jobs.iter().any(|j| j.spec.name == spec.name) {
            return Err(at(line, format!("job {:?} is declared twice", spec.name)));
        }
        if let Some(v) = keep {
            let s = v
                .as_str()
                .ok_or_else(|| at(line, "retention must be a duration such as \"7d\"".into()))?;
            let d =
                super::args::parse_duration(s).map_err(|e| at(line, format!("retention: {e}")))?;
            job_retention.insert(spec.name.clone(), d);
        }
        jobs.push(JobDecl {
            spec,
            fixed_start,
            line,
        });
    }
    let mut webhooks: Vec<jobvisor::model::WebhookSpec> = Vec::new();
    for t in &raw.webhooks {
        let line = line_of(text, t.span().start);
        let spec = webhook(t.get_ref()).map_err(|e| at(line, e))?;
        if webhooks.iter().any(|w| w.name == spec.name) {
            return Err(at(
                line,
                format!("webhook {:?} is declared twice", spec.name),
            ));
        }
        webhooks.push(spec);
    }
    // A publication is a webhook to a broker: the same durable deliveries.
    for (i, p) in raw.mqtt.publish.iter().enumerate() {
        let line = line_of(text, p.span().start);
        let p = p.get_ref();
        let spec = jobvisor::model::WebhookSpec {
            name: p
                .name
                .clone()
                .unwrap_or_else(|| format!("mqtt-publish-{}", i + 1)),
            url: p.broker.clone(),
            topic: p.topic.clone(),
            events: p.events.clone(),
            jobs: p.jobs.clone(),
            queues: p.queues.clone(),
            secret_env: p.password_env.clone(),
            format: jobvisor::model::WebhookFormat::Json,
        };
        if !spec.is_mqtt() {
            return Err(at(
                line,
                format!(
                    "mqtt.publish: broker {:?} is not an mqtt:// or mqtts:// URL",
                    p.broker
                ),
            ));
        }
        spec.check()
            .map_err(|e| at(line, format!("mqtt.publish {:?}: {e}", spec.name)))?;
        if webhooks.iter().any(|w| w.name == spec.name) {
            return Err(at(
                line,
                format!(
                    "webhook {:?} is declared twice (an mqtt.publish is a webhook)",
                    spec.name
                ),
            ));
        }
        webhooks.push(spec);
    }
    let mut mqtt = Vec::new();
    for s in &raw.mqtt.subscribe {
        let line = line_of(text, s.span().start);
        let s = s.get_ref();
        let mut sub = MqttSubscription::new(&s.broker, &s.topic, &s.handler);
        sub.password_env = s.password_env.clone();
        if let Some(q) = &s.queue {
            sub.queue = q.clone();
        }
        sub.unique_key_from = s.unique_key_from.clone();
        if let Some(d) =
            duration("mqtt.subscribe.unique_for", &s.unique_for).map_err(|e| at(line, e))?
        {
            sub.unique_for = d;
        }
        sub.tags = s.tags.clone();
        sub.shared = s.shared.unwrap_or(false);
        sub.client_id = s.client_id.clone();
        sub.check()
            .map_err(|e| at(line, format!("mqtt.subscribe {:?}: {e}", s.topic)))?;
        if mqtt.iter().any(|m: &MqttSubscription| {
            m.broker == sub.broker && m.topic == sub.topic && m.handler == sub.handler
        }) {
            return Err(at(
                line,
                format!("mqtt.subscribe {:?} is declared twice", s.topic),
            ));
        }
        mqtt.push(sub);
    }
    Ok(ServiceFile {
        path: path.to_path_buf(),
        settings,
        declared: Declarations {
            queues,
            retention,
            retention_every,
            job_retention,
            handlers,
            jobs,
            webhooks,
            mqtt,
            file: Some(
                std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.to_path_buf())
                    .display()
                    .to_string(),
            ),
        },
    })
}

/// The service settings of a file (its errors are the file's, at line 1).
fn settings(raw: &RawFile) -> Result<Settings, String> {
    let settings = Settings {
        database: raw.database.clone(),
        listen: raw.listen.clone(),
        token: raw.token.clone(),
        token_readonly: raw.token_readonly.clone(),
        concurrency: raw.concurrency,
        poll_interval: duration("poll_interval", &raw.poll_interval)?,
        node_lease: duration("node_lease", &raw.node_lease)?,
        drain_timeout: duration("drain_timeout", &raw.drain_timeout)?,
        log_format: raw.log_format,
        allowed_hosts: raw.allowed_hosts.clone(),
        max_connections: raw.max_connections,
        max_streams: raw.max_streams,
        max_auth_failures: raw.max_auth_failures,
        tls_cert: raw.tls_cert.clone(),
        tls_key: raw.tls_key.clone(),
        test_builtins: raw.test_builtins,
    };
    for h in &settings.allowed_hosts {
        jobvisor::http::check_allowed_host(h)?;
    }
    for (what, v) in [
        ("max_connections", settings.max_connections),
        ("max_streams", settings.max_streams),
    ] {
        if v == Some(0) {
            return Err(format!("{what} must be at least 1"));
        }
    }
    if settings.tls_cert.is_some() != settings.tls_key.is_some() {
        return Err("tls_cert and tls_key go together".into());
    }
    if settings.concurrency == Some(0) {
        return Err("concurrency must be at least 1".into());
    }
    if let Some(l) = settings.listen.as_deref().filter(|l| *l != "off") {
        l.parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen {l:?}: {e}"))?;
    }
    Ok(settings)
}

/// A TOML table as the command line of `COMMAND NAME --key value ...`.
fn command_line(command: &str, t: &Table) -> Result<Vec<String>, String> {
    let name = match t.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("name must be a string".into()),
        None => return Err("a name is required".into()),
    };
    let mut args = vec![command.to_string(), name.clone()];
    let scalar = |k: &str, v: &Value| -> Result<String, String> {
        Ok(match v {
            Value::String(s) => s.clone(),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Datetime(d) => d.to_string(),
            Value::Boolean(b) => b.to_string(),
            _ => return Err(format!("{k} must be a single value")),
        })
    };
    for (k, v) in t {
        if k == "name" {
            continue;
        }
        let flag = match k.as_str() {
            "args" => "--arg".to_string(),
            _ => format!("--{}", k.replace('_', "-")),
        };
        match (k.as_str(), v) {
            ("payload", v) => {
                let json = serde_json::to_string(v).map_err(|e| format!("payload: {e}"))?;
                args.extend([flag, json]);
            }
            ("env" | "meta", Value::Table(vars)) => {
                for (name, value) in vars {
                    args.extend([flag.clone(), format!("{name}={}", scalar(k, value)?)]);
                }
            }
            (_, Value::Boolean(true)) => args.push(flag),
            (_, Value::Boolean(false)) => {}
            (_, Value::Array(items)) => {
                for item in items {
                    args.extend([flag.clone(), scalar(k, item)?]);
                }
            }
            (_, Value::Table(_)) => return Err(format!("{k} cannot be a table")),
            (_, v) => args.extend([flag, scalar(k, v)?]),
        }
    }
    Ok(args)
}

fn clap_message(e: clap::Error) -> String {
    super::one_line(&e)
}

#[derive(clap::Parser)]
#[command(no_binary_name = false)]
struct HandlerLine {
    #[command(flatten)]
    a: HandlerAddArgs,
}

#[derive(clap::Parser)]
#[command(no_binary_name = false)]
struct JobLine {
    #[command(flatten)]
    a: JobAddArgs,
}

#[derive(clap::Parser)]
#[command(no_binary_name = false)]
struct WebhookLine {
    #[command(flatten)]
    a: WebhookAddArgs,
}

fn webhook(t: &Table) -> Result<jobvisor::model::WebhookSpec, String> {
    use clap::Parser;
    let line = command_line("webhook", t)?;
    let name = line[1].clone();
    let parsed = WebhookLine::try_parse_from(&line)
        .map_err(|e| format!("webhook {name:?}: {}", clap_message(e)))?;
    super::webhook::spec_from_args(&parsed.a).map_err(|e| format!("webhook {name:?}: {e}"))
}

fn handler(t: &Table, dir: &Path) -> Result<HandlerSpec, String> {
    use clap::Parser;
    let line = command_line("handler", t)?;
    let name = line[1].clone();
    let mut parsed = HandlerLine::try_parse_from(&line)
        .map_err(|e| format!("handler {name:?}: {}", clap_message(e)))?;
    // A declared program starts in the file's directory, unless it says.
    if parsed.a.workdir.is_none() && parsed.a.exec.is_some() && parsed.a.run_as.is_none() {
        parsed.a.workdir = Some(dir.display().to_string());
    }
    super::handler::spec_from_args(name.clone(), &parsed.a)
        .map_err(|e| format!("handler {name:?}: {e}"))
}

fn job(t: &Table, declared: &[HandlerSpec]) -> Result<JobSpec, String> {
    use clap::Parser;
    let line = command_line("job", t)?;
    let name = line[1].clone();
    let parsed =
        JobLine::try_parse_from(&line).map_err(|e| format!("job {name:?}: {}", clap_message(e)))?;
    let spec = super::job::spec_from_args(parsed.a).map_err(|e| format!("job {name:?}: {e}"))?;
    if let Some(h) = declared.iter().find(|h| h.name == spec.handler) {
        if matches!(h.kind, HandlerKind::Exec { .. }) && spec.mode == Some(Mode::Inproc) {
            return Err(format!(
                "job {name:?}: handler {:?} is a program and runs in process mode only",
                h.name
            ));
        }
    }
    jobvisor::scheduler::first_due(&spec, jobvisor::model::now_micros())
        .map_err(|e| format!("job {name:?}: {e}"))?;
    Ok(spec)
}

/// A token: the variable `var`, else the file's (an empty variable counts
/// as unset, so that the file's token stays).
fn token_from(var: &str, file: Option<&str>) -> Option<String> {
    std::env::var(var)
        .ok()
        .filter(|t| !t.is_empty())
        .or(file.map(str::to_string))
        .filter(|t| !t.is_empty())
}

/// The API's tokens: `JOBVISOR_API_TOKEN`, else the file's `token`, and
/// `JOBVISOR_API_TOKEN_READONLY`, else the file's `token_readonly`.
pub fn api_auth(s: &Settings) -> Result<jobvisor::http::Auth, ListenError> {
    let token = token_from("JOBVISOR_API_TOKEN", s.token.as_deref());
    let readonly = token_from("JOBVISOR_API_TOKEN_READONLY", s.token_readonly.as_deref());
    match (&token, &readonly) {
        (None, Some(_)) => return Err(ListenError::ReadonlyAlone),
        (Some(t), Some(r)) if t == r => return Err(ListenError::SameTokens),
        _ => {}
    }
    Ok(jobvisor::http::Auth::new(token, readonly))
}

/// Where the HTTP API is to listen (`None`: `off`), refused when it is not
/// loopback and there is no token.
pub fn listen_addr(
    listen: &str,
    auth: &jobvisor::http::Auth,
) -> Result<Option<SocketAddr>, ListenError> {
    if listen == "off" {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().map_err(|source| ListenError::Invalid {
        listen: listen.to_string(),
        source,
    })?;
    jobvisor::http::check_listen(addr, auth.token.as_deref(), auth.readonly.as_deref())?;
    Ok(Some(addr))
}

/// Everything `serve` refuses in a file beyond its own syntax, checked
/// the same way by `check-config`: a listen address off loopback without
/// a token, and a job whose handler is neither declared in the file, nor
/// built in, nor registered in `store` (when there is a database).
pub async fn validate(file: &ServiceFile, store: Option<&dyn Reads>) -> Result<(), ConfigError> {
    let listen = file.settings.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen_error = |source| ConfigError::Listen {
        path: file.path.clone(),
        source,
    };
    let auth = api_auth(&file.settings).map_err(listen_error)?;
    listen_addr(listen, &auth).map_err(listen_error)?;
    check_handlers(&file.declared, store)
        .await
        .map_err(|e| ConfigError::declarations(file, e))
}

pub use super::args::DEFAULT_LISTEN;

#[cfg(test)]
mod tests {
    /// The committed corpus of the `config` fuzz target (fuzz/), on stable
    /// Rust: every input parses or is refused with one line, never a panic.
    #[test]
    fn every_config_fuzz_input_parses_or_is_refused_in_one_line() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config");
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(
            inputs.len() >= 5,
            "a seed corpus of {} inputs",
            inputs.len()
        );
        for input in inputs {
            let text = String::from_utf8_lossy(&std::fs::read(&input).unwrap()).into_owned();
            let parsed =
                std::panic::catch_unwind(|| super::parse(std::path::Path::new("fuzz.toml"), &text));
            match parsed {
                Err(_) => panic!("config parsing panics on {}", input.display()),
                Ok(Err(e)) => assert!(!e.to_string().contains('\n'), "{}: {e}", input.display()),
                Ok(Ok(_)) => {}
            }
        }
    }
}
