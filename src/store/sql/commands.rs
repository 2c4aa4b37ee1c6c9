use super::cancel::cancel_ids;
use super::cancel::cancel_unstarted;
use super::cancel::settle;
use super::ends::schedule_retry;
use super::enqueue::enqueue_in;
use super::fields::Fields;
use super::keys::take_key;
use super::tally::EndTally;
use super::*;

#[async_trait]
impl<D: Dialect> Commands for SqlStore<D> {
    async fn put_handler(&self, spec: &HandlerSpec, now: Micros) -> Result<(), StoreError> {
        let json = serde_json::to_string(spec).expect("handler specs serialize");
        self.write(
            Sql::new(format!(
                "INSERT INTO handlers (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $3){}\
                 spec = {}, updated_at = {}",
                D::upsert("name"),
                D::excluded("spec"),
                D::excluded("updated_at")
            ))
            .bind(spec.name.as_str())
            .bind(json)
            .bind(now),
        )
        .await?;
        Ok(())
    }

    async fn remove_handler(&self, name: &str) -> Result<bool, StoreError> {
        let q = Sql::new("DELETE FROM handlers WHERE name = $1").bind(name);
        Ok(self.write(q).await? > 0)
    }

    async fn put_webhook(
        &self,
        spec: &crate::model::WebhookSpec,
        now: Micros,
    ) -> Result<WebhookPut, StoreError> {
        self.put_webhook_once(spec, now).await
    }

    async fn remove_webhook(&self, name: &str) -> Result<bool, StoreError> {
        self.remove_webhook_once(name).await
    }

