//! Webhooks: where events are posted, and which events.
//!
//! A webhook names a URL and the events it hears, optionally narrowed to
//! some jobs and queues. Each event it hears becomes one execution of the
//! built-in handler [`WEBHOOK_HANDLER`] (in queue [`WEBHOOK_QUEUE`]), so a
//! delivery is retried, logged and shown like any run, and never holds up
//! the run it reports.

use super::Status;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The built-in handler that posts an event: its executions are the
/// deliveries.
pub const WEBHOOK_HANDLER: &str = "webhook";

/// The queue deliveries wait in (pause it, or limit it, like any queue).
pub const WEBHOOK_QUEUE: &str = "webhooks";

/// The lifecycle events of an execution a webhook can hear.
pub const LIFECYCLE_EVENTS: [&str; 8] = [
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retrying",
    "cancelled",
    "snoozed",
    "skipped",
];

/// The alerts a webhook can hear, each with its `.recovered` event.
pub const ALERT_EVENTS: [&str; 8] = [
    "job.failing",
    "job.failing.recovered",
    "job.late",
    "job.late.recovered",
    "job.silent",
    "job.silent.recovered",
    "execution.stuck",
    "execution.stuck.recovered",
];

/// Refuses handler `name` where a caller names it (a run, a job, a
/// handler to register) if it is [`WEBHOOK_HANDLER`]: its runs are made by
/// jobvisor alone, so that what it signs is what happened.
///
/// ```
/// assert!(jobvisor::model::refuse_webhook_handler("webhook").is_err());
/// assert!(jobvisor::model::refuse_webhook_handler("echo").is_ok());
/// ```
pub fn refuse_webhook_handler(name: &str) -> Result<(), String> {
    if name == WEBHOOK_HANDLER {
        return Err(format!(
            "handler {WEBHOOK_HANDLER:?} is jobvisor's own: it posts the deliveries of webhooks, \
             which jobvisor makes itself (add one with `jobvisor webhook add`)"
        ));
    }
    Ok(())
}

/// The topic an MQTT webhook publishes to when it names none.
pub const DEFAULT_MQTT_TOPIC: &str = "jobvisor/{event}";
/// An MQTT webhook's topic is at most this long.
pub const MAX_TOPIC_CHARS: usize = 1024;

/// Webhooks at most (each one is read for every event).
pub const MAX_WEBHOOKS: usize = 100;
/// Jobs, or queues, one webhook may be narrowed to at most.
pub const MAX_WEBHOOK_FILTERS: usize = 100;
/// A webhook's URL is at most this long.
pub const MAX_URL_CHARS: usize = 2048;

/// What a delivery's body looks like.
///
/// ```
/// use jobvisor::model::WebhookFormat;
/// assert_eq!("slack".parse::<WebhookFormat>().unwrap(), WebhookFormat::Slack);
/// assert_eq!(WebhookFormat::default().to_string(), "json");
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The event as JSON (docs/WEBHOOKS.md).
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": ...}`, one line that
    /// says what happened.
    Slack,
}

impl fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Slack => "slack",
        })
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(WebhookFormat::Json),
            "slack" => Ok(WebhookFormat::Slack),
            _ => Err(format!("unknown webhook format {s:?}: use json or slack")),
        }
    }
}

