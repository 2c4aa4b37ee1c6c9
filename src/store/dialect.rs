//! What really differs between SQLite and PostgreSQL, and nothing else: a
//! few words of SQL, the pools, how a write transaction begins, NOTIFY and
//! the advisory lock, opening, migrating and listening.
//!
//! The store itself ([`super::sql::SqlStore`]) is written once against
//! [`Dialect`]. The dialect also runs the queries, with concrete types, so
//! that the shared code binds and decodes values without naming sqlx's
//! per-database trait bounds (which generic code cannot state once).

use super::{Notice, StoreError};
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Arguments, ColumnIndex, Database, Decode, Encode, Pool, Postgres, Row, Sqlite, Type};
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// A value both backends can bind.
pub trait Bind<'q>:
    'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}
impl<'q, T> Bind<'q> for T where
    T: 'q + Send + Encode<'q, Sqlite> + Type<Sqlite> + Encode<'q, Postgres> + Type<Postgres>
{
}

/// A column type both backends can decode.
pub trait Col:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Col for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A column by name or position, on either backend.
pub trait Idx: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + Copy {}
impl<T: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> + Copy> Idx for T {}

pub(super) type Args<'q, D> = <<D as Dialect>::Db as Database>::Arguments<'q>;
pub(super) type Conn<D> = <<D as Dialect>::Db as Database>::Connection;
pub(super) type DbRow<D> = <<D as Dialect>::Db as Database>::Row;
type Result<T> = std::result::Result<T, sqlx::Error>;

/// One backend's differences.
pub trait Dialect: Send + Sync + Sized + 'static {
    /// The sqlx database.
    type Db: Database;
    /// The smaller of two values (`MIN` in SQLite, `LEAST` in PostgreSQL).
    const LEAST: &'static str;
    /// Locks the rows a claim selects, so that concurrent claimers on other
    /// nodes skip them (SQLite has one writer and needs nothing).
    const SKIP_LOCKED: &'static str;
    /// Locks a row read before it is updated in the same transaction.
    const FOR_UPDATE: &'static str;
    /// How a write transaction begins: SQLite takes the write lock at once,
    /// so that it never has to upgrade a read lock and fail with BUSY.
    const BEGIN: &'static str;
    /// A statement that serializes limited claims across nodes, for the
    /// length of a transaction. Limits are counts over running rows: nodes
    /// claiming at once would each see the same free slots.
    const CLAIM_LOCK: Option<&'static str>;

    /// The pool for reads.
    fn reader(&self) -> &Pool<Self::Db>;
    /// The pool for writes.
    fn writer(&self) -> &Pool<Self::Db>;
    /// Brings the schema up to date.
    fn migrate(&self) -> impl Future<Output = std::result::Result<(), StoreError>> + Send;
    /// Wake-ups from other nodes, if the backend has them.
    fn listen(&self) -> impl Future<Output = Result<Option<UnboundedReceiver<Notice>>>> + Send {
        std::future::ready(Ok(None))
    }
    /// Tells every listening node `what` happened, on commit.
    fn notify(
        conn: &mut Conn<Self>,
        what: &'static str,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (conn, what);
        std::future::ready(Ok(()))
    }

    /// Adds a bind value.
    fn add<'q>(
        args: &mut Args<'q, Self>,
        value: impl Bind<'q>,
    ) -> std::result::Result<(), BoxDynError>;
    /// Runs a query for its rows.
    fn fetch_all<'c, 'q: 'c, 's: 'c>(
        conn: &'c mut Conn<Self>,
        sql: &'s str,
        args: Args<'q, Self>,
    ) -> impl Future<Output = Result<Vec<DbRow<Self>>>> + Send + 'c;
    /// Runs a query for the number of rows it changed.
    fn execute<'c, 'q: 'c, 's: 'c>(
        conn: &'c mut Conn<Self>,
        sql: &'s str,
        args: Args<'q, Self>,
    ) -> impl Future<Output = Result<u64>> + Send + 'c;
    /// Decodes one column.
    fn get<T: Col>(row: &DbRow<Self>, column: impl Idx) -> Result<T>;
}

