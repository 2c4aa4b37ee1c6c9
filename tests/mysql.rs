//! The MySQL/MariaDB dialect's foundations, on a real server (a throwaway
//! MariaDB from `scripts/mariadb-virtualenv`, which `scripts/test` starts):
//! its migrations, its placeholders and its notices. The store's whole
//! suite runs on it in `tests/store.rs`, and the application's
//! transactions in `tests/transactions.rs`.

mod common;

use jobvisor::store::{My, Notice, SqlStore, Store};
use std::sync::Arc;
use std::time::Duration;

async fn my_store(url: &str) -> Arc<dyn Store> {
    Arc::new(SqlStore::new(My::open(url).await.unwrap()))
}

/// Nodes that open a new database at once migrate it once: sqlx's named
/// lock serializes them, and every migration's number is recorded as on
/// the other backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_opening_a_new_database_at_once_migrate_it_once() {
    let Some(url) = common::mysql_database().await else {
        return;
    };
    let opened = futures_util::future::join_all((0..3).map(|_| async {
        let store = my_store(&url).await;
        store.migrate().await.unwrap();
        store
    }))
    .await;
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(&url).await.unwrap();
    let history: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(history, (1..=13).map(|v| (v, true)).collect::<Vec<_>>());
    // Reads on the schema, with `$N` rewritten to positional placeholders.
    assert!(opened[0].jobs().await.unwrap().is_empty());
    assert!(opened[1]
        .execution(uuid::Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
}

/// A notice written by one node's transaction reaches another's listener
/// (the poll of `notices`, where PostgreSQL has NOTIFY).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_from_one_node_wakes_another() {
    let Some(url) = common::mysql_database().await else {
        return;
    };
    let a = my_store(&url).await;
    a.migrate().await.unwrap();
    let b = my_store(&url).await;
    let mut heard = a.listen().await.unwrap().expect("MySQL carries notices");
    // The listener's first read sets where it starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = std::time::Instant::now();
    b.remove_job("no-such-job").await.unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("heard within 10 s")
        .unwrap();
    assert_eq!(notice, Notice::Jobs);
    eprintln!("notice heard after {:?}", sent.elapsed());
    // Once: the next reads of the window do not repeat it.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), heard.recv())
            .await
            .is_err(),
        "a notice is heard once"
    );
}