/// A webhook.
///
/// ```
/// use jobvisor::model::WebhookSpec;
/// let mut hook = WebhookSpec::new("oncall", "https://alerts.example.com/jobvisor", &["failed"]);
/// hook.jobs = vec!["nightly".into()];
/// assert!(hook.check().is_ok());
/// assert!(hook.wants("failed", Some("nightly"), "default"));
/// assert!(!hook.wants("failed", Some("hourly"), "default"));
/// assert!(!hook.wants("succeeded", Some("nightly"), "default"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Unique name: letters, digits, `-`, `_` and `.`.
    #[schema(schema_with = name_schema)]
    pub name: String,
    /// Where events are posted (`http` or `https`), or the MQTT broker
    /// they are published to (`mqtt` or `mqtts`, with [`Self::topic`]).
    #[schema(schema_with = url_schema)]
    pub url: String,
    /// For an MQTT broker: the topic each event is published to, in which
    /// `{event}`, `{job}` and `{handler}` stand for the event's
    /// ([`DEFAULT_MQTT_TOPIC`] if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = topic_schema)]
    pub topic: Option<String>,
    /// The events it hears: any of [`LIFECYCLE_EVENTS`] and
    /// [`ALERT_EVENTS`], or `all` for every lifecycle event.
    #[schema(schema_with = events_schema)]
    pub events: Vec<String>,
    /// Only events of these jobs (none: any job, and ad-hoc runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = filter_schema)]
    pub jobs: Vec<String>,
    /// Only events of runs in these queues (none: any queue).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = filter_schema)]
    pub queues: Vec<String>,
    /// The environment variable of the supervisor that holds the signing
    /// secret (none: deliveries are not signed); for an MQTT broker, the
    /// password of the URL's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = env_var_schema)]
    pub secret_env: Option<String>,
    /// What a delivery's body looks like.
    #[serde(default)]
    pub format: WebhookFormat,
}

impl WebhookSpec {
    /// A webhook for `events` of every job and queue, unsigned, as JSON.
    pub fn new(name: &str, url: &str, events: &[&str]) -> WebhookSpec {
        WebhookSpec {
            name: name.to_string(),
            url: url.to_string(),
            topic: None,
            events: events.iter().map(|e| e.to_string()).collect(),
            jobs: Vec::new(),
            queues: Vec::new(),
            secret_env: None,
            format: WebhookFormat::Json,
        }
    }

