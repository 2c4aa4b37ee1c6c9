//! `jobvisor webhook ...`

use super::args::{WebhookAddArgs, WebhookCmd};
use super::{input, output, CliError};
use jobvisor::model::WebhookSpec;

/// The webhook `webhook add` (or a config file's `[[webhook]]`) describes.
pub(crate) fn spec_from_args(a: &WebhookAddArgs) -> Result<WebhookSpec, CliError> {
    let spec = WebhookSpec {
        name: a.name.clone(),
        url: a.url.clone(),
        topic: a.topic.clone(),
        events: a
            .events
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        jobs: a.jobs.clone(),
        queues: a.queues.clone(),
        secret_env: a.secret_env.clone(),
        format: a.format,
    };
    spec.check().map_err(input)?;
    Ok(spec)
}

pub(crate) async fn webhook(db: &str, cmd: WebhookCmd) -> Result<(), CliError> {
    // Bad input is refused before anything is opened.
    let added = match &cmd {
        WebhookCmd::Add(a) => Some(spec_from_args(a)?),
        _ => None,
    };
    let store = jobvisor::store::open_existing(db).await?;
    match cmd {
        WebhookCmd::Add(a) => {
            let spec = added.expect("parsed above");
            let client = jobvisor::Client::connect(store.clone()).await;
            client.add_webhook(&spec, a.replace).await?;
            println!(
                "webhook {} {}: {} to {}",
                spec.name,
                if a.replace { "set" } else { "added" },
                spec.events.join(","),
                spec.clone().redacted().url
            );
            if let Some(var) = &spec.secret_env {
                if std::env::var_os(var).is_none() {
                    let what = if spec.is_mqtt() {
                        "reads the broker's password from"
                    } else {
                        "signs with"
                    };
                    eprintln!(
                        "jobvisor: note: the service {what} ${var}: set it in the service's \
                         environment (this shell has none)"
                    );
                }
            }
            Ok(())
        }
        WebhookCmd::List(j) => {
            let all: Vec<WebhookSpec> = store
                .webhooks()
                .await?
                .into_iter()
                .map(WebhookSpec::redacted)
                .collect();
            if j.json {
                return output::json(&all);
            }
            let rows = all
                .iter()
                .map(|w| {
                    let only = [
                        w.jobs
                            .iter()
                            .map(|j| format!("job {j}"))
                            .collect::<Vec<_>>(),
                        w.queues.iter().map(|q| format!("queue {q}")).collect(),
                    ]
                    .concat();
                    vec![
                        w.name.clone(),
                        w.events.join(","),
                        if only.is_empty() {
                            "-".into()
                        } else {
                            only.join(", ")
                        },
                        w.format.to_string(),
                        w.secret_env.clone().map_or("-".into(), |v| format!("${v}")),
                        if w.is_mqtt() {
                            format!("{} topic {}", w.url, w.topic_template())
                        } else {
                            w.url.clone()
                        },
                    ]
                })
                .collect();
            output::table(&["NAME", "EVENTS", "ONLY", "FORMAT", "SIGNED", "URL"], rows);
            Ok(())
        }
        WebhookCmd::Show {
            name,
            json: _,
            reveal,
        } => {
            let spec = store
                .webhook(&name)
                .await?
                .ok_or_else(|| input(format!("no webhook named {name:?}")))?;
            let spec = if reveal { spec } else { spec.redacted() };
            // Pretty JSON either way: --json says it will stay so.
            output::json(&spec)
        }
        WebhookCmd::Remove { name } => {
            let client = jobvisor::Client::connect(store.clone()).await;
            if !client.remove_webhook(&name).await? {
                return Err(input(format!("no webhook named {name:?}")));
            }
            println!("webhook {name} removed");
            Ok(())
        }
    }
}
