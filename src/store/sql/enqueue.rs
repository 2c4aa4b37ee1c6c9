use super::cancel::{cancel_unstarted, condition_ends, end_unstarted, settle, weigh_conditions};
use super::fields::Fields;
use super::keys::take_key;
use super::tally::EndTally;
use super::*;

/// How an execution is inserted.
#[derive(Clone, Copy)]
pub(super) struct Initial {
    pub(super) status: Status,
    /// Parents it waits on.
    pub(super) waiting_on: i64,
    /// Whether executions in the same enqueue run after it.
    pub(super) has_children: bool,
}

impl Initial {
    pub(super) const PENDING: Initial = Initial {
        status: Status::Pending,
        waiting_on: 0,
        has_children: false,
    };

    pub(super) fn new(status: Status, waiting_on: i64) -> Self {
        Initial {
            status,
            waiting_on,
            has_children: false,
        }
    }
}

/// The INSERT of `execs`, each as `start` says; an existing (job,
/// occurrence) is passed over.
pub(super) fn execution_insert<'a, D: Dialect>(
    execs: impl IntoIterator<Item = &'a NewExecution>,
    now: Micros,
    start: &impl Fn(&NewExecution) -> Initial,
) -> Sql<'a, D> {
    let mut q = Sql::new(format!(
        "{} INTO executions (id, job, handler, mode, payload, status, attempt, \
         max_attempts, backoff_base_ms, backoff_cap_ms, previous_id, timeout_ms, priority, \
         enqueued_at, run_at, queue, occurrence, unique_key, unique_for_ms, waiting_on, \
         after_policy, workflow_id, step, has_children, concurrency_key, origin, meta, tags, \
         trace_context) ",
        D::OR_NOTHING.0
    ));
    q.values(execs, |t, e| {
        let Initial {
            status,
            waiting_on,
            has_children,
        } = start(e);
        t.bind(e.id)
            .bind(e.job.as_deref().unwrap_or(""))
            .bind(e.handler.as_str())
            .bind(e.mode.as_str())
            .bind(e.payload.to_string())
            .bind(status.as_str())
            .bind(e.attempt as i64)
            .bind(e.retry.max_attempts as i64)
            .bind(e.retry.backoff_base_ms as i64)
            .bind(e.retry.backoff_cap_ms as i64)
            .bind(e.previous_id)
            .bind(e.timeout_ms.map(|t| t as i64))
            .bind(e.priority as i64)
            .bind(now)
            .bind(e.run_at)
            .bind(e.queue.as_str())
            .bind(e.occurrence)
            .bind(e.unique.as_ref().map(|u| u.key.as_str()))
            .bind(
                e.unique
                    .as_ref()
                    .and_then(|u| u.hold_ms)
                    .map(|ms| ms as i64),
            )
            .bind(waiting_on)
            .bind((!e.after.is_empty()).then(|| e.after_policy.as_str()))
            .bind(e.step.as_ref().map(|(w, _)| *w))
            .bind(e.step.as_ref().map(|(_, s)| s.as_str()))
            .bind(has_children as i64)
            .bind(e.concurrency_key.as_deref())
            .bind(e.origin.as_str())
            .bind((!e.meta.is_empty()).then(|| json_text(&e.meta)))
            .bind((!e.tags.is_empty()).then(|| json_text(&e.tags)))
            // A run that came with no trace starts one while traces are
            // exported.
            .bind(
                e.trace
                    .or_else(|| {
                        crate::model::trace::exporting()
                            .then(|| crate::model::TraceContext::for_run(e.id, None, now))
                    })
                    .map(|t| t.to_column()),
            );
    });
    q.push(D::OR_NOTHING.1);
    q
}

pub(super) const EXECUTION_BINDS: usize = 28;

/// Inserts executions, each as `start` says; returns the ids actually
/// inserted.
pub(super) async fn insert_executions<D: Dialect>(
    conn: &mut Conn<D>,
    execs: &[&NewExecution],
    now: Micros,
    start: impl Fn(&NewExecution) -> Initial,
) -> Result<HashSet<Uuid>, StoreError> {
    let mut inserted = HashSet::with_capacity(execs.len());
    for chunk in execs.chunks(rows_per_statement(EXECUTION_BINDS)) {
        let fresh;
        let chunk = if D::PARTITIONED && chunk.iter().any(|e| e.occurrence.is_some()) {
            fresh = new_occurrences::<D>(conn, chunk).await?;
            &fresh[..]
        } else {
            chunk
        };
        if chunk.is_empty() {
            continue;
        }
        // Counted rather than returned: rows coming back cost a hand-off
        // each (SQLite's connection thread). Only when some were passed
        // over (a conflict) are the inserted ones read back.
        let n = execution_insert::<D>(chunk.iter().copied(), now, &start)
            .execute(&mut *conn)
            .await?;
        if n as usize == chunk.len() {
            inserted.extend(chunk.iter().map(|e| e.id));
        } else {
            let mut q = Sql::<D>::new("SELECT id FROM executions WHERE id IN (");
            q.push_list(chunk.iter().map(|e| e.id)).push(")");
            for row in q.fetch_all(&mut *conn).await? {
                inserted.insert(D::get(&row, 0)?);
            }
        }
        insert_labels::<D>(conn, chunk.iter().filter(|e| inserted.contains(&e.id))).await?;
    }
    Ok(inserted)
}

