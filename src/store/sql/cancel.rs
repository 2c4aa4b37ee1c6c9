use super::fields::Fields;
use super::keys::release_key;
use super::tally::EndTally;
use super::*;

/// Cancels executions that have not started (pending or waiting), each
/// with its error, and with `reason` (or else that error) as the cancel's
/// reason; returns those it cancelled. Their unique keys are handed on or
/// given up. Their dependents are left to [`settle`].
pub(super) async fn cancel_unstarted<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut EndTally,
    items: &[(Uuid, String)],
    reason: Option<&str>,
    now: Micros,
) -> Result<Vec<Uuid>, StoreError> {
    let mut cancelled = Vec::with_capacity(items.len());
    for chunk in items.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new("UPDATE executions SET status = 'cancelled', finished_at = ");
        q.push_bind(now)
            .push(", cancel_requested_at = COALESCE(cancel_requested_at, ")
            .push_bind(now)
            .push("), cancel_reason = COALESCE(")
            .push_bind(reason)
            .push(", v.column2), cancel_outcome = 'before-start', error = v.column2 FROM (");
        q.values(chunk, |t, (id, error)| {
            t.bind(*id).bind(error.as_str());
        });
        q.push(
            ") AS v WHERE executions.id = v.column1 AND executions.status IN ('pending', 'waiting', 'held') \
             RETURNING executions.id AS id, executions.unique_key AS unique_key, \
             executions.unique_for_ms AS hold, executions.handler AS handler, \
             executions.started_at AS started_at, executions.job AS job, \
             executions.cancel_reason AS reason",
        );
        for row in q.fetch_all(&mut *conn).await? {
            let row = Fields::<D>::new(&row, "executions");
            let id: Uuid = row.get("id")?;
            let handler: String = row.get("handler")?;
            ends.add(
                handler.clone(),
                Status::Cancelled,
                row.get("started_at")?,
                now,
            );
            ends.unstarted.push(UnstartedCancel {
                id,
                handler,
                job: row.get("job")?,
                reason: row.get::<Option<String>>("reason")?.unwrap_or_default(),
            });
            if let Some(key) = row.get::<Option<String>>("unique_key")? {
                give_up_key::<D>(conn, &key, id, row.get("hold")?, now).await?;
            }
            cancelled.push(id);
        }
    }
    Ok(cancelled)
}

/// The unique key `key` of execution `id`, which ended without running:
/// a follower gives up its place; a holder hands the key on (or holds it
/// `hold` ms).
async fn give_up_key<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    id: Uuid,
    hold: Option<i64>,
    now: Micros,
) -> Result<(), StoreError> {
    Sql::<D>::new("UPDATE unique_keys SET next_id = NULL WHERE \"key\" = $1 AND next_id = $2")
        .bind(key)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let next = key_next(false, hold, now);
    release_key::<D>(conn, key, id, next, None).await?;
    Ok(())
}

/// Ends executions waiting on their conditions without running them, as
/// `status` (`skipped` or `failed`), each with its reason as its error;
/// returns those it ended. Their unique keys are handed on or given up;
/// their dependents are left to [`settle`].
pub(super) async fn end_unstarted<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut EndTally,
    status: Status,
    items: &[(Uuid, String)],
    now: Micros,
) -> Result<Vec<Uuid>, StoreError> {
    let mut ended = Vec::with_capacity(items.len());
    for chunk in items.chunks(rows_per_statement(2)) {
        let mut q = Sql::<D>::new(format!(
            "UPDATE executions SET status = '{}', finished_at = ",
            status.as_str()
        ));
        q.push_bind(now).push(", error = v.column2 FROM (");
        q.values(chunk, |t, (id, error)| {
            t.bind(*id).bind(error.as_str());
        });
        q.push(
            ") AS v WHERE executions.id = v.column1 AND executions.status IN ('waiting', 'held') \
             RETURNING executions.id AS id, executions.unique_key AS unique_key, \
             executions.unique_for_ms AS hold, executions.handler AS handler",
        );
        for row in q.fetch_all(&mut *conn).await? {
            let row = Fields::<D>::new(&row, "executions");
            let id: Uuid = row.get("id")?;
            ends.add(row.get("handler")?, status, None, now);
            if let Some(key) = row.get::<Option<String>>("unique_key")? {
                give_up_key::<D>(conn, &key, id, row.get("hold")?, now).await?;
            }
            ended.push(id);
        }
    }
    Ok(ended)
}

