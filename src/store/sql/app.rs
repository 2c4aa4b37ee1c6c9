//! The application's own transactions: runs enqueued in one, and the
//! transaction of an in-process handler, which commits with its run's
//! success.

use super::ends::apply_in;
use super::enqueue::enqueue_in;
use super::tally::{next_shard, EndTally};
use super::*;
use std::any::Any;

/// Enqueues `execs` in the application's open transaction `conn`: its
/// rows, unique keys, edges and notice commit or roll back with it.
pub(crate) async fn enqueue_app<D: Dialect>(
    tx: &mut sqlx::Transaction<'_, D::Db>,
    execs: Vec<NewExecution>,
    now: Micros,
) -> Result<Vec<Enqueued>, StoreError> {
    let conn: &mut Conn<D> = tx;
    if let Some((enter, _)) = D::APP_SESSION {
        Sql::<D>::new(enter).execute(conn).await?;
    }
    let out = enqueue_app_rows::<D>(conn, &execs, now).await;
    if let Some((_, leave)) = D::APP_SESSION {
        Sql::<D>::new(leave).execute(conn).await?;
    }
    out
}

async fn enqueue_app_rows<D: Dialect>(
    conn: &mut Conn<D>,
    execs: &[NewExecution],
    now: Micros,
) -> Result<Vec<Enqueued>, StoreError> {
    let mut ends = EndTally::default();
    let out = enqueue_in::<D>(conn, &mut ends, execs, now).await?;
    // A run whose upstream had already failed ends as it is inserted: on
    // the timeline too, in the same transaction. (Who hears of it is not
    // told: whether it is ever committed is the application's to say.)
    ends.unstarted.clear();
    ends.write::<D>(conn, next_shard()).await?;
    Ok(out)
}

impl<D: Dialect> SqlStore<D> {
    /// [`Engine::begin_handler`]: a transaction on the handlers' pool.
    pub(super) async fn begin_handler_tx(&self) -> Result<Box<dyn Any + Send>, StoreError> {
        let tx: sqlx::Transaction<'static, D::Db> = self.db.handlers().begin_with(D::BEGIN).await?;
        Ok(Box::new(tx))
    }

    /// [`Engine::complete_in`]: writes `c` in the handler's transaction and
    /// commits both, unless the execution had stopped running (cancelled
    /// to its end, rescued), when both roll back.
    pub(super) async fn complete_in_tx(
        &self,
        tx: Box<dyn Any + Send>,
        c: &Completion,
    ) -> Result<Option<Vec<Finished>>, StoreError> {
        let Ok(tx) = tx.downcast::<sqlx::Transaction<'static, D::Db>>() else {
            return Err(StoreError::Query(sqlx::Error::Protocol(
                "a handler's transaction of another database".into(),
            )));
        };
        let mut tx = *tx;
        let batch = Batch {
            completions: vec![c.clone()],
            ..Batch::default()
        };
        let (finished, tally) = apply_in(self, &mut tx, &batch).await?;
        if !finished.iter().any(|f| f.id == c.id) {
            // Dropped: rolled back.
            return Ok(None);
        }
        self.commit(tx, tally).await?;
        Ok(Some(finished))
    }
}