/// The query primitives of [`Dialect`], the same text for both backends
/// but compiled against each one's concrete types.
macro_rules! queries {
    ($conn:ty, $row:ty) => {
        fn add<'q>(
            args: &mut Args<'q, Self>,
            value: impl Bind<'q>,
        ) -> std::result::Result<(), BoxDynError> {
            args.add(value)
        }

        fn fetch_all<'c, 'q: 'c, 's: 'c>(
            conn: &'c mut $conn,
            sql: &'s str,
            args: Args<'q, Self>,
        ) -> impl Future<Output = Result<Vec<$row>>> + Send + 'c {
            sqlx::query_with(sql, args).fetch_all(conn)
        }

        fn execute<'c, 'q: 'c, 's: 'c>(
            conn: &'c mut $conn,
            sql: &'s str,
            args: Args<'q, Self>,
        ) -> impl Future<Output = Result<u64>> + Send + 'c {
            async move {
                Ok(sqlx::query_with(sql, args)
                    .execute(conn)
                    .await?
                    .rows_affected())
            }
        }

        fn get<T: Col>(row: &$row, column: impl Idx) -> Result<T> {
            row.try_get(column)
        }
    };
}

/// The embedded default: one writer connection (SQLite has one writer
/// anyway, and queueing in the pool is cheaper than busy-waiting on the file
/// lock) and a few readers, all in WAL mode.
pub struct Lite {
    writer: Pool<Sqlite>,
    reader: Pool<Sqlite>,
    path: Option<std::path::PathBuf>,
}

/// Several supervisors on several machines share one database.
pub struct Pg {
    pool: Pool<Postgres>,
}

fn open_error(url: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        url: super::redact(url),
        source,
    }
}

impl Lite {
    /// Opens (creating if needed) `sqlite://PATH` or a path.
    /// `sqlite::memory:` would give each pool a database of its own.
    pub async fn open(url: &str) -> std::result::Result<Self, StoreError> {
        let base = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(open_error(url))?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        let opts = base
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", "-4000")
            .pragma("temp_store", "memory");
        let pool = |n| {
            SqlitePoolOptions::new()
                .max_connections(n)
                .min_connections(1.min(n))
                // A ping before every acquire doubles the round trips to the
                // connection thread; a broken local file shows on use anyway.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
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
        let path = Some(opts.get_filename().to_path_buf())
            .filter(|p| p.is_file())
            .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Self {
            writer,
            reader,
            path,
        })
    }
}

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
    const SKIP_LOCKED: &'static str = "";
    const FOR_UPDATE: &'static str = "";
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    const CLAIM_LOCK: Option<&'static str> = None;

    fn reader(&self) -> &Pool<Sqlite> {
        &self.reader
    }

    fn writer(&self) -> &Pool<Sqlite> {
        &self.writer
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
        Ok(sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?)
    }

    queries!(SqliteConnection, SqliteRow);
}

/// How long opening the database may wait for the server's answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The channel on which nodes wake each other up.
const CHANNEL: &str = "jobvisor";

impl Pg {
    /// Connects to `postgres://...`.
    pub async fn open(url: &str) -> std::result::Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url).map_err(open_error(url))?;
        // One connection first, bounded: its error names the cause (refused,
        // authentication, no such database), where a pool only says that it
        // timed out, after a minute.
        let probe = <PgConnection as sqlx::Connection>::connect_with(&opts);
        match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
            Err(_) => {
                return Err(open_error(url)(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ))))
            }
            Ok(Err(e)) => return Err(open_error(url)(e)),
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(60))
            .test_before_acquire(false)
            .connect_with(opts)
            .await
            .map_err(open_error(url))?;
        Ok(Self { pool })
    }
}

impl Dialect for Pg {
    type Db = Postgres;
    const LEAST: &'static str = "LEAST";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const BEGIN: &'static str = "BEGIN";
    const CLAIM_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(7305150916)");

