//! A worker program that hosts the application's own Rust handlers in
//! process mode: each execution runs in a child process of the supervisor,
//! isolated from it, and the process is kept for the next one when pooled.
//!
//! ```sh
//! cargo build --example custom_worker
//! jobvisor handler add report --exec target/debug/examples/custom_worker --pool-size 2
//! jobvisor run report --payload '{"rows": 5}' --wait
//! ```
//!
//! Its handler `report` counts `rows` rows, `delay_ms` apart, reporting
//! progress and logging each one; it stops at a cancel, and fails as asked
//! (`"fail": "permanent"` or `"retryable"`). A payload that does not decode
//! (`{"rows": "five"}`) fails for good, naming the field.

use jobvisor_worker::{Context, HandlerError, Level, Registry};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a `report` run is given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    rows: u64,
    #[serde(default)]
    delay_ms: u64,
    /// `permanent` or `retryable`: fail that way after the rows.
    #[serde(default)]
    fail: Option<String>,
}

/// What it returns.
#[derive(Serialize)]
struct Summary {
    rows: u64,
    attempt: u32,
}

async fn report(ctx: Context, args: Report) -> Result<Summary, HandlerError> {
    for row in 1..=args.rows {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.delay_ms)) => {}
            _ = ctx.cancelled() => {
                ctx.warn(format!("cancelled at row {row}")).await;
                return Err(HandlerError::cancelled());
            }
        }
        let mut fields = serde_json::Map::new();
        fields.insert("row".into(), row.into());
        ctx.log_with(Level::Debug, "row counted", fields).await;
        ctx.step(row, args.rows, format!("row {row}")).await;
    }
    match args.fail.as_deref() {
        Some("permanent") => Err(HandlerError::permanent("the report is wrong")),
        Some(_) => Err(HandlerError::retryable("the upstream is busy")),
        None => Ok(Summary {
            rows: args.rows,
            attempt: ctx.execution().attempt,
        }),
    }
}

fn main() -> std::process::ExitCode {
    let mut registry = Registry::new();
    registry.register("report", report);
    jobvisor_worker::host::main(registry)
}
