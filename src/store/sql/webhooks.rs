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
        Sql::<D>::new(
            "INSERT INTO webhooks (name, spec, created_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (name) DO UPDATE SET \
             spec = excluded.spec, updated_at = excluded.updated_at",
        )
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
        let hooks = Sql::<D>::new("SELECT spec FROM webhooks ORDER BY name")
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| {
                Fields::<D>::new(r, "webhooks")
                    .json::<WebhookSpec>("spec")?
                    .ok_or_else(|| fields::corrupt("webhooks", "spec", "null"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut deliveries = deliver(&changes, &hooks);
        // Each after the last delivery of its webhook and subject that has
        // yet to end: in this batch, or stored.
        let mut last: HashMap<(String, String), Uuid> = HashMap::new();
        for d in &mut deliveries {
            let key = (d.webhook.clone(), d.subject.clone());
            let parent = match last.get(&key) {
                Some(p) => Some(*p),
                None => last_delivery::<D>(&mut tx, &d.webhook, &d.subject).await?,
            };
            if let Some(p) = parent {
                d.run.after = vec![p];
                d.run.after_policy = AfterPolicy::Finished;
            }
            last.insert(key, d.run.id);
        }
        let runs: Vec<NewExecution> = deliveries.into_iter().map(|d| d.run).collect();
        let mut ends = EndTally::default();
        if !runs.is_empty() {
            enqueue_in::<D>(&mut tx, &mut ends, &runs, now).await?;
        }
        let mut q = Sql::<D>::new("DELETE FROM event_outbox WHERE seq IN (");
        q.push_list(seqs.iter().copied()).push(")");
        q.execute(&mut tx).await?;
        self.commit(tx, ends).await?;
        Ok((seqs.len(), runs.iter().map(|r| r.id).collect()))
    }
}

/// Makes the triggers on `executions` record the changes to the statuses
/// the webhooks hear now, and no others; with none, there are no triggers.
/// A change to a status no webhook hears runs no trigger at all: the
/// statuses are in each trigger's own condition.
async fn record_changes<D: Dialect>(tx: &mut Conn<D>) -> Result<(), StoreError> {
    let specs = Sql::<D>::new("SELECT spec FROM webhooks")
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Fields::<D>::new(r, "webhooks")
                .json::<WebhookSpec>("spec")?
                .ok_or_else(|| fields::corrupt("webhooks", "spec", "null"))
        })
        .collect::<Result<Vec<_>, _>>()?;
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

/// The newest delivery of `webhook` about `subject` that has yet to end.
/// Looked up from the subject's meta rows (a handful), not the webhook's
/// (every delivery it ever made).
async fn last_delivery<D: Dialect>(
    tx: &mut Conn<D>,
    webhook: &str,
    subject: &str,
) -> Result<Option<Uuid>, StoreError> {
    let row = Sql::<D>::new(
        "SELECT s.execution_id AS id FROM execution_meta s \
         CROSS JOIN execution_meta w CROSS JOIN executions x \
         WHERE s.key = 'subject' AND s.value = $2 \
           AND w.key = 'webhook' AND w.value = $1 AND w.execution_id = s.execution_id \
           AND x.id = s.execution_id AND x.status IN ('waiting', 'pending', 'held', 'running') \
         ORDER BY s.execution_id DESC LIMIT 1",
    )
    .bind(webhook)
    .bind(subject)
    .fetch_optional(tx)
    .await?;
    row.map(|r| Fields::<D>::new(&r, "execution_meta").get("id"))
        .transpose()
}
