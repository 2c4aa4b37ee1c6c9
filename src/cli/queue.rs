//! `jobvisor queue ...`

use super::args::QueueCmd;
use super::{input, output, CliError};
use jobvisor::model::Rate;
use jobvisor::store::QueueChange;

/// `N` (at least 1) or `none`.
fn limit(text: &str) -> Result<Option<u32>, CliError> {
    match text {
        "none" => Ok(None),
        n => match n.parse::<u32>() {
            Ok(v) if v >= 1 => Ok(Some(v)),
            _ => Err(input(format!(
                "invalid limit {n:?} (expected a number of at least 1, or none)"
            ))),
        },
    }
}

pub(crate) async fn queue(db: &str, cmd: QueueCmd) -> Result<(), CliError> {
    // Bad input is refused before anything is opened or written.
    let (name, change) = match &cmd {
        QueueCmd::List(_) => (String::new(), QueueChange::default()),
        QueueCmd::Pause { name } | QueueCmd::Resume { name } => (
            name.clone(),
            QueueChange {
                paused: Some(matches!(cmd, QueueCmd::Pause { .. })),
                ..Default::default()
            },
        ),
        QueueCmd::SetLimit { name, limit: l } => (
            name.clone(),
            QueueChange {
                limit: Some(limit(l)?),
                ..Default::default()
            },
        ),
        QueueCmd::SetKeyLimit { name, limit: l } => (
            name.clone(),
            QueueChange {
                key_limit: Some(limit(l)?),
                ..Default::default()
            },
        ),
        QueueCmd::SetRate { name, rate } => {
            let rate = match rate.as_str() {
                "none" => None,
                r => Some(r.parse::<Rate>().map_err(|e| input(e.to_string()))?),
            };
            (
                name.clone(),
                QueueChange {
                    rate: Some(rate),
                    ..Default::default()
                },
            )
        }
    };
    if !matches!(cmd, QueueCmd::List(_)) && name.is_empty() {
        return Err(input("a queue name cannot be empty"));
    }
    // Only `serve` and `migrate` create a database.
    let store = jobvisor::store::open_existing(db).await?;
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    if !matches!(cmd, QueueCmd::List(_)) {
        jobvisor::Client::connect(store.clone())
            .await
            .set_queue(&name, &change)
            .await?;
    }
    match cmd {
        QueueCmd::List(j) => {
            let queues = store.queues().await?;
            if j.json {
                return output::json(&queues);
            }
            let rows = queues
                .iter()
                .map(|q| {
                    vec![
                        q.name.clone(),
                        if q.paused { "paused" } else { "active" }.into(),
                        dash(q.max_running.map(|n| n.to_string())),
                        dash(q.key_limit.map(|n| n.to_string())),
                        dash(q.rate.map(|r| r.to_string())),
                        dash(q.tokens.map(|n| n.to_string())),
                        q.running.to_string(),
                        q.pending.to_string(),
                    ]
                })
                .collect();
            output::table(
                &[
                    "QUEUE",
                    "STATE",
                    "LIMIT",
                    "KEY LIMIT",
                    "RATE",
                    "TOKENS",
                    "RUNNING",
                    "PENDING",
                ],
                rows,
            );
        }
        QueueCmd::Pause { .. } => println!("queue {name} paused (running executions go on)"),
        QueueCmd::Resume { .. } => println!("queue {name} resumed"),
        QueueCmd::SetLimit { .. } => match change.limit.flatten() {
            Some(n) => println!("queue {name}: at most {n} running"),
            None => println!("queue {name}: no limit"),
        },
        QueueCmd::SetKeyLimit { .. } => match change.key_limit.flatten() {
            Some(n) => println!("queue {name}: at most {n} running per concurrency key"),
            None => println!("queue {name}: no key limit"),
        },
        QueueCmd::SetRate { .. } => match change.rate.flatten() {
            Some(r) => println!(
                "queue {name}: at most {} started in any {}",
                r.n,
                humantime::format_duration(std::time::Duration::from_millis(r.per_ms))
            ),
            None => println!("queue {name}: no rate limit"),
        },
    }
    Ok(())
}
