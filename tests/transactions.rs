//! Jobs that commit with the application's own transaction, on each
//! backend: runs enqueued in it (`Client::enqueue_in`) exist only if it
//! commits, and an in-process handler's transaction
//! (`ContextExt::transaction`) commits with its run's success and only
//! then.
//!
//! Crashes are real: a child process (this test binary, run again as a
//! helper) is killed with SIGKILL between its insert and its commit.

mod common;

use common::*;
use jobvisor::{sqlx, Client, ContextExt, HandlerError, RunSpec, Status, Supervisor};
use serde_json::json;
use std::io::BufRead;
use std::time::Duration;
use uuid::Uuid;

/// The helper a test runs as a child process (`JV_TX_CHILD`); nothing
/// when run as a test.
#[test]
fn child() {
    let Ok(role) = std::env::var("JV_TX_CHILD") else {
        return;
    };
    let url = std::env::var("JV_TX_URL").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let scheme = url.split_once("://").map_or("sqlite", |(s, _)| s);
        match (role.as_str(), scheme) {
            ("enqueue", "postgres") => child_enqueue::<sqlx::Postgres>(&url, "BEGIN").await,
            ("enqueue", "mysql") => child_enqueue::<sqlx::MySql>(&url, "BEGIN").await,
            ("enqueue", _) => child_enqueue::<sqlx::Sqlite>(&url, "BEGIN IMMEDIATE").await,
            ("node", "postgres") => child_node::<sqlx::Postgres>(&url).await,
            ("node", "mysql") => child_node::<sqlx::MySql>(&url).await,
            ("node", _) => child_node::<sqlx::Sqlite>(&url).await,
            _ => unreachable!("{role}"),
        }
    });
}

/// Enqueues a run with unique key `crash` in an open transaction, says
/// so, and waits to be killed.
async fn child_enqueue<DB>(url: &str, begin: &'static str)
where
    DB: sqlx::Database,
    for<'c> sqlx::Transaction<'c, DB>: jobvisor::store::AppTransaction,
{
    let client = Client::connect(jobvisor::store::open(url).await.unwrap()).await;
    let pool = sqlx::Pool::<DB>::connect(&app_url(url)).await.unwrap();
    let mut tx = pool.begin_with(begin).await.unwrap();
    let id = client
        .enqueue_in(
            &mut tx,
            &RunSpec::new("noop", json!(null)).unique_key("crash"),
        )
        .await
        .unwrap();
    println!("enqueued {id}");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// A node that enqueues a run of its `ship` handler, which inserts its
/// row, says so, and waits to be killed.
async fn child_node<DB>(url: &str)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let sup = Supervisor::builder()
        .database(url)
        .configure(|c| {
            c.poll_interval = Duration::from_millis(20);
            c.heartbeat_interval = Duration::from_millis(200);
            c.node_lease = Duration::from_secs(2);
        })
        .register(
            "ship",
            |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                insert_shipped::<DB>(&ctx).await?;
                println!("inserted {}", ctx.execution().execution_id);
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(json!(null))
            },
        )
        .build()
        .await
        .unwrap();
    let mut spec = RunSpec::new("ship", json!(null));
    spec.retries = 2;
    spec.backoff = Duration::from_millis(10);
    sup.enqueue(spec).await.unwrap();
    sup.run(std::future::pending()).await.unwrap();
}

/// Inserts this attempt's row of `shipped` in the handler's transaction.
async fn insert_shipped<DB>(ctx: &jobvisor::Context) -> Result<(), HandlerError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
{
    let mut tx = ctx.transaction::<DB>().await?;
    let sql = format!(
        "INSERT INTO shipped (run, attempt) VALUES ('{}', {})",
        ctx.execution().execution_id,
        ctx.execution().attempt
    );
    sqlx::query(&sql)
        .execute(&mut *tx)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
    Ok(())
}

/// The URL sqlx connects to for the application's own connections.
fn app_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    }
}

/// Runs this test binary as helper `role` on `url`; returns it once it
/// printed a line (which is returned too).
fn spawn_child(role: &str, url: &str) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env("JV_TX_CHILD", role)
        .env("JV_TX_URL", url)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut said = || -> Option<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if out.read_line(&mut line).ok()? == 0 {
                return None;
            }
            // The test harness's own words come first, on the same line.
            for said in ["enqueued", "inserted"] {
                if let Some(at) = line.find(said) {
                    return Some(line[at..].trim().to_string());
                }
            }
        }
    };
    match said() {
        Some(line) => (child, line),
        None => {
            let status = child.wait();
            panic!("the {role} helper ended ({status:?}) before it said anything");
        }
    }
}

