use super::fields::corrupt;
use super::fields::Fields;
use super::limits::read_limits;
use super::*;

/// What a claim returns of each row (the limited claim adds `queue`, for
/// the starts a rate counts).
pub(super) fn claim_returning<D: Dialect>() -> String {
    format!(
        " RETURNING id, payload, {}job, handler, mode, attempt, timeout_ms, enqueued_at, \
         started_at, cancel_requested_at, after_policy, snoozes, meta, tags, trace_context, \
         (SELECT spec FROM handlers h WHERE h.name = executions.handler){} AS facts",
        D::JSON_ARRAY.0,
        D::JSON_ARRAY.1
    )
}

/// What a claim returns of each row besides its id and payload, packed in
/// one JSON array column (see `Dialect::JSON_ARRAY`), in field order.
#[derive(serde::Deserialize)]
pub(super) struct ClaimColumns {
    pub(super) job: String,
    pub(super) handler: String,
    pub(super) mode: Mode,
    pub(super) attempt: u32,
    pub(super) timeout_ms: Option<u64>,
    pub(super) enqueued_at: Micros,
    pub(super) started_at: Micros,
    pub(super) cancel_requested_at: Option<Micros>,
    pub(super) after_policy: Option<String>,
    pub(super) snoozes: u32,
    /// Its meta and tags, as their JSON text (`NULL`: none).
    pub(super) meta: Option<String>,
    pub(super) tags: Option<String>,
    /// Its trace context, as stored.
    pub(super) trace_context: Option<String>,
    /// Its stored handler's spec.
    pub(super) spec: Option<String>,
}

/// A claimed row, and whether it has parents (their outputs are read next).
pub(super) fn decode_claim<D: Dialect>(r: &Fields<'_, D>) -> Result<(Claimed, bool), StoreError> {
    let Some(f) = r.json::<ClaimColumns>("facts")? else {
        return Err(corrupt("executions", "facts", "NULL"));
    };
    let claimed = Claimed {
        id: r.get("id")?,
        job: f.job,
        handler: f.handler,
        mode: f.mode,
        payload: r.json("payload")?.unwrap_or(Value::Null),
        attempt: f.attempt,
        timeout_ms: f.timeout_ms,
        enqueued_at: f.enqueued_at,
        started_at: f.started_at,
        cancel_requested: f.cancel_requested_at.is_some(),
        handler_spec: f.spec,
        inputs: Vec::new(),
        snoozes: f.snoozes,
        meta: label(f.meta.as_deref(), "meta")?,
        tags: label(f.tags.as_deref(), "tags")?,
        trace: f
            .trace_context
            .as_deref()
            .and_then(crate::model::TraceContext::from_column),
    };
    Ok((claimed, f.after_policy.is_some()))
}

/// A label column's JSON text, decoded (none when `NULL`).
fn label<T: serde::de::DeserializeOwned + Default>(
    text: Option<&str>,
    column: &str,
) -> Result<T, StoreError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| corrupt("executions", column, e)))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Starts each rate-limited queue has left in its window now (`$1`): its
/// rate less the starts that its claims recorded within the window.
pub(super) const RATE_FREE: &str = "SELECT q.name, q.rate_n - CAST(COALESCE((SELECT SUM(s.n) \
     FROM queue_starts s WHERE s.queue = q.name AND s.at > $1 - q.rate_ms * 1000), 0) AS BIGINT) \
     AS rfree FROM queues q WHERE q.rate_n IS NOT NULL";

