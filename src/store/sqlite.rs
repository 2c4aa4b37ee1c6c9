//! The SQLite dialect: the embedded default.

use super::dialect::{queries, Args, Bind, Col, Dialect, Idx};
use super::{open_error, Notice, StoreError};
use sqlx::error::BoxDynError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Arguments, Pool, Row, Sqlite};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

type Result<T> = std::result::Result<T, sqlx::Error>;

/// The embedded default: one writer connection (SQLite has one writer
/// anyway, and queueing in the pool is cheaper than busy-waiting on the file
/// lock) and a few readers, all in WAL mode.
pub struct Lite {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    /// In-process handlers' transactions: connected when one is first
    /// asked for.
    handlers: Pool<Sqlite>,
    path: Option<std::path::PathBuf>,
}

/// The pools close with the store: sqlx's reaper task of each then ends at
/// once, rather than at its next period (minutes later), and no task of
/// the store outlives it.
impl Drop for Lite {
    fn drop(&mut self) {
        // Marks the pool closed; the connections go with the pool.
        drop(self.writer.close());
        drop(self.reader.close());
        drop(self.handlers.close());
    }
}

impl Lite {
    /// Opens (creating if needed) `sqlite://PATH` or a path.
    /// `sqlite::memory:` would give each pool a database of its own.
    pub async fn open(url: &str) -> std::result::Result<Self, StoreError> {
        let opts = sqlite_options(url).map_err(open_error(url))?;
        create_private(opts.get_filename()).map_err(|e| open_error(url)(sqlx::Error::Io(e)))?;
        let pool = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .min_connections(1.min(n))
                // A ping before every acquire doubles the round trips to the
                // connection thread; a broken local file shows on use anyway.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
                .idle_timeout(crate::idle::connection_idle())
                .max_lifetime(crate::idle::connection_lifetime())
        };
        // Switching a new file to WAL needs a moment of exclusive access,
        // which another process opening it at the same time may hold.
        let mut tries = 0;
        let writer = loop {
            match pool(1).connect_with(opts.clone()).await {
                Ok(pool) => break pool,
                Err(e) if is_busy(&e) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 + fastrand::u64(0..80))).await;
                }
                Err(e) => return Err(open_error(url)(e)),
            }
        };
        let reader = pool(4)
            .min_connections(0)
            .connect_with(opts.clone().create_if_missing(false))
            .await
            .map_err(open_error(url))?;
        let handlers = pool(HANDLER_TRANSACTIONS)
            .min_connections(0)
            .connect_lazy_with(opts.clone().create_if_missing(false));
        let path = Some(opts.get_filename().to_path_buf())
            .filter(|p| p.is_file())
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Self {
            writer,
            reader,
            handlers,
            path,
        })
    }
}

/// In-process handlers' transactions open at once, at most (more wait for
/// one to end). SQLite runs one write transaction at a time anyway.
const HANDLER_TRANSACTIONS: u32 = 4;

