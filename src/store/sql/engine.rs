use super::ends::apply;
use super::enqueue::insert_edges;
use super::enqueue::insert_executions;
use super::enqueue::Initial;
use super::enqueue::EXECUTION_BINDS;
use super::limits::forget;
use super::tally::MINUTE_US;
use super::*;

#[async_trait]
impl<D: Dialect> Engine for SqlStore<D> {
    async fn traced(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<(Execution, Option<crate::model::TraceContext>)>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(rows_per_statement(1)) {
            let mut q = Sql::<D>::new("SELECT * FROM executions WHERE id IN (");
            q.push_list(chunk.iter().copied()).push(")");
            for row in self.read_all(q).await? {
                let f = Fields::<D>::new(&row, "executions");
                let trace = f
                    .get::<Option<String>>("trace_context")?
                    .as_deref()
                    .and_then(crate::model::TraceContext::from_column);
                out.push((f.execution()?, trace));
            }
        }
        Ok(out)
    }

    async fn changes_waiting(&self) -> Result<bool, StoreError> {
        let q = Sql::new("SELECT seq FROM event_outbox LIMIT 1");
        Ok(self.read_one(q).await?.is_some())
    }

    async fn webhooks_or_changes(&self) -> Result<bool, StoreError> {
        let q = Sql::new(
            "SELECT 1 AS found FROM webhooks UNION ALL SELECT 1 FROM event_outbox \
             UNION ALL SELECT 1 FROM jobs WHERE alerts IS NOT NULL LIMIT 1",
        );
        Ok(self.read_one(q).await?.is_some())
    }

    async fn alert_pass(
        &self,
        now: Micros,
        stale: Micros,
        decide: &DecideAlerts,
    ) -> Result<(usize, usize), StoreError> {
        retry_moved(|| self.alert_once(now, stale, decide)).await
    }

    async fn deliver_changes(
        &self,
        limit: usize,
        now: Micros,
        deliver: &Deliver,
    ) -> Result<(usize, Vec<Uuid>), StoreError> {
        retry_moved(|| self.deliver_once(limit, now, deliver)).await
    }

    async fn listen(&self) -> Result<Option<UnboundedReceiver<Notice>>, StoreError> {
        let Some(mut notices) = self.db.listen().await? else {
            return Ok(None);
        };
        // Another node changed a limit: the next claim here reads limits
        // anew instead of trusting the cache for up to its TTL.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let limits = self.limits.clone();
        tokio::spawn(async move {
            loop {
                // EndTally when nobody listens any more, not at the next notice.
                let n = tokio::select! {
                    n = notices.recv() => match n { Some(n) => n, None => break },
                    _ = tx.closed() => break,
                };
                let n = match n {
                    Notice::Limits => {
                        forget(&limits);
                        Notice::Work
                    }
                    // Another process (SQLite) may have changed a limit.
                    Notice::Jobs | Notice::Changed => {
                        forget(&limits);
                        n
                    }
                    n => n,
                };
                if tx.send(n).is_err() {
                    break;
                }
            }
        });
        Ok(Some(rx))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.db.migrate().await
    }

    fn publishes_events(&self) -> bool {
        D::PUBLISHES_EVENTS
    }

    async fn publish_events(&self, payload: &str) -> Result<(), StoreError> {
        Ok(self.db.publish_events(payload).await?)
    }

    async fn events_heard(&self) -> Result<bool, StoreError> {
        Ok(self.db.events_heard().await?)
    }

    async fn listen_events(&self) -> Result<Option<UnboundedReceiver<String>>, StoreError> {
        Ok(self.db.listen_events().await?)
    }

    fn on_unstarted_cancels(&self, sink: UnstartedSink) {
        let mut sinks = self.unstarted.lock().unwrap_or_else(|e| e.into_inner());
        sinks.push(sink);
    }

    async fn claim(&self, node: &str, limit: usize, now: Micros) -> Result<Claims, StoreError> {
        retry_moved(|| super::claim::claim(self, node, limit, now)).await
    }

    async fn has_due(&self, now: Micros) -> Result<bool, StoreError> {
        self.read_scalar(
            Sql::new(
                "SELECT EXISTS (SELECT 1 FROM executions WHERE status = 'pending' AND run_at <= $1)",
            )
            .bind(now),
        )
        .await
    }

    async fn next_run_at(&self) -> Result<Option<Micros>, StoreError> {
        self.read_scalar(Sql::new(
            "SELECT MIN(run_at) FROM executions WHERE status = 'pending'",
        ))
        .await
    }