    /// Checks every field; the error is one line.
    ///
    /// ```
    /// use jobvisor::model::WebhookSpec;
    /// let bad = WebhookSpec::new("x", "ftp://example.com", &["failed"]);
    /// assert!(bad.check().unwrap_err().contains("http"));
    /// let bad = WebhookSpec::new("x", "https://example.com", &["exploded"]);
    /// assert!(bad.check().unwrap_err().contains("exploded"));
    /// ```
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.chars().count() > super::MAX_LABEL_CHARS
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "invalid webhook name {:?}: use 1 to {} letters, digits, '-', '_' and '.'",
                self.name,
                super::MAX_LABEL_CHARS
            ));
        }
        check_url(&self.url)?;
        match (&self.topic, self.is_mqtt()) {
            (Some(_), false) => {
                return Err(
                    "a topic is for an MQTT broker (an mqtt:// or mqtts:// URL), not an HTTP URL"
                        .into(),
                )
            }
            (Some(t), true) => check_topic(t)?,
            (None, _) => {}
        }
        if self.is_mqtt() && self.format != WebhookFormat::Json {
            return Err(format!(
                "format {} is for HTTP receivers: an MQTT broker is sent the event as JSON",
                self.format
            ));
        }
        if self.events.is_empty() {
            return Err("a webhook needs at least one event (--events)".into());
        }
        for (i, e) in self.events.iter().enumerate() {
            if e != "all"
                && !LIFECYCLE_EVENTS.contains(&e.as_str())
                && !ALERT_EVENTS.contains(&e.as_str())
            {
                return Err(format!(
                    "unknown event {e:?}: use all, {} or {}",
                    LIFECYCLE_EVENTS.join(", "),
                    ALERT_EVENTS.join(", ")
                ));
            }
            if self.events[..i].contains(e) {
                return Err(format!("event {e:?} is given twice"));
            }
        }
        for (what, names) in [("job", &self.jobs), ("queue", &self.queues)] {
            if names.len() > MAX_WEBHOOK_FILTERS {
                return Err(format!(
                    "{} {what}s: a webhook is narrowed to at most {MAX_WEBHOOK_FILTERS}",
                    names.len()
                ));
            }
            if let Some(n) = names.iter().find(|n| {
                n.is_empty() || n.chars().count() > 256 || n.chars().any(char::is_control)
            }) {
                return Err(format!("invalid {what} name {n:?}"));
            }
        }
        if let Some(var) = &self.secret_env {
            check_env_name("--secret-env", var)?;
        }
        Ok(())
    }

    /// Whether its events are published to an MQTT broker (rather than
    /// posted over HTTP).
    pub fn is_mqtt(&self) -> bool {
        let scheme = self.url.split(':').next().unwrap_or_default();
        scheme.eq_ignore_ascii_case("mqtt") || scheme.eq_ignore_ascii_case("mqtts")
    }

    /// The topic an MQTT webhook publishes to, before `{event}`, `{job}`
    /// and `{handler}` are filled in.
    pub fn topic_template(&self) -> &str {
        self.topic.as_deref().unwrap_or(DEFAULT_MQTT_TOPIC)
    }

    /// Whether it hears event `event` of a run of `job` in `queue`.
    pub fn wants(&self, event: &str, job: Option<&str>, queue: &str) -> bool {
        let heard = self
            .events
            .iter()
            .any(|e| e == event || (e == "all" && LIFECYCLE_EVENTS.contains(&event)));
        heard
            && (self.jobs.is_empty() || job.is_some_and(|j| self.jobs.iter().any(|n| n == j)))
            && (self.queues.is_empty() || self.queues.iter().any(|q| q == queue))
    }

    /// The execution statuses whose changes it may hear: the store
    /// records a change of a run only to a status some webhook's statuses
    /// hold (and records none while no webhook has any).
    ///
    /// ```
    /// use jobvisor::model::{Status, WebhookSpec};
    /// let hook = WebhookSpec::new("h", "http://127.0.0.1:9/", &["failed"]);
    /// assert_eq!(hook.statuses(), [Status::Failed]);
    /// ```
    pub fn statuses(&self) -> Vec<Status> {
        let mut out: Vec<Status> = Vec::new();
        for e in &self.events {
            let of: &[Status] = match e.as_str() {
                "all" => &Status::ALL,
                "enqueued" => &[Status::Pending, Status::Waiting, Status::Held],
                "started" => &[Status::Running],
                // An attempt that fails, or is interrupted, and is tried
                // again: the row says which once the change is read.
                "retrying" => &[Status::Failed, Status::Cancelled],
                "succeeded" => &[Status::Succeeded],
                "failed" => &[Status::Failed],
                "cancelled" => &[Status::Cancelled],
                "snoozed" => &[Status::Snoozed],
                "skipped" => &[Status::Skipped],
                _ => &[],
            };
            for s in of {
                if !out.contains(s) {
                    out.push(*s);
                }
            }
        }
        out
    }

    /// The spec as the API and listings show it: the URL's path, query and
    /// password hidden (a Slack or Teams URL is its own secret).
    ///
    /// ```
    /// use jobvisor::model::WebhookSpec;
    /// let hook = WebhookSpec::new("chat", "https://hooks.slack.com/services/T0/B0/s3cret", &["failed"]);
    /// assert_eq!(hook.redacted().url, "https://hooks.slack.com/<redacted>");
    /// ```
    pub fn redacted(mut self) -> WebhookSpec {
        self.url = redact_url(&self.url);
        self
    }
}

type Schema = utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>;

fn name_schema() -> Schema {
    super::schema(
        serde_json::json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$",
        "description": "1 to 64 letters, digits, '-', '_' and '.'"}),
    )
}

fn url_schema() -> Schema {
    super::schema(
        serde_json::json!({"type": "string", "maxLength": MAX_URL_CHARS,
        "pattern": "^([Hh][Tt][Tt][Pp][Ss]?|[Mm][Qq][Tt][Tt][Ss]?)://[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:[1-9][0-9]{0,3})?(/[!-~]*)?$",
        "examples": ["https://alerts.example.com/jobvisor", "mqtts://broker.example.com:8883"],
        "description": "An http:// or https:// URL, or an mqtt:// or mqtts:// broker (with no path); shown with its path, query and password redacted"}),
    )
}

