use super::cancel::settle;
use super::enqueue::insert_edges;
use super::enqueue::insert_executions;
use super::enqueue::Initial;
use super::fields::corrupt;
use super::fields::Fields;
use super::keys::release_key;
use super::tally::EndTally;
use super::*;
use crate::model::OutcomeColumns;

/// What a completion's statement returns of each execution it ended,
/// packed in one JSON array column (see `Dialect::JSON_ARRAY`), in field
/// order.
#[derive(serde::Deserialize)]
pub(super) struct EndColumns {
    pub(super) attempt: u32,
    pub(super) max_attempts: u32,
    pub(super) backoff_base_ms: u64,
    pub(super) backoff_cap_ms: u64,
    pub(super) unique_key: Option<String>,
    pub(super) unique_for_ms: Option<i64>,
    pub(super) cancel_requested_at: Option<Micros>,
    pub(super) after_policy: Option<String>,
    pub(super) has_children: i64,
    pub(super) handler: String,
    pub(super) started_at: Option<Micros>,
    /// Its job's chain (JSON text).
    pub(super) chain: Option<String>,
}

/// A completion as the database took it: the facts that decide what
/// follows, and what the timeline counts.
pub(super) struct Ended {
    pub(super) facts: EndFacts,
    pub(super) handler: String,
    pub(super) started_at: Option<Micros>,
}

/// Writes a relay batch in one transaction: each kind of write is one
/// statement per chunk of rows, never one per execution (every statement
/// is a round trip). What follows each end is decided by
/// [`after_end`] and carried out here.
pub(super) async fn apply<D: Dialect>(
    store: &SqlStore<D>,
    batch: &Batch,
) -> Result<Vec<Finished>, StoreError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin().await?;
    let (finished, tally) = apply_in(store, &mut tx, batch).await?;
    store.commit(tx, tally).await?;
    Ok(finished)
}

/// Writes `batch` in transaction `tx`; returns what ended, and what the
/// commit adds to the timeline.
pub(super) async fn apply_in<D: Dialect>(
    store: &SqlStore<D>,
    tx: &mut Conn<D>,
    batch: &Batch,
) -> Result<(Vec<Finished>, EndTally), StoreError> {
    insert_lines::<D>(tx, &batch.logs).await?;
    write_progress::<D>(tx, &batch.progress, &batch.pids).await?;
    let mut follow = Follow::default();
    for chunk in batch.completions.chunks(rows_per_statement(10)) {
        let ended = end_rows::<D>(tx, chunk).await?;
        for c in chunk {
            if let Some(e) = ended.get(&c.id) {
                follow_end::<D>(tx, &mut follow, c, e).await?;
            }
        }
    }
    let Follow {
        mut finished,
        mut tally,
        to_settle,
        chained,
        promoted,
    } = follow;
    let mut released = settle::<D>(tx, &mut tally, to_settle, now_micros()).await?;
    released |= enqueue_chained::<D>(tx, &chained).await?;
    released |= promoted;
    // Under a limit, an end frees a slot that held executions wait for:
    // this node claims again now rather than at its next poll (which slows
    // down while due rows are held).
    released |= !finished.is_empty() && store.limits_may_exist();
    if released {
        for f in &mut finished {
            f.released = true;
        }
        // Other nodes hear of it too (PostgreSQL): their held executions
        // may be claimable now, which their polls no longer wait for.
        D::notify(tx, "work").await?;
    }
    Ok((finished, tally))
}

/// What a batch's ends add up to, to carry out once they are all written.
#[derive(Default)]
struct Follow {
    finished: Vec<Finished>,
    tally: EndTally,
    /// Ended for good with executions waiting on them.
    to_settle: Vec<(Uuid, Status)>,
    /// `(parent, job, when)`: chained jobs to enqueue.
    chained: Vec<(Uuid, String, Micros)>,
    /// Whether an execution became due at once (a retry due now, a key
    /// handed to a follower).
    promoted: bool,
}

