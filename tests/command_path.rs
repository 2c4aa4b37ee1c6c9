//! One command path (issue 28): the same commands, given through the
//! library, the CLI and the HTTP API, announce the same events in the same
//! order. On PostgreSQL, where a CLI command's events reach the nodes, a
//! subscriber hears all three.

mod common;

use common::*;
use jobvisor::events::{Event, EventKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// An event as compared across paths: its kind, and its execution named
/// by the order in which executions first appear.
fn normalized(events: &[Event]) -> Vec<(String, usize)> {
    let mut names: HashMap<Uuid, usize> = HashMap::new();
    events
        .iter()
        .map(|e| {
            let n = names.len();
            let name = *names.entry(e.execution_id).or_insert(n);
            let kind = match &e.kind {
                EventKind::Cancelled { .. } => "cancelled",
                EventKind::Enqueued { .. } => "enqueued",
                other => panic!("nothing runs here, yet: {other:?}"),
            };
            (kind.to_string(), name)
        })
        .collect()
}

/// What one path does: each command as that path gives it.
trait Path {
    fn enqueue(&self, queue: &str) -> Uuid;
    fn cancel(&self, id: Uuid);
    fn retry(&self, id: Uuid) -> Uuid;
    fn trigger(&self, job: &str) -> Uuid;
    fn cancel_queue(&self, queue: &str);
    fn workflow(&self, queue: &str) -> Uuid;
    fn cancel_workflow(&self, id: Uuid);
    fn retry_job(&self, job: &str);
}

/// The script every path runs; returns how many events it should cause.
fn script(p: &dyn Path, queue: &str, job: &str) {
    let a = p.enqueue(queue);
    p.cancel(a);
    p.retry(a);
    p.trigger(job);
    p.cancel_queue(queue);
    let w = p.workflow(queue);
    p.cancel_workflow(w);
    p.retry_job(job);
}

fn workflow_spec(queue: &str) -> Value {
    json!({"name": "w", "step": [
        {"name": "a", "handler": "noop", "queue": queue},
        {"name": "b", "handler": "noop", "queue": queue, "after": ["a"]},
    ]})
}

struct Library(jobvisor::Client, tokio::runtime::Handle);

impl Library {
    fn on<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        tokio::task::block_in_place(|| self.1.block_on(f))
    }
}

impl Path for Library {
    fn enqueue(&self, queue: &str) -> Uuid {
        let spec = jobvisor::RunSpec {
            queue: queue.into(),
            ..jobvisor::RunSpec::new("noop", Value::Null)
        };
        self.on(self.0.enqueue(spec)).unwrap()
    }
    fn cancel(&self, id: Uuid) {
        self.on(self.0.cancel(id, "by hand")).unwrap();
    }
    fn retry(&self, id: Uuid) -> Uuid {
        match self.on(self.0.retry(id)).unwrap() {
            jobvisor::store::RetryRequest::Retried(again) => again,
            other => panic!("{other:?}"),
        }
    }
    fn trigger(&self, job: &str) -> Uuid {
        self.on(self.0.trigger_job(job)).unwrap()
    }
    fn cancel_queue(&self, queue: &str) {
        let filter = jobvisor::store::ExecFilter {
            queue: Some(queue.into()),
            ..Default::default()
        };
        self.on(self.0.cancel_matching(&filter, "by hand")).unwrap();
    }
    fn workflow(&self, queue: &str) -> Uuid {
        let spec =
            jobvisor::workflow::WorkflowSpec::parse(&workflow_spec(queue).to_string()).unwrap();
        self.on(self.0.workflow(&spec)).unwrap().id
    }
    fn cancel_workflow(&self, id: Uuid) {
        self.on(self.0.cancel_workflow(id, "by hand")).unwrap();
    }
    fn retry_job(&self, job: &str) {
        let filter = jobvisor::store::ExecFilter {
            job: Some(job.into()),
            statuses: vec![jobvisor::Status::Cancelled],
            ..Default::default()
        };
        self.on(self.0.retry_matching(&filter)).unwrap();
    }
}

struct Cli<'a>(&'a Env);

impl Path for Cli<'_> {
    fn enqueue(&self, queue: &str) -> Uuid {
        self.0
            .ok(&["run", "noop", "--queue", queue])
            .trim()
            .parse()
            .unwrap()
    }
    fn cancel(&self, id: Uuid) {
        self.0
            .ok(&["exec", "cancel", &id.to_string(), "--reason", "by hand"]);
    }
    fn retry(&self, id: Uuid) -> Uuid {
        self.0
            .ok(&["exec", "retry", &id.to_string()])
            .trim()
            .parse()
            .unwrap()
    }
    fn trigger(&self, job: &str) -> Uuid {
        self.0.ok(&["job", "trigger", job]).trim().parse().unwrap()
    }
    fn cancel_queue(&self, queue: &str) {
        self.0
            .ok(&["exec", "cancel", "--queue", queue, "--reason", "by hand"]);
    }
    fn workflow(&self, queue: &str) -> Uuid {
        let out = self
            .0
            .cli_stdin(&["workflow", "run", "-"], &workflow_spec(queue).to_string());
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
    fn cancel_workflow(&self, id: Uuid) {
        self.0
            .ok(&["workflow", "cancel", &id.to_string(), "--reason", "by hand"]);
    }
    fn retry_job(&self, job: &str) {
        self.0
            .ok(&["exec", "retry", "--job", job, "--status", "cancelled"]);
    }
}