fn kill(mut child: std::process::Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
}

/// A supervisor on `url` that rescues a dead node's runs within seconds.
async fn start(
    url: &str,
    build: impl FnOnce(jobvisor::SupervisorBuilder) -> jobvisor::SupervisorBuilder,
) -> (
    Supervisor,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    start_supervisor(url, |b| {
        build(b.configure(|c| {
            c.heartbeat_interval = Duration::from_millis(200);
            c.node_lease = Duration::from_secs(2);
        }))
    })
    .await
}

/// The test bodies, once per backend: `Db`, `BEGIN` and `fresh()` come
/// from the module that expands them.
macro_rules! suite {
    () => {
        use super::*;

        /// The rows of the application's `shipped` table: `(run, attempt)`.
        async fn shipped(pool: &sqlx::Pool<Db>) -> Vec<(String, i64)> {
            sqlx::query_as("SELECT run, attempt FROM shipped ORDER BY attempt")
                .fetch_all(pool)
                .await
                .unwrap()
        }

        async fn app(url: &str) -> sqlx::Pool<Db> {
            let pool = sqlx::Pool::<Db>::connect(&app_url(url)).await.unwrap();
            sqlx::query("CREATE TABLE IF NOT EXISTS shipped (run TEXT NOT NULL, attempt BIGINT NOT NULL)")
                .execute(&pool)
                .await
                .unwrap();
            pool
        }

        /// A run enqueued in a transaction that commits runs; the
        /// application's row and the run's commit together.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_run_enqueued_in_a_committed_transaction_runs() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            // Polls once a minute: only the commit's notice can wake it.
            let (sup, stop, task) = start(&url, |b| {
                b.configure(|c| c.poll_interval = Duration::from_secs(60))
            })
            .await;
            let pool = app(&url).await;
            // Its first poll is over.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut tx = pool.begin_with(BEGIN).await.unwrap();
            sqlx::query("INSERT INTO shipped (run, attempt) VALUES ('order-1', 0)")
                .execute(&mut *tx)
                .await
                .unwrap();
            let specs = vec![
                RunSpec::new("echo", json!({"order": 1})),
                RunSpec::new("noop", json!(null))
                    .unique_key("order-1")
                    .unique_for(Duration::from_secs(3600)),
            ];
            let ids = sup.enqueue_many_in(&mut tx, &specs).await.unwrap();
            // Not visible outside the transaction yet, nor run.
            for id in &ids {
                assert!(sup.store().execution(*id).await.unwrap().is_none());
            }
            tx.commit().await.unwrap();
            let committed = std::time::Instant::now();
            // The supervisor hears of them on the commit (a notice, or
            // the file's change), and runs them.
            for id in &ids {
                let e = finished(sup.store().as_ref(), *id).await;
                assert_eq!(e.status, Status::Succeeded, "{e:?}");
            }
            assert!(
                committed.elapsed() < Duration::from_secs(30),
                "woken by the commit, not by a poll: {:?}",
                committed.elapsed()
            );
            assert_eq!(shipped(&pool).await.len(), 1);
            // The unique key is held by the committed run (for an hour).
            let mut tx = pool.begin_with(BEGIN).await.unwrap();
            let again = sup
                .enqueue_in(&mut tx, &RunSpec::new("noop", json!(null)).unique_key("order-1").unique_for(Duration::from_secs(3600)))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(again, ids[1], "a duplicate names the holder");
            stop.send(()).unwrap();
            task.await.unwrap();
        }

        /// A rollback leaves no row, no webhook event and no unique key.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_rolled_back_transaction_leaves_no_trace() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let client = Client::connect(jobvisor::store::open(&url).await.unwrap()).await;
            // A webhook on every enqueue: its outbox is written by a
            // trigger in the enqueuing transaction.
            client
                .add_webhook(
                    &jobvisor::model::WebhookSpec::new("hook", "http://127.0.0.1:9/", &["enqueued"]),
                    false,
                )
                .await
                .unwrap();
            let pool = app(&url).await;
            let mut tx = pool.begin_with(BEGIN).await.unwrap();
            let id = client
                .enqueue_in(&mut tx, &RunSpec::new("noop", json!(null)).unique_key("once"))
                .await
                .unwrap();
            let (outbox,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM event_outbox")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(outbox, 1, "the event is recorded in the transaction");
            tx.rollback().await.unwrap();
            assert!(client.store().execution(id).await.unwrap().is_none());
            assert_eq!(count_executions(client.store().as_ref()).await, 0);
            for table in ["event_outbox", "unique_keys", "executions"] {
                let (n,): (i64,) = sqlx::query_as(&format!("SELECT COUNT(*) FROM {table}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                assert_eq!(n, 0, "{table} after the rollback");
            }
            // The key is free: a new run takes it.
            let out = client
                .submit_many(vec![RunSpec::new("noop", json!(null)).unique_key("once")])
                .await
                .unwrap();
            assert!(!out[0].duplicate);
        }

        /// A transaction on another database than the client's is refused.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn runs_are_enqueued_only_in_a_transaction_on_the_clients_backend() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            let other = dir.path().join("other.db").display().to_string();
            let client = Client::connect(jobvisor::store::open(&other).await.unwrap()).await;
            let pool = app(&url).await;
            let mut tx = pool.begin_with(BEGIN).await.unwrap();
            let r = client.enqueue_in(&mut tx, &RunSpec::new("noop", json!(null))).await;
            if <Db as sqlx::Database>::NAME == "SQLite" {
                // Two SQLite files cannot be told apart by their driver:
                // the run goes into the file of the transaction.
                assert!(r.is_ok(), "{r:?}");
            } else {
                let e = r.unwrap_err().to_string();
                assert!(e.contains("cannot enqueue into this client's SQLite database"), "{e}");
            }
        }

        /// A crash between the insert and the commit: no run, and its
        /// unique key is free.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_process_killed_before_its_commit_leaves_no_run() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let client = Client::connect(jobvisor::store::open(&url).await.unwrap()).await;
            let (child, line) = spawn_child("enqueue", &url);
            let id: Uuid = line.trim_start_matches("enqueued ").parse().unwrap();
            kill(child);
            // The server rolls the dead session back (PostgreSQL, when it
            // sees the socket close; SQLite, at the next open).
            let out = eventually("the key to be free", || async {
                let out = client
                    .submit_many(vec![RunSpec::new("noop", json!(null)).unique_key("crash")])
                    .await
                    .ok()?;
                Some(out)
            })
            .await;
            assert!(!out[0].duplicate, "the dead transaction's key is not held");
            assert!(client.store().execution(id).await.unwrap().is_none());
            assert_eq!(count_executions(client.store().as_ref()).await, 1);
        }

        /// A handler's writes commit with its success only: the failed
        /// first attempt's row is gone, the retry's is there once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_failed_attempts_writes_roll_back_and_the_retrys_commit_once() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let pool = app(&url).await;
            let (sup, stop, task) = start(&url, |b| {
                b.register("ship", |ctx: jobvisor::Context, p: serde_json::Value| async move {
                    insert_shipped::<Db>(&ctx).await?;
                    // The same transaction again.
                    let mut tx = ctx.transaction::<Db>().await?;
                    let sql = format!(
                        "SELECT COUNT(*) FROM shipped WHERE run = '{}' OR attempt = 1",
                        ctx.execution().execution_id
                    );
                    let (n,): (i64,) = sqlx::query_as(&sql)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| HandlerError::retryable(e.to_string()))?;
                    assert_eq!(n, 1, "its own write, and no first attempt's");
                    match (ctx.execution().attempt, p["mode"].as_str()) {
                        (1, Some("fail")) => Err(HandlerError::retryable("first attempt fails")),
                        (1, Some("panic")) => panic!("first attempt panics"),
                        (1, Some("cancel")) => {
                            ctx.cancelled().await;
                            Err(HandlerError::cancelled())
                        }
                        _ => Ok(json!({"attempt": ctx.execution().attempt})),
                    }
                })
            })
            .await;
            let mut ids = Vec::new();
            for mode in ["fail", "panic"] {
                let mut spec = RunSpec::new("ship", json!({"mode": mode}));
                spec.retries = 2;
                spec.backoff = Duration::from_millis(10);
                ids.push(sup.enqueue(spec).await.unwrap());
            }
            let mut runs = Vec::new();
            for id in &ids {
                let mut last = finished(sup.store().as_ref(), *id).await;
                assert_eq!(last.status, Status::Failed);
                let retry = last.next_id.expect("retried");
                last = finished(sup.store().as_ref(), retry).await;
                assert_eq!((last.status, last.attempt), (Status::Succeeded, 2), "{last:?}");
                runs.push(retry.to_string());
            }
            // A run stopped while its transaction is open (here by its
            // timeout; a cancel takes the same way) rolls back too.
            let mut spec = RunSpec::new("ship", json!({"mode": "cancel"}));
            spec.timeout = Some(Duration::from_millis(500));
            let stopped = sup.enqueue(spec).await.unwrap();
            let e = finished(sup.store().as_ref(), stopped).await;
            assert_eq!(e.status, Status::Failed, "{e:?}");
            assert!(e.timed_out, "{e:?}");
            let rows = shipped(&pool).await;
            let mut got: Vec<String> = rows.iter().map(|(r, _)| r.clone()).collect();
            got.sort();
            runs.sort();
            assert_eq!(got, runs, "one row per succeeded run, each its second attempt's");
            assert!(rows.iter().all(|(_, a)| *a == 2));
            stop.send(()).unwrap();
            task.await.unwrap();
        }

        /// The node is killed while its handler's transaction is open: no
        /// row. The run is rescued, and its retry's row commits once.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_node_killed_mid_handler_leaves_no_row_and_the_retry_commits_once() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let pool = app(&url).await;
            let (child, line) = spawn_child("node", &url);
            let id: Uuid = line.trim_start_matches("inserted ").parse().unwrap();
            kill(child);
            assert!(shipped(&pool).await.is_empty(), "the killed attempt's row");
            let (sup, stop, task) = start(&url, |b| {
                b.register("ship", |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                    insert_shipped::<Db>(&ctx).await?;
                    Ok(json!(null))
                })
            })
            .await;
            let first = finished(sup.store().as_ref(), id).await;
            assert_eq!(first.status, Status::Failed, "{first:?}");
            let retry = finished(sup.store().as_ref(), first.next_id.expect("retried")).await;
            assert_eq!((retry.status, retry.attempt), (Status::Succeeded, 2));
            assert_eq!(shipped(&pool).await, vec![(retry.id.to_string(), 2)]);
            stop.send(()).unwrap();
            task.await.unwrap();
        }

        /// A task the handler left behind gets no transaction once the run
        /// is over: one would hold its connection (on SQLite the write
        /// lock) with nobody to end it.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_task_left_behind_gets_no_transaction_after_the_run() {
            let Some((url, _dir)) = fresh().await else {
                return;
            };
            let (said, mut heard) = tokio::sync::mpsc::unbounded_channel::<String>();
            let (sup, stop, task) = start(&url, move |b| {
                b.register("leaves", move |ctx: jobvisor::Context, _p: serde_json::Value| {
                    let said = said.clone();
                    async move {
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            let r = ctx.transaction::<Db>().await.map(drop);
                            let _ = said.send(format!("{r:?}"));
                        });
                        Ok(json!(null))
                    }
                })
            })
            .await;
            let id = sup.enqueue(RunSpec::new("leaves", json!(null))).await.unwrap();
            assert_eq!(finished(sup.store().as_ref(), id).await.status, Status::Succeeded);
            let r = tokio::time::timeout(Duration::from_secs(30), heard.recv()).await.unwrap().unwrap();
            assert_eq!(r, "Err(Over)");
            stop.send(()).unwrap();
            task.await.unwrap();
        }

        /// A process worker has no transaction to share: asking says so.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_context_without_a_supervisor_has_no_transaction() {
            let (tx, _rx) = tokio::sync::mpsc::channel(1);
            let ctx = jobvisor::Context::new(Default::default(), Default::default(), tx);
            let e = ctx.transaction::<Db>().await.err().unwrap();
            assert!(matches!(e, jobvisor::TxError::NotInproc), "{e}");
        }
    };
}

mod sqlite {
    type Db = sqlx::Sqlite;
    const BEGIN: &str = "BEGIN IMMEDIATE";

    async fn fresh() -> Option<(String, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("t.db").display().to_string();
        jobvisor::store::open(&url).await.unwrap();
        Some((url, Some(dir)))
    }

    suite!();
}

mod postgres {
    type Db = sqlx::Postgres;
    const BEGIN: &str = "BEGIN";

    async fn fresh() -> Option<(String, Option<tempfile::TempDir>)> {
        Some((super::common::pg_database().await?, None))
    }

    suite!();
}

mod mysql {
    type Db = sqlx::MySql;
    const BEGIN: &str = "BEGIN";

    async fn fresh() -> Option<(String, Option<tempfile::TempDir>)> {
        Some((super::common::mysql_database().await?, None))
    }

    suite!();
}
