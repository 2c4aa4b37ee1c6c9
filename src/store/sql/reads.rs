use super::claim::RATE_FREE;
use super::fields::corrupt;
use super::fields::Fields;
use super::tally::MINUTE_US;
use super::*;

/// An execution's last `$2` log lines, oldest first.
pub(super) const LAST_LOGS: &str = "SELECT seq, ts, level, stream, message, fields FROM \
     (SELECT seq, ts, level, stream, message, fields FROM logs \
      WHERE execution_id = $1 ORDER BY seq DESC LIMIT $2) AS tail ORDER BY seq";

/// The columns an execution is read from, but its payload and output (for
/// a query that cuts those).
pub(super) const EXECUTION_COLUMNS: [&str; 42] = [
    "id",
    "job",
    "handler",
    "mode",
    "status",
    "attempt",
    "max_attempts",
    "previous_id",
    "next_id",
    "priority",
    "queue",
    "unique_key",
    "concurrency_key",
    "snoozes",
    "origin",
    "meta",
    "tags",
    "after_policy",
    "waiting_on",
    "workflow_id",
    "step",
    "occurrence",
    "timeout_ms",
    "enqueued_at",
    "run_at",
    "started_at",
    "finished_at",
    "node",
    "pid",
    "exit_code",
    "\"signal\"",
    "progress_percent",
    "progress_message",
    "progress_done",
    "progress_total",
    "progress_data",
    "error",
    "timed_out",
    "interrupted",
    "cancel_requested_at",
    "cancel_reason",
    "cancel_outcome",
];

impl<D: Dialect> SqlStore<D> {
    /// The WHERE clause, order and limit of a page of `id`'s log lines.
    pub(super) fn log_filters(q: &mut Sql<'static, D>, id: Uuid, page: &LogPage) {
        q.push("execution_id = ")
            .push_bind(id)
            .push(" AND seq > ")
            .push_bind(page.after_seq);
        if let Some(before) = page.before_seq {
            q.push(" AND seq < ").push_bind(before);
        }
        if let Some(min) = page.min_level {
            q.push(" AND level IN (")
                .push_list(
                    Level::ALL
                        .into_iter()
                        .filter(|l| *l >= min)
                        .map(Level::as_str),
                )
                .push(")");
        }
        if let Some(text) = &page.contains {
            let (before, value, after) = D::contains("message", text);
            q.push(" AND ").push(&before).push_bind(value).push(after);
        }
        let order = if page.from_end { "DESC" } else { "ASC" };
        q.push(" ORDER BY seq ")
            .push(order)
            .push(" LIMIT ")
            .push_bind(page.limit as i64);
    }
}