    fn reader(&self) -> &Pool<Postgres> {
        &self.pool
    }

    fn writer(&self) -> &Pool<Postgres> {
        &self.pool
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
                // is found by the nodes' polling.
                match listener.recv().await {
                    Ok(n) => {
                        let notice = match n.payload() {
                            "work" => Notice::Work,
                            "cancel" => Notice::Cancel,
                            "jobs" => Notice::Jobs,
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

    async fn notify(conn: &mut PgConnection, what: &'static str) -> Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(what)
            .execute(conn)
            .await?;
        Ok(())
    }

    queries!(PgConnection, PgRow);
}

/// A statement and its bind values, for either backend. A statement is
/// written one of two ways, never both: with literal `$N` placeholders
/// bound in order by [`Sql::bind`] (sqlx's SQLite driver numbers `$N` as
/// PostgreSQL does), or built with [`Sql::push_bind`] alone, which writes
/// each backend's own placeholder. The built kind is for statements with
/// many binds: SQLite finds a named placeholder by a linear search, so
/// thousands of `$N` would cost quadratic time, where `?` costs nothing.
pub(super) struct Sql<'q, D: Dialect> {
    text: std::borrow::Cow<'static, str>,
    args: Args<'q, D>,
    error: Option<BoxDynError>,
}

impl<'q, D: Dialect> Sql<'q, D> {
    pub fn new(text: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            text: text.into(),
            args: Default::default(),
            error: None,
        }
    }

    /// Binds the value of the next `$N` written in the text.
    pub fn bind(mut self, value: impl Bind<'q>) -> Self {
        self.add(value);
        self
    }

    fn add(&mut self, value: impl Bind<'q>) {
        if let Err(e) = D::add(&mut self.args, value) {
            self.error.get_or_insert(e);
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Writes a placeholder and binds its value.
    pub fn push_bind(&mut self, value: impl Bind<'q>) -> &mut Self {
        self.add(value);
        let _ = self.args.format_placeholder(self.text.to_mut());
        self
    }

    /// Writes `VALUES (...), (...)`, one tuple an item, each filled by `row`.
    pub fn values<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        mut row: impl FnMut(&mut Tuple<'_, 'q, D>, T),
    ) -> &mut Self {
        self.push("VALUES ");
        for (i, item) in items.into_iter().enumerate() {
            self.push(if i == 0 { "(" } else { ", (" });
            row(
                &mut Tuple {
                    sql: self,
                    first: true,
                },
                item,
            );
            self.push(")");
        }
        self
    }

    /// Binds `items` as a comma-separated list (for `IN (...)`).
    pub fn push_list<T: Bind<'q>>(&mut self, items: impl IntoIterator<Item = T>) -> &mut Self {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(item);
        }
        self
    }

    pub async fn fetch_all(
        self,
        conn: &mut Conn<D>,
    ) -> std::result::Result<Vec<DbRow<D>>, StoreError> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e).into()),
            None => Ok(D::fetch_all(conn, &self.text, self.args).await?),
        }
    }

    pub async fn fetch_optional(
        self,
        conn: &mut Conn<D>,
    ) -> std::result::Result<Option<DbRow<D>>, StoreError> {
        Ok(self.fetch_all(conn).await?.into_iter().next())
    }

    pub async fn execute(self, conn: &mut Conn<D>) -> std::result::Result<u64, StoreError> {
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e).into()),
            None => Ok(D::execute(conn, &self.text, self.args).await?),
        }
    }
}

/// One tuple of [`Sql::values`].
pub(super) struct Tuple<'a, 'q, D: Dialect> {
    sql: &'a mut Sql<'q, D>,
    first: bool,
}

impl<'q, D: Dialect> Tuple<'_, 'q, D> {
    pub fn bind(&mut self, value: impl Bind<'q>) -> &mut Self {
        if !std::mem::take(&mut self.first) {
            self.sql.push(", ");
        }
        self.sql.push_bind(value);
        self
    }
}
