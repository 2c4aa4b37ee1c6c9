//! An in-process handler's database transaction, which commits in the
//! same commit as its run's success ([`ContextExt::transaction`]).
//!
//! The runner attaches a slot for it to each in-process handler's
//! [`Context`]. The handler's first call begins a transaction on a
//! connection of the store's own (apart from the engine's); later calls
//! give the same one. When the handler returns `Ok`, the runner writes the
//! execution's success row in that transaction and commits it. When the
//! handler fails, is cancelled, times out or panics, or the node dies
//! first, it rolls back: a retry never sees the failed attempt's writes.

use crate::store::{Store, StoreError};
use jobvisor_worker::{Context, HandlerError};
use std::any::Any;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMappedMutexGuard};

/// The transaction an execution's handler may open, as the runner keeps it.
#[derive(Clone)]
pub(crate) struct TxSlot(Arc<Slot>);

struct Slot {
    store: Arc<dyn Store>,
    tx: Arc<Mutex<Option<Box<dyn Any + Send>>>>,
    /// The run is over: a task the handler left behind gets no new
    /// transaction (which nobody would end).
    over: std::sync::atomic::AtomicBool,
}

impl TxSlot {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self(Arc::new(Slot {
            store,
            tx: Arc::default(),
            over: Default::default(),
        }))
    }

    /// The open transaction, once the handler has returned. `Err`: the
    /// handler left its transaction in use (a task of its own still holds
    /// it), which then rolls back when that task lets it go.
    pub(crate) fn take(&self) -> Result<Option<Box<dyn Any + Send>>, ()> {
        self.0.over.store(true, std::sync::atomic::Ordering::SeqCst);
        match self.0.tx.try_lock() {
            Ok(mut slot) => Ok(slot.take()),
            Err(_) => Err(()),
        }
    }
}

/// Why [`ContextExt::transaction`] gave no transaction.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// The context is not an in-process handler's of a supervisor (a
    /// process worker's, or one made for a test).
    #[error("no database transaction here: only in-process handlers run by a supervisor have one")]
    NotInproc,
    /// The handler asked for a transaction on another database than the
    /// store's.
    #[error("the handler asked for a {asked} transaction, but the store is {store}")]
    OtherDatabase {
        /// The database the handler named.
        asked: &'static str,
        /// The store's.
        store: &'static str,
    },
    /// The handler's run is over (a task it left behind asked).
    #[error("the run is over: its transaction has been committed or rolled back")]
    Over,
    /// The transaction could not begin.
    #[error("cannot begin the handler's transaction: {0}")]
    Store(#[from] StoreError),
}

/// A failed [`ContextExt::transaction`] fails the attempt, to be retried.
impl From<TxError> for HandlerError {
    fn from(e: TxError) -> Self {
        HandlerError::retryable(crate::error_chain(&e))
    }
}

/// The handler's open transaction: dereferences to the connection, so
/// that `sqlx::query(...).execute(&mut *tx)` runs in it. It stays open
/// when this guard is dropped; the runner commits or rolls it back when
/// the handler returns.
pub struct HandlerTx<DB: sqlx::Database> {
    guard: OwnedMappedMutexGuard<Option<Box<dyn Any + Send>>, sqlx::Transaction<'static, DB>>,
}

impl<DB: sqlx::Database> std::ops::Deref for HandlerTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.guard
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for HandlerTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.guard
    }
}

/// What jobvisor adds to an in-process handler's [`Context`].
pub trait ContextExt {
    /// The handler's transaction on the store's database, begun at the
    /// first call (later calls give the same one). When the handler
    /// returns `Ok`, it commits in the same commit as the execution's
    /// success row; when the handler fails, is cancelled, times out or
    /// panics, or the node dies first, it rolls back. A run that succeeds
    /// so has its effect exactly once, and a retry never sees a failed
    /// attempt's writes.
    ///
    /// `DB` is the store's sqlx database (`sqlx::Sqlite`,
    /// `sqlx::Postgres`). The isolation level is the database's default:
    /// SQLite's transactions are serializable, and the transaction takes
    /// its one write lock at once (`BEGIN IMMEDIATE`), holding back every
    /// other write of the node until the run ends, so keep it short;
    /// PostgreSQL's is READ COMMITTED (`SET TRANSACTION ISOLATION LEVEL`
    /// as the first statement changes it). Process workers have no
    /// transaction: they make their effects idempotent with the
    /// execution id or a unique key.
    ///
    /// ```
    /// use jobvisor::{sqlx, Context, ContextExt, HandlerResult};
    /// // Records the order and the run's success in one commit.
    /// async fn ship(ctx: Context, payload: serde_json::Value) -> HandlerResult {
    ///     let mut tx = ctx.transaction::<sqlx::Sqlite>().await?;
    ///     sqlx::query("INSERT INTO shipped (run, order_id) VALUES (?, ?)")
    ///         .bind(&ctx.execution().execution_id)
    ///         .bind(payload["order"].as_i64())
    ///         .execute(&mut *tx)
    ///         .await
    ///         .map_err(|e| jobvisor::HandlerError::retryable(e.to_string()))?;
    ///     Ok(serde_json::json!({"shipped": true}))
    /// }
    /// ```
    fn transaction<DB: sqlx::Database>(
        &self,
    ) -> impl std::future::Future<Output = Result<HandlerTx<DB>, TxError>> + Send;
}

impl ContextExt for Context {
    async fn transaction<DB: sqlx::Database>(&self) -> Result<HandlerTx<DB>, TxError> {
        let slot = &self.extension::<TxSlot>().ok_or(TxError::NotInproc)?.0;
        let store = slot.store.backend();
        if DB::NAME != store {
            return Err(TxError::OtherDatabase {
                asked: DB::NAME,
                store,
            });
        }
        let mut open = slot.tx.clone().lock_owned().await;
        if slot.over.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(TxError::Over);
        }
        if open.is_none() {
            *open = Some(slot.store.begin_handler().await?);
        }
        let guard = tokio::sync::OwnedMutexGuard::try_map(open, |t| {
            t.as_mut()?.downcast_mut::<sqlx::Transaction<'static, DB>>()
        })
        .map_err(|_| TxError::OtherDatabase {
            asked: DB::NAME,
            store,
        })?;
        Ok(HandlerTx { guard })
    }
}
