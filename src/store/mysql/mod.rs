//! The MySQL dialect (MySQL 8.0+, MariaDB 10.6+): several supervisors share
//! one database, as on PostgreSQL. What MySQL lacks, and how it is done
//! instead:
//! - numbered placeholders: statements written with `$N` are rewritten to
//!   `?`, each value bound where it is used ([`Dialect::NUMBERED`]);
//! - LISTEN/NOTIFY: a notice is a row of `notices`, inserted in the
//!   transaction that caused it, and every node reads the new rows on a
//!   short poll ([`NOTICE_POLL`]);
//! - advisory transaction locks: a row of `locks`, read `FOR UPDATE`;
//! - standard quoting: every connection sets `ANSI_QUOTES` (and
//!   `PIPES_AS_CONCAT`), so `"key"` names a column and `||` joins text, as
//!   on the other backends. Transactions run at READ COMMITTED, as on
//!   PostgreSQL: a locking read sees what committed since the transaction
//!   began;
//! - `RETURNING`, `UPDATE ... FROM`, `VALUES` row sources and a few words:
//!   see `rewrite.rs`, which runs on MySQL the statements that the store
//!   writes once for every backend.

mod rewrite;

use super::dialect::{positional, queries, Args, Bind, Col, Deferred, Dialect, Idx};
use super::{open_error, Notice, StoreError};
use rewrite::Update;
use sqlx::error::BoxDynError;
use sqlx::mysql::{
    MySqlArguments, MySqlConnectOptions, MySqlConnection, MySqlPoolOptions, MySqlRow,
};
use sqlx::{Arguments, Connection, Executor, MySql, Pool, Row};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// Several supervisors on several machines share one MySQL or MariaDB
/// database.
pub struct My {
    pool: Pool<MySql>,
    /// In-process handlers' transactions (see `Pg::handlers`).
    handlers: Pool<MySql>,
}

/// In-process handlers' transactions open at once on a node, at most.
const HANDLER_TRANSACTIONS: u32 = 8;

/// How often a node reads the notices other nodes wrote: the cross-node
/// wake-up's latency, where PostgreSQL's NOTIFY is pushed.
pub(crate) const NOTICE_POLL: Duration = Duration::from_millis(50);

/// How far back each poll reads notices: a notice's sequence number is
/// taken at its insert, and a transaction that took a lower one can commit
/// after a higher one was read.
const NOTICE_WINDOW_US: i64 = 10_000_000;

/// The SQL mode the store's statements are written for.
macro_rules! sql_mode {
    () => {
        "CONCAT(@@SESSION.sql_mode, \
         ',ANSI_QUOTES,PIPES_AS_CONCAT,STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION')"
    };
}

/// How long a node hears events after it last said so (see
/// `Dialect::events_heard`).
const HEARER_LEASE: Duration = Duration::from_secs(30);

/// How long notices are kept: well past the window that polls read.
const NOTICE_KEPT_US: i64 = 60_000_000;

/// The session every connection starts: standard quoting and
/// concatenation, strict inserts, READ COMMITTED.
const SESSION: [&str; 2] = [
    concat!("SET SESSION sql_mode = ", sql_mode!()),
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

impl Drop for My {
    fn drop(&mut self) {
        drop(self.pool.close());
        drop(self.handlers.close());
    }
}

impl My {
    /// Connects to `mysql://...` (or `mariadb://...`).
    pub async fn open(url: &str) -> std::result::Result<Self, StoreError> {
        let url_mysql = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let opts = MySqlConnectOptions::from_str(&url_mysql)
            .map_err(open_error(url))?
            .charset("utf8mb4")
            .collation("utf8mb4_bin")
            .timezone(Some("+00:00".into()));
        super::probe::<MySqlConnection>(&opts, url).await?;
        let options = |n: u32| {
            MySqlPoolOptions::new()
                .max_connections(n)
                .acquire_timeout(Duration::from_secs(60))
                .test_before_acquire(false)
                .idle_timeout(crate::idle::connection_idle())
                .max_lifetime(crate::idle::connection_lifetime())
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        for statement in SESSION {
                            conn.execute(statement).await?;
                        }
                        Ok(())
                    })
                })
        };
        let handlers = options(HANDLER_TRANSACTIONS)
            .min_connections(0)
            .connect_lazy_with(opts.clone());
        let pool = options(16)
            .connect_with(opts)
            .await
            .map_err(open_error(url))?;
        Ok(Self { pool, handlers })
    }
}

