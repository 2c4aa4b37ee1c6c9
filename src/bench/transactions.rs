//! `jobvisor bench --scenario transactions`: what committing a handler's
//! effect with its run's success costs.
//!
//! `--count` in-process runs drained at `--concurrency`, in three cases,
//! `--repeat` rounds, each case first in turn, each on a fresh database
//! unless one is given:
//! - `noop`: runs that do nothing (the bare figure);
//! - `separate`: each run inserts a row through a pool of its own (its own
//!   commit), and its success is recorded apart, by the relay's batches;
//! - `transaction`: each run inserts the row in `ContextExt::transaction`,
//!   which commits with its success row.
//!
//! The ratios are each case's throughput over `noop`'s, round by round.

use super::CaseDatabases;
use crate::failure::CliError;
use jobvisor::{sqlx, Context, ContextExt, HandlerError, Supervisor};
use serde::Serialize;
use serde_json::Value;

/// Result of the transactions scenario.
#[derive(Debug, Serialize)]
pub struct TransactionsBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// Runs per case and round.
    pub count: usize,
    /// No-op throughput, per round, runs/s.
    pub noop_per_sec: Vec<f64>,
    /// A row inserted apart from the run's success, per round, runs/s.
    pub separate_per_sec: Vec<f64>,
    /// A row inserted in the run's own transaction, per round, runs/s.
    pub transaction_per_sec: Vec<f64>,
    /// `separate` over `noop`, per round.
    pub separate_ratios: Vec<f64>,
    /// `transaction` over `noop`, per round.
    pub transaction_ratios: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Case {
    Noop,
    Separate,
    Transaction,
}

pub(super) async fn bench_transactions(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    if a.count == 0 || a.repeat == 0 {
        return Err(crate::failure::input(
            "--count and --repeat must be at least 1",
        ));
    }
    let dbs = CaseDatabases::new(database)?;
    let kind = dbs.kind();
    let (mut noop, mut separate, mut transaction) = (Vec::new(), Vec::new(), Vec::new());
    let cases = [Case::Noop, Case::Separate, Case::Transaction];
    for r in 0..a.repeat {
        for k in 0..cases.len() {
            let case = cases[(k + r) % cases.len()];
            let db = dbs.of(&format!("case{}-{r}", (k + r) % cases.len()));
            let rate = match kind {
                "postgresql" => round::<sqlx::Postgres>(&db, db.clone(), case, a).await?,
                "mysql" => {
                    let app = db.replacen("mariadb://", "mysql://", 1);
                    round::<sqlx::MySql>(&db, app, case, a).await?
                }
                _ => round::<sqlx::Sqlite>(&db, format!("sqlite://{db}"), case, a).await?,
            };
            match case {
                Case::Noop => noop.push(rate),
                Case::Separate => separate.push(rate),
                Case::Transaction => transaction.push(rate),
            }
        }
    }
    let over = |v: &[f64]| -> Vec<f64> { v.iter().zip(&noop).map(|(x, n)| x / n).collect() };
    let r = TransactionsBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        count: a.count,
        separate_ratios: over(&separate),
        transaction_ratios: over(&transaction),
        noop_per_sec: noop,
        separate_per_sec: separate,
        transaction_per_sec: transaction,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    println!(
        "{} cores | {} | {} in-process runs a case at concurrency {}, {} round(s)",
        r.cores, r.backend, r.count, a.concurrency, a.repeat
    );
    println!(
        "noop                      runs/s  {}",
        super::figures(&r.noop_per_sec, 0)
    );
    println!(
        "row apart from the run    runs/s  {}",
        super::figures(&r.separate_per_sec, 0)
    );
    println!(
        "row in the run's commit   runs/s  {}",
        super::figures(&r.transaction_per_sec, 0)
    );
    println!(
        "ratio apart / noop                {}",
        super::figures(&r.separate_ratios, 2)
    );
    println!(
        "ratio in the commit / noop        {}",
        super::figures(&r.transaction_ratios, 2)
    );
    Ok(())
}

/// One case's round on `db` (the application's own connections go to
/// `app_url`): runs/s.
async fn round<DB>(
    db: &str,
    app_url: String,
    case: Case,
    a: &super::BenchArgs,
) -> Result<f64, CliError>
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'c> &'c sqlx::Pool<DB>: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let runtime = |e: sqlx::Error| CliError::Runtime(format!("bench transactions: {e}"));
    // Made (and migrated) before the application connects to it.
    jobvisor::store::open(db)
        .await
        .map_err(|e| CliError::Runtime(format!("bench transactions: {e}")))?;
    let builder = Supervisor::builder()
        .database(db)
        .configure(|c| c.concurrency = a.concurrency);
    let effect = |ctx: &Context| {
        format!(
            "INSERT INTO bench_effects (run) VALUES ('{}')",
            ctx.execution().execution_id
        )
    };
    let sup = match case {
        Case::Noop => builder.build().await?,
        Case::Separate => {
            let app = sqlx::Pool::<DB>::connect(&app_url).await.map_err(runtime)?;
            builder
                .register("effect", move |ctx: Context, _: Value| {
                    let app = app.clone();
                    async move {
                        sqlx::query(&effect(&ctx))
                            .execute(&app)
                            .await
                            .map_err(|e| HandlerError::retryable(e.to_string()))?;
                        Ok(Value::Null)
                    }
                })
                .build()
                .await?
        }
        Case::Transaction => {
            builder
                .register("effect", move |ctx: Context, _: Value| async move {
                    let mut tx = ctx.transaction::<DB>().await?;
                    sqlx::query(&effect(&ctx))
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| HandlerError::retryable(e.to_string()))?;
                    Ok(Value::Null)
                })
                .build()
                .await?
        }
    };
    let app = sqlx::Pool::<DB>::connect(&app_url).await.map_err(runtime)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_effects (run TEXT NOT NULL)")
        .execute(&app)
        .await
        .map_err(runtime)?;
    let handler = if case == Case::Noop { "noop" } else { "effect" };
    let rate = super::drain(&sup, handler, a.count).await?;
    if case != Case::Noop {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM bench_effects")
            .fetch_one(&app)
            .await
            .map_err(runtime)?;
        // A given database keeps the rows of earlier rounds.
        if (n as usize) < a.count {
            return Err(CliError::Runtime(format!(
                "bench transactions: {n} rows for {} runs",
                a.count
            )));
        }
    }
    Ok(rate)
}
