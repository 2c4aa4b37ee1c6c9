//! `jobvisor workflow ...`: run, show, list, cancel.

use super::args::WorkflowCmd;
use super::{input, output, CliError};
use jobvisor::store::{IdTable, Reads};
use jobvisor::workflow::{Summary, View, WorkflowSpec};
use std::io::Read;
use uuid::Uuid;

/// The workflow `text` names: a UUID, or a unique prefix or suffix.
async fn resolve(store: &dyn Reads, text: &str) -> Result<Uuid, CliError> {
    super::ids::resolve(store, IdTable::Workflows, text, "workflow").await
}

/// The workflow file's text (`-`: stdin).
fn read(file: &str) -> Result<String, CliError> {
    let mut text = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|t| text = t)
    };
    read.map_err(|e| input(format!("cannot read workflow {file}: {e}")))?;
    Ok(text)
}

pub(crate) async fn workflow(db: &str, cmd: WorkflowCmd) -> Result<(), CliError> {
    if let WorkflowCmd::Run { file, json } = cmd {
        // Checked before the database is touched: a bad file writes nothing.
        let spec = WorkflowSpec::parse(&read(&file)?)?;
        let store = jobvisor::store::open_existing(db).await?;
        let done = jobvisor::Client::connect(store)
            .await
            .workflow(&spec)
            .await?;
        if json {
            return output::json(&done);
        }
        println!("{}", done.id);
        return Ok(());
    }
    let store = jobvisor::store::open_existing(db).await?;
    match cmd {
        WorkflowCmd::Run { .. } => unreachable!("handled above"),
        WorkflowCmd::Show { id, json } => {
            let id = resolve(store.as_ref(), &id).await?;
            let (info, spec, execs) = store
                .workflow(id)
                .await?
                .ok_or_else(|| input(format!("no workflow {id}")))?;
            let view = View::new(info, &spec, execs);
            if json {
                return output::json(&view);
            }
            println!("workflow {} ({}): {}", view.id, view.name, view.status);
            let ids =
                super::ids::Shortener::new(view.steps.iter().filter_map(|s| s.execution.as_ref()));
            let rows = view
                .steps
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.handler.clone(),
                        s.status.map_or_else(|| "-".into(), |st| st.to_string()),
                        match s.after.is_empty() {
                            true => "-".into(),
                            false => format!("{} ({})", s.after.join(", "), s.after_policy),
                        },
                        s.execution.map_or_else(|| "-".into(), |e| ids.short(&e)),
                        output::cut(s.error.as_deref().unwrap_or(""), 60),
                    ]
                })
                .collect();
            output::table(
                &["STEP", "HANDLER", "STATUS", "AFTER", "EXECUTION", "ERROR"],
                rows,
            );
            Ok(())
        }
        WorkflowCmd::List { limit, json } => {
            let all: Vec<Summary> = store
                .workflows(limit)
                .await?
                .into_iter()
                .map(Summary::from)
                .collect();
            if json {
                return output::json(&all);
            }
            let ids = super::ids::Shortener::new(all.iter().map(|w| &w.info.id));
            let rows = all
                .iter()
                .map(|w| {
                    let steps: u64 = w.info.steps.values().sum();
                    let done: u64 = w
                        .info
                        .steps
                        .iter()
                        .filter(|(s, _)| s.is_terminal())
                        .map(|(_, n)| n)
                        .sum();
                    vec![
                        ids.short(&w.info.id),
                        w.info.name.clone(),
                        w.status.to_string(),
                        format!("{done}/{steps}"),
                        w.info.created_at.to_string(),
                    ]
                })
                .collect();
            output::table(&["ID", "NAME", "STATUS", "ENDED", "CREATED"], rows);
            Ok(())
        }
        WorkflowCmd::Cancel { id, reason, json } => {
            let id = resolve(store.as_ref(), &id).await?;
            let done = jobvisor::Client::connect(store.clone())
                .await
                .cancel_workflow(id, &reason)
                .await?
                .ok_or_else(|| input(format!("no workflow {id}")))?;
            if json {
                return output::json(&serde_json::json!({
                    "id": id,
                    "cancelled": done.cancelled,
                    "requested": done.requested,
                }));
            }
            println!(
                "workflow {id}: {} steps cancelled before they started, {} running asked to stop",
                done.cancelled, done.requested
            );
            Ok(())
        }
    }
}
