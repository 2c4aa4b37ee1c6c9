//! `jobvisor run HANDLER`: enqueue, and with `--wait` follow to the end.

use super::args::RunArgs;
use super::{input, output, CliError};
use indicatif::{ProgressBar, ProgressStyle};
use jobvisor::model::{now_micros, Execution, Status};
use jobvisor::store::Reads;
use jobvisor::submit::RunSpec;
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A node whose heartbeat is older than this is not counted as serving.
const SERVING_WINDOW: Duration = Duration::from_secs(5);

pub(crate) async fn run(db: &str, a: RunArgs) -> Result<(), CliError> {
    let payload: serde_json::Value = serde_json::from_str(&a.payload)
        .map_err(|e| input(format!("invalid --payload JSON: {e}")))?;
    let store = jobvisor::store::open_existing(db).await?;
    let unique = a.unique_key.map(|key| jobvisor::model::UniqueKey {
        key,
        hold_ms: a
            .unique_for
            .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        replace: a.replace,
    });
    let mut after = Vec::with_capacity(a.after.len());
    for id in &a.after {
        let id = super::ids::execution(store.as_ref(), id).await;
        after.push(id.map_err(|e| e.context("--after"))?);
    }
    let mut spec = RunSpec {
        mode: a.mode,
        retries: a.retries,
        backoff: a.backoff,
        timeout: a.timeout,
        priority: a.priority,
        queue: a.queue,
        unique,
        concurrency_key: a.concurrency_key,
        meta: a.labels.meta(),
        tags: a.labels.tag,
        after_policy: a.after_policy,
        id: a.id,
        run_at: a.at.or_else(|| {
            let micros = a
                .in_
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            micros.map(|m| jobvisor::model::now_micros().saturating_add(m))
        }),
        ..RunSpec::new(a.handler, payload)
    };
    for id in after {
        spec = spec.after(id);
    }
    let client = jobvisor::Client::connect(store.clone()).await;
    let enqueued = match client.submit_many(vec![spec]).await {
        Ok(done) => done[0],
        Err(jobvisor::Error::UnknownHandler(name)) => {
            return Err(super::unknown_handler(store.as_ref(), &name).await)
        }
        Err(e) => return Err(e.into()),
    };
    if enqueued.replaced {
        eprintln!("replaced the payload of {}", enqueued.id);
    } else if enqueued.duplicate {
        eprintln!("duplicate of {}", enqueued.id);
    }
    if !a.wait {
        if a.json {
            return output::json(&enqueued);
        }
        println!("{}", enqueued.id);
        return Ok(());
    }
    let e = wait(store.as_ref(), db, enqueued.id, a.json).await?;
    if a.json {
        output::json(&e)?;
    } else {
        print_outcome(&e);
        // A plain program's output is what it printed: shown when it gave
        // no result, as a failure's last lines are.
        let quiet = e.output.as_ref().is_none_or(serde_json::Value::is_null);
        if e.status != Status::Succeeded || quiet {
            print_last_logs(store.as_ref(), &e).await?;
        }
    }
    if e.status == Status::Succeeded {
        Ok(())
    } else {
        Err(CliError::JobFailed)
    }
}

/// Whether any supervisor is serving the database now.
pub(crate) async fn serving(store: &dyn Reads) -> Result<bool, CliError> {
    let since = now_micros() - SERVING_WINDOW.as_micros() as i64;
    Ok(!store.live_nodes(since).await?.is_empty())
}

/// Follows an execution (and its retries) until the last attempt ends.
async fn wait(store: &dyn Reads, db: &str, id: Uuid, json: bool) -> Result<Execution, CliError> {
    let bar = if std::io::stderr().is_terminal() && !json {
        let b = ProgressBar::new(100);
        b.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed}] [{bar:30}] {pos:>3}% {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut current = id;
    let mut warned = false;
    let mut last_check: Option<Instant> = None;
    loop {
        let e = store
            .execution(current)
            .await?
            .ok_or_else(|| input(format!("execution {current} vanished")))?;
        if e.status == Status::Pending
            && !warned
            && last_check.is_none_or(|t| t.elapsed() >= SERVING_WINDOW)
        {
            last_check = Some(Instant::now());
            if !serving(store).await? {
                warned = true;
                bar.suspend(|| {
                    eprintln!(
                        "jobvisor: no supervisor is serving {}; execution {current} stays pending \
                         until one runs (start one with `jobvisor serve`)",
                        jobvisor::store::redact(db)
                    )
                });
            }
        }
        if let Some(p) = e.progress.percent {
            bar.set_position(p.round() as u64);
        }
        bar.set_message(format!(
            "{} {}{}",
            e.status,
            e.handler,
            e.progress
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
        if e.status.is_terminal() {
            if let (Status::Failed, Some(next)) = (e.status, e.next_id) {
                bar.suspend(|| {
                    eprintln!(
                        "attempt {} failed: {}; retrying as {next}",
                        e.attempt,
                        e.error.as_deref().unwrap_or("unknown error")
                    )
                });
                current = next;
                continue;
            }
            bar.finish_and_clear();
            return Ok(e);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Log lines shown under a failure: enough to see why without `exec logs`.
const LAST_LOG_LINES: usize = 10;

/// The execution's last log lines, oldest first.
async fn print_last_logs(store: &dyn Reads, e: &Execution) -> Result<(), CliError> {
    let lines = store.last_logs(e.id, LAST_LOG_LINES).await?;
    if lines.is_empty() {
        return Ok(());
    }
    println!("last {} log lines:", lines.len());
    for l in lines {
        println!("  {} {:<5} {}", l.stream, l.level, l.message);
    }
    Ok(())
}

fn print_outcome(e: &Execution) {
    let took = e
        .duration_ms
        .map(|ms| format!(" in {}", super::output::elapsed_ms(ms)))
        .unwrap_or_default();
    println!("{} {}{took} (attempt {})", e.id, e.status, e.attempt);
    if let Some(out) = &e.output {
        if !out.is_null() {
            println!("output: {out}");
        }
    }
    if let Some(err) = &e.error {
        println!("error: {err}");
    }
    if let Some(x) = e.exit_code {
        println!("exit code: {x}");
    }
    if let Some(s) = &e.signal {
        println!("signal: {s}");
    }
}