    async fn enqueue(
        &self,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError> {
        retry_moved(|| enqueue_all(self, None, execs, now)).await
    }

    async fn enqueue_workflow(
        &self,
        workflow: &NewWorkflow,
        execs: &[NewExecution],
        now: Micros,
    ) -> Result<Vec<Enqueued>, StoreError> {
        retry_moved(|| enqueue_all(self, Some(workflow), execs, now)).await
    }

    async fn cancel_workflow(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<Option<WorkflowCancel>, StoreError> {
        retry_moved(|| async move {
            let mut tx = self.begin().await?;
            let found = Sql::<D>::new(
                "UPDATE workflows SET cancelled_at = COALESCE(cancelled_at, $2) WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&mut tx)
            .await?;
            if found == 0 {
                return Ok(None);
            }
            let mut ids = Vec::new();
            let q = Sql::<D>::new(
                "SELECT id FROM executions WHERE workflow_id = $1 \
                 AND status IN ('pending', 'waiting', 'held', 'running') ORDER BY id",
            );
            for row in q.bind(id).fetch_all(&mut tx).await? {
                ids.push(D::get::<Uuid>(&row, 0)?);
            }
            let mut ends = EndTally::default();
            let done = cancel_ids::<D>(&mut tx, &mut ends, &ids, reason, now).await?;
            self.commit(tx, ends).await?;
            Ok(Some(done))
        })
        .await
    }

    async fn cancel_many(
        &self,
        ids: &[Uuid],
        reason: &str,
        now: Micros,
    ) -> Result<WorkflowCancel, StoreError> {
        retry_moved(|| async move {
            let mut tx = self.begin().await?;
            let mut ends = EndTally::default();
            let done = cancel_ids::<D>(&mut tx, &mut ends, ids, reason, now).await?;
            self.commit(tx, ends).await?;
            Ok(done)
        })
        .await
    }

    async fn hold(&self, id: Uuid, hold: bool) -> Result<HoldRequest, StoreError> {
        retry_moved(|| self.hold_once(id, hold)).await
    }

    async fn retry(&self, id: Uuid, now: Micros) -> Result<RetryRequest, StoreError> {
        retry_moved(|| async move {
            let mut tx = self.begin().await?;
            let q = Sql::<D>::new(format!(
                "SELECT status, next_id, attempt, max_attempts, unique_key, after_policy \
                 FROM executions WHERE id = $1{}",
                D::FOR_UPDATE
            ));
            let Some(row) = q.bind(id).fetch_optional(&mut tx).await? else {
                return Ok(RetryRequest::NotFound);
            };
            let row = Fields::<D>::new(&row, "executions");
            let status: Status = row.parse("status")?;
            if let Some(next) = row.get::<Option<Uuid>>("next_id")? {
                return Ok(RetryRequest::AlreadyRetried(next));
            }
            match status {
                Status::Failed | Status::Cancelled => {}
                Status::Succeeded => return Ok(RetryRequest::Succeeded),
                other => return Ok(RetryRequest::NotEnded(other)),
            }
            let attempt = row.int("attempt")? as u32 + 1;
            let next = crate::model::Retry {
                attempt,
                max_attempts: (row.int("max_attempts")? as u32).max(attempt),
                run_at: now,
                snooze: false,
            };
            let new_id = Uuid::now_v7();
            if let Some(key) = row.get::<Option<String>>("unique_key")? {
                match take_key::<D>(&mut tx, &key, new_id, now).await? {
                    None => {}
                    // Held (--unique-for) since this very attempt ended: the
                    // retry takes it over.
                    Some(holder) if holder == id => {
                        Sql::<D>::new(
                            "UPDATE unique_keys SET execution_id = $2, held_until = NULL \
                             WHERE \"key\" = $1 AND execution_id = $3",
                        )
                        .bind(key.as_str())
                        .bind(new_id)
                        .bind(id)
                        .execute(&mut tx)
                        .await?;
                    }
                    Some(holder) => return Ok(RetryRequest::KeyHeld(holder)),
                }
            }
            schedule_retry::<D>(&mut tx, id, next, now, new_id).await?;
            if row.get::<Option<String>>("after_policy")?.is_some() {
                // It reads its parents' outputs again.
                Sql::<D>::new(
                    "INSERT INTO dependencies (child_id, parent_id) \
                     SELECT $2, parent_id FROM dependencies WHERE child_id = $1",
                )
                .bind(id)
                .bind(new_id)
                .execute(&mut tx)
                .await?;
            }
            D::notify(&mut tx, "work").await?;
            tx.commit().await?;
            Ok(RetryRequest::Retried(new_id))
        })
        .await
    }

    async fn request_cancel(
        &self,
        id: Uuid,
        reason: &str,
        now: Micros,
    ) -> Result<CancelRequest, StoreError> {
        retry_moved(|| async move {
            let mut tx = self.begin().await?;
            let q = Sql::<D>::new(format!(
                "SELECT status FROM executions WHERE id = $1{}",
                D::FOR_UPDATE
            ));
            let Some(row) = q.bind(id).fetch_optional(&mut tx).await? else {
                return Ok(CancelRequest::NotFound);
            };
            let mut ends = EndTally::default();
            let outcome = match Fields::<D>::new(&row, "executions").parse("status")? {
                Status::Pending | Status::Waiting | Status::Held => {
                    let item = [(id, "cancelled before it started".to_string())];
                    let ended =
                        cancel_unstarted::<D>(&mut tx, &mut ends, &item, Some(reason), now).await?;
                    let ended = ended
                        .into_iter()
                        .map(|id| (id, Status::Cancelled))
                        .collect();
                    settle::<D>(&mut tx, &mut ends, ended, now).await?;
                    CancelRequest::CancelledPending
                }
                Status::Running => {
                    Sql::<D>::new(
                        "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
                         cancel_reason = COALESCE(cancel_reason, $3) WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(reason)
                    .execute(&mut tx)
                    .await?;
                    D::notify(&mut tx, "cancel").await?;
                    CancelRequest::Requested
                }
                done => CancelRequest::AlreadyFinished(done),
            };
            self.commit(tx, ends).await?;
            Ok(outcome)
        })
        .await
    }

    async fn insert_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        // A job may bring a per-job cap: claims look at once.
        write_job(
            self,
            format!(
                "{} INTO jobs (name, handler, mode, payload, kind, schedule, priority, \
             queue, retries, backoff_ms, timeout_ms, overlap, misfire, max_parallel, max_runs, \
             start_at, end_at, paused, chain, concurrency_key, description, meta, tags, \
             \"condition\", condition_mode, keep_last, alerts, next_run_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $29){}",
                D::OR_NOTHING.0,
                D::OR_NOTHING.1
            ),
            spec,
            next_run_at,
            now,
        )
        .await
    }

    async fn replace_job(
        &self,
        spec: &JobSpec,
        next_run_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        // The scheduler's passes are fenced on next_run_at: one that read
        // the old definition and would write after this no longer applies.
        write_job(
            self,
            "UPDATE jobs SET handler = $2, mode = $3, payload = $4, kind = $5, schedule = $6, \
             priority = $7, queue = $8, retries = $9, backoff_ms = $10, timeout_ms = $11, \
             overlap = $12, misfire = $13, max_parallel = $14, max_runs = $15, start_at = $16, \
             end_at = $17, paused = $18, chain = $19, concurrency_key = $20, \
             description = $21, meta = $22, tags = $23, \"condition\" = $24, condition_mode = $25, \
             keep_last = $26, alerts = $27, next_run_at = $28, updated_at = $29, completed_at = NULL, \
             daemon_streak = 0 \
             WHERE name = $1"
                .to_string(),
            spec,
            next_run_at,
            now,
        )
        .await
    }

    async fn remove_job(&self, name: &str) -> Result<bool, StoreError> {
        let q = Sql::new("DELETE FROM jobs WHERE name = $1").bind(name);
        let removed = self.write(q).await? > 0;
        self.jobs_changed().await?;
        Ok(removed)
    }

    async fn set_job_paused(
        &self,
        name: &str,
        paused: bool,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let q = Sql::new("UPDATE jobs SET paused = $2, updated_at = $3 WHERE name = $1");
        let found = self
            .write(q.bind(name).bind(paused as i64).bind(now))
            .await?
            > 0;
        self.jobs_changed().await?;
        Ok(found)
    }

    async fn set_queue(&self, name: &str, change: &QueueChange) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        // Between limited claims, never during one: a claim applies a
        // change wholly or not yet.
        if let Some(lock) = D::CLAIM_LOCK {
            Sql::<D>::new(lock).execute(&mut tx).await?;
        }
        Sql::<D>::new(format!(
            "{} INTO queues (name) VALUES ($1){}",
            D::OR_NOTHING.0,
            D::OR_NOTHING.1
        ))
        .bind(name)
        .execute(&mut tx)
        .await?;
        // Starts recorded under an earlier rate still count in the window
        // of a new one: they did happen.
        let rate = change
            .rate
            .map(|r| r.map(|r| (i64::from(r.n), r.per_ms as i64)));
        let sets = [
            ("max_running", change.limit.map(|l| l.map(i64::from))),
            ("key_limit", change.key_limit.map(|l| l.map(i64::from))),
            ("rate_n", rate.map(|r| r.map(|r| r.0))),
            ("rate_ms", rate.map(|r| r.map(|r| r.1))),
            ("paused", change.paused.map(|p| Some(i64::from(p)))),
        ];
        for (column, value) in sets {
            if let Some(value) = value {
                Sql::<D>::new(format!("UPDATE queues SET {column} = $2 WHERE name = $1"))
                    .bind(name)
                    .bind(value)
                    .execute(&mut tx)
                    .await?;
            }
        }
        D::notify(&mut tx, "limits").await?;
        tx.commit().await?;
        self.limits_changed();
        Ok(())
    }

    async fn declared(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        let q = Sql::new("SELECT name FROM declared WHERE kind = $1 ORDER BY name").bind(kind);
        Self::decode(&self.read_all(q).await?, "declared", |r| r.get("name"))
    }

    async fn set_declared(&self, kind: &str, names: &[String]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Sql::<D>::new("DELETE FROM declared WHERE kind = $1")
            .bind(kind)
            .execute(&mut tx)
            .await?;
        for chunk in names.chunks(rows_per_statement(2)) {
            let mut q = Sql::<D>::new("INSERT INTO declared (kind, name) ");
            q.values(chunk, |t, name| {
                t.bind(kind).bind(name.as_str());
            });
            q.execute(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Writes job `spec` with `statement` (its columns bound as
/// [`job_columns`] does, then its next run as `$28` and `now` as `$29`),
/// and tells the claims that jobs changed; whether a row was written.
async fn write_job<D: Dialect>(
    store: &SqlStore<D>,
    statement: String,
    spec: &JobSpec,
    next_run_at: Option<Micros>,
    now: Micros,
) -> Result<bool, StoreError> {
    let q = job_columns(Sql::new(statement), spec)
        .bind(next_run_at)
        .bind(now);
    let written = store.write(q).await? == 1;
    store.jobs_changed().await?;
    Ok(written)
}

/// Binds a job's definition as `$1` (name) to `$27` (alerts), in
/// the jobs table's column order.
pub(super) fn job_columns<'a, D: Dialect>(q: Sql<'a, D>, spec: &'a JobSpec) -> Sql<'a, D> {
    q.bind(spec.name.as_str())
        .bind(spec.handler.as_str())
        .bind(spec.mode.map(|m| m.as_str()))
        .bind(spec.payload.to_string())
        .bind(spec.schedule.kind())
        .bind(serde_json::to_string(&spec.schedule).expect("schedules serialize"))
        .bind(spec.priority as i64)
        .bind(spec.queue.as_str())
        .bind(spec.retries as i64)
        .bind(spec.backoff_ms as i64)
        .bind(spec.timeout_ms.map(|v| v as i64))
        .bind(spec.overlap.as_str())
        .bind(spec.misfire.as_str())
        .bind(spec.max_parallel.map(|v| v as i64))
        .bind(spec.max_runs.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(spec.start_at)
        .bind(spec.end_at)
        .bind(spec.paused as i64)
        .bind(
            (!spec.then.is_empty())
                .then(|| serde_json::to_string(&spec.then).expect("chains serialize")),
        )
        .bind(spec.concurrency_key.as_deref())
        .bind(spec.description.as_deref())
        .bind((!spec.meta.is_empty()).then(|| json_text(&spec.meta)))
        .bind((!spec.tags.is_empty()).then(|| json_text(&spec.tags)))
        .bind(spec.condition.as_deref())
        .bind(spec.condition_mode.map(|m| m.as_str()))
        .bind(spec.keep_last.map(|n| n as i64))
        .bind((!spec.alerts.is_empty()).then(|| json_text(&spec.alerts)))
}

/// Inserts `execs` (and first `workflow`, whose steps they are) in one
/// transaction.
async fn enqueue_all<D: Dialect>(
    store: &SqlStore<D>,
    workflow: Option<&NewWorkflow>,
    execs: &[NewExecution],
    now: Micros,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut tx = store.begin().await?;
    if let Some(w) = workflow {
        Sql::<D>::new("INSERT INTO workflows (id, name, spec, created_at) VALUES ($1, $2, $3, $4)")
            .bind(w.id)
            .bind(w.name.as_str())
            .bind(w.spec.to_string())
            .bind(now)
            .execute(&mut tx)
            .await?;
    }
    let mut ends = EndTally::default();
    let out = enqueue_in::<D>(&mut tx, &mut ends, execs, now).await?;
    store.commit(tx, ends).await?;
    Ok(out)
}

impl<D: Dialect> SqlStore<D> {
    /// [`Commands::hold`], as one transaction.
    async fn hold_once(&self, id: Uuid, hold: bool) -> Result<HoldRequest, StoreError> {
        let mut tx = self.begin().await?;
        let q = Sql::<D>::new(format!(
            "SELECT status FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ));
        let Some(row) = q.bind(id).fetch_optional(&mut tx).await? else {
            return Ok(HoldRequest::NotFound);
        };
        let status: Status = Fields::<D>::new(&row, "executions").parse("status")?;
        let stands = match (status, hold) {
            (Status::Running, _) => return Ok(HoldRequest::Refused(status)),
            (s, _) if s.is_terminal() => return Ok(HoldRequest::Refused(status)),
            (Status::Held, true) | (Status::Pending | Status::Waiting, false) => {
                return Ok(HoldRequest::Done(status))
            }
            (_, true) => {
                Sql::<D>::new("UPDATE executions SET status = 'held' WHERE id = $1")
                    .bind(id)
                    .execute(&mut tx)
                    .await?;
                Status::Held
            }
            (_, false) => {
                // Back to waiting while a parent has yet to end or a
                // running holder of its unique key has it next in line.
                let row = Sql::<D>::new(
                    "UPDATE executions SET status = CASE WHEN waiting_on > 0 OR EXISTS \
                     (SELECT 1 FROM unique_keys k WHERE k.next_id = executions.id) \
                     THEN 'waiting' ELSE 'pending' END WHERE id = $1 RETURNING status",
                )
                .bind(id)
                .fetch_optional(&mut tx)
                .await?
                .ok_or(sqlx::Error::RowNotFound)?;
                let stands: Status = Fields::<D>::new(&row, "executions").parse("status")?;
                if stands == Status::Pending {
                    D::notify(&mut tx, "work").await?;
                }
                stands
            }
        };
        tx.commit().await?;
        Ok(HoldRequest::Done(stands))
    }
}
