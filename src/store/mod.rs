//! Persistence, by role. An open [`Database`] is read through [`Reads`]
//! (public: embedders, the HTTP API, the command line); the library writes
//! it through two crate-private interfaces: the commands that
//! [`crate::Client`] carries out, and the engine's (claims, the relay's
//! writes, node leases, scheduler passes). One implementation (`SqlStore`)
//! serves all three over the SQLite (embedded) and PostgreSQL (multi-node)
//! dialects.

mod app;
mod commands;
mod dialect;
mod engine;
mod mysql;
mod postgres;
mod reads;
mod sql;
mod sqlite;
mod types;

pub use app::AppTransaction;
pub use reads::Reads;
pub use sqlite::sqlite_options;
pub use types::*;

// The crate's own interfaces, public to the tests and benches only.
#[cfg(feature = "testing")]
pub use {
    commands::Commands, dialect::Dialect, engine::Engine, mysql::My, postgres::Pg, sql::SqlStore,
    sqlite::Lite,
};
#[cfg(not(feature = "testing"))]
pub(crate) use {
    commands::Commands, engine::Engine, mysql::My, postgres::Pg, sql::SqlStore, sqlite::Lite,
};

use crate::model::HandlerSpec;
use std::sync::Arc;
use uuid::Uuid;

/// Errors of the persistence layer.
///
/// ```no_run
/// # async fn demo() {
/// use jobvisor::store::StoreError;
/// match jobvisor::store::open_existing("missing.db").await {
///     Err(StoreError::Missing(path)) => eprintln!("no database at {path}: run `jobvisor migrate`"),
///     Err(e) => eprintln!("cannot open it: {e}"),
///     Ok(_) => {}
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or created.
    #[error("cannot open database {url}")]
    Open {
        /// The URL or path given.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate database")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value in {what}")]
    Corrupt {
        /// Which column (`table.column`).
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command that only reads found no database where it was pointed
    /// (it never creates one).
    #[error("no database at {0}: only `jobvisor serve` and `jobvisor migrate` create one; the service's is `database` in its config file (read from $JOBVISOR_CONFIG or /etc/jobvisor/jobvisor.toml), and --database or JOBVISOR_DATABASE names another")]
    Missing(String),
    /// An execution to run after does not exist (or, within one enqueue,
    /// comes after its dependent).
    #[error("no execution {0} to run after")]
    NoParent(Uuid),
    /// The URL names no supported database.
    #[error(
        "unsupported database URL {0:?} (expected sqlite://PATH, a file path, postgres://... or mysql://...)"
    )]
    Unsupported(String),
}

impl StoreError {
    /// Whether the database failed a transaction for a concurrent change
    /// that running it again may see (SQLSTATE 40001).
    pub(crate) fn is_serialization_failure(&self) -> bool {
        match self {
            StoreError::Query(sqlx::Error::Database(e)) => e.code().as_deref() == Some("40001"),
            _ => false,
        }
    }
}

/// What another node tells this one (PostgreSQL LISTEN/NOTIFY): the
/// actors' machinery.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Executions were enqueued or became claimable.
    Work,
    /// A cancel was requested for a running execution.
    Cancel,
    /// Jobs were added or changed.
    Jobs,
    /// A queue's limits changed (the store forgets its cached view of
    /// limits and passes it on as `Work`).
    Limits,
    /// Another process wrote the database (SQLite: its WAL changed and the
    /// writer connection's `data_version` moved): work may be due, cancels
    /// requested, jobs changed; look.
    Changed,
    /// From now on every write by another process is announced as
    /// [`Notice::Changed`] (SQLite: the WAL is watched), so polls may be
    /// rare. When the channel ends, that promise ends with it.
    Watched,
}

/// A table whose rows are known by a UUID.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// use jobvisor::store::IdTable;
/// assert!(store.ids_matching(IdTable::Workflows, "01a23b", 5).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTable {
    /// `executions`.
    Executions,
    /// `workflows`.
    Workflows,
}

/// The store as the library uses it: read, commanded and run by the
/// engine. Crate-private: an embedding program reads a [`Database`] and
/// writes through [`crate::Client`].
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) trait Store: Reads + Commands + Engine {}

impl<T: Reads + Commands + Engine> Store for T {}

/// An open database: read it through [`Reads`] (a `Database` dereferences
/// to one), command it through [`crate::Client`]. Cloning it is cheap and
/// shares its connections.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let db = jobvisor::store::open(&db).await?;
/// assert!(db.jobs().await?.is_empty());
/// let client = jobvisor::Client::connect(db.clone()).await;
/// client.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// assert_eq!(db.executions(&Default::default()).await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Database(Arc<dyn Store>);

impl Database {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Database(store)
    }

    /// The whole store, as the library uses it.
    #[cfg_attr(feature = "testing", visibility::make(pub))]
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.0
    }
}

impl std::ops::Deref for Database {
    type Target = dyn Reads;

    fn deref(&self) -> &(dyn Reads + 'static) {
        &*self.0
    }
}

impl AsRef<dyn Reads> for Database {
    fn as_ref(&self) -> &(dyn Reads + 'static) {
        &*self.0
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Database")
    }
}