struct Http(String);

impl Http {
    fn post(&self, path: &str, body: Value) -> Value {
        let r = post(&self.0, path, &body.to_string());
        assert!(r.status < 300, "{path}: {} {}", r.status, r.body);
        r.json()
    }
}

impl Path for Http {
    fn enqueue(&self, queue: &str) -> Uuid {
        let r = self.post("/v1/executions", json!({"handler": "noop", "queue": queue}));
        r["id"].as_str().unwrap().parse().unwrap()
    }
    fn cancel(&self, id: Uuid) {
        self.post(
            &format!("/v1/executions/{id}/cancel"),
            json!({"reason": "by hand"}),
        );
    }
    fn retry(&self, id: Uuid) -> Uuid {
        let r = self.post(&format!("/v1/executions/{id}/retry"), json!({}));
        r["id"].as_str().unwrap().parse().unwrap()
    }
    fn trigger(&self, job: &str) -> Uuid {
        let r = self.post(&format!("/v1/jobs/{job}/trigger"), json!({}));
        r["id"].as_str().unwrap().parse().unwrap()
    }
    fn cancel_queue(&self, queue: &str) {
        self.post(
            "/v1/executions/cancel",
            json!({"queue": queue, "reason": "by hand"}),
        );
    }
    fn workflow(&self, queue: &str) -> Uuid {
        let r = self.post("/v1/workflows", workflow_spec(queue));
        r["id"].as_str().unwrap().parse().unwrap()
    }
    fn cancel_workflow(&self, id: Uuid) {
        self.post(
            &format!("/v1/workflows/{id}/cancel"),
            json!({"reason": "by hand"}),
        );
    }
    fn retry_job(&self, job: &str) {
        self.post(
            "/v1/executions/retry",
            json!({"job": job, "status": "cancelled"}),
        );
    }
}

/// Events heard until `n` came (and half a second more, for any extra), or
/// with `None`, until two quiet seconds.
async fn heard(rx: &mut tokio::sync::broadcast::Receiver<Event>, n: Option<usize>) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let wait = match n {
            Some(n) if seen.len() >= n => Duration::from_millis(500),
            Some(_) => DEADLINE,
            None => Duration::from_secs(2),
        };
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) if n.is_none_or(|n| seen.len() >= n) => return seen,
            Err(_) => panic!("{} of {n:?} events heard: {seen:#?}", seen.len()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_announces_the_same_events_from_the_library_the_cli_and_http() {
    let Some(url) = pg_database().await else {
        return;
    };
    let env = Env {
        db: url.clone(),
        ..Env::new()
    };
    // Nothing runs: every queue here is paused, so that only the commands'
    // own events are heard.
    for p in ["lib", "cli", "http"] {
        env.ok(&["queue", "pause", &format!("held-{p}")]);
        env.ok(&[
            "job",
            "add",
            &format!("j-{p}"),
            "--handler",
            "noop",
            "--cron",
            "0 0 1 1 *",
            "--queue",
            &format!("held-{p}"),
        ]);
    }
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let sup = jobvisor::Supervisor::builder()
        .database(&url)
        .build()
        .await
        .unwrap();
    let mut rx = sup.events().await;
    let rt = tokio::runtime::Handle::current();
    script(&Library(sup.client(), rt.clone()), "held-lib", "j-lib");
    let library = normalized(&heard(&mut rx, None).await);
    let expected: Vec<(String, usize)> = [
        ("enqueued", 0),
        ("cancelled", 0),
        ("enqueued", 1),
        ("enqueued", 2),
        ("cancelled", 1),
        ("cancelled", 2),
        ("enqueued", 3),
        ("enqueued", 4),
        ("cancelled", 3),
        ("cancelled", 4),
        ("enqueued", 5),
    ]
    .iter()
    .map(|(k, n)| (k.to_string(), *n))
    .collect();
    assert_eq!(library, expected);
    tokio::task::block_in_place(|| script(&Cli(&env), "held-cli", "j-cli"));
    assert_eq!(
        normalized(&heard(&mut rx, Some(expected.len())).await),
        expected,
        "the CLI"
    );
    tokio::task::block_in_place(|| script(&Http(addr), "held-http", "j-http"));
    assert_eq!(
        normalized(&heard(&mut rx, Some(expected.len())).await),
        expected,
        "HTTP"
    );
}