/// Appends `filter`'s conditions (` AND ...`) to a query over
/// `executions`.
pub(super) fn push_filter<'a, D: Dialect>(q: &mut Sql<'a, D>, filter: &'a ExecFilter) {
    let pending = pending_by_queue(filter);
    if !filter.statuses.is_empty() {
        // Statuses are written as literals, which lets the planners use the
        // partial index of each (`WHERE status = 'failed'`); they are our
        // own names, never user text. A status matches many rows: with a
        // filter on a column that is more selective, `status || ''` keeps
        // SQLite's planner (which has no statistics) on that column's index.
        let narrower = filter.job.is_some()
            || filter.queue.is_some()
            || filter.handler.is_some()
            || filter.unique_key.is_some()
            || filter.concurrency_key.is_some();
        let column = if narrower && !pending {
            "status || ''"
        } else {
            "status"
        };
        let names: Vec<String> = filter
            .statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        let condition = match names.as_slice() {
            [one] => format!("{column} = {one}"),
            many => format!("{column} IN ({})", many.join(", ")),
        };
        let active = filter.statuses.iter().all(|s| {
            matches!(
                s,
                Status::Pending | Status::Running | Status::Waiting | Status::Held
            )
        });
        if pending {
            // Pending rows newest first, their queue read off the index.
            q.push(" AND ").push(&condition);
        } else if active && !narrower {
            // Few rows are active, in partial indexes that are not in id
            // order: collect them there instead of walking the history.
            q.push(" AND id IN (SELECT id FROM executions WHERE ")
                .push(&condition)
                .push(")");
        } else {
            q.push(" AND ").push(&condition);
        }
    }
    // On the pending rows' index the queue is checked there, not looked up
    // on the queue's own index (which walks its whole history).
    let queue = if pending { "queue || ''" } else { "queue" };
    for (column, value) in [
        ("handler", &filter.handler),
        ("job", &filter.job),
        (queue, &filter.queue),
        ("node", &filter.node),
        ("unique_key", &filter.unique_key),
        ("concurrency_key", &filter.concurrency_key),
    ] {
        if let Some(v) = value {
            q.push(" AND ")
                .push(column)
                .push(" = ")
                .push_bind(v.as_str());
        }
    }
    if let Some(t) = filter.since {
        q.push(" AND enqueued_at >= ").push_bind(t);
    }
    if let Some(t) = filter.until {
        q.push(" AND enqueued_at < ").push_bind(t);
    }
    if let Some(id) = filter.before {
        q.push(" AND id < ").push_bind(id);
    }
    if let Some(o) = filter.origin {
        q.push(" AND origin = ").push_bind(o.as_str());
    }
    if filter.last_attempt {
        q.push(" AND next_id IS NULL");
    }
    // Each label is looked up on its own table's primary key.
    for tag in &filter.tags {
        q.push(" AND id IN (SELECT execution_id FROM execution_tags WHERE tag = ")
            .push_bind(tag.as_str())
            .push(")");
    }
    for (key, value) in &filter.meta {
        q.push(" AND id IN (SELECT execution_id FROM execution_meta WHERE \"key\" = ")
            .push_bind(key.as_str())
            .push(" AND value = ")
            .push_bind(value.as_str())
            .push(")");
    }
}

/// Whether `filter` asks for pending executions, of all queues or one, and
/// nothing narrower: `executions_pending_id` answers it in id order.
pub(super) fn pending_by_queue(filter: &ExecFilter) -> bool {
    filter.statuses == [Status::Pending]
        && filter.job.is_none()
        && filter.handler.is_none()
        && filter.unique_key.is_none()
        && filter.concurrency_key.is_none()
        && filter.node.is_none()
}

#[async_trait]
impl<D: Dialect> Reads for SqlStore<D> {
    async fn handler(&self, name: &str) -> Result<Option<HandlerSpec>, StoreError> {
        let row = self
            .read_one(Sql::new("SELECT spec FROM handlers WHERE name = $1").bind(name))
            .await?;
        Ok(match row {
            Some(row) => Fields::<D>::new(&row, "handlers").json("spec")?,
            None => None,
        })
    }

    async fn handlers(&self) -> Result<Vec<HandlerSpec>, StoreError> {
        let rows = self
            .read_all(Sql::new("SELECT spec FROM handlers ORDER BY name"))
            .await?;
        Self::decode(&rows, "handlers", |r| {
            r.json("spec")?
                .ok_or_else(|| corrupt("handlers", "spec", "null"))
        })
    }