fn topic_schema() -> Schema {
    super::schema(
        serde_json::json!({"type": ["string", "null"], "minLength": 1,
        "maxLength": MAX_TOPIC_CHARS, "pattern": "^[^+#\\x00]+$",
        "examples": ["jobvisor/{event}/{job}"],
        "description": "For an mqtt:// or mqtts:// URL: the topic, without wildcards; {event}, {job} and {handler} are filled in"}),
    )
}

fn events_schema() -> Schema {
    let names: Vec<&str> = std::iter::once("all")
        .chain(LIFECYCLE_EVENTS)
        .chain(ALERT_EVENTS)
        .collect();
    super::schema(
        serde_json::json!({"type": "array", "minItems": 1, "maxItems": names.len(),
        "uniqueItems": true, "items": {"type": "string", "enum": names}}),
    )
}

fn filter_schema() -> Schema {
    super::schema(
        serde_json::json!({"type": "array", "maxItems": MAX_WEBHOOK_FILTERS,
        "items": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\x00-\\x1f\\x7f]+$"}}),
    )
}

fn env_var_schema() -> Schema {
    super::schema(serde_json::json!({"type": ["string", "null"],
        "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"}))
}

/// `url` with only its scheme, host and port.
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = u.host_str().unwrap_or_default();
            let bare = matches!(u.path(), "" | "/");
            let rest = if bare && u.query().is_none() && u.password().is_none() {
                ""
            } else {
                super::REDACTED
            };
            format!("{}://{host}{port}/{rest}", u.scheme())
        }
        Err(_) => super::REDACTED.to_string(),
    }
}

/// Checks that `var` (given as `what`) names an environment variable:
/// letters, digits and `_`, not starting with a digit, at most 128.
///
/// ```
/// assert!(jobvisor::model::check_env_name("password_env", "MQTT_PASSWORD").is_ok());
/// assert!(jobvisor::model::check_env_name("password_env", "1X").is_err());
/// ```
pub fn check_env_name(what: &str, var: &str) -> Result<(), String> {
    let mut chars = var.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') || var.len() > 128 {
        return Err(format!(
            "invalid {what} {var:?}: name an environment variable \
             (letters, digits and '_', not starting with a digit)"
        ));
    }
    Ok(())
}

/// Checks an MQTT webhook's topic (a template: `{event}`, `{job}` and
/// `{handler}` are filled in when it publishes).
fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.chars().count() > MAX_TOPIC_CHARS {
        return Err(format!(
            "an MQTT topic has 1 to {MAX_TOPIC_CHARS} characters"
        ));
    }
    if t.contains(['+', '#', '\0']) {
        return Err(format!(
            "invalid MQTT topic {t:?}: an event is published to one topic, with no wildcard (+ or #)"
        ));
    }
    Ok(())
}