impl Dialect for My {
    type Db = MySql;
    const LEAST: &'static str = "LEAST";
    const JSON_ARRAY: (&'static str, &'static str) = ("CAST(JSON_ARRAY(", ") AS CHAR)");
    const GREATEST: &'static str = "GREATEST";
    const START_STAMP: &'static str =
        "GREATEST($1, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED))";
    const POSITION: &'static str = "INSTR";
    const UUID_HEX: &'static str = "HEX({})";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const BEGIN: &'static str = "BEGIN";
    const CLAIM_LOCK: Option<&'static str> =
        Some("SELECT name FROM locks WHERE name = 'claim' FOR UPDATE");
    const DELIVER_LOCK: Option<&'static str> =
        Some("SELECT name FROM locks WHERE name = 'deliver' FOR UPDATE");
    const WEBHOOKS_LOCK: Option<&'static str> =
        Some("SELECT name FROM locks WHERE name = 'webhooks' FOR UPDATE");
    const NUMBERED: bool = false;
    const PENDING_BY_ID: &'static str = "executions FORCE INDEX (executions_status)";

    // An application's session keeps its own SQL mode (and isolation
    // level: the store's reads in its transaction lock what they decide
    // on, so they see the latest rows at any level).
    const APP_SESSION: Option<(&'static str, &'static str)> = Some((
        concat!(
            "SET @jobvisor_sql_mode = @@SESSION.sql_mode, SESSION sql_mode = ",
            sql_mode!()
        ),
        "SET SESSION sql_mode = @jobvisor_sql_mode",
    ));

    const OR_NOTHING: (&'static str, &'static str) = ("INSERT IGNORE", "");

    fn upsert(target: &str) -> String {
        let _ = target;
        " ON DUPLICATE KEY UPDATE ".to_string()
    }

    // MySQL's LIKE finds a fixed text by a fast substring search (its
    // INSTR took half as long again over 200,000 log lines): the text is
    // bound as a pattern, its wildcards escaped.
    fn contains(column: &str, text: &str) -> (String, String, &'static str) {
        let mut pattern = String::with_capacity(text.len() + 2);
        pattern.push('%');
        for c in text.chars() {
            if matches!(c, '%' | '_' | '!') {
                pattern.push('!');
            }
            pattern.push(c);
        }
        pattern.push('%');
        (format!("{column} LIKE "), pattern, " ESCAPE '!'")
    }

    fn upsert_when(target: &str, assignments: &[(&str, &str)], when: &str) -> String {
        let set: Vec<String> = assignments
            .iter()
            .map(|(c, v)| format!("{c} = IF({when}, {v}, {c})"))
            .collect();
        format!("{}{}", Self::upsert(target), set.join(", "))
    }

    fn excluded(column: &str) -> String {
        format!("VALUES({column})")
    }

    fn record_triggers(inserted: Option<&str>, updated: Option<&str>) -> Vec<String> {
        let record = "INSERT INTO event_outbox (execution_id, status) VALUES (NEW.id, NEW.status)";
        let mut out = vec![
            "DROP TRIGGER IF EXISTS executions_record_insert".to_string(),
            "DROP TRIGGER IF EXISTS executions_record_update".to_string(),
        ];
        if let Some(list) = inserted {
            out.push(format!(
                "CREATE TRIGGER executions_record_insert AFTER INSERT ON executions \
                 FOR EACH ROW BEGIN IF NEW.status IN ({list}) AND NEW.handler <> 'webhook' \
                 THEN {record}; END IF; END"
            ));
        }
        if let Some(list) = updated {
            out.push(format!(
                "CREATE TRIGGER executions_record_update AFTER UPDATE ON executions \
                 FOR EACH ROW BEGIN IF NEW.status IN ({list}) \
                 AND NOT (OLD.status <=> NEW.status) AND NEW.handler <> 'webhook' \
                 THEN {record}; END IF; END"
            ));
        }
        out
    }

    fn reader(&self) -> &Pool<MySql> {
        &self.pool
    }

    fn writer(&self) -> &Pool<MySql> {
        &self.pool
    }

    fn handlers(&self) -> &Pool<MySql> {
        &self.handlers
    }

