//! An application's own connections to the database a test's nodes share,
//! on PostgreSQL or MySQL/MariaDB alike: the counts a test checks, and the
//! side effects a handler records.

#![allow(dead_code)]

/// A pool on the database at a `postgres://` or `mysql://` URL.
#[derive(Clone)]
pub enum AppPool {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
}

impl AppPool {
    pub async fn connect(url: &str) -> Self {
        if url.starts_with("mysql://") {
            AppPool::My(sqlx::MySqlPool::connect(url).await.unwrap())
        } else {
            AppPool::Pg(sqlx::PgPool::connect(url).await.unwrap())
        }
    }

    /// Runs a statement that binds nothing.
    pub async fn run(&self, sql: &str) {
        match self {
            AppPool::Pg(p) => {
                sqlx::query(sql).execute(p).await.unwrap();
            }
            AppPool::My(p) => {
                sqlx::query(sql).execute(p).await.unwrap();
            }
        }
    }

    /// The integers a query gives (`COUNT(*)`, say), one a row.
    pub async fn integers(&self, sql: &str) -> Vec<i64> {
        match self {
            AppPool::Pg(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
            AppPool::My(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        }
    }

    /// The one integer a query gives.
    pub async fn integer(&self, sql: &str) -> i64 {
        self.integers(sql).await[0]
    }

    /// Runs a statement with a text and an integer bound to `$1` and `$2`
    /// (`?` on MySQL).
    pub async fn execute(&self, sql: &str, text: &str, n: i32) -> Result<u64, sqlx::Error> {
        match self {
            AppPool::Pg(p) => Ok(sqlx::query(sql)
                .bind(text)
                .bind(n)
                .execute(p)
                .await?
                .rows_affected()),
            AppPool::My(p) => {
                let sql = sql.replace("$1", "?").replace("$2", "?");
                Ok(sqlx::query(&sql)
                    .bind(text)
                    .bind(n)
                    .execute(p)
                    .await?
                    .rows_affected())
            }
        }
    }
}