    async fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let rows = self
            .read_all(Sql::new(
                "SELECT * FROM alerts ORDER BY opened_at, kind, subject",
            ))
            .await?;
        Self::decode(&rows, "alerts", |r| r.incident())
    }

    async fn webhook(&self, name: &str) -> Result<Option<crate::model::WebhookSpec>, StoreError> {
        let q = Sql::new("SELECT spec FROM webhooks WHERE name = $1").bind(name);
        let Some(row) = self.read_one(q).await? else {
            return Ok(None);
        };
        Fields::<D>::new(&row, "webhooks").webhook().map(Some)
    }

    async fn webhooks(&self) -> Result<Vec<crate::model::WebhookSpec>, StoreError> {
        let rows = self
            .read_all(Sql::new("SELECT spec FROM webhooks ORDER BY name"))
            .await?;
        Self::decode(&rows, "webhooks", |r| r.webhook())
    }

    async fn workflows(&self, limit: usize) -> Result<Vec<WorkflowInfo>, StoreError> {
        let q = Sql::new(
            "SELECT w.id, w.name, w.created_at, w.cancelled_at, e.status, COUNT(e.id) AS n \
             FROM (SELECT * FROM workflows ORDER BY id DESC LIMIT $1) AS w \
             LEFT JOIN executions e ON e.workflow_id = w.id AND e.next_id IS NULL \
             GROUP BY w.id, w.name, w.created_at, w.cancelled_at, e.status ORDER BY w.id DESC",
        )
        .bind(limit.max(1) as i64);
        let rows = self.read_all(q).await?;
        let mut out: Vec<WorkflowInfo> = Vec::new();
        for row in &rows {
            let row = Fields::<D>::new(row, "workflows");
            let id: Uuid = row.get("id")?;
            if out.last().is_none_or(|w| w.id != id) {
                out.push(WorkflowInfo {
                    id,
                    name: row.get("name")?,
                    created_at: Timestamp(row.get("created_at")?),
                    cancelled_at: row.get::<Option<Micros>>("cancelled_at")?.map(Timestamp),
                    steps: BTreeMap::new(),
                });
            }
            if let Some(status) = row.opt_parse::<Status>("status")? {
                let n = row.int("n")?.max(0) as u64;
                out.last_mut()
                    .expect("pushed above")
                    .steps
                    .insert(status, n);
            }
        }
        Ok(out)
    }

    async fn workflow(
        &self,
        id: Uuid,
    ) -> Result<Option<(WorkflowInfo, Value, Vec<Execution>)>, StoreError> {
        let q = Sql::new("SELECT * FROM workflows WHERE id = $1").bind(id);
        let Some(row) = self.read_one(q).await? else {
            return Ok(None);
        };
        let row = Fields::<D>::new(&row, "workflows");
        let spec: Value = row.json("spec")?.unwrap_or(Value::Null);
        let mut info = WorkflowInfo {
            id,
            name: row.get("name")?,
            created_at: Timestamp(row.get("created_at")?),
            cancelled_at: row.get::<Option<Micros>>("cancelled_at")?.map(Timestamp),
            steps: BTreeMap::new(),
        };
        let q = Sql::new(
            "SELECT * FROM executions WHERE workflow_id = $1 AND next_id IS NULL ORDER BY id",
        )
        .bind(id);
        let execs = Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())?;
        for e in &execs {
            *info.steps.entry(e.status).or_default() += 1;
        }
        Ok(Some((info, spec, execs)))
    }

    async fn links(&self, id: Uuid) -> Result<Links, StoreError> {
        let ids = |sql: &'static str| async move {
            let rows = self.read_all(Sql::new(sql).bind(id)).await?;
            Self::decode(&rows, "dependencies", |r| r.get::<Uuid>("id"))
        };
        Ok(Links {
            parents: ids(
                "SELECT parent_id AS id FROM dependencies WHERE child_id = $1 ORDER BY parent_id",
            )
            .await?,
            children: ids(
                "SELECT child_id AS id FROM dependencies WHERE parent_id = $1 ORDER BY child_id",
            )
            .await?,
        })
    }

    async fn ids_matching(
        &self,
        table: IdTable,
        hex: &str,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError> {
        let hex = hex.to_ascii_uppercase();
        if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Vec::new());
        }
        let table = match table {
            IdTable::Executions => "executions",
            IdTable::Workflows => "workflows",
        };
        // A prefix: the ids between it padded with 0s and with Fs.
        let pad = |c: char| {
            let full: String = hex.chars().chain(std::iter::repeat(c)).take(32).collect();
            Uuid::parse_str(&full).expect("32 hex digits")
        };
        let sql =
            format!("SELECT id FROM {table} WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3");
        let rows = self
            .read_all(
                Sql::new(&sql)
                    .bind(pad('0'))
                    .bind(pad('F'))
                    .bind(limit as i64),
            )
            .await?;
        let mut ids = Self::decode(&rows, table, |r| r.get::<Uuid>("id"))?;
        let column = D::UUID_HEX.replace("{}", "id");
        let sql = format!("SELECT id FROM {table} WHERE {column} LIKE $1 ORDER BY id LIMIT $2");
        let rows = self
            .read_all(Sql::new(&sql).bind(format!("%{hex}")).bind(limit as i64))
            .await?;
        for id in Self::decode(&rows, table, |r| r.get::<Uuid>("id"))? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn execution(&self, id: Uuid) -> Result<Option<Execution>, StoreError> {
        let row = self
            .read_one(Sql::new("SELECT * FROM executions WHERE id = $1").bind(id))
            .await?;
        row.map(|row| Fields::<D>::new(&row, "executions").execution())
            .transpose()
    }

    async fn existing_ids(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(rows_per_statement(1)) {
            let mut q = Sql::new("SELECT id FROM executions WHERE id IN (");
            q.push_list(chunk.iter().copied()).push(")");
            for row in self.read_all(q).await? {
                out.push(Fields::<D>::new(&row, "executions").get("id")?);
            }
        }
        Ok(out)
    }

    async fn executions(&self, filter: &ExecFilter) -> Result<Vec<Execution>, StoreError> {
        let from = if pending_by_queue(filter) {
            D::PENDING_BY_ID
        } else {
            "executions"
        };
        let mut q = match filter.clip {
            None => Sql::new(format!("SELECT * FROM {from} WHERE 1 = 1")),
            Some(n) => {
                // The database cuts the two large columns, so that a page of
                // big payloads is never read whole.
                let cut = |c: &str| {
                    format!(
                        "CASE WHEN octet_length({c}) > {n} THEN substr({c}, 1, {n}) ELSE {c} END AS {c}, \
                         CAST(CASE WHEN octet_length({c}) > {n} THEN 1 ELSE 0 END AS BIGINT) AS {c}_truncated"
                    )
                };
                Sql::new(format!(
                    "SELECT {}, {}, {} FROM {from} WHERE 1 = 1",
                    EXECUTION_COLUMNS.join(", "),
                    cut("payload"),
                    cut("output")
                ))
            }
        };
        push_filter(&mut q, filter);
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit.max(1) as i64);
        let rows = self.read_all(q).await?;
        match filter.clip {
            None => Self::decode(&rows, "executions", |r| r.execution()),
            Some(_) => Self::decode(&rows, "executions", |r| r.execution_clipped()),
        }
    }

    async fn logs(
        &self,
        id: Uuid,
        after_seq: i64,
        min_level: Option<Level>,
        limit: usize,
    ) -> Result<Vec<LogEntry>, StoreError> {
        let page = LogPage {
            after_seq,
            min_level,
            limit,
            ..Default::default()
        };
        self.log_page(id, &page).await
    }

    async fn log_page(&self, id: Uuid, page: &LogPage) -> Result<Vec<LogEntry>, StoreError> {
        let mut page = page.clone();
        if let Some(max) = page.max_bytes {
            // The sizes first (no text is read), then as many lines as fit.
            // (octet_length is a 32-bit integer on PostgreSQL: widened here.)
            let mut q = Sql::new(
                "SELECT seq, CAST(octet_length(message) + COALESCE(octet_length(fields), 0) AS BIGINT) \
                 FROM logs WHERE ",
            );
            Self::log_filters(&mut q, id, &page);
            let sizes = self.read_all(q).await?;
            let (mut total, mut last) = (0i64, None);
            for row in &sizes {
                let seq: i64 = D::get(row, 0)?;
                let size: i64 = D::get(row, 1)?;
                if last.is_some() && total + size > max as i64 {
                    break;
                }
                total += size;
                last = Some(seq);
            }
            let Some(last) = last else {
                return Ok(Vec::new());
            };
            // Reading from the end, the last that fit is the first shown.
            if page.from_end {
                page.after_seq = page.after_seq.max(last - 1);
            } else {
                page.before_seq = Some(last + 1);
            }
        }
        let mut q = Sql::new("SELECT seq, ts, level, stream, message, fields FROM logs WHERE ");
        Self::log_filters(&mut q, id, &page);
        let mut lines = Self::decode(&self.read_all(q).await?, "logs", |r| r.log())?;
        if page.from_end {
            lines.reverse();
        }
        Ok(lines)
    }

    async fn last_logs(&self, id: Uuid, n: usize) -> Result<Vec<LogEntry>, StoreError> {
        let q = Sql::new(LAST_LOGS).bind(id).bind(n as i64);
        Self::decode(&self.read_all(q).await?, "logs", |r| r.log())
    }

    async fn live_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM nodes WHERE heartbeat_at >= $1 AND stopped_at IS NULL ORDER BY started_at",
        )
        .bind(since);
        let nodes = Self::decode(&self.read_all(q).await?, "nodes", |r| r.node(""))?;
        Ok(nodes.into_iter().flatten().collect())
    }

    async fn job(&self, name: &str) -> Result<Option<Job>, StoreError> {
        let q = Sql::new("SELECT * FROM jobs WHERE name = $1").bind(name);
        let row = self.read_one(q).await?;
        row.map(|row| Fields::<D>::new(&row, "jobs").job())
            .transpose()
    }

    async fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = self
            .read_all(Sql::new("SELECT * FROM jobs ORDER BY name"))
            .await?;
        Self::decode(&rows, "jobs", |r| r.job())
    }

    async fn jobs_page(&self, after: Option<&str>, limit: usize) -> Result<Vec<Job>, StoreError> {
        let q = Sql::new("SELECT * FROM jobs WHERE name > $1 ORDER BY name LIMIT $2")
            .bind(after.unwrap_or(""))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.read_all(q).await?;
        Self::decode(&rows, "jobs", |r| r.job())
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let rows = self
            .read_all(
                Sql::new(format!(
                    // Counted once over each status's partial index (`queue
                    // || ''` keeps SQLite off the queue's whole history),
                    // not per queue.
                    "WITH pend AS (SELECT queue || '' AS queue, COUNT(*) AS n FROM executions \
                                   WHERE status = 'pending' GROUP BY queue || ''), \
                          run AS (SELECT queue, COUNT(*) AS n FROM executions \
                                  WHERE status = 'running' GROUP BY queue), \
                          names AS (SELECT name FROM queues UNION SELECT queue FROM pend \
                                    UNION SELECT queue FROM run UNION SELECT 'default'), \
                          rated AS ({RATE_FREE}) \
                     SELECT n.name, q.max_running, COALESCE(q.paused, 0) AS paused, q.key_limit, \
                       q.rate_n, q.rate_ms, r.rfree, \
                       COALESCE(p.n, 0) AS pending, COALESCE(ru.n, 0) AS running \
                     FROM names n LEFT JOIN queues q ON q.name = n.name \
                     LEFT JOIN rated r ON r.name = n.name \
                     LEFT JOIN pend p ON p.queue = n.name LEFT JOIN run ru ON ru.queue = n.name \
                     ORDER BY n.name"
                ))
                .bind(crate::model::now_micros()),
            )
            .await?;
        Self::decode(&rows, "queues", |r| {
            let rate = match (r.opt_u64("rate_n")?, r.opt_u64("rate_ms")?) {
                (Some(n), Some(per_ms)) => Some(crate::model::Rate {
                    n: n as u32,
                    per_ms,
                }),
                _ => None,
            };
            Ok(QueueInfo {
                name: r.get("name")?,
                max_running: r.opt_u64("max_running")?.map(|v| v as u32),
                paused: r.flag("paused")?,
                pending: r.int("pending")? as u64,
                running: r.int("running")? as u64,
                key_limit: r.opt_u64("key_limit")?.map(|v| v as u32),
                tokens: rate.and(r.get::<Option<i64>>("rfree")?.map(|t| t.max(0) as u64)),
                rate,
            })
        })
    }

    async fn counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = self
            .read_all(Sql::new(
                "SELECT handler, status, COUNT(*) AS n FROM executions \
             GROUP BY handler, status ORDER BY handler, status",
            ))
            .await?;
        Self::decode(&rows, "executions", |r| {
            Ok((
                r.get("handler")?,
                r.get("status")?,
                r.int("n")?.max(0) as u64,
            ))
        })
    }

    async fn stats(&self, job: Option<&str>) -> Result<Vec<JobStats>, StoreError> {
        // p95 by nearest rank: the ceil(0.95 n)-th shortest duration, the
        // rank r with 100 (r - 1) < 95 n <= 100 r (in integers: MySQL's
        // `/` divides exactly).
        let q = Sql::new(
            "WITH d AS (SELECT job, finished_at - started_at AS us, \
               ROW_NUMBER() OVER (PARTITION BY job ORDER BY finished_at - started_at) AS rn, \
               COUNT(*) OVER (PARTITION BY job) AS n FROM executions \
               WHERE finished_at IS NOT NULL AND started_at IS NOT NULL \
                 AND (CAST($1 AS TEXT) IS NULL OR job = $1)) \
             SELECT e.job, COUNT(*) AS attempts, \
               SUM(CASE WHEN previous_id IS NULL THEN 1 ELSE 0 END) AS runs, \
               SUM(CASE WHEN next_id IS NULL AND status = 'succeeded' THEN 1 ELSE 0 END) AS succeeded, \
               SUM(CASE WHEN next_id IS NULL AND status = 'failed' THEN 1 ELSE 0 END) AS failed, \
               SUM(CASE WHEN next_id IS NULL AND status = 'cancelled' THEN 1 ELSE 0 END) AS cancelled, \
               (SELECT CAST(MIN(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS min_us, \
               (SELECT CAST(AVG(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS avg_us, \
               (SELECT CAST(MAX(us) AS DOUBLE PRECISION) FROM d WHERE d.job = e.job) AS max_us, \
               (SELECT CAST(us AS DOUBLE PRECISION) FROM d WHERE d.job = e.job \
                  AND d.rn * 100 >= d.n * 95 AND (d.rn - 1) * 100 < d.n * 95) AS p95_us, \
               MAX(CASE WHEN status = 'succeeded' THEN finished_at END) AS last_success, \
               MAX(CASE WHEN status = 'failed' THEN finished_at END) AS last_failure, \
               (SELECT f.error FROM executions f WHERE f.job = e.job AND f.status = 'failed' \
                  ORDER BY f.finished_at DESC LIMIT 1) AS last_error \
             FROM executions e WHERE (CAST($1 AS TEXT) IS NULL OR e.job = $1) \
             GROUP BY e.job ORDER BY e.job",
        )
        .bind(job);
        Self::decode(&self.read_all(q).await?, "executions", |r| {
            let count = |c: &str| Ok::<_, StoreError>(r.get::<Option<i64>>(c)?.unwrap_or(0) as u64);
            let ms = |c: &str| Ok::<_, StoreError>(r.get::<Option<f64>>(c)?.map(|us| us / 1000.0));
            let time = |c: &str| Ok::<_, StoreError>(r.get::<Option<Micros>>(c)?.map(Timestamp));
            let (succeeded, failed, cancelled) =
                (count("succeeded")?, count("failed")?, count("cancelled")?);
            let finished = succeeded + failed + cancelled;
            Ok(JobStats {
                job: r.get("job")?,
                runs: count("runs")?,
                attempts: count("attempts")?,
                succeeded,
                failed,
                cancelled,
                success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
                min_ms: ms("min_us")?,
                avg_ms: ms("avg_us")?,
                p95_ms: ms("p95_us")?,
                max_ms: ms("max_us")?,
                last_success: time("last_success")?,
                last_failure: time("last_failure")?,
                last_error: r.get("last_error")?,
            })
        })
    }

    async fn recent_nodes(&self, since: Micros) -> Result<Vec<NodeInfo>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM nodes WHERE heartbeat_at >= $1 ORDER BY started_at DESC LIMIT 1000",
        )
        .bind(since);
        let nodes = Self::decode(&self.read_all(q).await?, "nodes", |r| r.node(""))?;
        Ok(nodes.into_iter().flatten().collect())
    }

    async fn timeline(&self, since: Micros) -> Result<Vec<TimelineRow>, StoreError> {
        // Whole minutes, from the one `since` falls in, summed over shards.
        let q = Sql::new(
            "SELECT minute, handler, status, CAST(SUM(n) AS BIGINT) AS n, \
               CAST(SUM(timed) AS BIGINT) AS timed, CAST(SUM(sum_us) AS BIGINT) AS sum_us, \
               MAX(max_us) AS max_us \
             FROM timeline WHERE minute >= $1 \
             GROUP BY minute, handler, status ORDER BY minute, handler, status",
        )
        .bind(since.div_euclid(MINUTE_US));
        Self::decode(&self.read_all(q).await?, "timeline", |r| {
            let minute: i64 = r.get("minute")?;
            let timed: i64 = r.get("timed")?;
            let ms = |us: f64| (timed > 0).then(|| us / 1000.0);
            Ok(TimelineRow {
                minute: Timestamp(minute * MINUTE_US),
                handler: r.get("handler")?,
                status: r.parse("status")?,
                count: r.get::<i64>("n")?.max(0) as u64,
                avg_ms: ms(r.get::<i64>("sum_us")? as f64 / timed.max(1) as f64),
                max_ms: ms(r.get::<i64>("max_us")? as f64),
            })
        })
    }

    async fn stuck(&self, now: Micros, stale: Micros) -> Result<Vec<Execution>, StoreError> {
        let q = Sql::new(
            // Driven by the running rows' partial index, not by walking
            // every execution in id order.
            "SELECT e.* FROM executions e LEFT JOIN nodes n ON n.id = e.node \
             WHERE e.id IN (SELECT id FROM executions WHERE status = 'running') \
             AND e.status = 'running' AND ( \
               (e.timeout_ms IS NOT NULL AND e.started_at + e.timeout_ms * 1000 < $1) \
               OR n.id IS NULL OR n.heartbeat_at < $2 OR n.stopped_at IS NOT NULL) \
             ORDER BY e.id LIMIT 1000",
        )
        .bind(now)
        .bind(stale);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())
    }

    async fn failed_since(
        &self,
        since: Micros,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError> {
        let q = Sql::new(
            // Newest first by id (time-ordered): the partial index of failed
            // rows yields them in that order, where sorting by finish time
            // would read every failure ever kept.
            // Only those failed for good: the last attempt of their
            // chain (a run an orderly stop interrupted runs again, and is
            // no failure).
            "SELECT * FROM executions WHERE status = 'failed' AND finished_at >= $1 \
               AND next_id IS NULL ORDER BY id DESC LIMIT $2",
        )
        .bind(since)
        .bind(limit as i64);
        Self::decode(&self.read_all(q).await?, "executions", |r| r.execution())
    }

    async fn late_jobs(&self, before: Micros) -> Result<Vec<Job>, StoreError> {
        let q = Sql::new(
            "SELECT * FROM jobs WHERE paused = 0 AND next_run_at IS NOT NULL \
               AND next_run_at < $1 ORDER BY next_run_at LIMIT 1000",
        )
        .bind(before);
        Self::decode(&self.read_all(q).await?, "jobs", |r| r.job())
    }
}