    async fn migrate(&self) -> std::result::Result<(), StoreError> {
        // Concurrent nodes migrate one at a time, under a named lock held
        // by the connection that migrates. (sqlx's own MySQL lock asks
        // GET_LOCK for a negative timeout, which MariaDB answers at once
        // without the lock, and sqlx does not look at the answer: two
        // nodes then both record migration 1, and one fails.)
        let mut conn = self.pool.acquire().await?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('jobvisor_migrate', 300)")
            .fetch_one(&mut *conn)
            .await?;
        if locked != Some(1) {
            return Err(sqlx::Error::Protocol(
                "another node held the migration lock for 5 minutes".into(),
            )
            .into());
        }
        let mut migrator = sqlx::migrate!("./migrations/mysql");
        migrator.set_locking(false);
        let migrated = migrator.run_direct(&mut *conn).await;
        let _ = sqlx::query("SELECT RELEASE_LOCK('jobvisor_migrate')")
            .execute(&mut *conn)
            .await;
        Ok(migrated?)
    }

    async fn listen(&self) -> Result<Option<UnboundedReceiver<Notice>>> {
        Ok(Some(poll_notices(
            self.pool.clone(),
            false,
            |what, _| match what {
                "work" => Some(Notice::Work),
                "cancel" => Some(Notice::Cancel),
                "jobs" => Some(Notice::Jobs),
                "limits" => Some(Notice::Limits),
                _ => None,
            },
        )))
    }

    const PUBLISHES_EVENTS: bool = true;

    async fn publish_events(&self, payload: &str) -> Result<()> {
        sqlx::query("INSERT INTO notices (what, at, payload) VALUES ('events', ?, ?)")
            .bind(crate::model::now_micros())
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn events_heard(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hearers WHERE until > ?)")
            .bind(crate::model::now_micros())
            .fetch_one(&self.pool)
            .await
    }

    async fn listen_events(&self) -> Result<Option<UnboundedReceiver<String>>> {
        // Heard from now on, for as long as the receiver lives: the lease
        // is renewed three times a lease, and its row deleted when it ends.
        let hearer = uuid::Uuid::now_v7();
        hear(&self.pool, hearer).await?;
        let rx = poll_notices(self.pool.clone(), true, |_, payload| payload);
        let (tx, out) = tokio::sync::mpsc::unbounded_channel();
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut rx = rx;
            let mut renew = tokio::time::interval(HEARER_LEASE / 3);
            loop {
                tokio::select! {
                    got = rx.recv() => {
                        let Some(p) = got else { break };
                        if tx.send(p).is_err() {
                            break;
                        }
                    }
                    _ = renew.tick() => {
                        if let Err(e) = hear(&pool, hearer).await {
                            tracing::warn!(error = %e, "cannot renew the lease on hearing events");
                        }
                    }
                    _ = tx.closed() => break,
                }
            }
            let _ = sqlx::query("DELETE FROM hearers WHERE id = ?")
                .bind(hearer)
                .execute(&pool)
                .await;
        });
        Ok(Some(out))
    }

    async fn notify(conn: &mut MySqlConnection, what: &'static str) -> Result<()> {
        sqlx::query("INSERT INTO notices (what, at) VALUES (?, ?)")
            .bind(what)
            .bind(crate::model::now_micros())
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn fetch_numbered<'c, 'q: 'c>(
        conn: &'c mut MySqlConnection,
        text: &'c str,
        values: &'c [Deferred<'q, Self>],
    ) -> Result<Vec<MySqlRow>> {
        let text = rewrite::translate(text);
        let update = Update::parse(&text);
        if let Some(u) = update.as_ref().filter(|u| u.returning.is_some()) {
            return returning(conn, u, values).await;
        }
        let (sql, args) = bound(&one_statement(&text, update.as_ref()), values, None, "")?;
        My::fetch_all(conn, &sql, args).await
    }

    async fn execute_numbered<'c, 'q: 'c>(
        conn: &'c mut MySqlConnection,
        text: &'c str,
        values: &'c [Deferred<'q, Self>],
    ) -> Result<u64> {
        let text = rewrite::translate(text);
        let update = Update::parse(&text);
        if let Some(u) = update.as_ref().filter(|u| u.returning.is_some()) {
            return Ok(returning(conn, u, values).await?.len() as u64);
        }
        let (sql, args) = bound(&one_statement(&text, update.as_ref()), values, None, "")?;
        My::execute(conn, &sql, args).await
    }

    queries!(MySqlConnection, MySqlRow);

    fn get<T: Col>(row: &MySqlRow, column: impl Idx) -> Result<T> {
        get(row, column)
    }
}