/// Best first, within the free slots of each queue, and of each job, each
/// concurrency key and each queue's rate where those kinds of limits
/// exist (`k`; each kind costs the claim, so only those are in it). The
/// candidates are the best few pending rows (index order) of queues, jobs
/// and keys that are neither paused nor full; window functions then hand
/// out the free slots among them: first per job and per key, then per
/// queue among the rows that passed (so that a row held back by its key
/// does not take a queue slot). ($1 now, $2 node, $3 limit, $4 window.)
pub(super) fn claim_limited<D: Dialect>(k: Kinds) -> String {
    const ORDER: &str = "ORDER BY c.priority DESC, c.run_at, c.id";
    let mut with = vec!["busy_q AS (SELECT queue, COUNT(*) AS n FROM executions \
         WHERE status = 'running' GROUP BY queue)"
        .to_string()];
    let mut blocked_q = "blocked_q AS (SELECT q.name FROM queues q \
         LEFT JOIN busy_q b ON b.queue = q.name"
        .to_string();
    let mut blocked_when = "q.paused = 1 OR COALESCE(b.n, 0) >= q.max_running".to_string();
    let mut cand_when = "status = 'pending' AND run_at <= $1 \
         AND queue NOT IN (SELECT name FROM blocked_q)"
        .to_string();
    if k.rates {
        with.push(format!("rated_q AS ({RATE_FREE})"));
        blocked_q.push_str(" LEFT JOIN rated_q r ON r.name = q.name");
        blocked_when.push_str(" OR r.rfree <= 0");
    }
    with.push(format!("{blocked_q} WHERE {blocked_when})"));
    if k.jobs {
        with.push(
            "busy_j AS (SELECT job, COUNT(*) AS n FROM executions \
             WHERE status = 'running' GROUP BY job)"
                .into(),
        );
        with.push(format!(
            "caps_j AS (SELECT name, CASE WHEN overlap = 'queue' \
             THEN {}(COALESCE(max_parallel, 1), 1) ELSE max_parallel END AS cap FROM jobs)",
            D::LEAST
        ));
        with.push(
            "blocked_j AS (SELECT c.name FROM caps_j c JOIN busy_j b ON b.job = c.name \
             WHERE b.n >= c.cap)"
                .into(),
        );
        cand_when.push_str(" AND job NOT IN (SELECT name FROM blocked_j)");
    }
    if k.keys {
        with.push(
            "busy_k AS (SELECT queue, concurrency_key AS ckey, COUNT(*) AS n FROM executions \
             WHERE status = 'running' AND concurrency_key IS NOT NULL \
             GROUP BY queue, concurrency_key)"
                .into(),
        );
        with.push(
            "blocked_k AS (SELECT b.queue, b.ckey FROM busy_k b \
             JOIN queues q ON q.name = b.queue WHERE b.n >= q.key_limit)"
                .into(),
        );
        cand_when.push_str(
            " AND NOT EXISTS (SELECT 1 FROM blocked_k k \
             WHERE k.queue = e.queue AND k.ckey = e.concurrency_key)",
        );
    }
    with.push(format!(
        "cand AS (SELECT id, job, queue, concurrency_key AS ckey, priority, run_at \
         FROM executions e WHERE {cand_when} ORDER BY priority DESC, run_at, id LIMIT $4)"
    ));
    // Rows within their job's and key's free slots.
    let (from, within) = if k.jobs || k.keys {
        let (mut cols, mut joins, mut when) = (Vec::new(), String::new(), Vec::new());
        if k.jobs {
            cols.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY c.job {ORDER}) AS jn, \
                 cj.cap - COALESCE(bj.n, 0) AS jfree"
            ));
            joins.push_str(
                " LEFT JOIN caps_j cj ON cj.name = c.job LEFT JOIN busy_j bj ON bj.job = c.job",
            );
            when.push("(r.jfree IS NULL OR r.jn <= r.jfree)");
        }
        if k.keys {
            cols.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY c.queue, c.ckey {ORDER}) AS kn, \
                 CASE WHEN c.ckey IS NULL THEN NULL ELSE q.key_limit - COALESCE(bk.n, 0) END AS kfree"
            ));
            joins.push_str(
                " LEFT JOIN queues q ON q.name = c.queue \
                 LEFT JOIN busy_k bk ON bk.queue = c.queue AND bk.ckey = c.ckey",
            );
            when.push("(r.kfree IS NULL OR r.kn <= r.kfree)");
        }
        with.push(format!(
            "ranked AS (SELECT c.id, c.queue, c.priority, c.run_at, {} FROM cand c{joins})",
            cols.join(", ")
        ));
        ("ranked r", format!(" WHERE {}", when.join(" AND ")))
    } else {
        ("cand r", String::new())
    };
    let rfree = if k.rates {
        "rq.rfree"
    } else {
        "CAST(NULL AS BIGINT)"
    };
    let rate_join = if k.rates {
        " LEFT JOIN rated_q rq ON rq.name = r.queue"
    } else {
        ""
    };
    with.push(format!(
        "passing AS (SELECT r.id, r.priority, r.run_at, \
         ROW_NUMBER() OVER (PARTITION BY r.queue ORDER BY r.priority DESC, r.run_at, r.id) AS qn, \
         q.max_running - COALESCE(bq.n, 0) AS qfree, {rfree} AS rfree \
         FROM {from} LEFT JOIN queues q ON q.name = r.queue \
         LEFT JOIN busy_q bq ON bq.queue = r.queue{rate_join}{within})"
    ));
    with.push(
        "picked AS MATERIALIZED (SELECT id FROM passing \
         WHERE (qfree IS NULL OR qn <= qfree) AND (rfree IS NULL OR qn <= rfree) \
         ORDER BY priority DESC, run_at, id LIMIT $3)"
            .into(),
    );
    format!(
        "WITH {} UPDATE executions SET status = 'running', started_at = {}, node = $2 \
         WHERE status = 'pending' AND id IN (SELECT id FROM picked){}, queue",
        with.join(", "),
        D::START_STAMP,
        claim_returning::<D>()
    )
}