/// Carries out what follows completion `c`, which the database took as
/// `e`: its retry, its key, and what settles or chains after it.
async fn follow_end<D: Dialect>(
    tx: &mut Conn<D>,
    follow: &mut Follow,
    c: &Completion,
    e: &Ended,
) -> Result<(), StoreError> {
    let next = after_end(&e.facts, &c.outcome, c.finished_at);
    follow
        .tally
        .add(e.handler.clone(), next.status, e.started_at, c.finished_at);
    let retry = match &next.retry {
        Some(r) => {
            // Due at once (an interruption, a snooze of 0): this node
            // claims it now, not at its next poll.
            follow.promoted |= r.run_at <= c.finished_at;
            let id = Uuid::now_v7();
            schedule_retry::<D>(&mut *tx, c.id, *r, c.finished_at, id).await?;
            hand_on_edges::<D>(&mut *tx, c.id, id, e.facts.has_parents).await?;
            Some(id)
        }
        None => None,
    };
    if let (Some(key), Some(to)) = (&e.facts.key, next.key) {
        follow.promoted |= release_key::<D>(&mut *tx, key, c.id, to, retry).await?;
    }
    if next.settle_children {
        follow.to_settle.push((c.id, next.status));
    }
    follow.chained.extend(
        next.chained
            .into_iter()
            .map(|job| (c.id, job, c.finished_at)),
    );
    follow.finished.push(Finished {
        id: c.id,
        status: next.status,
        retry,
        retry_at: next.retry.map(|r| r.run_at),
        released: false,
    });
    Ok(())
}

/// Writes a batch's log lines. Fenced: lines of an execution that is no
/// longer running (its node was presumed dead and it was rescued) are not
/// stored. Which are running is read once per batch, with their rows
/// locked on PostgreSQL until the commit, rather than checked line by line.
/// Each kind of write is one statement per chunk of rows, never one per
/// execution: every statement is a round trip.
pub(super) async fn insert_lines<D: Dialect>(
    conn: &mut Conn<D>,
    logs: &[crate::store::LogRow],
) -> Result<(), StoreError> {
    if logs.is_empty() {
        return Ok(());
    }
    let mut running = HashSet::new();
    let ids: Vec<Uuid> = logs
        .iter()
        .map(|l| l.execution_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for chunk in ids.chunks(rows_per_statement(1)) {
        let mut q = Sql::<D>::new("SELECT id FROM executions WHERE status = 'running' AND id IN (");
        q.push_list(chunk.iter().copied())
            .push(") ORDER BY id")
            .push(D::FOR_UPDATE);
        for row in q.fetch_all(&mut *conn).await? {
            running.insert(D::get::<Uuid>(&row, 0)?);
        }
    }
    let lines: Vec<&crate::store::LogRow> = logs
        .iter()
        .filter(|l| running.contains(&l.execution_id))
        .collect();
    for chunk in lines.chunks(rows_per_statement(7)) {
        let mut q = Sql::<D>::new(format!(
            "{} INTO logs (execution_id, seq, ts, level, stream, message, fields) ",
            D::OR_NOTHING.0
        ));
        q.values(chunk, |t, l| {
            t.bind(l.execution_id)
                .bind(l.seq)
                .bind(l.ts)
                .bind(l.level)
                .bind(l.stream)
                .bind(stored_text(&l.message))
                .bind(l.fields.as_deref());
        });
        q.push(D::OR_NOTHING.1);
        q.execute(conn).await?;
    }
    Ok(())
}

/// Writes a batch's progress reports and pids (of running executions
/// only).
pub(super) async fn write_progress<D: Dialect>(
    conn: &mut Conn<D>,
    progress: &[(Uuid, crate::model::ProgressState)],
    pids: &[(Uuid, i64)],
) -> Result<(), StoreError> {
    for chunk in progress.chunks(rows_per_statement(6)) {
        let mut q = Sql::<D>::new(
            "UPDATE executions SET \
             progress_percent = COALESCE(v.column2, progress_percent), \
             progress_message = COALESCE(v.column3, progress_message), \
             progress_done = COALESCE(v.column4, progress_done), \
             progress_total = COALESCE(v.column5, progress_total), \
             progress_data = COALESCE(v.column6, progress_data) FROM (",
        );
        q.values(chunk, |t, (id, p)| {
            t.bind(*id)
                .bind(p.percent)
                .bind(p.message.as_deref().map(stored_text))
                .bind(p.done)
                .bind(p.total)
                .bind(p.data.as_ref().map(Value::to_string));
        });
        q.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
        q.execute(conn).await?;
    }
    for chunk in pids.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new("UPDATE executions SET pid = v.column2 FROM (");
        q.values(chunk, |t, (id, pid)| {
            t.bind(*id).bind(*pid);
        });
        q.push(") AS v WHERE executions.id = v.column1 AND executions.status = 'running'");
        q.execute(conn).await?;
    }
    Ok(())
}