/// A column of `row`. Text in a `_bin` collation (every text column here:
/// comparisons are exact, as on the other backends) comes from the server
/// flagged binary, and sqlx's MySQL driver then calls it `VARBINARY` and
/// refuses to decode it as text. Such a column is decoded as the text it
/// is when text is asked for; every other mismatch is refused as before.
fn get<T: Col>(row: &MySqlRow, column: impl Idx) -> Result<T> {
    use sqlx::{TypeInfo, ValueRef};
    match row.try_get(column) {
        Err(sqlx::Error::ColumnDecode { .. })
            if <T as sqlx::Type<MySql>>::type_info().name() == "VARCHAR"
                && row.try_get_raw(column).is_ok_and(|v| {
                    matches!(
                        v.type_info().name(),
                        "VARBINARY" | "BINARY" | "BLOB" | "TINYBLOB" | "MEDIUMBLOB" | "LONGBLOB"
                    )
                }) =>
        {
            row.try_get_unchecked(column)
        }
        r => r,
    }
}

/// A statement with no `RETURNING` as MySQL runs it: an update from a row
/// source joins it.
fn one_statement<'t>(text: &'t str, update: Option<&Update<'_>>) -> std::borrow::Cow<'t, str> {
    match update {
        Some(u) if u.source.is_some() => u.joined().into(),
        _ => text.into(),
    }
}

/// The key column of a table that an `UPDATE ... RETURNING` changes, and
/// whether its values are UUIDs (else text).
fn key_of(table: &str) -> Option<(&'static str, bool)> {
    match table {
        "executions" => Some(("id", true)),
        "jobs" => Some(("name", false)),
        "unique_keys" => Some(("\"key\"", false)),
        _ => None,
    }
}

/// Some rows' keys (see [`key_of`]).
enum Keys {
    Uuid(Vec<uuid::Uuid>),
    Text(Vec<String>),
}

impl Keys {
    fn read(rows: &[MySqlRow], uuid: bool) -> Result<Self> {
        Ok(if uuid {
            Keys::Uuid(rows.iter().map(|r| get(r, 0)).collect::<Result<_>>()?)
        } else {
            Keys::Text(rows.iter().map(|r| get(r, 0)).collect::<Result<_>>()?)
        })
    }

    fn is_empty(&self) -> bool {
        match self {
            Keys::Uuid(k) => k.is_empty(),
            Keys::Text(k) => k.is_empty(),
        }
    }
}

/// `text` with `?` for each `$N` and the values bound, then a `?` and a
/// value for each of `keys` (a list, comma-separated), then `tail`.
fn bound<'q>(
    text: &str,
    values: &[Deferred<'q, My>],
    keys: Option<&'q Keys>,
    tail: &str,
) -> Result<(String, MySqlArguments)> {
    let mut args = MySqlArguments::default();
    let mut sql = positional::<My>(text, values, &mut args).map_err(sqlx::Error::Encode)?;
    let mut list = |n: usize| {
        sql.push_str(&vec!["?"; n].join(", "));
    };
    match keys {
        Some(Keys::Uuid(k)) => {
            list(k.len());
            for k in k {
                args.add(k).map_err(sqlx::Error::Encode)?;
            }
        }
        Some(Keys::Text(k)) => {
            list(k.len());
            for k in k {
                args.add(k.as_str()).map_err(sqlx::Error::Encode)?;
            }
        }
        None => {}
    }
    sql.push_str(tail);
    Ok((sql, args))
}