/// Whether a webhook may post to `ip`: not a link-local address (where
/// clouds serve their metadata and credentials), not an unspecified one.
///
/// ```
/// use jobvisor::model::webhook_may_reach;
/// assert!(!webhook_may_reach("169.254.169.254".parse().unwrap()));
/// assert!(!webhook_may_reach("::ffff:169.254.169.254".parse().unwrap()));
/// assert!(webhook_may_reach("127.0.0.1".parse().unwrap()));
/// assert!(webhook_may_reach("10.1.2.3".parse().unwrap()));
/// ```
pub fn webhook_may_reach(ip: std::net::IpAddr) -> bool {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            !(v4.is_link_local() || v4.is_unspecified() || v4.is_broadcast())
        }
        std::net::IpAddr::V6(v6) => !(v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80),
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!(
            "the webhook URL is {} characters: at most {MAX_URL_CHARS} are allowed",
            url.chars().count()
        ));
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https" | "mqtt" | "mqtts")
        || u.host_str().is_none_or(str::is_empty)
    {
        return Err(format!(
            "invalid webhook URL {url:?}: use an http:// or https:// URL with a host, \
             or an mqtt:// or mqtts:// broker"
        ));
    }
    if u.scheme().starts_with("mqtt")
        && (!matches!(u.path(), "" | "/") || u.query().is_some() || u.fragment().is_some())
    {
        return Err(format!(
            "invalid webhook URL {url:?}: an MQTT broker's URL is mqtt://[USER@]HOST[:PORT] \
             (give the topic as the topic)"
        ));
    }
    // An address given as the host (in any form the URL parser reads:
    // it writes it back in the usual one).
    let host = u.host_str().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    if let Some(ip) = ip.filter(|ip| !webhook_may_reach(*ip)) {
        return Err(format!(
            "invalid webhook URL {url:?}: {ip} is a link-local address, where no webhook may post"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_cover_every_event_a_webhook_hears() {
        let hook = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["started", "retrying"]);
        assert_eq!(
            hook.statuses(),
            [Status::Running, Status::Failed, Status::Cancelled]
        );
        let all = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["all"]);
        for s in Status::ALL {
            assert!(all.statuses().contains(&s), "{s}");
        }
        // Alerts come from the supervisor, not from a row's change.
        let alerts = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["job.failing"]);
        assert_eq!(alerts.statuses(), []);
    }

    #[test]
    fn all_is_every_lifecycle_event_but_no_alert() {
        let hook = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["all"]);
        assert!(LIFECYCLE_EVENTS.iter().all(|e| hook.wants(e, None, "q")));
        assert!(!hook.wants("job.failing", Some("j"), "q"));
    }

    #[test]
    fn a_webhook_narrowed_to_jobs_does_not_hear_ad_hoc_runs() {
        let mut hook = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["failed"]);
        hook.jobs = vec!["a".into()];
        hook.queues = vec!["fast".into()];
        assert!(hook.wants("failed", Some("a"), "fast"));
        assert!(!hook.wants("failed", None, "fast"));
        assert!(!hook.wants("failed", Some("a"), "slow"));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let ok = WebhookSpec::new("h", "http://127.0.0.1:9/x", &["failed"]);
        assert_eq!(ok.check(), Ok(()));
        type Change = fn(&mut WebhookSpec);
        let cases: [(&str, Change); 10] = [
            ("invalid webhook name", |h| h.name = "a b".into()),
            ("http:// or https://", |h| {
                h.url = "file:///etc/passwd".into()
            }),
            ("invalid webhook URL", |h| h.url = "not a url".into()),
            ("at least one event", |h| h.events.clear()),
            ("given twice", |h| h.events.push("failed".into())),
            ("--secret-env", |h| h.secret_env = Some("1X".into())),
            ("at most 2048", |h| {
                h.url = format!("http://h/{}", "a".repeat(3000))
            }),
            ("link-local", |h| {
                h.url = "http://169.254.169.254/latest".into()
            }),
            ("link-local", |h| h.url = "http://2852039166/".into()),
            ("link-local", |h| h.url = "http://[fe80::1]/".into()),
        ];
        for (want, change) in cases {
            let mut h = ok.clone();
            change(&mut h);
            let e = h.check().unwrap_err();
            assert!(e.contains(want), "{e} lacks {want}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn redaction_keeps_only_where_it_goes() {
        let h = WebhookSpec::new(
            "h",
            "https://user:pw@example.com:8443/hook?token=x",
            &["failed"],
        );
        assert_eq!(h.redacted().url, "https://example.com:8443/<redacted>");
        let h = WebhookSpec::new("h", "http://example.com", &["failed"]);
        assert_eq!(h.redacted().url, "http://example.com/");
    }
}