/// When the next start is allowed in a rate-limited queue whose window is
/// full at `$1`: when the oldest start in that window leaves it.
pub(super) const NEXT_TOKEN: &str = "SELECT MIN(s.at + q.rate_ms * 1000) FROM queue_starts s \
     JOIN queues q ON q.name = s.queue WHERE q.rate_n IS NOT NULL \
       AND s.at > $1 - q.rate_ms * 1000 \
       AND q.rate_n <= (SELECT SUM(w.n) FROM queue_starts w \
                        WHERE w.queue = q.name AND w.at > $1 - q.rate_ms * 1000)";

/// Forgets the starts that no window counts any more (and those of queues
/// that lost their rate).
pub(super) const PRUNE_STARTS: &str = "DELETE FROM queue_starts WHERE at <= $1 - 1000 * COALESCE( \
     (SELECT q.rate_ms FROM queues q WHERE q.name = queue_starts.queue AND q.rate_n IS NOT NULL), 0)";

/// The claim when no limits exist: the best due rows, in index order. It
/// takes nothing while any limit exists (two cheap lookups, evaluated once
/// per statement: jobs_capped is a partial index of what they look for).
///
/// The rows are picked in a materialized CTE, which runs once. Picked in
/// an `IN (subquery)` instead, the planner may run the subquery again for
/// each row it updates (a nested loop on a partitioned table does), and
/// each run skips the rows the last one locked and takes the next: a
/// claim of 1 took 2.
pub(super) fn claim_simple<D: Dialect>() -> String {
    format!(
        "WITH picked AS MATERIALIZED (SELECT id FROM executions \
           WHERE status = 'pending' AND run_at <= $1 \
             AND NOT EXISTS (SELECT 1 FROM queues WHERE {}) \
             AND NOT EXISTS (SELECT 1 FROM jobs WHERE {}) \
           ORDER BY priority DESC, run_at, id LIMIT $3{}) \
         UPDATE executions SET status = 'running', started_at = {}, node = $2 \
         WHERE status = 'pending' AND id IN (SELECT id FROM picked){}",
        queue_limited!(),
        job_capped!(),
        D::SKIP_LOCKED,
        D::START_STAMP,
        claim_returning::<D>()
    )
}