/// What a child of policy condition makes of its conditions `ended` (each
/// with its status), from what they said (`condition_ends`).
pub(super) fn weigh_conditions(
    said: &HashMap<Uuid, (String, Option<Value>, Option<String>)>,
    ended: &[(Uuid, Status)],
) -> ChildStep {
    let ends: Vec<ConditionEnd> = ended
        .iter()
        .map(|(p, status)| {
            let (handler, output, error) =
                said.get(p).cloned().unwrap_or((p.to_string(), None, None));
            ConditionEnd {
                handler,
                status: *status,
                output,
                error,
            }
        })
        .collect();
    settle_condition(&ends)
}

/// What the conditions among `parents` said: each one's handler, output
/// and error (`parents` with their statuses as they ended).
pub(super) async fn condition_ends<D: Dialect>(
    conn: &mut Conn<D>,
    parents: &BTreeSet<Uuid>,
) -> Result<HashMap<Uuid, (String, Option<Value>, Option<String>)>, StoreError> {
    let ids: Vec<Uuid> = parents.iter().copied().collect();
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(rows_per_statement(1)) {
        let mut q =
            Sql::<D>::new("SELECT id, handler, output, error FROM executions WHERE id IN (");
        q.push_list(chunk.iter().copied()).push(")");
        for row in q.fetch_all(&mut *conn).await? {
            let row = Fields::<D>::new(&row, "executions");
            out.insert(
                row.get("id")?,
                (row.get("handler")?, row.json("output")?, row.get("error")?),
            );
        }
    }
    Ok(out)
}

/// Cancels `ids` that have not ended: pending and waiting ones at once
/// (their dependents settled), running ones flagged for their nodes.
pub(super) async fn cancel_ids<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut EndTally,
    ids: &[Uuid],
    reason: &str,
    now: Micros,
) -> Result<WorkflowCancel, StoreError> {
    let unstarted: Vec<(Uuid, String)> = ids
        .iter()
        .map(|id| (*id, "cancelled before it started".to_string()))
        .collect();
    let cancelled = cancel_unstarted::<D>(conn, ends, &unstarted, Some(reason), now).await?;
    let mut requested = 0;
    for chunk in ids.chunks(rows_per_statement(1)) {
        let mut q = Sql::<D>::new(
            "UPDATE executions SET cancel_requested_at = COALESCE(cancel_requested_at, ",
        );
        q.push_bind(now)
            .push("), cancel_reason = COALESCE(cancel_reason, ")
            .push_bind(reason)
            .push(") WHERE status = 'running' AND id IN (")
            .push_list(chunk.iter().copied())
            .push(")");
        requested += q.execute(&mut *conn).await?;
    }
    if requested > 0 {
        D::notify(conn, "cancel").await?;
    }
    // Executions outside those may run after them.
    let ended = cancelled
        .iter()
        .map(|id| (*id, Status::Cancelled))
        .collect();
    settle::<D>(conn, ends, ended, now).await?;
    Ok(WorkflowCancel {
        cancelled: cancelled.len() as u64,
        requested,
    })
}

