//! Jobs that commit with the application's own transaction, on SQLite:
//!
//! - an order and the run that ships it are inserted in one transaction
//!   (`Client::enqueue_in`): the order rolled back has no run either;
//! - the handler marks the order shipped in its own transaction
//!   (`ContextExt::transaction`), which commits with the run's success: its
//!   flaky first attempt leaves nothing behind;
//! - a job's condition ("run only if") reads the orders in a transaction of
//!   its own, and the job is skipped once no order waits.
//!
//! ```sh
//! cargo run --example transactional -- /tmp/shop.db
//! ```
//!
//! It prints what happened and exits 0; the database is the first
//! argument, else `transactional.db`.

use jobvisor::job::{Definition, When};
use jobvisor::{sqlx, Context, ContextExt, HandlerError, RunSpec, Status, Supervisor};
use serde_json::{json, Value};
use std::time::Duration;

/// Marks the order shipped by this run. The first attempt fails after its
/// write, as a flaky carrier would: that write rolls back with it.
async fn ship(ctx: Context, order: Value) -> Result<Value, HandlerError> {
    let db = |e: sqlx::Error| HandlerError::retryable(e.to_string());
    let mut tx = ctx.transaction::<sqlx::Sqlite>().await?;
    let run = &ctx.execution().execution_id;
    sqlx::query("UPDATE orders SET shipped_by = ?1 WHERE id = ?2 AND shipped_by IS NULL")
        .bind(run)
        .bind(order["order"].as_i64())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    if ctx.execution().attempt == 1 {
        return Err(HandlerError::retryable("the carrier timed out"));
    }
    Ok(json!({"shipped": order["order"]}))
}

/// The condition of the `reminder` job: run only while an order waits.
async fn orders_waiting(ctx: Context, _: Value) -> Result<bool, HandlerError> {
    let mut tx = ctx.transaction::<sqlx::Sqlite>().await?;
    let (waiting,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders WHERE shipped_by IS NULL")
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| HandlerError::retryable(e.to_string()))?;
    Ok(waiting > 0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "transactional.db".into());
    let sup = Supervisor::builder()
        .database(&path)
        .register("ship", ship)
        .register("orders_waiting", orders_waiting)
        .configure(|c| c.poll_interval = Duration::from_millis(100))
        .build()
        .await?;
    // The application's own connections to the same file.
    let app = sqlx::SqlitePool::connect_with(jobvisor::store::sqlite_options(&path)?).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, shipped_by TEXT)")
        .execute(&app)
        .await?;
    sqlx::query("DELETE FROM orders").execute(&app).await?;

    // Order 1 and its run commit together.
    let mut tx = app.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO orders (id) VALUES (1)")
        .execute(&mut *tx)
        .await?;
    let mut spec = RunSpec::new("ship", json!({"order": 1}));
    spec.retries = 3;
    spec.backoff = Duration::from_millis(100);
    let shipping = sup.enqueue_in(&mut tx, &spec).await?;
    tx.commit().await?;

    // Order 2 is rolled back, and its run with it.
    let mut tx = app.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO orders (id) VALUES (2)")
        .execute(&mut *tx)
        .await?;
    let never = sup
        .enqueue_in(&mut tx, &RunSpec::new("ship", json!({"order": 2})))
        .await?;
    tx.rollback().await?;

    // Reminds every second while an order waits.
    let mut reminder = Definition::new("reminder", "noop");
    reminder.when = When {
        every: Some(Duration::from_secs(1)),
        ..When::default()
    };
    reminder.condition = Some("orders_waiting".into());
    let _ = sup.remove_job("reminder").await; // left by an earlier run
    sup.add_job(reminder.spec(jobvisor::model::now_micros())?)
        .await?;

    let runner = sup.clone();
    let stop = tokio::sync::Notify::new();
    let (ran, checked) = tokio::join!(runner.run(stop.notified()), async {
        let out = report(&sup, &app, shipping, never).await;
        stop.notify_one();
        out
    });
    ran?;
    checked
}

/// Waits for the shipment and a skipped reminder, and prints them.
async fn report(
    sup: &Supervisor,
    app: &sqlx::SqlitePool,
    shipping: uuid::Uuid,
    never: uuid::Uuid,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut id = shipping;
    let shipped = loop {
        let e = sup.store().execution(id).await?.ok_or("the run is gone")?;
        match (e.status, e.next_id) {
            (Status::Succeeded, _) => break e,
            (_, Some(next)) => id = next,
            _ if tokio::time::Instant::now() > deadline => return Err("not shipped in time".into()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let rows: Vec<(i64, Option<String>)> =
        sqlx::query_as("SELECT id, shipped_by FROM orders ORDER BY id")
            .fetch_all(app)
            .await?;
    println!(
        "order 1 shipped by attempt {} ({}); orders: {rows:?}",
        shipped.attempt, shipped.id
    );
    println!(
        "order 2 rolled back; its run exists: {}",
        sup.store().execution(never).await?.is_some()
    );
    let filter = jobvisor::store::ExecFilter {
        job: Some("reminder".into()),
        statuses: vec![Status::Skipped],
        ..Default::default()
    };
    loop {
        if let Some(e) = sup.store().executions(&filter).await?.first() {
            println!(
                "reminder skipped: {}",
                e.error.as_deref().unwrap_or_default()
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err("no reminder was skipped in time".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sup.remove_job("reminder").await?;
    Ok(())
}