/// The rows the tag and meta filters look up, for the executions of
/// `execs` that have some (most have none, and cost nothing here).
async fn insert_labels<'a, D: Dialect>(
    conn: &mut Conn<D>,
    execs: impl Iterator<Item = &'a &'a NewExecution>,
) -> Result<(), StoreError> {
    let (mut tags, mut meta) = (Vec::new(), Vec::new());
    for e in execs {
        tags.extend(e.tags.iter().map(|t| (t.as_str(), e.id)));
        meta.extend(e.meta.iter().map(|(k, v)| (k.as_str(), v.as_str(), e.id)));
    }
    for chunk in tags.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new(format!(
            "{} INTO execution_tags (tag, execution_id) ",
            D::OR_NOTHING.0
        ));
        q.values(chunk, |t, (tag, id)| {
            t.bind(*tag).bind(*id);
        });
        q.push(D::OR_NOTHING.1);
        q.execute(&mut *conn).await?;
    }
    for chunk in meta.chunks(rows_per_statement(3)) {
        let mut q = Sql::<D>::new(format!(
            "{} INTO execution_meta (\"key\", value, execution_id) ",
            D::OR_NOTHING.0
        ));
        q.values(chunk, |t, (k, v, id)| {
            t.bind(*k).bind(*v).bind(*id);
        });
        q.push(D::OR_NOTHING.1);
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `execs` less the occurrences of jobs that are already in the table.
/// On PostgreSQL the unique (job, occurrence) is per partition, so the
/// insert's conflict finds only one that has yet to end; one that ended is
/// looked for here (a job removed and added again counts its runs anew).
/// SQLite's one table has one unique index, and needs no look.
async fn new_occurrences<'a, D: Dialect>(
    conn: &mut Conn<D>,
    execs: &[&'a NewExecution],
) -> Result<Vec<&'a NewExecution>, StoreError> {
    let mut q = Sql::<D>::new("SELECT job, occurrence FROM executions WHERE occurrence IN (");
    q.push_list(execs.iter().filter_map(|e| e.occurrence))
        .push(") AND job IN (");
    q.push_list(
        execs
            .iter()
            .filter(|e| e.occurrence.is_some())
            .map(|e| e.job.as_deref().unwrap_or(""))
            .collect::<BTreeSet<_>>(),
    )
    .push(")");
    let mut present = HashSet::new();
    for row in q.fetch_all(&mut *conn).await? {
        present.insert((D::get::<String>(&row, 0)?, D::get::<i64>(&row, 1)?));
    }
    Ok(execs
        .iter()
        .copied()
        .filter(|e| match e.occurrence {
            Some(o) => !present.contains(&(e.job.clone().unwrap_or_default(), o)),
            None => true,
        })
        .collect())
}

