//! The PostgreSQL dialect: several supervisors on several machines share
//! one database.

use super::dialect::{queries, Args, Bind, Col, Column, Dialect, Idx};
use super::{open_error, Notice, StoreError};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{Arguments, Pool, Postgres, Row};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

type Result<T> = std::result::Result<T, sqlx::Error>;
use tokio::sync::mpsc::UnboundedReceiver;

/// Several supervisors on several machines share one database.
pub struct Pg {
    pool: Pool<Postgres>,
    /// In-process handlers' transactions, apart from the pool the engine
    /// writes through (a handler that holds its transaction long never
    /// starves the relay or the claims): connected when first asked for.
    handlers: Pool<Postgres>,
}

/// In-process handlers' transactions open at once on a node, at most (more
/// wait for one to end).
const HANDLER_TRANSACTIONS: u32 = 8;

/// The channel on which nodes wake each other up.
const CHANNEL: &str = "jobvisor";
/// The channel of lifecycle events (`crate::engine::events`), apart from the
/// wake-ups so that a node that hears no events is not woken by them.
const EVENTS_CHANNEL: &str = "jobvisor_events";
/// The shared advisory lock (two keys) a session holds while it hears
/// events, so that nodes publish them only when someone hears.
const HEARING: (i32, i32) = (7305, 150917);

/// The pool closes with the store: sqlx's reaper task then ends at once,
/// rather than at its next period (minutes later), and no task of the
/// store outlives it.
impl Drop for Pg {
    fn drop(&mut self) {
        drop(self.pool.close());
        drop(self.handlers.close());
    }
}

impl Pg {
    /// Connects to `postgres://...`.
    pub async fn open(url: &str) -> std::result::Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(open_error(url))?;
        super::probe::<PgConnection>(&opts, url).await?;
        let handlers = PgPoolOptions::new()
            .max_connections(HANDLER_TRANSACTIONS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(60))
            .idle_timeout(crate::idle::connection_idle())
            .max_lifetime(crate::idle::connection_lifetime())
            .connect_lazy_with(opts.clone());
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .idle_timeout(crate::idle::connection_idle())
            .max_lifetime(crate::idle::connection_lifetime())
            .connect_with(opts)
            .await
            .map_err(open_error(url))?;
        Ok(Self { pool, handlers })
    }
}

/// Nobody hears any more: the listener's connection goes back to the pool
/// without the hearing lock. All of its session's advisory locks go, since
/// a retry after an error may have taken the lock twice on one session.
async fn unhear(listener: &mut sqlx::postgres::PgListener) {
    let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(listener)
        .await;
}