/// EndTally the executions of `chunk` that are still running (a late or
/// duplicate completion, e.g. after a rescue, changes nothing); returns,
/// for each ended, what the decisions after an end need.
pub(super) async fn end_rows<D: Dialect>(
    conn: &mut Conn<D>,
    chunk: &[crate::store::Completion],
) -> Result<HashMap<Uuid, Ended>, StoreError> {
    let mut q = Sql::<D>::new(
        "UPDATE executions SET status = v.column2, finished_at = v.column3, \
         output = v.column4, error = v.column5, exit_code = v.column6, \
         \"signal\" = v.column7, timed_out = v.column8, interrupted = v.column9, \
         cancel_outcome = v.column10 FROM (",
    );
    // Bound a column at a time: on PostgreSQL as arrays, one statement
    // text whatever the chunk's size (see `Dialect::ARRAYS`). Each
    // outcome's columns are worked out once.
    let rows: Vec<_> = chunk.iter().map(|c| (c, c.outcome.columns())).collect();
    let text = |f: &dyn Fn(&(&crate::store::Completion, OutcomeColumns)) -> Option<String>| {
        Column::Text(rows.iter().map(f).collect())
    };
    let int = |f: &dyn Fn(&(&crate::store::Completion, OutcomeColumns)) -> Option<i64>| {
        Column::Int(rows.iter().map(f).collect())
    };
    q.columns(vec![
        Column::Uuid(chunk.iter().map(|c| c.id).collect()),
        text(&|(_, o)| Some(o.status.as_str().to_string())),
        int(&|(c, _)| Some(c.finished_at)),
        text(&|(c, _)| c.output.as_ref().map(Value::to_string)),
        text(&|(c, _)| c.error.as_deref().map(|e| stored_text(e).into_owned())),
        int(&|(c, _)| c.exit_code.map(i64::from)),
        text(&|(c, _)| c.signal.as_deref().map(|s| stored_text(s).into_owned())),
        int(&|(_, o)| Some(o.timed_out as i64)),
        int(&|(_, o)| Some(o.interrupted as i64)),
        text(&|(_, o)| o.cancel_outcome.map(str::to_string)),
    ]);
    // What the end decides on comes packed in one column (see
    // Dialect::JSON_ARRAY), in the field order of `EndColumns`.
    q.push(
        ") AS v WHERE executions.id = v.column1 AND executions.status = 'running' \
         RETURNING executions.id AS id, ",
    )
    .push(D::JSON_ARRAY.0)
    .push(
        "executions.attempt, executions.max_attempts, executions.backoff_base_ms, \
         executions.backoff_cap_ms, executions.unique_key, executions.unique_for_ms, \
         executions.cancel_requested_at, executions.after_policy, \
         executions.has_children, executions.handler, executions.started_at, \
         (SELECT j.chain FROM jobs j WHERE j.name = executions.job)",
    )
    .push(D::JSON_ARRAY.1)
    .push(" AS facts");
    let rows = q.fetch_all(conn).await?;
    let applied: HashMap<Uuid, Ended> = SqlStore::<D>::decode(&rows, "executions", |r| {
        let Some(f) = r.json::<EndColumns>("facts")? else {
            return Err(corrupt("executions", "facts", "NULL"));
        };
        let chain = match f.chain {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("jobs", "chain", e))?,
            None => Vec::new(),
        };
        let facts = EndFacts {
            attempt: f.attempt,
            policy: RetryPolicy {
                max_attempts: f.max_attempts,
                backoff_base_ms: f.backoff_base_ms,
                backoff_cap_ms: f.backoff_cap_ms,
            },
            key: f.unique_key,
            hold_ms: f.unique_for_ms,
            cancel_requested: f.cancel_requested_at.is_some(),
            has_parents: f.after_policy.is_some(),
            has_children: f.has_children != 0,
            chain,
        };
        let applied = Ended {
            facts,
            handler: f.handler,
            started_at: f.started_at,
        };
        Ok((r.get("id")?, applied))
    })?
    .into_iter()
    .collect();
    Ok(applied)
}