/// Records that each `(child, parent)` runs after the other.
pub(super) async fn insert_edges<D: Dialect>(
    conn: &mut Conn<D>,
    edges: &[(Uuid, Uuid)],
) -> Result<(), StoreError> {
    for chunk in edges.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new(format!(
            "{} INTO dependencies (child_id, parent_id) ",
            D::OR_NOTHING.0
        ));
        q.values(chunk, |t, (child, parent)| {
            t.bind(*child).bind(*parent);
        });
        q.push(D::OR_NOTHING.1);
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Where parent `id` stands for a dependent being enqueued: the attempt
/// that counts (following its retries) and its status, read under a row
/// lock so that its end cannot be recorded before the dependent's edge is
/// there to see. One that has not ended is marked as having children,
/// under the same lock: the completion that ends it reads the mark from
/// the row it updates, so it looks for children whenever one was added.
/// `None`: no such execution.
pub(super) async fn parent_state<D: Dialect>(
    conn: &mut Conn<D>,
    mut id: Uuid,
) -> Result<Option<(Uuid, Status)>, StoreError> {
    loop {
        let q = Sql::<D>::new(format!(
            "SELECT status, next_id FROM executions WHERE id = $1{}",
            D::FOR_UPDATE
        ));
        let Some(row) = q.bind(id).fetch_optional(&mut *conn).await? else {
            return Ok(None);
        };
        let row = Fields::<D>::new(&row, "executions");
        let status: Status = row.parse("status")?;
        match row.get::<Option<Uuid>>("next_id")? {
            Some(next) if status.is_terminal() => id = next,
            _ => {
                if !status.is_terminal() {
                    Sql::<D>::new("UPDATE executions SET has_children = 1 WHERE id = $1")
                        .bind(id)
                        .execute(&mut *conn)
                        .await?;
                }
                return Ok(Some((id, status)));
            }
        }
    }
}

/// Enqueues `execs` within transaction `tx` (see [`Store::enqueue`]).
pub(super) async fn enqueue_in<D: Dialect>(
    tx: &mut Conn<D>,
    ends: &mut EndTally,
    execs: &[NewExecution],
    now: Micros,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut out: Vec<Enqueued> = execs
        .iter()
        .map(|e| Enqueued {
            id: e.id,
            duplicate: false,
            replaced: false,
        })
        .collect();
    let (insert, successors) = take_keys::<D>(tx, execs, &mut out, now).await?;
    // Parents: in this batch (as inserted, or the holder a duplicate
    // named), or already stored. A batch without any (the common case)
    // skips the bookkeeping.
    let mut starts: HashMap<Uuid, Initial> = HashMap::new();
    let mut edges = Vec::new();
    let mut upstream = Vec::new();
    // Runs whose conditions had already ended and turned them down.
    let mut decided: Vec<(Status, Uuid, String)> = Vec::new();
    if insert.iter().any(|e| !e.after.is_empty()) {
        let named: HashMap<Uuid, Uuid> =
            execs.iter().zip(&out).map(|(e, o)| (e.id, o.id)).collect();
        let inserting: HashSet<Uuid> = insert.iter().map(|e| e.id).collect();
        for e in &insert {
            if successors.contains(&e.id) {
                starts.insert(e.id, Initial::new(Status::Waiting, 0));
                continue;
            }
            if e.after.is_empty() {
                starts.insert(e.id, Initial::PENDING);
                continue;
            }
            let mut parents = BTreeSet::new();
            let (mut waiting, mut failed) = (0, None);
            let mut over = Vec::new();
            for p in &e.after {
                let p = named.get(p).copied().unwrap_or(*p);
                let (p, status) = match starts.get_mut(&p) {
                    Some(parent) => {
                        parent.has_children = true;
                        (p, parent.status)
                    }
                    // Later in the batch (or itself): not known yet.
                    None if inserting.contains(&p) => return Err(StoreError::NoParent(p)),
                    None => parent_state::<D>(tx, p)
                        .await?
                        .ok_or(StoreError::NoParent(p))?,
                };
                if !parents.insert(p) {
                    continue;
                }
                if !status.is_terminal() {
                    waiting += 1;
                } else {
                    over.push((p, status));
                    if status != Status::Succeeded && failed.is_none() {
                        failed = Some(p);
                    }
                }
            }
            edges.extend(parents.iter().map(|p| (e.id, *p)));
            if e.after_policy == AfterPolicy::Condition && !over.is_empty() {
                let said = condition_ends::<D>(tx, &over.iter().map(|(p, _)| *p).collect()).await?;
                let step = weigh_conditions(&said, &over);
                let start = match step {
                    ChildStep::CountDown(_) if waiting > 0 => {
                        Initial::new(Status::Waiting, waiting)
                    }
                    ChildStep::CountDown(_) => Initial::PENDING,
                    ChildStep::Cancel(reason) => {
                        upstream.push((e.id, reason));
                        Initial::new(Status::Cancelled, 0)
                    }
                    ChildStep::Skip(reason) => {
                        decided.push((Status::Skipped, e.id, reason));
                        Initial::new(Status::Waiting, 0)
                    }
                    ChildStep::Fail(error) => {
                        decided.push((Status::Failed, e.id, error));
                        Initial::new(Status::Waiting, 0)
                    }
                };
                starts.insert(e.id, start);
                continue;
            }
            let start = match failed {
                Some(p) if e.after_policy == AfterPolicy::Success => {
                    upstream.push((e.id, format!("upstream {p} failed")));
                    Initial::new(Status::Cancelled, 0)
                }
                _ if waiting > 0 => Initial::new(Status::Waiting, waiting),
                _ => Initial::PENDING,
            };
            starts.insert(e.id, start);
        }
    }
    insert_executions::<D>(tx, &insert, now, |e| match starts.get(&e.id) {
        // Cancelled ones go in waiting, to be cancelled as any other.
        Some(s) if s.status == Status::Cancelled => Initial {
            status: Status::Waiting,
            ..*s
        },
        Some(start) => *start,
        None if successors.contains(&e.id) => Initial::new(Status::Waiting, 0),
        None => Initial::PENDING,
    })
    .await?;
    insert_edges::<D>(tx, &edges).await?;
    // Runs cancelled as they are inserted are not told to the sinks: the
    // caller announces their `enqueued` first (see `Client::submit_many`).
    let told = ends.unstarted.len();
    cancel_unstarted::<D>(tx, ends, &upstream, None, now).await?;
    ends.unstarted.truncate(told);
    // Their own dependents in this batch wait on them: settled now.
    for (status, id, why) in decided {
        let done = end_unstarted::<D>(tx, ends, status, &[(id, why)], now).await?;
        let done = done.into_iter().map(|id| (id, status)).collect();
        settle::<D>(tx, ends, done, now).await?;
    }
    D::notify(tx, "work").await?;
    Ok(out)
}

/// The unique keys of a batch: a run whose key another execution holds is
/// a duplicate of the holder (`out` says so), or with `replace` takes its
/// place. Returns the runs to insert, and those inserted as the successor
/// of a holder that runs (they wait for it).
pub(super) async fn take_keys<'a, D: Dialect>(
    tx: &mut Conn<D>,
    execs: &'a [NewExecution],
    out: &mut [Enqueued],
    now: Micros,
) -> Result<(Vec<&'a NewExecution>, HashSet<Uuid>), StoreError> {
    let mut insert = Vec::with_capacity(execs.len());
    let mut successors = HashSet::new();
    for (e, entry) in execs.iter().zip(out.iter_mut()) {
        let Some(u) = &e.unique else {
            insert.push(e);
            continue;
        };
        let Some(holder) = take_key::<D>(tx, &u.key, e.id, now).await? else {
            insert.push(e);
            continue;
        };
        *entry = Enqueued {
            id: holder,
            duplicate: true,
            replaced: false,
        };
        if u.replace {
            match replace::<D>(tx, &u.key, holder, e).await? {
                Replaced::Execution(id) => {
                    entry.id = id;
                    entry.replaced = true;
                }
                Replaced::Follow => {
                    *entry = Enqueued {
                        id: e.id,
                        duplicate: false,
                        replaced: false,
                    };
                    insert.push(e);
                    successors.insert(e.id);
                }
                Replaced::Nothing => {}
            }
        }
    }
    Ok((insert, successors))
}