    async fn apply(&self, batch: &Batch) -> Result<Vec<Finished>, StoreError> {
        retry_moved(|| apply(self, batch)).await
    }

    fn backend(&self) -> &'static str {
        <D::Db as sqlx::Database>::NAME
    }

    async fn begin_handler(&self) -> Result<Box<dyn std::any::Any + Send>, StoreError> {
        self.begin_handler_tx().await
    }

    async fn complete_in(
        &self,
        tx: Box<dyn std::any::Any + Send>,
        c: &Completion,
    ) -> Result<Option<Vec<Finished>>, StoreError> {
        self.complete_in_tx(tx, c).await
    }

    async fn cancel_requests(&self, node: &str) -> Result<Vec<(Uuid, String)>, StoreError> {
        let q = Sql::new(
            "SELECT id, COALESCE(cancel_reason, '') AS reason FROM executions \
             WHERE status = 'running' AND node = $1 AND cancel_requested_at IS NOT NULL",
        )
        .bind(node);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            Ok((r.get("id")?, r.get("reason")?))
        })
    }

    async fn register_node(&self, node: &NodeInfo) -> Result<(), StoreError> {
        self.write(
            Sql::new(
                "INSERT INTO nodes (id, hostname, pid, started_at, heartbeat_at, concurrency) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(node.id.as_str())
            .bind(node.hostname.as_str())
            .bind(node.pid)
            .bind(node.started_at)
            .bind(node.heartbeat_at)
            .bind(node.concurrency.map(i64::from)),
        )
        .await?;
        Ok(())
    }

    async fn heartbeat_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        let q = Sql::new("UPDATE nodes SET heartbeat_at = $2 WHERE id = $1");
        self.write(q.bind(node).bind(now)).await?;
        Ok(())
    }

    async fn set_node_concurrency(&self, node: &str, concurrency: u32) -> Result<(), StoreError> {
        let q = Sql::new("UPDATE nodes SET concurrency = $2 WHERE id = $1");
        self.write(q.bind(node).bind(i64::from(concurrency)))
            .await?;
        Ok(())
    }

    async fn stop_node(&self, node: &str, now: Micros) -> Result<(), StoreError> {
        let q = Sql::new("UPDATE nodes SET stopped_at = $2 WHERE id = $1");
        self.write(q.bind(node).bind(now)).await?;
        Ok(())
    }

    async fn foreign_running(&self, node: &str) -> Result<Vec<ForeignRunning>, StoreError> {
        let q = Sql::new(
            "SELECT e.id, e.pid AS exec_pid, n.id AS n_id, n.hostname AS n_hostname, \
                    n.pid AS n_pid, n.started_at AS n_started_at, \
                    n.heartbeat_at AS n_heartbeat_at, n.stopped_at AS n_stopped_at, \
                    n.concurrency AS n_concurrency \
             FROM executions e LEFT JOIN nodes n ON n.id = e.node \
             WHERE e.status = 'running' AND (e.node IS NULL OR e.node != $1)",
        )
        .bind(node);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            Ok(ForeignRunning {
                id: r.get("id")?,
                pid: r.get("exec_pid")?,
                node: r.node("n_")?,
            })
        })
    }

    async fn due_jobs(&self, now: Micros, limit: usize) -> Result<Vec<Job>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL AND next_run_at <= $1 \
             ORDER BY next_run_at LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64);
        Self::decode(&self.read_all(q).await?, "jobs", |r| r.job())
    }

    async fn next_due(&self) -> Result<Option<Micros>, StoreError> {
        self.read_scalar(Sql::new(
            "SELECT MIN(next_run_at) FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL",
        ))
        .await
    }

    async fn active_jobs(&self, names: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for chunk in names.chunks(rows_per_statement(1)) {
            let mut q = Sql::new(
                "SELECT DISTINCT job FROM executions \
                 WHERE status IN ('waiting', 'pending', 'held', 'running') \
                 AND job IN (",
            );
            q.push_list(chunk.iter().map(String::as_str)).push(")");
            for row in self.read_all(q).await? {
                out.insert(D::get(&row, 0)?);
            }
        }
        Ok(out)
    }

    async fn active_executions(&self, job: &str) -> Result<Vec<Uuid>, StoreError> {
        let q = Sql::new(
            "SELECT id FROM executions WHERE job = $1 AND status IN ('pending', 'held', 'running')",
        )
        .bind(job);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.get("id"))
    }

    async fn idle_daemons(&self) -> Result<Vec<IdleDaemon>, StoreError> {
        let rows = self.read_all(Sql::new(
            "SELECT j.*, \
               (SELECT e.started_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_started, \
               (SELECT e.finished_at FROM executions e WHERE e.job = j.name ORDER BY e.id DESC LIMIT 1) AS last_finished, \
               (SELECT COUNT(*) FROM executions e WHERE e.job = j.name) AS total \
             FROM jobs j WHERE j.kind = 'daemon' AND j.paused = 0 AND j.completed_at IS NULL \
               AND NOT EXISTS (SELECT 1 FROM executions e WHERE e.job = j.name \
                               AND e.status IN ('pending', 'held', 'running'))",
        ))
        .await?;
        Self::decode(&rows, "jobs", |r| {
            Ok(IdleDaemon {
                job: r.job()?,
                last_run: match r.int("total")? {
                    0 => None,
                    _ => Some((r.get("last_started")?, r.get("last_finished")?)),
                },
            })
        })
    }

    async fn advance_jobs(&self, steps: &[JobAdvance], now: Micros) -> Result<usize, StoreError> {
        if steps.is_empty() {
            return Ok(0);
        }
        let mut tx = self.begin().await?;
        let mut inserted = 0;
        // Statements per chunk, not per job: 10,000 jobs due in the same
        // second are a few statements.
        for chunk in steps.chunks(rows_per_statement(EXECUTION_BINDS)) {
            // 1. Advance the jobs that are still as the pass read them; the
            //    rest were advanced by another supervisor meanwhile.
            let mut q = Sql::<D>::new(
                "UPDATE jobs SET next_run_at = v.column4, runs = runs + v.column5, \
                   missed = missed + v.column6, \
                   completed_at = CASE WHEN v.column7 THEN COALESCE(completed_at, ",
            );
            q.push_bind(now)
                .push(") ELSE completed_at END, daemon_streak = COALESCE(v.column8, daemon_streak), updated_at = ")
                .push_bind(now)
                .push(" FROM (");
            q.values(chunk, |t, s| {
                t.bind(s.name.as_str())
                    .bind(s.expected_runs as i64)
                    .bind(s.expected_next)
                    .bind(s.next)
                    .bind(i64::from(s.run.is_some()))
                    .bind(s.missed as i64)
                    .bind(s.complete)
                    .bind(s.daemon_streak.map(|v| v as i64));
            });
            q.push(
                ") AS v WHERE jobs.name = v.column1 AND jobs.runs = v.column2 \
                 AND jobs.next_run_at IS NOT DISTINCT FROM v.column3 RETURNING jobs.name",
            );
            let mut owned = HashSet::new();
            for row in q.fetch_all(&mut tx).await? {
                owned.insert(D::get::<String>(&row, 0)?);
            }
            // 2. Insert their executions; an occurrence already present (a
            //    job removed and added again) is passed over and not counted.
            let runs: Vec<&NewExecution> = chunk
                .iter()
                .filter(|s| owned.contains(&s.name))
                .filter_map(|s| s.run.as_ref())
                .collect();
            // A run with a condition waits on it.
            let ids = insert_executions::<D>(&mut tx, &runs, now, |e| match e.after.len() {
                0 => Initial::PENDING,
                n => Initial::new(Status::Waiting, n as i64),
            })
            .await?;
            inserted += ids.len();
            // 3. The conditions of those inserted, which run first.
            let conditions: Vec<&NewExecution> = chunk
                .iter()
                .filter(|s| s.run.as_ref().is_some_and(|r| ids.contains(&r.id)))
                .filter_map(|s| s.condition.as_ref())
                .collect();
            if !conditions.is_empty() {
                insert_executions::<D>(&mut tx, &conditions, now, |_| Initial {
                    has_children: true,
                    ..Initial::PENDING
                })
                .await?;
                let edges: Vec<(Uuid, Uuid)> = chunk
                    .iter()
                    .filter_map(|s| Some((s.run.as_ref()?.id, s.condition.as_ref()?.id)))
                    .filter(|(run, _)| ids.contains(run))
                    .collect();
                insert_edges::<D>(&mut tx, &edges).await?;
            }
            for e in runs.iter().filter(|e| !ids.contains(&e.id)) {
                Sql::<D>::new("UPDATE jobs SET runs = runs - 1 WHERE name = $1")
                    .bind(e.job.as_deref().unwrap_or(""))
                    .execute(&mut tx)
                    .await?;
            }
        }
        if inserted > 0 {
            D::notify(&mut tx, "work").await?;
        }
        tx.commit().await?;
        Ok(inserted)
    }

    async fn prune(
        &self,
        before: Micros,
        job: Option<&str>,
        except: &[String],
        limit: usize,
    ) -> Result<(u64, u64), StoreError> {
        let mut tx = self.begin().await?;
        // Expired unique keys go whatever the job.
        Sql::<D>::new("DELETE FROM unique_keys WHERE held_until IS NOT NULL AND held_until < $1")
            .bind(crate::model::now_micros())
            .execute(&mut tx)
            .await?;
        // The timeline's minutes go with the global retention.
        if job.is_none() {
            Sql::<D>::new("DELETE FROM timeline WHERE minute < $1")
                .bind(before.div_euclid(MINUTE_US))
                .execute(&mut tx)
                .await?;
        }
        // A job's `keep_last` newest ended executions stay, however old:
        // each such job's oldest kept id bounds what may go.
        let mut kept: Vec<(String, Uuid)> = Vec::new();
        let mut q = Sql::<D>::new("SELECT name, keep_last FROM jobs WHERE keep_last IS NOT NULL");
        if let Some(j) = job {
            q.push(" AND name = ").push_bind(j);
        }
        for row in q.fetch_all(&mut tx).await? {
            let name: String = D::get(&row, 0)?;
            let n: i64 = D::get(&row, 1)?;
            let oldest = Sql::<D>::new(
                "SELECT id FROM executions WHERE job = $1 \
                 AND status IN ('succeeded', 'failed', 'cancelled', 'snoozed', 'skipped') \
                 ORDER BY id DESC LIMIT 1 OFFSET $2",
            )
            .bind(name.as_str())
            .bind(n.max(1) - 1)
            .fetch_optional(&mut tx)
            .await?;
            match oldest {
                Some(row) => kept.push((name, D::get(&row, 0)?)),
                // Fewer than N: all of them stay.
                None => kept.push((name, Uuid::nil())),
            }
        }
        // Never a parent whose child has yet to run: it reads its output.
        let mut q = Sql::<D>::new(
            "SELECT id FROM executions \
             WHERE status IN ('succeeded', 'failed', 'cancelled', 'snoozed', 'skipped') \
             AND NOT EXISTS (SELECT 1 FROM dependencies d JOIN executions c ON c.id = d.child_id \
               WHERE d.parent_id = executions.id AND c.status IN ('waiting', 'pending', 'held', 'running')) \
             AND finished_at < ",
        );
        q.push_bind(before);
        match job {
            Some(j) => {
                q.push(" AND job = ").push_bind(j);
            }
            None if !except.is_empty() => {
                q.push(" AND job NOT IN (")
                    .push_list(except.iter().map(String::as_str))
                    .push(")");
            }
            None => {}
        }
        for (name, oldest) in &kept {
            q.push(" AND NOT (job = ")
                .push_bind(name.as_str())
                .push(" AND id >= ")
                .push_bind(*oldest)
                .push(")");
        }
        q.push(" LIMIT ")
            .push_bind(limit.clamp(1, MAX_BINDS) as i64);
        let mut ids = Vec::new();
        for row in q.fetch_all(&mut tx).await? {
            ids.push(D::get::<Uuid>(&row, 0)?);
        }
        if ids.is_empty() {
            tx.commit().await?;
            return Ok((0, 0));
        }
        for (table, column) in [
            ("dependencies", "child_id"),
            ("dependencies", "parent_id"),
            ("execution_tags", "execution_id"),
            ("execution_meta", "execution_id"),
        ] {
            let mut q = Sql::<D>::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            q.push_list(ids.iter().copied()).push(")");
            q.execute(&mut tx).await?;
        }
        let mut deleted = [0u64; 2];
        for (i, (table, column)) in [("logs", "execution_id"), ("executions", "id")]
            .into_iter()
            .enumerate()
        {
            let mut q = Sql::<D>::new(format!("DELETE FROM {table} WHERE {column} IN ("));
            q.push_list(ids.iter().copied()).push(")");
            deleted[i] = q.execute(&mut tx).await?;
        }
        // A workflow goes with its last step.
        Sql::<D>::new(
            "DELETE FROM workflows WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM executions e WHERE e.workflow_id = workflows.id)",
        )
        .bind(before)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok((deleted[1], deleted[0]))
    }
}
