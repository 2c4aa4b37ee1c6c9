//! What a service declares (a configuration file's handlers, jobs, queues
//! and retention) and how it is brought into the database: added, changed,
//! or removed when an earlier declaration had it and this one does not.

use crate::model::{HandlerSpec, JobSpec};
use crate::store::{Reads, Store, StoreError};
use jobvisor_worker::builtins;
use std::collections::HashMap;
use std::time::Duration;

/// A declared queue's settings.
#[derive(Clone, Debug, PartialEq)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// use jobvisor::service::declare::QueueDecl;
/// let mail = QueueDecl { name: "mail".into(), limit: Some(4), key_limit: Some(1), rate: Some("60/1m".parse().unwrap()), paused: None };
/// # let _ = mail;
/// ```
#[allow(missing_docs)]
pub struct QueueDecl {
    pub name: String,
    /// Most running at once (`None`: no limit of its own).
    pub limit: Option<u32>,
    /// Most running per concurrency key (`None`: no key limit).
    pub key_limit: Option<u32>,
    /// Its rate limit (`None`: none).
    pub rate: Option<crate::model::Rate>,
    /// `None` leaves the pause state as it is.
    pub paused: Option<bool>,
}

/// A declared job.
#[derive(Clone, Debug)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// use jobvisor::service::declare::{Declarations, JobDecl, QueueDecl};
/// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
/// let mut d = Declarations::default();
/// d.queues.push(QueueDecl { name: "mail".into(), limit: Some(4), key_limit: None, rate: None, paused: None });
/// d.jobs.push(JobDecl {
///     spec: JobSpec::new("digest", "noop", ScheduleSpec::Cron { expr: "0 7 * * *".into(), tz: "UTC".into() }),
///     fixed_start: false,
///     line: 12,
/// });
/// assert_eq!(d.jobs[0].line, 12);
/// ```
#[allow(missing_docs)]
pub struct JobDecl {
    pub spec: JobSpec,
    /// Whether the declaration fixes its schedule's start (`start`/`at`);
    /// if not, an unchanged job keeps the anchor it has, so that applying
    /// the same declaration again is not a change.
    pub fixed_start: bool,
    /// Where it was declared (a file's line), for messages.
    pub line: usize,
}

/// How long ended executions and their logs are kept when nothing says
/// otherwise: 30 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Everything a service declares.
///
/// ```
/// use jobvisor::service::declare::{Declarations, JobDecl, QueueDecl};
/// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
/// let mut d = Declarations::default();
/// d.queues.push(QueueDecl { name: "mail".into(), limit: Some(4), key_limit: None, rate: None, paused: None });
/// d.jobs.push(JobDecl {
///     spec: JobSpec::new("digest", "noop", ScheduleSpec::Cron { expr: "0 7 * * *".into(), tz: "UTC".into() }),
///     fixed_start: false,
///     line: 12,
/// });
/// d.retention = Some(std::time::Duration::from_secs(7 * 24 * 3600));
/// assert_eq!(d.handlers.len(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct Declarations {
    /// Queue settings.
    pub queues: Vec<QueueDecl>,
    /// Executions finished longer ago than this are pruned, with their
    /// logs ([`DEFAULT_RETENTION`] unless said otherwise; `None` keeps
    /// everything).
    pub retention: Option<Duration>,
    /// How often retention runs.
    pub retention_every: Duration,
    /// Retention of particular jobs, instead of `retention`.
    pub job_retention: HashMap<String, Duration>,
    /// Declared handlers.
    pub handlers: Vec<HandlerSpec>,
    /// Declared jobs.
    pub jobs: Vec<JobDecl>,
    /// Declared webhooks (and MQTT publications, which are webhooks to a
    /// broker).
    pub webhooks: Vec<crate::model::WebhookSpec>,
    /// MQTT subscriptions, whose messages become runs.
    pub mqtt: Vec<super::mqtt::MqttSubscription>,
    /// The file that declares them, named when a command would change one.
    pub file: Option<String>,
}

impl Default for Declarations {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            retention: Some(DEFAULT_RETENTION),
            retention_every: Duration::from_secs(60),
            job_retention: HashMap::new(),
            handlers: Vec::new(),
            jobs: Vec::new(),
            webhooks: Vec::new(),
            mqtt: Vec::new(),
            file: None,
        }
    }
}

/// Why declarations could not be applied.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// use jobvisor::service::declare::{check_handlers, Declarations, JobDecl, SyncError};
/// use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
/// let mut d = Declarations::default();
/// d.jobs.push(JobDecl { spec: JobSpec::new("j", "missing", ScheduleSpec::Daemon), fixed_start: false, line: 3 });
/// let e = check_handlers(&d, None).await.unwrap_err();
/// assert!(matches!(e, SyncError::UnknownHandler { .. }), "{e}");
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A job names a handler that is neither declared, built in, nor
    /// registered.
    #[error("job {job:?}: unknown handler {handler:?}")]
    UnknownHandler {
        /// The job.
        job: String,
        /// The handler it names.
        handler: String,
        /// Where the job was declared.
        line: usize,
    },
    /// A job was refused.
    #[error("job {job:?}: {source}")]
    Job {
        /// The job.
        job: String,
        /// Why.
        source: crate::Error,
    },
    /// A webhook was refused.
    #[error("webhook {webhook:?}: {reason}")]
    Webhook {
        /// The webhook.
        webhook: String,
        /// Why.
        reason: String,
    },
    /// The database failed.
    #[error("database")]
    Store(#[from] StoreError),
}