/// Watches the WAL of the database at `db` (through its directory, so
/// that a WAL created anew is still seen): each burst of writes by another
/// process is one [`Notice::Changed`]. Another process's enqueue, cancel or
/// job change is then seen within milliseconds instead of at the next poll.
///
/// This process's own writes change the WAL too, and are not news. Only
/// another connection's commit moves `PRAGMA data_version` on `writer`
/// (this process's one writing connection), so a burst is announced when
/// that moved. A burst seen before the other process's commit is visible
/// is checked again [`RECHECK`] later.
fn watch_wal(
    db: &std::path::Path,
    writer: Pool<Sqlite>,
) -> std::io::Result<UnboundedReceiver<Notice>> {
    use futures_util::{FutureExt, StreamExt};
    use inotify::{EventMask, Inotify, WatchMask};
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut wal = db.file_name().unwrap_or_default().to_os_string();
    wal.push("-wal");
    let inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO,
    )?;
    let mut events = inotify.into_event_stream(vec![0u8; 4096])?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    // `None` (the pragma failed) counts as moved.
    let version = move || {
        let writer = writer.clone();
        async move {
            sqlx::query_scalar::<_, i64>("PRAGMA data_version")
                .fetch_one(&writer)
                .await
                .ok()
        }
    };
    tokio::spawn(async move {
        let mut seen = version().await;
        if tx.send(Notice::Watched).is_err() {
            return;
        }
        let mut recheck: Option<tokio::time::Instant> = None;
        loop {
            let burst = tokio::select! {
                // Nobody listens any more (the supervisor is gone): the
                // watch ends now, not at the next change of the file.
                _ = tx.closed() => return,
                first = events.next() => match first {
                    Some(first) => Some(first),
                    None => return,
                },
                _ = tokio::time::sleep_until(recheck.unwrap_or_else(tokio::time::Instant::now)), if recheck.is_some() => None,
            };
            let rechecked = burst.is_none();
            let mut changed = rechecked;
            let mut next = burst;
            // What is already read is one burst.
            while let Some(event) = next {
                match event {
                    // An overflow lost events: any of them may have been it.
                    Ok(e) => {
                        changed |= e.name.as_deref() == Some(wal.as_os_str())
                            || e.mask.contains(EventMask::Q_OVERFLOW)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the database failed; polling only");
                        return;
                    }
                }
                next = events.next().now_or_never().flatten();
            }
            if !changed {
                continue;
            }
            // Under a steady stream of writes, what comes while a check
            // waits for the writer connection is the next burst: a check
            // per transaction of this process at most.
            let now = version().await;
            if now.is_some() && now == seen {
                // This process's own write, or another's not yet visible:
                // once more a moment later (but a recheck is not rechecked).
                recheck = (!rechecked).then(|| tokio::time::Instant::now() + RECHECK);
                continue;
            }
            seen = now;
            recheck = None;
            if tx.send(Notice::Changed).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// How long after a WAL change that showed no other process's commit the
/// watch looks once more: the commit becomes visible (SQLite's shared
/// memory index) a moment after its last WAL write.
const RECHECK: Duration = Duration::from_millis(20);

/// The store's connection settings for `sqlite://PATH` or a path: WAL,
/// `synchronous = NORMAL`, a 30 s busy timeout, a 4 MB page cache, temporary
/// tables in memory, rows read `ROW_BUFFER` ahead; the file is created
/// if missing.
pub fn sqlite_options(url: &str) -> Result<SqliteConnectOptions> {
    let base = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    Ok(base
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(30))
        .pragma("cache_size", "-4000")
        .pragma("temp_store", "memory")
        .row_buffer_size(ROW_BUFFER))
}

/// Creates the database file `path`, if it is missing, readable by its
/// owner only (0600; SQLite gives its `-wal` and `-shm` files the same
/// mode): a job's payloads, outputs and logs are nobody else's to read.
/// A missing directory is an error, as it was (a mistyped path creates
/// nothing).
fn create_private(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.to_string_lossy();
    let dir_missing = path
        .parent()
        .is_some_and(|d| !d.as_os_str().is_empty() && !d.is_dir());
    if name.is_empty() || name.starts_with(':') || path.exists() || dir_missing {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        // Another process made it a moment ago.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Brings the migration history of a database made before the backends'
/// migrations were numbered alike to the numbers of today: SQLite's `run
/// model`, `webhooks` and `traces` were 10 to 12, and are 11 to 13 beside
/// PostgreSQL's (10 is PostgreSQL's live and ended tables, nothing on
/// SQLite). Their scripts did not change, and neither do their checksums;
/// 10 is recorded as applied, as it changes nothing. Once, in one
/// transaction, and never again: afterwards version 10 is `live and ended`.
async fn renumber(
    writer: &Pool<Sqlite>,
    migrator: &sqlx::migrate::Migrator,
) -> std::result::Result<(), StoreError> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let old: Option<String> =
        match sqlx::query_scalar("SELECT description FROM _sqlx_migrations WHERE version = 10")
            .fetch_optional(&mut *tx)
            .await
        {
            Ok(d) => d,
            // No history yet (a new file): nothing to renumber.
            Err(sqlx::Error::Database(e)) if e.message().contains("no such table") => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    if old.as_deref() != Some("run model") {
        return Ok(());
    }
    let placeholder = migrator
        .iter()
        .find(|m| m.version == 10)
        .expect("migration 10 is built in");
    for v in [12, 11, 10] {
        sqlx::query("UPDATE _sqlx_migrations SET version = ?1 WHERE version = ?2")
            .bind(v + 1)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (10, ?1, 1, ?2, 0)",
    )
    .bind(placeholder.description.as_ref())
    .bind(placeholder.checksum.as_ref())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!("renumbered the migration history: SQLite's migrations 10 to 12 are 11 to 13, as on PostgreSQL");
    Ok(())
}

/// Rows a connection's thread may get ahead of the task reading them.
/// sqlx's default, 50, makes a claim's or a scheduler pass's hundreds of
/// rows a hand-off between threads each: the connection thread blocks on
/// the full channel, and every row read wakes it again. Rows are read
/// whole anyway (`fetch_all`).
const ROW_BUFFER: usize = 4096;

/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6" | "517")))
}

/// Takes an exclusive advisory lock on directory `path`, polling so as not
/// to block a runtime thread.
async fn lock_dir(
    path: &std::path::Path,
) -> std::result::Result<nix::fcntl::Flock<std::fs::File>, StoreError> {
    use nix::fcntl::{Flock, FlockArg};
    let io = |e: std::io::Error| open_error(&path.display().to_string())(sqlx::Error::Io(e));
    let mut file = std::fs::File::open(path).map_err(io)?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                file = f;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((_, e)) => return Err(io(e.into())),
        }
    }
}

impl Dialect for Lite {
    type Db = Sqlite;
    const LEAST: &'static str = "MIN";
    const JSON_ARRAY: (&'static str, &'static str) = ("json_array(", ")");
    const GREATEST: &'static str = "MAX";
    const START_STAMP: &'static str = "$1";
    const POSITION: &'static str = "instr";
    const UUID_HEX: &'static str = "hex({})";
    const SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const CLAIM_LOCK: Option<&'static str> = None;
    const DELIVER_LOCK: Option<&'static str> = None;
    const WEBHOOKS_LOCK: Option<&'static str> = None;

    fn record_triggers(inserted: Option<&str>, updated: Option<&str>) -> Vec<String> {
        let record = "BEGIN INSERT INTO event_outbox (execution_id, status) \
                      VALUES (NEW.id, NEW.status); END";
        let mut out = vec![
            "DROP TRIGGER IF EXISTS executions_record_insert".to_string(),
            "DROP TRIGGER IF EXISTS executions_record_update".to_string(),
        ];
        if let Some(list) = inserted {
            out.push(format!(
                "CREATE TRIGGER executions_record_insert AFTER INSERT ON executions \
                 WHEN NEW.status IN ({list}) AND NEW.handler <> 'webhook' {record}"
            ));
        }
        if let Some(list) = updated {
            out.push(format!(
                "CREATE TRIGGER executions_record_update AFTER UPDATE OF status ON executions \
                 WHEN NEW.status IN ({list}) AND OLD.status IS NOT NEW.status \
                 AND NEW.handler <> 'webhook' {record}"
            ));
        }
        out
    }

    fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
    }

    fn handlers(&self) -> &Pool<Sqlite> {
        &self.handlers
    }

    async fn migrate(&self) -> std::result::Result<(), StoreError> {
        // SQLite gives sqlx's migrator no lock across processes, and two
        // processes migrating a new file at once trip over each other. An
        // advisory flock on the database's directory serializes them. (Not
        // on the file itself: closing any descriptor of the database file
        // drops every POSIX lock this process's connections hold on it.)
        let _lock = match self.path.as_ref().and_then(|p| p.parent()) {
            Some(dir) => Some(lock_dir(dir).await?),
            None => None,
        };
        let migrator = sqlx::migrate!("./migrations/sqlite");
        renumber(&self.writer, &migrator).await?;
        Ok(migrator.run(&self.writer).await?)
    }

    fn listen(&self) -> impl Future<Output = Result<Option<UnboundedReceiver<Notice>>>> + Send {
        let watched = self
            .path
            .as_deref()
            .map(|p| watch_wal(p, self.writer.clone()));
        async move {
            match watched {
                Some(Ok(rx)) => Ok(Some(rx)),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "cannot watch the database for changes; polling only");
                    Ok(None)
                }
                None => Ok(None),
            }
        }
    }

    queries!(SqliteConnection, SqliteRow);

    fn get<T: Col>(row: &SqliteRow, column: impl Idx) -> Result<T> {
        row.try_get(column)
    }
}