impl<D: Dialect> SqlStore<D> {
    /// The ends and outputs of the parents of each of `ids`, in the order
    /// of the parents' ids.
    pub(super) async fn inputs(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<crate::model::Input>>, StoreError> {
        let mut out: HashMap<Uuid, Vec<crate::model::Input>> = HashMap::new();
        for chunk in ids.chunks(rows_per_statement(1)) {
            let mut q = Sql::new(
                "SELECT d.child_id AS child, e.id, e.handler, e.status, e.output \
                 FROM dependencies d JOIN executions e ON e.id = d.parent_id \
                 WHERE d.child_id IN (",
            );
            q.push_list(chunk.iter().copied())
                .push(") ORDER BY d.child_id, e.id");
            for row in self.read_all(q).await? {
                let row = Fields::<D>::new(&row, "executions");
                out.entry(row.get("child")?)
                    .or_default()
                    .push(crate::model::Input {
                        id: row.get::<Uuid>("id")?.to_string(),
                        handler: row.get("handler")?,
                        status: row.get("status")?,
                        output: row.json("output")?.unwrap_or(Value::Null),
                    });
            }
        }
        Ok(out)
    }
}

/// Claims up to `limit` due pending executions for `node`: the plain claim
/// while no limit exists, else the limited one for the kinds that do.
pub(super) async fn claim<D: Dialect>(
    store: &SqlStore<D>,
    node: &str,
    limit: usize,
    now: Micros,
) -> Result<Claims, StoreError> {
    // The statements are borrowed, never copied, per claim. The limited
    // claim's candidates are a window ($4) larger than the claim.
    fn claim<'a, D: Dialect>(
        sql: &'a str,
        now: Micros,
        node: &'a str,
        limit: usize,
        limited: bool,
    ) -> Sql<'a, D> {
        let q = Sql::new(sql).bind(now).bind(node).bind(limit as i64);
        if limited {
            q.bind((limit * 2).max(64) as i64)
        } else {
            q
        }
    }
    let mut now = now;
    let mut next_token_at = None;
    let mut rows = Vec::new();
    let mut claimed = Vec::new();
    let cached = store.any_limits().await?;
    if !cached.any {
        // The plain claim takes nothing once any limit exists, so that
        // a limit set since the cache was read is never passed over.
        let mut conn = store.db.writer().acquire().await?;
        // Stamped once the connection is ours: a wait for it (SQLite's
        // one writer) may have let parents end that this claim sees.
        now = now.max(crate::model::now_micros());
        rows = claim::<D>(&store.claim_simple, now, node, limit, false)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            store.limits_changed();
        }
        claimed = SqlStore::<D>::decode(&rows, "executions", decode_claim)?;
    }
    if rows.is_empty() && (cached.any || store.any_limits().await?.any) {
        // Limited claims count what runs and what started: on
        // PostgreSQL they take turns (the dialect's lock, which queue
        // changes take too), so two nodes never both fill the last
        // slot. Which limits exist is read in the claim's transaction,
        // so a change is never half seen. A rated queue's starts are
        // recorded in the same transaction.
        let mut tx = store.begin().await?;
        if let Some(lock) = D::CLAIM_LOCK {
            Sql::<D>::new(lock).execute(&mut tx).await?;
        }
        let limits = read_limits::<D>(&mut tx).await?;
        store.cache_limits(limits);
        let sql = if limits.any {
            &store.claim_limited[limits.kinds.index()]
        } else {
            &store.claim_simple
        };
        // Its turn may have come after ends that it now sees: its
        // starts are stamped from then, not from before the wait.
        now = now.max(crate::model::now_micros());
        rows = claim::<D>(sql, now, node, limit, limits.any)
            .fetch_all(&mut tx)
            .await?;
        claimed = SqlStore::<D>::decode(&rows, "executions", decode_claim)?;
        // The starts are counted at their stamps (the server's clock
        // may be later than `now` on PostgreSQL).
        for (c, _) in &claimed {
            now = now.max(c.started_at);
        }
        if limits.kinds.rates {
            let mut started: BTreeMap<String, i64> = BTreeMap::new();
            for row in &rows {
                *started.entry(D::get(row, "queue")?).or_default() += 1;
            }
            if !started.is_empty() {
                let mut q = Sql::<D>::new(
                    "INSERT INTO queue_starts (queue, at, n) \
                     SELECT v.column1, v.column2, v.column3 FROM (",
                );
                q.values(&started, |t, (queue, n)| {
                    t.bind(queue.as_str()).bind(now).bind(*n);
                });
                q.push(
                    ") AS v WHERE v.column1 IN (SELECT name FROM queues WHERE rate_n IS NOT NULL)",
                );
                q.execute(&mut tx).await?;
                Sql::<D>::new(PRUNE_STARTS)
                    .bind(now)
                    .execute(&mut tx)
                    .await?;
            }
            if rows.len() < limit {
                let next = Sql::<D>::new(NEXT_TOKEN)
                    .bind(now)
                    .fetch_all(&mut tx)
                    .await?;
                next_token_at = match next.first() {
                    Some(row) => D::get::<Option<i64>>(row, 0)?,
                    None => None,
                };
            }
        }
        tx.commit().await?;
    }
    let with_parents: Vec<Uuid> = claimed
        .iter()
        .filter(|(_, parents)| *parents)
        .map(|(c, _)| c.id)
        .collect();
    let mut claimed: Vec<Claimed> = claimed.into_iter().map(|(c, _)| c).collect();
    if !with_parents.is_empty() {
        let mut inputs = store.inputs(&with_parents).await?;
        for c in &mut claimed {
            c.inputs = inputs.remove(&c.id).unwrap_or_default();
        }
    }
    // RETURNING gives no order; run the best first.
    claimed.sort_by_key(|c| c.id);
    Ok(Claims {
        executions: claimed,
        next_token_at,
    })
}