/// Execution `id` is retried as `retry`: the retry runs after the same
/// parents, and what ran after `id` now runs after the retry (a parent is
/// finished when its last attempt ends).
pub(super) async fn hand_on_edges<D: Dialect>(
    conn: &mut Conn<D>,
    id: Uuid,
    retry: Uuid,
    has_parents: bool,
) -> Result<(), StoreError> {
    if has_parents {
        Sql::<D>::new(
            "INSERT INTO dependencies (child_id, parent_id) \
             SELECT $2, parent_id FROM dependencies WHERE child_id = $1",
        )
        .bind(id)
        .bind(retry)
        .execute(&mut *conn)
        .await?;
    }
    Sql::<D>::new("UPDATE dependencies SET parent_id = $2 WHERE parent_id = $1")
        .bind(id)
        .bind(retry)
        .execute(conn)
        .await?;
    Ok(())
}

/// Enqueues the jobs chained to executions that ended: `(parent, job,
/// when)`, each a run of `job` after `parent`. A job removed since is
/// passed over. Returns whether any was enqueued.
pub(super) async fn enqueue_chained<D: Dialect>(
    conn: &mut Conn<D>,
    chained: &[(Uuid, String, Micros)],
) -> Result<bool, StoreError> {
    if chained.is_empty() {
        return Ok(false);
    }
    let mut jobs: HashMap<&str, Option<Job>> = HashMap::new();
    let mut runs = Vec::with_capacity(chained.len());
    for (parent, name, at) in chained {
        if !jobs.contains_key(name.as_str()) {
            let row = Sql::<D>::new("SELECT * FROM jobs WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *conn)
                .await?;
            let job = row
                .map(|row| Fields::<D>::new(&row, "jobs").job())
                .transpose()?;
            jobs.insert(name, job);
        }
        let Some(job) = &jobs[name.as_str()] else {
            tracing::warn!(job = %name, %parent, "chained job no longer exists; not enqueued");
            continue;
        };
        let mut run = job.execution(None, *at);
        run.after = vec![*parent];
        run.after_policy = AfterPolicy::Finished;
        runs.push(run);
    }
    let refs: Vec<&NewExecution> = runs.iter().collect();
    let now = crate::model::now_micros();
    insert_executions::<D>(conn, &refs, now, |_| Initial::PENDING).await?;
    let edges: Vec<(Uuid, Uuid)> = runs.iter().map(|r| (r.id, r.after[0])).collect();
    insert_edges::<D>(conn, &edges).await?;
    D::notify(conn, "work").await?;
    Ok(!runs.is_empty())
}

/// Inserts the next attempt of failed execution `id`, a copy of it that
/// `next` says how to run, and links the two.
pub(super) async fn schedule_retry<D: Dialect>(
    conn: &mut Conn<D>,
    id: Uuid,
    next: crate::model::Retry,
    now: Micros,
    new_id: Uuid,
) -> Result<Uuid, StoreError> {
    Sql::<D>::new(
        "INSERT INTO executions (id, job, handler, mode, payload, status, attempt, \
         max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
         enqueued_at, run_at, queue, unique_key, unique_for_ms, after_policy, workflow_id, \
         step, has_children, concurrency_key, snoozes, origin, meta, tags, trace_context) \
         SELECT $1, job, handler, mode, payload, 'pending', $2, $3, backoff_base_ms, \
         backoff_cap_ms, id, timeout_ms, priority, $4, $5, queue, unique_key, unique_for_ms, \
         after_policy, workflow_id, step, has_children, concurrency_key, snoozes + $7, $8, \
         meta, tags, trace_context FROM executions WHERE id = $6",
    )
    .bind(new_id)
    .bind(next.attempt as i64)
    .bind(next.max_attempts as i64)
    .bind(now)
    .bind(next.run_at)
    .bind(id)
    .bind(next.snooze as i64)
    .bind(
        match next.snooze {
            true => crate::model::Origin::Snooze,
            false => crate::model::Origin::Retry,
        }
        .as_str(),
    )
    .execute(&mut *conn)
    .await?;
    // The filters find every attempt by the labels of the first.
    for statement in [
        "INSERT INTO execution_tags (tag, execution_id) \
         SELECT tag, $1 FROM execution_tags WHERE execution_id = $2",
        "INSERT INTO execution_meta (\"key\", value, execution_id) \
         SELECT \"key\", value, $1 FROM execution_meta WHERE execution_id = $2",
    ] {
        Sql::<D>::new(statement)
            .bind(new_id)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Sql::<D>::new("UPDATE executions SET next_id = $2 WHERE id = $1")
        .bind(id)
        .bind(new_id)
        .execute(conn)
        .await?;
    Ok(new_id)
}
