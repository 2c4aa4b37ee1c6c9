//! Webhooks and their outbox: the changes the database recorded for them
//! (see the migration `webhooks`), turned into deliveries.

use super::enqueue::enqueue_in;
use super::*;
use crate::model::{WebhookSpec, MAX_WEBHOOKS};

impl<D: Dialect> SqlStore<D> {
    /// [`Commands::put_webhook`], as one transaction.
    pub(super) async fn put_webhook_once(
        &self,
        spec: &WebhookSpec,
        now: Micros,
    ) -> Result<WebhookPut, StoreError> {
        let mut tx = self.begin().await?;
        lock_webhooks::<D>(&mut tx).await?;
        let row = Sql::<D>::new(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN name = $1 THEN 1 ELSE 0 END) AS same FROM webhooks",
        )
        .bind(spec.name.as_str())
        .fetch_optional(&mut tx)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
        let f = Fields::<D>::new(&row, "webhooks");
        let (n, same) = (f.int("n")?, f.get::<Option<i64>>("same")?.unwrap_or(0));
        if same == 0 && n >= MAX_WEBHOOKS as i64 {
            return Ok(WebhookPut::Full);
        }
        Sql::<D>::new(format!(
            "INSERT INTO webhooks (name, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $3){}spec = {}, updated_at = {}",
            D::upsert("name"),
            D::excluded("spec"),
            D::excluded("updated_at")
        ))
        .bind(spec.name.as_str())
        .bind(json_text(spec))
        .bind(now)
        .execute(&mut tx)
        .await?;
        record_changes::<D>(&mut tx).await?;
        tx.commit().await?;
        Ok(if same == 0 {
            WebhookPut::Added
        } else {
            WebhookPut::Replaced
        })
    }

    /// [`Commands::remove_webhook`], as one transaction.
    pub(super) async fn remove_webhook_once(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        lock_webhooks::<D>(&mut tx).await?;
        let removed = Sql::<D>::new("DELETE FROM webhooks WHERE name = $1")
            .bind(name)
            .execute(&mut tx)
            .await?
            > 0;
        if removed {
            record_changes::<D>(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// [`Engine::deliver_changes`], as one transaction.
    pub(super) async fn deliver_once(
        &self,
        limit: usize,
        now: Micros,
        deliver: &Deliver,
    ) -> Result<(usize, Vec<Uuid>), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(lock) = D::DELIVER_LOCK {
            Sql::<D>::new(lock).execute(&mut tx).await?;
        }
        let rows = Sql::<D>::new(
            "SELECT o.seq AS change_seq, o.status AS change_status, \
             o.execution_id AS change_of, x.* \
             FROM event_outbox o LEFT JOIN executions x ON x.id = o.execution_id \
             ORDER BY o.seq LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&mut tx)
        .await?;
        if rows.is_empty() {
            return Ok((0, Vec::new()));
        }
        let mut seqs = Vec::with_capacity(rows.len());
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let f = Fields::<D>::new(row, "event_outbox");
            seqs.push(f.int("change_seq")?);
            let execution_id: Uuid = f.get("change_of")?;
            let found: Option<Uuid> = f.get("id")?;
            changes.push(Change {
                status: f.parse("change_status")?,
                execution: match found {
                    Some(_) => Some(Fields::<D>::new(row, "executions").execution()?),
                    None => None,
                },
                execution_id,
            });
        }
        let hooks = read_webhooks::<D>(&mut tx).await?;
        let deliveries = deliver(&changes, &hooks);
        let mut ends = EndTally::default();
        let runs = insert_deliveries::<D>(&mut tx, &mut ends, deliveries, now).await?;
        let mut q = Sql::<D>::new("DELETE FROM event_outbox WHERE seq IN (");
        q.push_list(seqs.iter().copied()).push(")");
        q.execute(&mut tx).await?;
        self.commit(tx, ends).await?;
        Ok((seqs.len(), runs))
    }

    /// [`Engine::alert_pass`], as one transaction.
    pub(super) async fn alert_once(
        &self,
        now: Micros,
        stale: Micros,
        decide: &DecideAlerts,
    ) -> Result<(usize, usize), StoreError> {
        let mut tx = self.begin().await?;
        if let Some(lock) = D::DELIVER_LOCK {
            Sql::<D>::new(lock).execute(&mut tx).await?;
        }
        let facts = alert_facts::<D>(&mut tx, now, stale).await?;
        let hooks = read_webhooks::<D>(&mut tx).await?;
        let changes = decide(&facts, &hooks);
        for i in &changes.open {
            Sql::<D>::new(format!(
                "{} INTO alerts (kind, subject, opened_at, message, job, queue) \
                 VALUES ($1, $2, $3, $4, $5, $6){}",
                D::OR_NOTHING.0,
                D::OR_NOTHING.1
            ))
            .bind(i.kind.as_str())
            .bind(i.subject.as_str())
            .bind(i.opened_at.0)
            .bind(i.message.as_str())
            .bind(i.job.as_deref())
            .bind(i.queue.as_deref())
            .execute(&mut tx)
            .await?;
        }
        for (kind, subject) in &changes.close {
            Sql::<D>::new("DELETE FROM alerts WHERE kind = $1 AND subject = $2")
                .bind(kind.as_str())
                .bind(subject.as_str())
                .execute(&mut tx)
                .await?;
        }
        let mut ends = EndTally::default();
        insert_deliveries::<D>(&mut tx, &mut ends, changes.deliveries, now).await?;
        self.commit(tx, ends).await?;
        Ok((changes.open.len(), changes.close.len()))
    }
}

/// Lets one transaction at a time change webhooks: each remakes the
/// triggers from every webhook it sees, and one that did not see another's
/// change would make them without it (nor count it against the limit).
/// SQLite's write transactions are one at a time already.
async fn lock_webhooks<D: Dialect>(tx: &mut Conn<D>) -> Result<(), StoreError> {
    if let Some(lock) = D::WEBHOOKS_LOCK {
        Sql::<D>::new(lock).execute(tx).await?;
    }
    Ok(())
}

/// Every webhook, within `tx`.
async fn read_webhooks<D: Dialect>(tx: &mut Conn<D>) -> Result<Vec<WebhookSpec>, StoreError> {
    Sql::<D>::new("SELECT spec FROM webhooks ORDER BY name")
        .fetch_all(tx)
        .await?
        .iter()
        .map(|r| Fields::<D>::new(r, "webhooks").webhook())
        .collect()
}

/// Inserts `deliveries`, each after the last delivery of its webhook and
/// subject that has yet to end (in this batch, or stored); their ids.
async fn insert_deliveries<D: Dialect>(
    tx: &mut Conn<D>,
    ends: &mut EndTally,
    mut deliveries: Vec<Delivery>,
    now: Micros,
) -> Result<Vec<Uuid>, StoreError> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let mut last: HashMap<(String, String), Uuid> = HashMap::new();
    for d in &mut deliveries {
        let key = (d.webhook.clone(), d.subject.clone());
        let parent = match last.get(&key) {
            Some(p) => Some(*p),
            None => last_delivery::<D>(tx, &d.webhook, &d.subject).await?,
        };
        if let Some(p) = parent {
            d.run.after = vec![p];
            d.run.after_policy = AfterPolicy::Finished;
        }
        last.insert(key, d.run.id);
    }
    let runs: Vec<NewExecution> = deliveries.into_iter().map(|d| d.run).collect();
    enqueue_in::<D>(tx, ends, &runs, now).await?;
    Ok(runs.iter().map(|r| r.id).collect())
}