/// Checks that every job's handler is declared, built in, or registered in
/// `store` (when there is one).
pub async fn check_handlers(d: &Declarations, store: Option<&dyn Reads>) -> Result<(), SyncError> {
    let mut known: Vec<String> = d.handlers.iter().map(|h| h.name.clone()).collect();
    if let Some(store) = store {
        known.extend(store.handlers().await?.into_iter().map(|h| h.name));
    }
    for j in &d.jobs {
        let h = &j.spec.handler;
        if !known.contains(h) && !builtins::known(h) {
            return Err(SyncError::UnknownHandler {
                job: j.spec.name.clone(),
                handler: h.clone(),
                line: j.line,
            });
        }
    }
    Ok(())
}

/// Brings the database in line with `d`: declared handlers and jobs are
/// added or changed, those an earlier declaration had and this one does
/// not are removed, queue settings applied. One log line per change.
/// Returns the number of changes.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn sync(store: &dyn Store, d: &Declarations) -> Result<usize, SyncError> {
    let mut changes = 0;
    // Check every job against the handlers it will find before writing.
    check_handlers(d, Some(store)).await?;
    let job_err = |job: &str| {
        let job = job.to_string();
        move |source| SyncError::Job { job, source }
    };
    let now = crate::model::now_micros();
    for spec in &d.handlers {
        let old = store.handler(&spec.name).await?;
        if old.as_ref() != Some(spec) {
            store.put_handler(spec, now).await?;
            let what = if old.is_some() { "changed" } else { "added" };
            tracing::info!(handler = %spec.name, "config: handler {what}");
            changes += 1;
        }
    }
    let builtin = |n: &str| builtins::known(n);
    for decl in &d.jobs {
        let mut spec = decl.spec.clone();
        let old = store.job(&spec.name).await?;
        if let Some(old) = &old {
            if !decl.fixed_start {
                crate::job::keep_anchor(&mut spec, &old.spec);
            }
            let mut resolved = spec.clone();
            crate::job::validate(store, &builtin, &mut resolved)
                .await
                .map_err(job_err(&spec.name))?;
            if resolved == old.spec {
                continue;
            }
            // Changed in place: its history and counts stay with it.
            crate::job::replace(store, &builtin, spec.clone())
                .await
                .map_err(job_err(&spec.name))?;
        } else {
            crate::job::add(store, &builtin, spec.clone())
                .await
                .map_err(job_err(&spec.name))?;
        }
        let what = if old.is_some() { "changed" } else { "added" };
        tracing::info!(job = %spec.name, "config: job {what}");
        changes += 1;
    }
    let jobs: Vec<String> = d.jobs.iter().map(|j| j.spec.name.clone()).collect();
    for name in store.declared("job").await? {
        if !jobs.contains(&name) && store.job(&name).await?.is_some() {
            crate::job::remove(store, &name)
                .await
                .map_err(job_err(&name))?;
            tracing::info!(job = %name, "config: job removed");
            changes += 1;
        }
    }
    store.set_declared("job", &jobs).await?;
    let handlers: Vec<String> = d.handlers.iter().map(|h| h.name.clone()).collect();
    for name in store.declared("handler").await? {
        if !handlers.contains(&name) && store.remove_handler(&name).await? {
            tracing::info!(handler = %name, "config: handler removed");
            changes += 1;
        }
    }
    store.set_declared("handler", &handlers).await?;
    changes += sync_webhooks(store, &d.webhooks).await?;
    let file: Vec<String> = d.file.iter().cloned().collect();
    store
        .set_declared(crate::job::DECLARING_FILE, &file)
        .await?;
    let queues = store.queues().await?;
    for q in &d.queues {
        let current = queues.iter().find(|c| c.name == q.name);
        let limits_changed = current
            .is_none_or(|c| (c.max_running, c.key_limit, c.rate) != (q.limit, q.key_limit, q.rate));
        let paused_changed = q
            .paused
            .is_some_and(|p| current.is_none_or(|c| c.paused != p));
        if limits_changed || paused_changed {
            let change = crate::store::QueueChange {
                limit: Some(q.limit),
                key_limit: Some(q.key_limit),
                rate: Some(q.rate),
                paused: q.paused,
            };
            store.set_queue(&q.name, &change).await?;
            tracing::info!(queue = %q.name, limit = ?q.limit, key_limit = ?q.key_limit,
                rate = ?q.rate.map(|r| r.to_string()), paused = ?q.paused, "config: queue set");
            changes += 1;
        }
    }
    Ok(changes)
}

/// Brings the webhooks in line with the declared ones; returns the number
/// of changes.
async fn sync_webhooks(
    store: &dyn Store,
    declared: &[crate::model::WebhookSpec],
) -> Result<usize, SyncError> {
    let mut changes = 0;
    let now = crate::model::now_micros();
    for spec in declared {
        let refused = |reason: String| SyncError::Webhook {
            webhook: spec.name.clone(),
            reason,
        };
        spec.check().map_err(refused)?;
        let old = store.webhook(&spec.name).await?;
        if old.as_ref() == Some(spec) {
            continue;
        }
        if store.put_webhook(spec, now).await? == crate::store::WebhookPut::Full {
            return Err(refused(format!(
                "there are {} webhooks already",
                crate::model::MAX_WEBHOOKS
            )));
        }
        let what = if old.is_some() { "changed" } else { "added" };
        tracing::info!(webhook = %spec.name, "config: webhook {what}");
        changes += 1;
    }
    let names: Vec<String> = declared.iter().map(|w| w.name.clone()).collect();
    for name in store.declared("webhook").await? {
        if !names.contains(&name) && store.remove_webhook(&name).await? {
            tracing::info!(webhook = %name, "config: webhook removed");
            changes += 1;
        }
    }
    store.set_declared("webhook", &names).await?;
    Ok(changes)
}
