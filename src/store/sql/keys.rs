//! Unique keys: taken at enqueue, handed on or given up at an end.

use super::*;

/// Takes unique key `key` for execution `id`: `None` if it is now `id`'s,
/// or the execution that holds it. The key's row is the lock (its primary
/// key), so two enqueues on any nodes never both take it: the second waits
/// for the first's transaction and then finds the key held.
pub(super) async fn take_key<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    id: Uuid,
    now: Micros,
) -> Result<Option<Uuid>, StoreError> {
    // The upsert takes a key that is free, or held past its hold, and
    // locks the key's row either way, so the holder read next cannot have
    // let go of it meanwhile; the loop is for a key freed between the two
    // all the same.
    let upsert = format!(
        "INSERT INTO unique_keys (\"key\", execution_id, held_until) VALUES ($1, $2, NULL){}",
        D::upsert_when(
            "\"key\"",
            &[
                ("execution_id", &D::excluded("execution_id")),
                ("held_until", "NULL"),
            ],
            "unique_keys.held_until IS NOT NULL AND unique_keys.held_until <= $3",
        )
    );
    loop {
        Sql::<D>::new(upsert.as_str())
            .bind(key)
            .bind(id)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        // A locking read, which sees the latest row at any isolation level
        // (an application's transaction may be at REPEATABLE READ).
        let holder = Sql::<D>::new(format!(
            "SELECT execution_id FROM unique_keys WHERE \"key\" = $1{}",
            D::FOR_UPDATE
        ))
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = holder {
            let holder: Uuid = D::get(&row, 0)?;
            return Ok((holder != id).then_some(holder));
        }
    }
}

/// Hands on or gives up the unique key `key` that execution `id` held. An
/// execution waiting to follow it takes the key over and becomes pending
/// (unless `id` is retried: the retry holds on); returns whether one did.
pub(super) async fn release_key<D: Dialect>(
    conn: &mut Conn<D>,
    key: &str,
    id: Uuid,
    next: KeyNext,
    retry: Option<Uuid>,
) -> Result<bool, StoreError> {
    if next != KeyNext::ToRetry {
        let promoted = Sql::<D>::new(
            "UPDATE unique_keys SET execution_id = next_id, next_id = NULL, held_until = NULL \
             WHERE \"key\" = $1 AND execution_id = $2 AND next_id IS NOT NULL RETURNING execution_id",
        )
        .bind(key)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = promoted {
            let successor: Uuid = D::get(&row, 0)?;
            Sql::<D>::new(
                "UPDATE executions SET status = 'pending' WHERE id = $1 AND status = 'waiting'",
            )
            .bind(successor)
            .execute(&mut *conn)
            .await?;
            D::notify(conn, "work").await?;
            return Ok(true);
        }
    }
    let q = Sql::<D>::new(match next {
        KeyNext::ToRetry => {
            "UPDATE unique_keys SET execution_id = $3 WHERE \"key\" = $1 AND execution_id = $2"
        }
        KeyNext::Hold(_) => {
            "UPDATE unique_keys SET held_until = $3 WHERE \"key\" = $1 AND execution_id = $2"
        }
        KeyNext::Free => "DELETE FROM unique_keys WHERE \"key\" = $1 AND execution_id = $2",
    })
    .bind(key)
    .bind(id);
    let q = match next {
        KeyNext::ToRetry => q.bind(retry),
        KeyNext::Hold(until) => q.bind(until),
        KeyNext::Free => q,
    };
    q.execute(conn).await?;
    Ok(false)
}
