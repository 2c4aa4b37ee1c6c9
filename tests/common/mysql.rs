//! A fresh MySQL/MariaDB database per test.

use super::*;

/// A URL of a fresh database on the test server (`JOBVISOR_TEST_MYSQL`, an
/// admin URL, which `scripts/mariadb-virtualenv` sets), or `None` (said
/// loudly; under CI it fails).
pub async fn mysql_database() -> Option<String> {
    let Ok(admin) = std::env::var("JOBVISOR_TEST_MYSQL") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MySQL/MariaDB is required in CI and none was found: run scripts/test"
        );
        eprintln!(
            "!!! MySQL test SKIPPED: no server (set JOBVISOR_TEST_MYSQL, or run scripts/test)"
        );
        return None;
    };
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(&admin).await.unwrap();
    let name = format!("jv_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    Some(format!("{}/{name}", admin.trim_end_matches('/')))
}