/// What an alert pass looks at, read within `tx`.
async fn alert_facts<D: Dialect>(
    tx: &mut Conn<D>,
    now: Micros,
    stale: Micros,
) -> Result<AlertFacts, StoreError> {
    let mut facts = AlertFacts::default();
    let rows = Sql::<D>::new("SELECT * FROM jobs WHERE alerts IS NOT NULL ORDER BY name")
        .fetch_all(&mut *tx)
        .await?;
    for row in &rows {
        let f = Fields::<D>::new(row, "jobs");
        let job = f.job()?;
        let created_at = f.int("created_at")?;
        let a = job.spec.alerts.clone();
        let mut last_ends = Vec::new();
        if let Some(n) = a.after_failures {
            let q = Sql::<D>::new(
                "SELECT status FROM executions WHERE job = $1 AND next_id IS NULL \
                 AND status IN ('succeeded', 'failed', 'cancelled', 'skipped') \
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(job.spec.name.as_str())
            .bind(i64::from(n));
            for r in q.fetch_all(&mut *tx).await? {
                last_ends.push(Fields::<D>::new(&r, "executions").parse("status")?);
            }
        }
        let mut oldest_unstarted = None;
        if a.late_ms.is_some() {
            let q = Sql::<D>::new(
                "SELECT MIN(run_at) AS due FROM executions WHERE job = $1 \
                 AND status IN ('waiting', 'pending', 'held') AND occurrence IS NOT NULL",
            )
            .bind(job.spec.name.as_str());
            if let Some(r) = q.fetch_optional(&mut *tx).await? {
                oldest_unstarted = Fields::<D>::new(&r, "executions").get("due")?;
            }
        }
        let mut last_success = None;
        if a.expect_every_ms.is_some() {
            let q = Sql::<D>::new(
                "SELECT finished_at FROM executions WHERE job = $1 AND status = 'succeeded' \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(job.spec.name.as_str());
            if let Some(r) = q.fetch_optional(&mut *tx).await? {
                last_success = Fields::<D>::new(&r, "executions").get("finished_at")?;
            }
        }
        facts.jobs.push(JobFacts {
            job,
            created_at,
            last_ends,
            oldest_unstarted,
            last_success,
        });
    }
    let q = Sql::<D>::new(
        // Driven by the running rows' partial index.
        "SELECT e.* FROM executions e LEFT JOIN nodes n ON n.id = e.node \
         WHERE e.id IN (SELECT id FROM executions WHERE status = 'running') \
         AND e.status = 'running' AND e.handler <> 'webhook' AND ( \
           (e.timeout_ms IS NOT NULL AND e.started_at + e.timeout_ms * 1000 < $1) \
           OR n.id IS NULL OR n.heartbeat_at < $2 OR n.stopped_at IS NOT NULL) \
         ORDER BY e.id LIMIT 1000",
    )
    .bind(now)
    .bind(stale);
    for r in q.fetch_all(&mut *tx).await? {
        facts
            .stuck
            .push(Fields::<D>::new(&r, "executions").execution()?);
    }
    for r in Sql::<D>::new("SELECT * FROM alerts ORDER BY opened_at")
        .fetch_all(&mut *tx)
        .await?
    {
        facts.open.push(Fields::<D>::new(&r, "alerts").incident()?);
    }
    Ok(facts)
}

/// Makes the triggers on `executions` record the changes to the statuses
/// the webhooks hear now, and no others; with none, there are no triggers.
/// A change to a status no webhook hears runs no trigger at all: the
/// statuses are in each trigger's own condition.
async fn record_changes<D: Dialect>(tx: &mut Conn<D>) -> Result<(), StoreError> {
    let specs = read_webhooks::<D>(tx).await?;
    let mut heard: Vec<Status> = Vec::new();
    for s in specs.iter().flat_map(WebhookSpec::statuses) {
        if !heard.contains(&s) {
            heard.push(s);
        }
    }
    heard.sort();
    // An insert enqueues a run (or, on PostgreSQL, moves one into the
    // partition of ended rows); an update claims or ends one. A release or
    // a parent's end (to pending) is no event.
    let list = |of: &[Status]| {
        of.iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let updated: Vec<Status> = heard
        .iter()
        .copied()
        .filter(|s| !matches!(s, Status::Pending | Status::Waiting | Status::Held))
        .collect();
    for statement in D::record_triggers(
        (!heard.is_empty()).then(|| list(&heard)).as_deref(),
        (!updated.is_empty()).then(|| list(&updated)).as_deref(),
    ) {
        Sql::<D>::new(statement).execute(&mut *tx).await?;
    }
    Ok(())
}

/// The last delivery of `webhook` about `subject` that has yet to end:
/// the one no other waits on. Not the newest by id: a retry is a new
/// execution, newer than the deliveries already waiting on it, and a
/// delivery put after it would race them. Looked up from the subject's
/// meta rows (a handful), not the webhook's (every delivery it ever made).
async fn last_delivery<D: Dialect>(
    tx: &mut Conn<D>,
    webhook: &str,
    subject: &str,
) -> Result<Option<Uuid>, StoreError> {
    let row = Sql::<D>::new(
        "SELECT s.execution_id AS id FROM execution_meta s \
         CROSS JOIN execution_meta w CROSS JOIN executions x \
         WHERE s.\"key\" = 'subject' AND s.value = $2 \
           AND w.\"key\" = 'webhook' AND w.value = $1 AND w.execution_id = s.execution_id \
           AND x.id = s.execution_id AND x.status IN ('waiting', 'pending', 'held', 'running') \
           AND NOT EXISTS (SELECT 1 FROM dependencies d WHERE d.parent_id = x.id) \
         ORDER BY s.execution_id DESC LIMIT 1",
    )
    .bind(webhook)
    .bind(subject)
    .fetch_optional(tx)
    .await?;
    row.map(|r| Fields::<D>::new(&r, "execution_meta").get("id"))
        .transpose()
}
