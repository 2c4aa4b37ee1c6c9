//! `jobvisor exec ...`: list, show, logs, cancel.

use super::args::{ActArgs, ExecCmd, ExecListArgs, HoldArgs};
use super::{input, output, CliError};
use jobvisor::model::{Execution, LogEntry};
use jobvisor::store::{CancelRequest, HoldRequest, Reads, RetryRequest};
use std::time::Duration;
use uuid::Uuid;

use super::ids::execution as resolve;

pub(crate) async fn exec(db: &str, cmd: ExecCmd) -> Result<(), CliError> {
    // Each of these needs executions: never create an empty database.
    let store = jobvisor::store::open_existing(db).await?;
    match cmd {
        ExecCmd::List(a) => list(store.as_ref(), a).await,
        ExecCmd::Show { id, json } => {
            let id = resolve(store.as_ref(), &id).await?;
            let e = store
                .execution(id)
                .await?
                .ok_or_else(|| input(format!("no execution {id}")))?;
            let links = store.links(id).await?;
            if json {
                let mut v = serde_json::to_value(&e).expect("executions serialize");
                v["parents"] = serde_json::to_value(&links.parents).expect("ids serialize");
                v["children"] = serde_json::to_value(&links.children).expect("ids serialize");
                output::json(&v)
            } else {
                show(&e, &links);
                Ok(())
            }
        }
        ExecCmd::Logs {
            id,
            follow,
            level,
            json,
        } => {
            let id = resolve(store.as_ref(), &id).await?;
            if store.execution(id).await?.is_none() {
                return Err(input(format!("no execution {id}")));
            }
            let mut after = 0;
            loop {
                let batch = store.logs(id, after, level, 5000).await?;
                for l in &batch {
                    print_log(l, json);
                }
                if let Some(l) = batch.last() {
                    after = l.seq;
                }
                if batch.len() == 5000 {
                    continue;
                }
                if !follow {
                    return Ok(());
                }
                let done = store
                    .execution(id)
                    .await?
                    .is_none_or(|e| e.status.is_terminal());
                if done {
                    // One last read: lines written just before the end.
                    let rest = store.logs(id, after, level, usize::MAX >> 1).await?;
                    rest.iter().for_each(|l| print_log(l, json));
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        ExecCmd::Cancel(a) => cancel(&jobvisor::Client::connect(store).await, db, a).await,
        ExecCmd::Retry(a) => retry(&jobvisor::Client::connect(store).await, a).await,
        ExecCmd::Hold(a) => hold(&jobvisor::Client::connect(store).await, a, true).await,
        ExecCmd::Release(a) => hold(&jobvisor::Client::connect(store).await, a, false).await,
    }
}

/// `exec hold` (`hold`) or `exec release`.
async fn hold(client: &jobvisor::Client, a: HoldArgs, hold: bool) -> Result<(), CliError> {
    let id = resolve(client.store().as_ref(), &a.id).await?;
    let r = match hold {
        true => client.hold(id).await?,
        false => client.release(id).await?,
    };
    match (r, r.refusal(id, hold)) {
        (HoldRequest::Done(status), _) if a.json => {
            output::json(&serde_json::json!({ "id": id, "status": status }))
        }
        (HoldRequest::Done(status), _) => {
            println!("{id} {status}");
            Ok(())
        }
        (_, why) => Err(input(why.unwrap_or_default())),
    }
}

/// The one execution `a` names, or `None` for the executions its filters
/// match; refused when it gives both or neither.
async fn target(store: &dyn Reads, a: &ActArgs) -> Result<Option<Uuid>, CliError> {
    let filter = a.filter.filter();
    match (&a.id, filter.narrows()) {
        (Some(_), true) => Err(input("give an execution id or filters, not both")),
        (Some(id), false) => Ok(Some(resolve(store, id).await?)),
        (None, true) => Ok(None),
        (None, false) => Err(input(
            "give an execution id, or at least one filter (--job, --queue, --handler, \
             --status, --unique-key, --node, --since, --until, --tag, --meta, --origin)",
        )),
    }
}

async fn cancel(client: &jobvisor::Client, db: &str, a: ActArgs) -> Result<(), CliError> {
    let store = client.store().as_ref();
    let Some(id) = target(store, &a).await? else {
        let filter = a.filter.filter();
        if a.dry_run {
            return dry_run(jobvisor::bulk::plan_cancel(store, &filter).await?, a.json);
        }
        let done = client.cancel_matching(&filter, &a.reason).await?;
        if a.json {
            return output::json(&done);
        }
        println!(
            "matched {}: {} cancelled before they started, {} running asked to stop",
            executions(done.matched),
            done.cancelled.unwrap_or(0),
            done.requested.unwrap_or(0)
        );
        return Ok(());
    };
    match client.cancel(id, &a.reason).await? {
        CancelRequest::NotFound => Err(input(format!("no execution {id}"))),
        CancelRequest::AlreadyFinished(s) => {
            Err(input(format!("execution {id} already ended ({s})")))
        }
        CancelRequest::CancelledPending => {
            if a.json {
                return output::json(&serde_json::json!({ "id": id, "cancel": "cancelled" }));
            }
            println!("execution {id} cancelled before it started");
            Ok(())
        }
        CancelRequest::Requested => {
            if !super::run::serving(store).await? {
                eprintln!(
                    "jobvisor: no supervisor is serving {}; the cancel takes effect when one runs",
                    jobvisor::store::redact(db)
                );
            }
            if a.json {
                return output::json(&serde_json::json!({ "id": id, "cancel": "requested" }));
            }
            println!("cancel requested for execution {id}");
            Ok(())
        }
    }
}

/// "1 execution", "2 executions".
fn executions(n: u64) -> String {
    match n {
        1 => "1 execution".into(),
        n => format!("{n} executions"),
    }
}

/// Lists what `filter` matches, changing nothing.
/// Says what a bulk action would do, `plan`, changing nothing: the
/// executions it would act on, and the counts the action would answer.
fn dry_run(plan: jobvisor::bulk::Plan, json: bool) -> Result<(), CliError> {
    if json {
        let mut v = serde_json::to_value(&plan).expect("plans serialize");
        v["dry_run"] = serde_json::Value::Bool(true);
        return output::json(&v);
    }
    print_list(&plan.executions);
    let b = plan.bulk;
    let would = match (b.retried, b.cancelled, b.requested) {
        (Some(r), _, _) => format!("{r} would be retried"),
        (_, c, r) => format!(
            "{} would be cancelled before they start, {} running asked to stop",
            c.unwrap_or(0),
            r.unwrap_or(0)
        ),
    };
    println!(
        "matched {}: {would} (dry run: nothing changed)",
        executions(b.matched)
    );
    Ok(())
}

async fn retry(client: &jobvisor::Client, a: ActArgs) -> Result<(), CliError> {
    let store = client.store().as_ref();
    let Some(id) = target(store, &a).await? else {
        let filter = a.filter.filter();
        if a.dry_run {
            return dry_run(jobvisor::bulk::plan_retry(store, &filter).await?, a.json);
        }
        let done = client.retry_matching(&filter).await?;
        if a.json {
            return output::json(&done);
        }
        let retried = done.retried.unwrap_or(0);
        println!(
            "matched {}: {retried} retried, {} passed over (not failed or cancelled, retried already, or their key held)",
            executions(done.matched),
            done.matched - retried
        );
        return Ok(());
    };
    let r = client.retry(id).await?;
    match r.refusal(id) {
        Some(why) => Err(input(why)),
        None => {
            if let RetryRequest::Retried(new) = r {
                if a.json {
                    return output::json(&serde_json::json!({ "id": new, "retries": id }));
                }
                println!("{new}");
            }
            Ok(())
        }
    }
}

async fn list(store: &dyn Reads, a: ExecListArgs) -> Result<(), CliError> {
    let mut filter = a.filter.filter();
    filter.limit = a.limit;
    filter.before = match a.before.as_deref() {
        Some(b) => Some(resolve(store, b).await.map_err(|e| e.context("--before"))?),
        None => None,
    };
    let execs = store.executions(&filter).await?;
    if a.json {
        return output::json(&execs);
    }
    if a.jsonl {
        for e in &execs {
            println!(
                "{}",
                serde_json::to_string(e).expect("executions serialize")
            );
        }
        return Ok(());
    }
    print_list(&execs);
    Ok(())
}

fn print_list(execs: &[Execution]) {
    let ids = super::ids::Shortener::new(execs.iter().map(|e| &e.id));
    let rows = execs
        .iter()
        .map(|e| {
            vec![
                ids.short(&e.id),
                e.status.to_string(),
                e.job.clone().unwrap_or_default(),
                e.handler.clone(),
                e.queue.clone(),
                e.mode.to_string(),
                format!(
                    "{}/{}",
                    e.attempt,
                    e.max_attempts
                        .max(e.attempt + u32::from(e.next_id.is_some()))
                ),
                e.origin.to_string(),
                e.started_at.map_or_else(|| "-".into(), |t| t.to_string()),
                e.duration_ms
                    .map(super::output::elapsed_ms)
                    .unwrap_or_else(|| "-".into()),
                output::cut(e.error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "STATUS", "JOB", "HANDLER", "QUEUE", "MODE", "ATTEMPT", "ORIGIN", "STARTED",
            "TOOK", "ERROR",
        ],
        rows,
    );
}

fn show(e: &Execution, links: &jobvisor::store::Links) {
    fn opt(v: &Option<impl std::fmt::Display>) -> String {
        v.as_ref().map_or_else(|| "-".into(), |v| v.to_string())
    }
    println!("id:          {}", e.id);
    println!(
        "job:         {}",
        e.job.as_deref().unwrap_or("- (ad-hoc run)")
    );
    println!("handler:     {} ({})", e.handler, e.mode);
    let unstarted = matches!(
        e.status,
        jobvisor::Status::Pending | jobvisor::Status::Held | jobvisor::Status::Waiting
    );
    if unstarted && e.run_at.micros() > jobvisor::model::now_micros() {
        println!("status:      {} (due at {})", e.status, e.run_at);
    } else {
        println!("status:      {}", e.status);
    }
    // A run retried by hand has more attempts than it was allowed.
    let of = e
        .max_attempts
        .max(e.attempt + u32::from(e.next_id.is_some()));
    println!("attempt:     {} of {of}", e.attempt);
    println!("origin:      {}", e.origin);
    if !e.tags.is_empty() {
        println!("tags:        {}", e.tags.join(", "));
    }
    for (k, v) in &e.meta {
        println!("meta:        {k}={v}");
    }
    if let Some(p) = e.previous_id {
        println!("retries:     {p}");
    }
    if let Some(n) = e.next_id {
        println!("retried as:  {n}");
    }
    println!("payload:     {}", e.payload);
    if let Some(k) = &e.unique_key {
        println!("unique key:  {k}");
    }
    if let Some(k) = &e.concurrency_key {
        println!("concurrency: key {k}");
    }
    if e.snoozes > 0 {
        println!("snoozes:     {} before it in its chain", e.snoozes);
    }
    if let (Some(w), Some(step)) = (e.workflow_id, &e.step) {
        println!("workflow:    {w} (step {step})");
    }
    for p in &links.parents {
        println!("parent:      {p}");
    }
    if let Some(policy) = e.after_policy {
        let waiting = match e.waiting_on {
            0 => String::new(),
            n => format!("; {n} not ended yet"),
        };
        println!("runs after:  its parents, on {policy}{waiting}");
    }
    for c in &links.children {
        println!("child:       {c}");
    }
    println!("enqueued:    {}", e.enqueued_at);
    println!("started:     {}", opt(&e.started_at));
    println!("finished:    {}", opt(&e.finished_at));
    if let Some(d) = e.duration_ms {
        println!("took:        {}", output::elapsed_ms(d));
    }
    if let Some(n) = &e.node {
        println!("node:        {n}");
    }
    if let Some(p) = e.pid {
        println!("pid:         {p}");
    }
    if let Some(x) = e.exit_code {
        println!("exit code:   {x}");
    }
    if let Some(s) = &e.signal {
        println!("signal:      {s}");
    }
    let p = &e.progress;
    if p.percent.is_some() || p.message.is_some() || p.done.is_some() {
        let mut parts = Vec::new();
        if let Some(x) = p.percent {
            parts.push(format!("{x:.1}%"));
        }
        if let (Some(d), Some(t)) = (p.done, p.total) {
            parts.push(format!("{d}/{t}"));
        }
        if let Some(m) = &p.message {
            parts.push(m.clone());
        }
        println!("progress:    {}", parts.join(" "));
    }
    if let Some(d) = &p.data {
        println!("progress data: {d}");
    }
    if let Some(o) = &e.output {
        println!("output:      {o}");
    }
    if let Some(err) = &e.error {
        println!("error:       {err}");
    }
    if e.timed_out {
        println!("timed out:   yes");
    }
    if e.interrupted {
        println!("interrupted: yes");
    }
    if let Some(c) = &e.cancel_requested_at {
        println!(
            "cancel:      requested {c} ({}), ended {}",
            opt(&e.cancel_reason),
            opt(&e.cancel_outcome)
        );
    }
}

fn print_log(l: &LogEntry, json: bool) {
    if json {
        println!("{}", serde_json::to_string(l).expect("serializes"));
        return;
    }
    let fields = l
        .fields
        .as_ref()
        .map(|f| format!(" {}", serde_json::Value::Object(f.clone())))
        .unwrap_or_default();
    println!(
        "{} {:<5} [{}] {}{fields}",
        l.ts,
        l.level.as_str().to_uppercase(),
        l.stream,
        l.message
    );
}
