//! A fresh PostgreSQL database per test.

use super::*;

/// A URL of a fresh database on the test server, or `None` (said loudly).
pub async fn pg_database() -> Option<String> {
    let admin = match std::env::var("JOBVISOR_TEST_POSTGRES") {
        Ok(u) => u,
        Err(_) => match std::env::var("PGHOST") {
            Ok(host) => format!(
                "postgres://{}:{}@{host}:{}/{}",
                std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()),
                std::env::var("PGPASSWORD").unwrap_or_default(),
                std::env::var("PGPORT").unwrap_or_else(|_| "5432".into()),
                std::env::var("PGDATABASE").unwrap_or_else(|_| "postgres".into()),
            ),
            Err(_) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL is required in CI and none was found: run scripts/test"
                );
                eprintln!("!!! PostgreSQL test SKIPPED: no server (set PGHOST or JOBVISOR_TEST_POSTGRES, or run scripts/test)");
                return None;
            }
        },
    };
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let name = format!("jv_nodes_{}", Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}
