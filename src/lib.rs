//! jobvisor: a job supervisor that runs jobs as in-process tokio tasks
//! (inproc) or as isolated child worker processes (process), and relays
//! everything they do into SQLite or PostgreSQL.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jobvisor::Error> {
//! use jobvisor::{RunSpec, Supervisor};
//! let sup = Supervisor::builder().database("jobs.db").build().await?;
//! sup.enqueue(RunSpec::new("echo", serde_json::json!({"hello": "world"}))).await?;
//! sup.run(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
// Without the `testing` feature, what only the tests, the bench and the
// binary reach is unused here; the default build (which has it) still
// finds dead code.
#![cfg_attr(not(feature = "testing"), allow(dead_code))]

// What `cfg_attr(feature = "testing", ...)` makes public is the supervisor's
// machinery: public only to the tests, the bench and the `jobvisor` binary
// (whose `cli` feature turns `testing` on), not part of the library's API.
pub mod bulk;
mod client;
#[cfg(not(feature = "testing"))]
mod contract;
#[cfg(feature = "testing")]
pub mod contract;
mod engine;
pub use engine::events;
#[cfg(feature = "testing")]
pub mod fuzzing;
mod idle;
pub mod job;
pub mod metrics;
pub mod model;
#[cfg(feature = "testing")]
pub use engine::{relay, runner, scheduler};
pub mod schedule;
pub mod service;
pub mod store;
pub mod submit;
pub mod supervisor;
pub mod workflow;

pub use client::Client;
pub use engine::runner::transaction::{ContextExt, HandlerTx, TxError};
pub use jobvisor_worker::{Context, Handler, HandlerError, HandlerResult, Level, Registry};
pub use model::{Execution, Mode, Status};
pub use service::http;
/// The sqlx whose transactions [`Client::enqueue_in`] and
/// [`ContextExt::transaction`] take and give.
pub use sqlx;
pub use submit::RunSpec;
pub use supervisor::{Config, Supervisor, SupervisorBuilder};

use std::path::PathBuf;

/// The README's Rust examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Errors of the library's operations.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// match sup.enqueue(jobvisor::RunSpec::new("no-such-handler", serde_json::Value::Null)).await {
///     Err(jobvisor::Error::UnknownHandler(name)) => assert_eq!(name, "no-such-handler"),
///     other => panic!("{other:?}"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// No handler of that name is registered or built in.
    #[error("unknown handler {0:?} (`jobvisor handler list` shows the registered ones)")]
    UnknownHandler(String),
    /// No job of that name exists.
    #[error("no job named {0:?}")]
    UnknownJob(String),
    /// An execution with the id a run asked for exists already.
    #[error("an execution with id {0} exists already")]
    IdTaken(uuid::Uuid),
    /// A job of that name exists already.
    #[error("a job named {0:?} already exists (`job add --replace` or PUT changes it in place)")]
    JobExists(String),
    /// A webhook of that name exists already.
    #[error("a webhook named {0:?} already exists (`webhook add --replace` changes it)")]
    WebhookExists(String),
    /// The job is declared in the service's configuration file, which owns
    /// it: it is changed or removed there (and the service reloaded).
    #[error(
        "job {name:?} is declared in the configuration file{}: change it there and reload the service",
        .file.as_deref().map(|f| format!(" {f}")).unwrap_or_default()
    )]
    Declared {
        /// The job.
        name: String,
        /// The file that declared it, when known.
        file: Option<String>,
    },
    /// Executables run only as child processes.
    #[error("handler {0:?} runs an executable, which only runs in process mode")]
    ExecNotInproc(String),
    /// A request that cannot be carried out as given.
    #[error("{0}")]
    Invalid(String),
    /// An actor of the supervisor panicked (a bug in jobvisor); the
    /// supervisor stopped, its running executions interrupted.
    #[error("the supervisor's {actor:?} panicked: {message}; the supervisor stopped")]
    Panicked {
        /// Which.
        actor: supervisor::Actor,
        /// The panic's message.
        message: String,
    },
    /// The supervisor stopped, but its last writes (what its executions
    /// left to record, its node's stop) failed: the database was gone.
    /// The next supervisor on the database closes what this one left
    /// running as interrupted, to run again.
    #[error("stopped without its last writes: {0}")]
    Unwritten(String),
}

/// The database used when none is given: `$STATE_DIRECTORY/jobvisor.db`
/// under systemd, else `./jobvisor.db`.
///
/// ```
/// // Under systemd (StateDirectory=jobvisor): /var/lib/jobvisor/jobvisor.db.
/// let db = jobvisor::default_database();
/// assert!(db.ends_with("jobvisor.db"));
/// ```
pub fn default_database() -> String {
    match std::env::var("STATE_DIRECTORY") {
        Ok(dirs) if !dirs.is_empty() => {
            let first = dirs.split(':').next().unwrap_or(".");
            format!("{}/jobvisor.db", first.trim_end_matches('/'))
        }
        _ => "jobvisor.db".to_string(),
    }
}

/// Where the `jobvisor-worker` program is: `$JOBVISOR_WORKER`, else beside
/// the running executable (or one level up, for test binaries), else found
/// on `PATH`.
///
/// ```
/// let program = jobvisor::worker_program();
/// assert!(program.ends_with("jobvisor-worker"));
/// ```
pub fn worker_program() -> PathBuf {
    if let Some(p) = std::env::var_os("JOBVISOR_WORKER") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(PathBuf::from);
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let candidate = d.join("jobvisor-worker");
            if candidate.is_file() {
                return candidate;
            }
            dir = d.parent().map(PathBuf::from);
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("jobvisor-worker"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("jobvisor-worker"))
}

/// An error with its causes, joined by `: ` (for one-line messages).
///
/// ```
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot save the report")]
/// struct Save(#[source] std::io::Error);
/// let e = Save(std::io::Error::other("disk full"));
/// assert_eq!(jobvisor::error_chain(&e), "cannot save the report: disk full");
/// ```
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}