/// Executions ended for good (`ended`, with their statuses): each waiting
/// child counts them off and becomes pending when none is left, or, if
/// its policy asks for success and one did not succeed, is cancelled with
/// `upstream ID failed`, which ends it in turn for its own children. Runs
/// in the transaction that records the ends, so a child becomes ready
/// exactly once, whichever node ended its last parent. Returns whether any
/// became ready.
pub(super) async fn settle<D: Dialect>(
    conn: &mut Conn<D>,
    ends: &mut EndTally,
    mut ended: Vec<(Uuid, Status)>,
    now: Micros,
) -> Result<bool, StoreError> {
    let mut woke = false;
    while !ended.is_empty() {
        let status_of: HashMap<Uuid, Status> = ended.iter().copied().collect();
        // child -> (its parents that ended now, with their statuses; policy)
        let mut children: BTreeMap<Uuid, (Vec<(Uuid, Status)>, AfterPolicy)> = BTreeMap::new();
        // Read and, on PostgreSQL, lock the waiting children in id order,
        // so that two nodes settling shared children never deadlock; after
        // a wait for a lock, a child no longer waiting drops out.
        for chunk in ended.chunks(rows_per_statement(1)) {
            let mut q = Sql::<D>::new(
                "SELECT d.child_id AS child, d.parent_id AS parent, e.after_policy AS policy \
                 FROM dependencies d JOIN executions e ON e.id = d.child_id \
                 WHERE e.status IN ('waiting', 'held') AND d.parent_id IN (",
            );
            q.push_list(chunk.iter().map(|(id, _)| *id))
                .push(") ORDER BY e.id")
                .push(D::FOR_UPDATE);
            for row in q.fetch_all(&mut *conn).await? {
                let row = Fields::<D>::new(&row, "dependencies");
                let parent: Uuid = row.get("parent")?;
                let policy = row.opt_parse("policy")?.unwrap_or_default();
                let status = status_of.get(&parent).copied().unwrap_or(Status::Failed);
                let entry = children
                    .entry(row.get("child")?)
                    .or_insert((Vec::new(), policy));
                entry.0.push((parent, status));
            }
        }
        if children.is_empty() {
            break;
        }
        // A condition's dependents weigh what it answered.
        let conditions: BTreeSet<Uuid> = children
            .values()
            .filter(|(_, policy)| *policy == AfterPolicy::Condition)
            .flat_map(|(parents, _)| parents.iter().map(|(p, _)| *p))
            .collect();
        let said = match conditions.is_empty() {
            true => HashMap::new(),
            false => condition_ends::<D>(conn, &conditions).await?,
        };
        let (mut cancel, mut count) = (Vec::new(), Vec::new());
        let (mut skip, mut fail) = (Vec::new(), Vec::new());
        for (child, (parents, policy)) in children {
            let step = match policy {
                AfterPolicy::Condition => weigh_conditions(&said, &parents),
                _ => settle_child(&parents, policy),
            };
            match step {
                ChildStep::Cancel(reason) => cancel.push((child, reason)),
                ChildStep::CountDown(n) => count.push((child, n)),
                ChildStep::Skip(reason) => skip.push((child, reason)),
                ChildStep::Fail(error) => fail.push((child, error)),
            }
        }
        for chunk in count.chunks(rows_per_statement(2)) {
            // The status first: MySQL assigns from left to right, each
            // assignment reading those before it.
            let mut q = Sql::<D>::new(
                "UPDATE executions SET \
                 status = CASE WHEN status = 'waiting' AND waiting_on - v.column2 <= 0 THEN 'pending' \
                 ELSE status END, waiting_on = waiting_on - v.column2 \
                 FROM (",
            );
            q.values(chunk, |t, (id, n)| {
                t.bind(*id).bind(*n);
            });
            q.push(
                ") AS v WHERE executions.id = v.column1 AND executions.status IN ('waiting', 'held') \
                 RETURNING executions.status AS status",
            );
            for row in q.fetch_all(&mut *conn).await? {
                woke |= D::get::<String>(&row, 0)? == "pending";
            }
        }
        ended = cancel_unstarted::<D>(conn, ends, &cancel, None, now)
            .await?
            .into_iter()
            .map(|id| (id, Status::Cancelled))
            .collect();
        for (status, items) in [(Status::Skipped, &skip), (Status::Failed, &fail)] {
            let done = end_unstarted::<D>(conn, ends, status, items, now).await?;
            ended.extend(done.into_iter().map(|id| (id, status)));
        }
    }
    if woke {
        D::notify(conn, "work").await?;
    }
    Ok(woke)
}