/// What a replacing duplicate did.
pub(super) enum Replaced {
    /// It replaced the payload and due time of this execution.
    Execution(Uuid),
    /// It is to be inserted, waiting to follow the running holder.
    Follow,
    /// Nothing: the holder ended and its key is on hold.
    Nothing,
}

/// A duplicate of `key` with `replace`: the holder's payload and due time
/// if it has not started; else those of the execution waiting to follow
/// it; else `e` is to wait to follow it.
pub(super) async fn replace<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    holder: Uuid,
    e: &NewExecution,
) -> Result<Replaced, StoreError> {
    let update = |status: &'static str, id: Uuid| {
        Sql::<D>::new(format!(
            "UPDATE executions SET payload = $2, run_at = $3 WHERE id = $1 AND status = '{status}'"
        ))
        .bind(id)
        .bind(e.payload.to_string())
        .bind(e.run_at)
    };
    if update("pending", holder).execute(&mut *conn).await? == 1 {
        return Ok(Replaced::Execution(holder));
    }
    // A locking read: it sees the latest row at any isolation level (an
    // application's transaction may be at REPEATABLE READ).
    let row = Sql::<D>::new(format!(
        "SELECT next_id, held_until FROM unique_keys WHERE \"key\" = $1{}",
        D::FOR_UPDATE
    ))
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(sqlx::Error::RowNotFound)?;
    let next: Option<Uuid> = D::get(&row, 0)?;
    let held_until: Option<Micros> = D::get(&row, 1)?;
    match next {
        Some(follower) => {
            update("waiting", follower).execute(&mut *conn).await?;
            Ok(Replaced::Execution(follower))
        }
        // Ended, and on hold: nothing to replace and nothing to follow.
        None if held_until.is_some() => Ok(Replaced::Nothing),
        None => {
            Sql::<D>::new("UPDATE unique_keys SET next_id = $2 WHERE \"key\" = $1")
                .bind(key)
                .bind(e.id)
                .execute(conn)
                .await?;
            Ok(Replaced::Follow)
        }
    }
}
