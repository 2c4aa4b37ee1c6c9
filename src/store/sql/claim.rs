use super::fields::corrupt;
use super::fields::Fields;
use super::*;

/// What a claim returns of each row (the limited claim adds `queue`, for
/// the starts a rate counts).
pub(super) fn claim_returning<D: Dialect>() -> String {
    format!(
        " RETURNING id, payload, {}job, handler, mode, attempt, timeout_ms, enqueued_at, \
         started_at, cancel_requested_at, after_policy, snoozes, \
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
    };
    Ok((claimed, f.after_policy.is_some()))
}

/// Starts each rate-limited queue has left in its window now (`$1`): its
/// rate less the starts that its claims recorded within the window.
pub(super) const RATE_FREE: &str = "SELECT q.name, q.rate_n - CAST(COALESCE((SELECT SUM(s.n) \
     FROM queue_starts s WHERE s.queue = q.name AND s.at > $1 - q.rate_ms * 1000), 0) AS BIGINT) \
     AS rfree FROM queues q WHERE q.rate_n IS NOT NULL";

/// The kinds of limits a limited claim applies besides queue limits and
/// pauses (which it always applies).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Kinds {
    /// Per-job caps (`--max-parallel`, `--overlap queue`).
    pub(super) jobs: bool,
    /// Per-key limits.
    pub(super) keys: bool,
    /// Rates.
    pub(super) rates: bool,
}

impl Kinds {
    /// The combination numbered `i` by [`Kinds::index`].
    pub(super) fn from_index(i: usize) -> Kinds {
        Kinds {
            jobs: i & 1 != 0,
            keys: i & 2 != 0,
            rates: i & 4 != 0,
        }
    }

    pub(super) fn index(self) -> usize {
        usize::from(self.jobs) | usize::from(self.keys) << 1 | usize::from(self.rates) << 2
    }
}

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
    format!(
        "UPDATE executions SET status = 'running', started_at = {}, node = $2 WHERE id IN ( \
         WITH {} SELECT id FROM passing \
         WHERE (qfree IS NULL OR qn <= qfree) AND (rfree IS NULL OR qn <= rfree) \
         ORDER BY priority DESC, run_at, id LIMIT $3){}, queue",
        D::START_STAMP,
        with.join(", "),
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
pub(super) fn claim_simple<D: Dialect>() -> String {
    format!(
        "UPDATE executions SET status = 'running', started_at = {}, node = $2 \
         WHERE id IN (SELECT id FROM executions WHERE status = 'pending' AND run_at <= $1 \
                        AND NOT EXISTS (SELECT 1 FROM queues WHERE {}) \
                        AND NOT EXISTS (SELECT 1 FROM jobs WHERE {}) \
                      ORDER BY priority DESC, run_at, id LIMIT {}($3, $4){}){}",
        D::START_STAMP,
        queue_limited!(),
        job_capped!(),
        D::LEAST,
        D::SKIP_LOCKED,
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
