//! `jobvisor queue ...`

use super::args::QueueCmd;
use super::{input, output, CliError};

pub(crate) async fn queue(db: &str, cmd: QueueCmd) -> Result<(), CliError> {
    let store = if matches!(cmd, QueueCmd::List(_)) {
        jobvisor::store::open_existing(db).await?
    } else {
        jobvisor::store::open(db).await?
    };
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
                        q.max_running.map_or("-".into(), |n| n.to_string()),
                        if q.paused { "paused" } else { "active" }.into(),
                        q.running.to_string(),
                        q.pending.to_string(),
                    ]
                })
                .collect();
            output::table(&["QUEUE", "LIMIT", "STATE", "RUNNING", "PENDING"], rows);
            Ok(())
        }
        QueueCmd::Pause { name } => {
            store.set_queue(&name, None, Some(true)).await?;
            println!("queue {name} paused (running executions go on)");
            Ok(())
        }
        QueueCmd::Resume { name } => {
            store.set_queue(&name, None, Some(false)).await?;
            println!("queue {name} resumed");
            Ok(())
        }
        QueueCmd::SetLimit { name, limit } => {
            let limit = match limit.as_str() {
                "none" => None,
                n => match n.parse::<u32>() {
                    Ok(v) if v >= 1 => Some(v),
                    _ => {
                        return Err(input(format!(
                            "invalid limit {n:?} (expected a number of at least 1, or none)"
                        )))
                    }
                },
            };
            store.set_queue(&name, Some(limit), None).await?;
            match limit {
                Some(n) => println!("queue {name}: at most {n} running"),
                None => println!("queue {name}: no limit"),
            }
            Ok(())
        }
    }
}