/// An `UPDATE ... RETURNING`, which MySQL lacks: in one transaction (a
/// savepoint within the caller's), the rows are locked by a `SELECT ...
/// FOR UPDATE` (those a `picked` CTE picked, skipping any another
/// transaction holds), updated by key, and read back by key. What is read
/// back is what the update wrote, as `RETURNING` gives it.
async fn returning(
    conn: &mut MySqlConnection,
    u: &Update<'_>,
    values: &[Deferred<'_, My>],
) -> Result<Vec<MySqlRow>> {
    let (key, uuid) = key_of(u.table).ok_or_else(|| {
        sqlx::Error::Protocol(format!("no key known for an update of {}", u.table))
    })?;
    let mut tx = conn.begin().await?;
    let locked = match u.pick() {
        Some(pick) => {
            let (sql, args) = bound(&pick, values, None, "")?;
            let picked = Keys::read(&My::fetch_all(&mut tx, &sql, args).await?, uuid)?;
            if picked.is_empty() {
                tx.commit().await?;
                return Ok(Vec::new());
            }
            let (sql, args) = bound(
                &u.lock_picked(key),
                values,
                Some(&picked),
                rewrite::LOCK_PICKED_END,
            )?;
            Keys::read(&My::fetch_all(&mut tx, &sql, args).await?, uuid)?
        }
        None => {
            let (sql, args) = bound(&u.lock_all(key), values, None, "")?;
            Keys::read(&My::fetch_all(&mut tx, &sql, args).await?, uuid)?
        }
    };
    if locked.is_empty() {
        tx.commit().await?;
        return Ok(Vec::new());
    }
    let (sql, args) = bound(&u.update(key), values, Some(&locked), ")")?;
    My::execute(&mut tx, &sql, args).await?;
    let (sql, args) = bound(&u.read_back(key), values, Some(&locked), ")")?;
    let rows = My::fetch_all(&mut tx, &sql, args).await?;
    tx.commit().await?;
    Ok(rows)
}

/// Says that `hearer` hears events for the next [`HEARER_LEASE`].
async fn hear(pool: &Pool<MySql>, hearer: uuid::Uuid) -> Result<()> {
    let until = crate::model::now_micros() + HEARER_LEASE.as_micros() as i64;
    sqlx::query(
        "INSERT INTO hearers (id, until) VALUES (?, ?) ON DUPLICATE KEY UPDATE until = VALUES(until)",
    )
    .bind(hearer)
    .bind(until)
        .execute(pool)
        .await?;
    Ok(())
}

/// The notices other nodes write, read on a short poll ([`NOTICE_POLL`]):
/// each new row's `what` and `payload`, made a `T` by `read` (`None`: not
/// one of these). `events` reads only the batches of events, else only
/// the rest. The wake-ups' poll also deletes the notices no poll reads
/// any more. It ends when the receiver is dropped.
fn poll_notices<T: Send + 'static>(
    pool: Pool<MySql>,
    events: bool,
    read: fn(&str, Option<String>) -> Option<T>,
) -> UnboundedReceiver<T> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sql = if events {
        "SELECT seq, what, at, payload FROM notices WHERE at > ? AND what = 'events'"
    } else {
        "SELECT seq, what, at, NULL FROM notices WHERE at > ? AND what <> 'events'"
    };
    tokio::spawn(async move {
        // Notices seen in the window, by sequence number.
        let mut seen = std::collections::BTreeMap::<i64, i64>::new();
        let mut first = true;
        let mut pruned = 0;
        loop {
            let now = crate::model::now_micros();
            let since = now - NOTICE_WINDOW_US;
            if !events && now - pruned > NOTICE_WINDOW_US {
                pruned = now;
                let old = sqlx::query("DELETE FROM notices WHERE at < ?")
                    .bind(now - NOTICE_KEPT_US)
                    .execute(&pool);
                if let Err(e) = old.await {
                    tracing::warn!(error = %e, "cannot delete old notices");
                }
            }
            let rows = sqlx::query(sql).bind(since).fetch_all(&pool);
            let rows = tokio::select! {
                r = rows => r,
                _ = tx.closed() => return,
            };
            match rows {
                Ok(rows) => {
                    seen.retain(|_, at| *at > since);
                    for row in rows {
                        let (Ok(seq), Ok(what), Ok(at), Ok(payload)) = (
                            get::<i64>(&row, 0),
                            get::<String>(&row, 1),
                            get::<i64>(&row, 2),
                            get::<Option<String>>(&row, 3),
                        ) else {
                            continue;
                        };
                        if seen.insert(seq, at).is_some() || first {
                            continue;
                        }
                        let Some(item) = read(&what, payload) else {
                            continue;
                        };
                        if tx.send(item).is_err() {
                            return;
                        }
                    }
                    first = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading notices failed; polling meanwhile");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(NOTICE_POLL) => {}
                _ = tx.closed() => return,
            }
        }
    });
    rx
}