/// Every handler by name: the registered ones, and the built-ins that no
/// registered handler overrides.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// let all = jobvisor::store::all_handlers(&*store).await?;
/// assert!(all.iter().any(|h| h.name == "sleep"));
/// # Ok(()) }
/// ```
pub async fn all_handlers(store: &dyn Reads) -> Result<Vec<HandlerSpec>, StoreError> {
    let mut all = store.handlers().await?;
    for name in HandlerSpec::builtin_names() {
        if !all.iter().any(|h| h.name == *name) {
            all.push(HandlerSpec::builtin(name));
        }
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// The handler registered as `name`, or the built-in of that name.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let store = jobvisor::store::open(&db).await?;
/// let h = jobvisor::store::handler_or_builtin(&*store, "echo").await?.unwrap();
/// assert_eq!(h.mode, jobvisor::Mode::Inproc);
/// # Ok(()) }
/// ```
pub async fn handler_or_builtin(
    store: &dyn Reads,
    name: &str,
) -> Result<Option<HandlerSpec>, StoreError> {
    Ok(match store.handler(name).await? {
        Some(h) => Some(h),
        None if HandlerSpec::is_builtin(name) => Some(HandlerSpec::builtin(name)),
        None => None,
    })
}

/// How long opening a server's database may wait for its answer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects once to a server, bounded by [`CONNECT_TIMEOUT`]: its error
/// names the cause (refused, authentication, no such database), where a
/// pool only says that it timed out, after a minute.
async fn probe<C: sqlx::Connection>(
    opts: &<C as sqlx::Connection>::Options,
    url: &str,
) -> Result<(), StoreError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, C::connect_with(opts)).await {
        Err(_) => Err(open_error(url)(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        )))),
        Ok(Err(e)) => Err(open_error(url)(e)),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

pub(super) fn open_error(url: &str) -> impl Fn(sqlx::Error) -> StoreError + '_ {
    move |source| StoreError::Open {
        url: redact(url),
        source,
    }
}

/// Opens the database at `url` (`postgres://...`, `mysql://...` or
/// `mariadb://...`, an `sqlite://` URL or a file path), creating an SQLite
/// file if needed, and migrates it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let store = jobvisor::store::open(&db).await?; // created and migrated
/// assert!(store.jobs().await?.is_empty());
/// # Ok(()) }
/// ```
pub async fn open(url: &str) -> Result<Database, StoreError> {
    let store: Arc<dyn Store> =
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Arc::new(SqlStore::new(Pg::open(url).await?))
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Arc::new(SqlStore::new(My::open(url).await?))
        } else if url.starts_with("sqlite:") || !url.contains("://") {
            Arc::new(SqlStore::new(Lite::open(url).await?))
        } else {
            return Err(StoreError::Unsupported(url.to_string()));
        };
    store.migrate().await?;
    Ok(Database::new(store))
}

/// Opens an existing database, for commands that only read: an SQLite
/// file that does not exist is [`StoreError::Missing`], never created.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// use jobvisor::store::{open_existing, StoreError};
/// assert!(matches!(open_existing(&db).await, Err(StoreError::Missing(_))));
/// # Ok(()) }
/// ```
pub async fn open_existing(url: &str) -> Result<Database, StoreError> {
    if let Some(path) = sqlite_path(url) {
        if !path.is_empty() && path != ":memory:" && !std::path::Path::new(path).exists() {
            return Err(StoreError::Missing(path.to_string()));
        }
    }
    open(url).await
}

/// The file an SQLite URL or path names (`None` for other databases).
fn sqlite_path(url: &str) -> Option<&str> {
    if url.starts_with("sqlite:") {
        let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
        Some(rest.split('?').next().unwrap_or(rest))
    } else if !url.contains("://") {
        Some(url)
    } else {
        None
    }
}

/// `url` without its password, for messages and logs.
///
/// ```
/// assert_eq!(
///     jobvisor::store::redact("postgres://app:secret@db.example/jobs"),
///     "postgres://app:***@db.example/jobs"
/// );
/// ```
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(at)) if at > s => match base[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &base[..s + 3], &base[at..]),
            None => base.to_string(),
        },
        _ => base.to_string(),
    };
    if let Some(q) = query {
        // libpq takes `password=` (and `sslpassword=`) in the query too.
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.to_ascii_lowercase().ends_with("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            super::redact("postgres://jv:s3cret@db.internal:5432/jobs"),
            "postgres://jv:***@db.internal:5432/jobs"
        );
        assert_eq!(super::redact("postgres://db/jobs"), "postgres://db/jobs");
        assert_eq!(
            super::redact("postgres://jv@db/jobs?sslmode=require&password=s3cret&sslpassword=k"),
            "postgres://jv@db/jobs?sslmode=require&password=***&sslpassword=***"
        );
        assert_eq!(
            super::redact("postgres://jv:a@b@db/jobs?password=x"),
            "postgres://jv:***@db/jobs?password=***"
        );
        assert_eq!(super::redact("jobvisor.db"), "jobvisor.db");
    }
}
