//! The application's own transactions, which runs can be enqueued in
//! ([`crate::Client::enqueue_in`]).

use super::{Lite, My, Pg, StoreError};
use crate::model::{Enqueued, Micros, NewExecution};

mod sealed {
    pub trait Sealed {}
}

/// An open transaction of the application's, on the database a
/// [`crate::Client`] is on, that runs can be enqueued in: an sqlx
/// `Transaction` on SQLite or PostgreSQL. The runs exist only if it
/// commits.
pub trait AppTransaction: sealed::Sealed + Send {
    /// sqlx's name of its database (`"SQLite"`, `"PostgreSQL"`).
    #[doc(hidden)]
    const BACKEND: &'static str;

    /// Inserts `execs` in this transaction.
    #[doc(hidden)]
    fn enqueue_execs<'a>(
        &'a mut self,
        execs: Vec<NewExecution>,
        now: Micros,
    ) -> impl std::future::Future<Output = Result<Vec<Enqueued>, StoreError>> + Send + 'a;
}

/// [`super::sql::enqueue_app`] as a `Send` future. Written for any dialect:
/// rustc proves the future `Send` generically, where for a named dialect
/// it cannot (rust-lang/rust#100013).
fn enqueue_boxed<'a, D: super::dialect::Dialect>(
    tx: &'a mut sqlx::Transaction<'_, D::Db>,
    execs: Vec<NewExecution>,
    now: Micros,
) -> futures_util::future::BoxFuture<'a, Result<Vec<Enqueued>, StoreError>> {
    Box::pin(super::sql::enqueue_app::<D>(tx, execs, now))
}

macro_rules! app_transaction {
    ($db:ty, $dialect:ty) => {
        impl sealed::Sealed for sqlx::Transaction<'_, $db> {}

        impl<'c> AppTransaction for sqlx::Transaction<'c, $db> {
            const BACKEND: &'static str = <$db as sqlx::Database>::NAME;

            fn enqueue_execs<'a>(
                &'a mut self,
                execs: Vec<NewExecution>,
                now: Micros,
            ) -> impl std::future::Future<Output = Result<Vec<Enqueued>, StoreError>> + Send + 'a
            {
                enqueue_boxed::<$dialect>(self, execs, now)
            }
        }
    };
}

app_transaction!(sqlx::Sqlite, Lite);
app_transaction!(sqlx::Postgres, Pg);
app_transaction!(sqlx::MySql, My);