impl Dialect for Pg {
    type Db = Postgres;
    const LEAST: &'static str = "LEAST";
    const JSON_ARRAY: (&'static str, &'static str) = ("json_build_array(", ")::text");
    const GREATEST: &'static str = "GREATEST";
    const START_STAMP: &'static str =
        "GREATEST($1, CAST(EXTRACT(EPOCH FROM statement_timestamp()) * 1000000 AS BIGINT))";
    const POSITION: &'static str = "strpos";
    const UUID_HEX: &'static str = "upper(replace({}::text, '-', ''))";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const BEGIN: &'static str = "BEGIN";
    const CLAIM_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7305150916)");
    const DELIVER_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7305150917)");
    const WEBHOOKS_LOCK: Option<&'static str> = Some("LOCK TABLE webhooks IN EXCLUSIVE MODE");

    /// A trigger's statement locks `executions` against writes (dropping
    /// one, against reads too) until the transaction ends: it waits at
    /// most 10 s for the writes under way, rather than hold every other
    /// one up behind it for as long as the slowest takes.
    fn record_triggers(inserted: Option<&str>, updated: Option<&str>) -> Vec<String> {
        let mut out = vec!["SET LOCAL lock_timeout = '10s'".to_string()];
        let run = "EXECUTE FUNCTION jobvisor_record_event()";
        match inserted {
            Some(list) => out.push(format!(
                "CREATE OR REPLACE TRIGGER executions_record_insert AFTER INSERT ON executions \
                 FOR EACH ROW WHEN (NEW.status IN ({list}) AND NEW.handler <> 'webhook') {run}"
            )),
            None => {
                out.push("DROP TRIGGER IF EXISTS executions_record_insert ON executions".into())
            }
        }
        match updated {
            Some(list) => out.push(format!(
                "CREATE OR REPLACE TRIGGER executions_record_update AFTER UPDATE OF status \
                 ON executions FOR EACH ROW WHEN (NEW.status IN ({list}) \
                 AND OLD.status IS DISTINCT FROM NEW.status AND NEW.handler <> 'webhook') {run}"
            )),
            None => {
                out.push("DROP TRIGGER IF EXISTS executions_record_update ON executions".into())
            }
        }
        out
    }
    const ARRAYS: bool = true;
    const PARTITIONED: bool = true;

    fn add_array(
        args: &mut Args<'_, Self>,
        column: Column,
    ) -> std::result::Result<(), BoxDynError> {
        match column {
            Column::Uuid(v) => args.add(v),
            Column::Text(v) => args.add(v),
            Column::Int(v) => args.add(v),
        }
    }

    fn reader(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn writer(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn handlers(&self) -> &Pool<Postgres> {
        &self.handlers
    }

    async fn migrate(&self) -> std::result::Result<(), StoreError> {
        // sqlx's PostgreSQL migrator takes an advisory lock: concurrent
        // nodes migrate one at a time.
        Ok(sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?)
    }

    async fn listen(&self) -> Result<Option<UnboundedReceiver<Notice>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                // The listener reconnects by itself; what is missed meanwhile
                // is found by the nodes' polling. It ends as soon as nobody
                // listens (the supervisor is gone), not at the next notice.
                let n = tokio::select! {
                    n = listener.recv() => n,
                    _ = tx.closed() => return,
                };
                match n {
                    Ok(n) => {
                        let notice = match n.payload() {
                            "work" => Notice::Work,
                            "cancel" => Notice::Cancel,
                            "jobs" => Notice::Jobs,
                            "limits" => Notice::Limits,
                            _ => continue,
                        };
                        if tx.send(notice).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    const PUBLISHES_EVENTS: bool = true;

    async fn publish_events(&self, payload: &str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(EVENTS_CHANNEL)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events_heard(&self) -> Result<bool> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND classid::bigint = {} AND objid::bigint = {} AND objsubid = 2)",
            HEARING.0, HEARING.1
        );
        sqlx::query_scalar(&sql).fetch_one(&self.pool).await
    }

    async fn listen_events(&self) -> Result<Option<UnboundedReceiver<String>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(&self.pool).await?;
        listener.listen(EVENTS_CHANNEL).await?;
        // Held for as long as this session listens: what tells publishers
        // that somebody hears (`events_heard`).
        let hear = format!(
            "SELECT pg_advisory_lock_shared({}, {})",
            HEARING.0, HEARING.1
        );
        sqlx::query(&hear).execute(&mut listener).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let n = tokio::select! {
                    n = listener.try_recv() => n,
                    _ = tx.closed() => return unhear(&mut listener).await,
                };
                match n {
                    Ok(Some(n)) => {
                        if tx.send(n.payload().to_string()).is_err() {
                            return unhear(&mut listener).await;
                        }
                    }
                    // The connection was lost (events sent meanwhile are
                    // missed; they are in the store). The listener reconnects
                    // and listens again; the lock is this session's to take.
                    Ok(None) => {
                        if let Err(e) = sqlx::query(&hear).execute(&mut listener).await {
                            tracing::warn!(error = %e, "events LISTEN connection failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "events LISTEN connection failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let _ = sqlx::query(&hear).execute(&mut listener).await;
                    }
                }
            }
        });
        Ok(Some(rx))
    }

    async fn notify(conn: &mut PgConnection, what: &'static str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what)
            .execute(conn)
            .await?;
        Ok(())
    }

    queries!(PgConnection, PgRow);

    fn get<T: Col>(row: &PgRow, column: impl Idx) -> Result<T> {
        row.try_get(column)
    }
}
