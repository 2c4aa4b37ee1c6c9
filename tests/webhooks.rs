//! Webhooks against a real receiver: Python's HTTP server, checking each
//! delivery's signature with Python's own HMAC (tests/reference/
//! webhook_receiver.py), on SQLite and PostgreSQL.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running receiver: its port and the log of what it received.
struct Receiver {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// Starts one that answers 503 to its first `fail` requests, checking
    /// signatures with `secret`.
    fn start(env: &Env, fail: usize, secret: Option<&str>, port: u16) -> Receiver {
        let log = env
            .dir
            .path()
            .join(format!("received-{}.jsonl", uuid::Uuid::now_v7()));
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/webhook_receiver.py"
        );
        let mut cmd = Command::new(python());
        cmd.arg(script)
            .arg(&log)
            .args(["--fail", &fail.to_string(), "--port", &port.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        match secret {
            Some(s) => cmd.env("WEBHOOK_SECRET", s),
            None => cmd.env_remove("WEBHOOK_SECRET"),
        };
        let mut child = cmd.spawn().expect("python3 runs the receiver");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first.trim().parse().expect("the receiver prints its port");
        Receiver { child, port, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Every request received so far.
    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The requests answered 2xx.
    fn delivered(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| r["status"].as_u64().is_some_and(|s| s < 300))
            .collect()
    }

    /// Waits until `until` holds of the delivered requests.
    async fn until(&self, what: &str, until: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        eventually(what, || async {
            let got = self.delivered();
            until(&got).then_some(got)
        })
        .await
    }
}

/// The events delivered about execution `id`, in the order received.
fn events_of(got: &[Value], id: &str) -> Vec<String> {
    got.iter()
        .filter(|r| r["body"]["execution"]["id"] == id)
        .map(|r| r["event"].as_str().unwrap().to_string())
        .collect()
}

async fn delivers_signed_events_in_order(env: &Env) {
    let receiver = Receiver::start(env, 0, Some("s3cret"), 0);
    env.ok(&[
        "webhook",
        "add",
        "all-events",
        "--url",
        &receiver.url("hook"),
        "--events",
        "all",
        "--secret-env",
        "HOOK_SECRET",
    ]);
    let _serve = env.serve_env(&[], &[("HOOK_SECRET", "s3cret")]);
    let ok = env
        .enqueue(&["echo", "--payload", r#"{"n": 1}"#])
        .to_string();
    let failed = env
        .enqueue(&[
            "fail",
            "--retries",
            "1",
            "--payload",
            r#"{"message": "boom"}"#,
        ])
        .to_string();
    let got = receiver
        .until("every event of both runs", |got| {
            events_of(got, &ok).len() >= 3 && events_of(got, &failed).len() >= 3
        })
        .await;
    assert_eq!(events_of(&got, &ok), ["enqueued", "started", "succeeded"]);
    // The first attempt's end is a retry; the second attempt (its own
    // execution) fails for good.
    assert_eq!(
        events_of(&got, &failed),
        ["enqueued", "started", "retrying"]
    );
    let retry = got
        .iter()
        .find(|r| r["event"] == "retrying")
        .map(|r| {
            r["body"]["execution"]["next_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap();
    let got = receiver
        .until("the retry's events", |got| {
            events_of(got, &retry).len() >= 2
        })
        .await;
    assert_eq!(events_of(&got, &retry), ["started", "failed"]);
    let last = got.iter().find(|r| r["event"] == "failed").unwrap();
    assert_eq!(last["body"]["execution"]["error"], "boom");
    assert_eq!(last["body"]["execution"]["attempt"], 2);
    for r in &got {
        assert_eq!(
            r["signed"], true,
            "a signature Python's hmac does not verify: {r}"
        );
        assert_eq!(r["path"], "/hook");
        assert_eq!(r["content_type"], "application/json");
        assert!(r["user_agent"].as_str().unwrap().starts_with("jobvisor/"));
        assert_eq!(r["event"], r["body"]["event"], "{r}");
        assert_eq!(r["delivery"], r["body"]["delivery"], "{r}");
        assert_eq!(r["body"]["webhook"], "all-events");
        assert!(
            r["body"]["execution"].get("payload").is_none(),
            "the payload stays home"
        );
    }
    // docs/WEBHOOKS.md's openssl command agrees.
    let signature = last["signature"].as_str().unwrap();
    let t = signature
        .split(',')
        .next()
        .unwrap()
        .trim_start_matches("t=");
    let v1 = signature.split("v1=").nth(1).unwrap();
    let body = env.path("body.json");
    std::fs::write(&body, last["raw"].as_str().unwrap()).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s.' {t} | cat - '{}' | openssl dgst -sha256 -hmac \"$SECRET\" -r | cut -d' ' -f1",
            body.display()
        ))
        .env("SECRET", "s3cret")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), v1);
    // Each delivery is a run of handler `webhook`, and none is itself
    // announced: every delivery received is about a run of echo or fail.
    assert!(got
        .iter()
        .all(|r| r["body"]["execution"]["handler"] != "webhook"));
    let listed = env.ok(&[
        "exec", "list", "--origin", "event", "--json", "--limit", "1000",
    ]);
    let runs: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert!(
        runs.len() >= got.len(),
        "{} runs for {} deliveries",
        runs.len(),
        got.len()
    );
    assert!(runs.iter().all(|r| r["handler"] == "webhook"
        && r["queue"] == "webhooks"
        && r["meta"]["webhook"] == "all-events"));
}

#[tokio::test]
async fn events_reach_a_real_receiver_signed_once_each_and_in_order_on_sqlite() {
    delivers_signed_events_in_order(&Env::new()).await;
}

#[tokio::test]
async fn events_reach_a_real_receiver_signed_once_each_and_in_order_on_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    delivers_signed_events_in_order(&env).await;
}

#[tokio::test]
async fn a_receiver_that_refuses_gets_every_event_later_in_order_under_one_delivery_id() {
    let env = Env::new();
    // The first six posts are answered 503.
    let receiver = Receiver::start(&env, 6, None, 0);
    env.ok(&[
        "webhook",
        "add",
        "flaky",
        "--url",
        &receiver.url("in"),
        "--events",
        "enqueued,started,succeeded",
    ]);
    let _serve = env.serve(&[]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            env.enqueue(&["echo", "--payload", &i.to_string()])
                .to_string()
        })
        .collect();
    let got = receiver
        .until("three events of each run", |got| {
            ids.iter().all(|id| events_of(got, id).len() == 3)
        })
        .await;
    for id in &ids {
        assert_eq!(
            events_of(&got, id),
            ["enqueued", "started", "succeeded"],
            "{id}"
        );
    }
    // A delivery refused and sent again is the same delivery, with the
    // same body; and no event was delivered under two ids.
    let all = receiver.received();
    assert!(all.iter().filter(|r| r["status"] == 503).count() == 6);
    let mut bodies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &all {
        bodies
            .entry(r["delivery"].as_str().unwrap().to_string())
            .or_default()
            .insert(r["raw"].as_str().unwrap().to_string());
    }
    assert!(
        bodies.values().all(|b| b.len() == 1),
        "one body per delivery id"
    );
    assert_eq!(bodies.len(), 9, "one delivery per event: {bodies:?}");
    let accepted: BTreeSet<&str> = got
        .iter()
        .map(|r| r["delivery"].as_str().unwrap())
        .collect();
    assert_eq!(accepted.len(), 9, "each delivered once");
    // The refused attempts are on record as failed attempts of their
    // delivery, with the receiver's answer.
    let listed = env.ok(&[
        "exec", "list", "--origin", "retry", "--json", "--limit", "1000",
    ]);
    let retries: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert!(retries.iter().filter(|r| r["handler"] == "webhook").count() >= 6);
    let failed = env.ok(&[
        "exec", "list", "--status", "failed", "--json", "--limit", "1000",
    ]);
    assert!(failed.contains("answered 503"), "{failed}");
}

/// A delivery that fails is retried as a new execution, newer than the
/// deliveries already waiting on it: one added later goes after the last
/// of the chain, not after that retry, or it would race the others.
#[tokio::test]
async fn a_delivery_added_while_an_earlier_one_is_retried_keeps_its_place() {
    let env = Env::new();
    // enqueued's first two posts fail: it is retried twice (1 s, then 2 s
    // or so), and the run's end, 1.5 s in, is taken meanwhile.
    let receiver = Receiver::start(&env, 2, None, 0);
    env.ok(&[
        "webhook",
        "add",
        "flaky",
        "--url",
        &receiver.url("in"),
        "--events",
        "enqueued,started,succeeded",
    ]);
    let _serve = env.serve(&[]);
    let id = env
        .enqueue(&["sleep", "--payload", r#"{"ms": 1500}"#])
        .to_string();
    let got = receiver
        .until("the run's three events", |got| {
            events_of(got, &id).len() == 3
        })
        .await;
    assert_eq!(events_of(&got, &id), ["enqueued", "started", "succeeded"]);
}

#[tokio::test]
async fn a_webhook_hears_only_its_events_jobs_and_queues() {
    let env = Env::new();
    let receiver = Receiver::start(&env, 0, None, 0);
    env.ok(&[
        "webhook",
        "add",
        "failures",
        "--url",
        &receiver.url("f"),
        "--events",
        "failed",
        "--job",
        "nightly",
        "--format",
        "slack",
    ]);
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "fail",
        "--cron",
        "0 3 * * *",
        "--payload",
        r#"{"message": "disk full", "retry": false}"#,
    ]);
    env.ok(&[
        "job",
        "add",
        "other",
        "--handler",
        "fail",
        "--cron",
        "0 3 * * *",
    ]);
    let _serve = env.serve(&[]);
    env.ok(&["job", "trigger", "other"]);
    env.ok(&["run", "fail"]);
    env.ok(&["run", "echo"]);
    env.ok(&["job", "trigger", "nightly"]);
    let got = receiver
        .until("the nightly failure", |got| !got.is_empty())
        .await;
    // Give the others every chance to be delivered wrongly.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_all = receiver.received();
    assert_eq!(got_all.len(), 1, "only nightly's failure: {got_all:?}");
    assert_eq!(got[0]["event"], "failed");
    assert_eq!(
        got[0]["body"]["text"], ":x: job `nightly` failed: disk full",
        "a Slack message"
    );
}

/// With no webhook (none ever, or the last one removed) nothing is
/// recorded; with one, only changes to the statuses it hears are.
async fn records_only_what_a_webhook_hears(env: &Env) {
    let store = env.store().await;
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["echo"]);
    finished(store.as_ref(), id).await;
    assert!(!store.changes_waiting().await.unwrap());
    // A webhook on `failed` only, whose receiver is not there: a success
    // records nothing; a failure is recorded, and its delivery made.
    env.ok(&[
        "webhook",
        "add",
        "f",
        "--url",
        "http://127.0.0.1:9/",
        "--events",
        "failed",
    ]);
    let id = env.enqueue(&["echo"]);
    finished(store.as_ref(), id).await;
    assert!(!store.changes_waiting().await.unwrap());
    env.ok(&["run", "fail", "--payload", r#"{"retry": false}"#]);
    eventually("the failure's delivery", || async {
        let l = env.ok(&["exec", "list", "--origin", "event", "--json"]);
        let runs: Vec<Value> = serde_json::from_str(&l).unwrap();
        (runs.len() == 1 && runs[0]["meta"]["event"] == "failed").then_some(())
    })
    .await;
    // Its first attempt fails (nothing listens): the error names where it
    // posted without the URL's path, which may be its secret.
    let error = eventually("the delivery's failed attempt", || async {
        let l = env.ok(&[
            "exec", "list", "--origin", "event", "--status", "failed", "--json",
        ]);
        let runs: Vec<Value> = serde_json::from_str(&l).unwrap();
        runs.first()
            .map(|r| r["error"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(
        error.contains("cannot post to http://127.0.0.1:9/"),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");
    env.ok(&["webhook", "remove", "f"]);
    env.ok(&["run", "fail", "--payload", r#"{"retry": false}"#]);
    let id = env.enqueue(&["echo"]);
    finished(store.as_ref(), id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!store.changes_waiting().await.unwrap());
    let l = env.ok(&["exec", "list", "--origin", "event", "--json"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&l).unwrap().len(), 1);
}

#[tokio::test]
async fn only_what_a_webhook_hears_is_recorded_on_sqlite() {
    records_only_what_a_webhook_hears(&Env::new()).await;
}

#[tokio::test]
async fn only_what_a_webhook_hears_is_recorded_on_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    records_only_what_a_webhook_hears(&env).await;
}

#[test]
fn the_cli_adds_lists_shows_and_removes_webhooks_and_refuses_bad_ones() {
    let env = Env::new();
    env.ok(&[
        "webhook",
        "add",
        "chat",
        "--url",
        "https://hooks.example.com/services/T0/B0/s3cret",
        "--events",
        "failed,job.failing",
        "--queue",
        "critical",
        "--format",
        "slack",
    ]);
    let list = env.ok(&["webhook", "list"]);
    assert!(
        list.contains("chat") && list.contains("failed,job.failing"),
        "{list}"
    );
    assert!(
        !list.contains("s3cret"),
        "the URL's secret path is hidden: {list}"
    );
    let shown: Value =
        serde_json::from_str(&env.ok(&["webhook", "show", "chat", "--json"])).unwrap();
    assert_eq!(shown["url"], "https://hooks.example.com/<redacted>");
    assert_eq!(shown["queues"], serde_json::json!(["critical"]));
    let revealed = env.ok(&["webhook", "show", "chat", "--json", "--reveal"]);
    assert!(revealed.contains("s3cret"));
    // Twice: refused without --replace.
    let again = env.cli(&[
        "webhook",
        "add",
        "chat",
        "--url",
        "https://x.example.com",
        "--events",
        "failed",
    ]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    env.ok(&[
        "webhook",
        "add",
        "chat",
        "--url",
        "https://x.example.com",
        "--events",
        "failed",
        "--replace",
    ]);
    for (args, says) in [
        (
            &[
                "webhook", "add", "w", "--url", "ftp://x", "--events", "failed",
            ][..],
            "http:// or https://",
        ),
        (
            &[
                "webhook", "add", "w", "--url", "http://x", "--events", "exploded",
            ][..],
            "unknown event",
        ),
        (
            &[
                "webhook", "add", "w w", "--url", "http://x", "--events", "failed",
            ][..],
            "invalid webhook name",
        ),
        (
            &[
                "webhook",
                "add",
                "w",
                "--url",
                "http://x",
                "--events",
                "failed",
                "--secret-env",
                "A-B",
            ][..],
            "--secret-env",
        ),
        (&["run", "webhook"][..], "jobvisor's own"),
        (
            &["handler", "add", "webhook", "--exec", "/bin/true"][..],
            "jobvisor's own",
        ),
        (&["webhook", "remove", "nope"][..], "no webhook named"),
    ] {
        let out = env.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    assert!(env.ok(&["webhook", "remove", "chat"]).contains("removed"));
    assert_eq!(env.ok(&["webhook", "list", "--json"]).trim(), "[]");
}

#[tokio::test]
async fn the_config_file_declares_webhooks_and_owns_them() {
    let env = Env::new();
    let config = env.path("jobvisor.toml");
    std::fs::write(
        &config,
        r#"
[[webhook]]
name = "ops"
url = "https://ops.example.com/jobvisor"
events = ["failed", "retrying"]
job = ["nightly"]
secret_env = "OPS_SECRET"
"#,
    )
    .unwrap();
    let checked = env.ok(&["check-config", config.to_str().unwrap()]);
    assert!(checked.contains("1 webhooks"), "{checked}");
    let mut serve = env.serve(&["--config", config.to_str().unwrap()]);
    let listed = eventually("the declared webhook", || async {
        let l = env.ok(&["webhook", "list", "--json"]);
        l.contains("ops").then_some(l)
    })
    .await;
    let hooks: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        hooks[0]["events"],
        serde_json::json!(["failed", "retrying"])
    );
    assert_eq!(hooks[0]["jobs"], serde_json::json!(["nightly"]));
    assert_eq!(hooks[0]["secret_env"], "OPS_SECRET");
    let out = env.cli(&["webhook", "remove", "ops"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration file"));
    serve.stop();
    // A bad one is refused with its line.
    std::fs::write(
        &config,
        "\n[[webhook]]\nname = \"x\"\nurl = \"gopher://x\"\nevents = [\"failed\"]\n",
    )
    .unwrap();
    let out = env.cli(&["check-config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(":2:") && err.contains("http:// or https://"),
        "{err}"
    );
}

#[tokio::test]
async fn the_http_api_creates_lists_replaces_and_deletes_webhooks() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let body = r#"{"name": "h", "url": "https://example.com/secret-path", "events": ["failed"]}"#;
    let r = post(&addr, "/v1/webhooks", body);
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["url"], "https://example.com/<redacted>");
    assert_eq!(post(&addr, "/v1/webhooks", body).status, 409);
    let bad = post(
        &addr,
        "/v1/webhooks",
        r#"{"name": "b", "url": "file:///etc/passwd", "events": ["failed"]}"#,
    );
    // Refused by the OpenAPI document's pattern, in the check's words.
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("http:// or https://"), "{}", bad.body);
    let bad = post(
        &addr,
        "/v1/webhooks",
        r#"{"name": "b", "url": "https://example.com/", "events": ["exploded"]}"#,
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let list = get(&addr, "/v1/webhooks");
    assert_eq!(list.json().as_array().unwrap().len(), 1);
    assert_eq!(
        get(&addr, "/v1/webhooks/h").json()["events"],
        serde_json::json!(["failed"])
    );
    let put = request(
        &addr,
        "PUT",
        "/v1/webhooks/h",
        Some(r#"{"name": "h", "url": "https://example.com/", "events": ["all"]}"#),
        None,
    );
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        get(&addr, "/v1/webhooks/h").json()["events"],
        serde_json::json!(["all"])
    );
    let del = request(&addr, "DELETE", "/v1/webhooks/h", None, None);
    assert_eq!(del.status, 200);
    assert_eq!(get(&addr, "/v1/webhooks/h").status, 404);
    assert_eq!(
        request(&addr, "DELETE", "/v1/webhooks/h", None, None).status,
        404
    );
}

/// The events of an alert kind received, with their subjects.
fn alerts_of(got: &[Value], prefix: &str) -> Vec<(String, String)> {
    got.iter()
        .filter(|r| r["event"].as_str().unwrap().starts_with(prefix))
        .map(|r| {
            (
                r["event"].as_str().unwrap().to_string(),
                r["body"]["alert"]["subject"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn alerts_fire_once_per_incident_and_say_when_they_recover() {
    let env = Env::new();
    let receiver = Receiver::start(&env, 0, Some("k"), 0);
    env.ok(&[
        "webhook",
        "add",
        "ops",
        "--url",
        &receiver.url("alerts"),
        "--secret-env",
        "OPS_KEY",
        "--events",
        "job.failing,job.failing.recovered,job.silent,job.silent.recovered",
    ]);
    env.ok(&[
        "job",
        "add",
        "flaky",
        "--handler",
        "fail",
        "--cron",
        "0 3 * * *",
        "--payload",
        r#"{"retry": false}"#,
        "--alert-after",
        "2",
    ]);
    // Longer than the 5 s between alert passes: a success is seen by the
    // next pass before the job is silent again.
    env.ok(&[
        "job",
        "add",
        "quiet",
        "--handler",
        "echo",
        "--cron",
        "0 3 * * *",
        "--expect-every",
        "8s",
    ]);
    let shown = env.ok(&["job", "show", "flaky"]);
    assert!(shown.contains("job.failing after 2 failed runs"), "{shown}");
    let serve = env.serve_env(&[], &[("OPS_KEY", "k")]);
    let store = env.store().await;
    // Two failures in a row: job.failing, once.
    for _ in 0..2 {
        let id: uuid::Uuid = env.ok(&["job", "trigger", "flaky"]).trim().parse().unwrap();
        finished(store.as_ref(), id).await;
    }
    let got = receiver
        .until("job.failing", |got| {
            !alerts_of(got, "job.failing").is_empty()
        })
        .await;
    assert_eq!(
        alerts_of(&got, "job.failing"),
        [("job.failing".to_string(), "flaky".to_string())]
    );
    let failing = got.iter().find(|r| r["event"] == "job.failing").unwrap();
    assert_eq!(failing["signed"], true);
    assert_eq!(failing["body"]["job"], "flaky");
    assert!(failing["body"]["message"]
        .as_str()
        .unwrap()
        .contains("last 2 run(s) failed"));
    // The dashboard's panel shows it while it is open.
    let attention = get(&serve.http_addr(), "/v1/attention").json();
    assert!(
        attention["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "job.failing" && a["subject"] == "flaky"),
        "{attention}"
    );
    // A third failure: the incident is open already.
    let id: uuid::Uuid = env.ok(&["job", "trigger", "flaky"]).trim().parse().unwrap();
    finished(store.as_ref(), id).await;
    // The quiet job has not succeeded for 8 s since it was added.
    let got = receiver
        .until("job.silent", |got| !alerts_of(got, "job.silent").is_empty())
        .await;
    assert_eq!(alerts_of(&got, "job.silent")[0].1, "quiet");
    // Both recover: a success of each.
    env.ok(&[
        "job",
        "add",
        "flaky",
        "--handler",
        "echo",
        "--cron",
        "0 3 * * *",
        "--alert-after",
        "2",
        "--replace",
    ]);
    for job in ["flaky", "quiet"] {
        let id: uuid::Uuid = env.ok(&["job", "trigger", job]).trim().parse().unwrap();
        finished(store.as_ref(), id).await;
    }
    let got = receiver
        .until("both recoveries", |got| {
            got.iter().any(|r| r["event"] == "job.failing.recovered")
                && got.iter().any(|r| r["event"] == "job.silent.recovered")
        })
        .await;
    assert_eq!(
        alerts_of(&got, "job.failing"),
        [
            ("job.failing".to_string(), "flaky".to_string()),
            ("job.failing.recovered".to_string(), "flaky".to_string())
        ],
        "one incident, told once, and its recovery"
    );
    let attention = get(&serve.http_addr(), "/v1/attention").json();
    assert!(
        !attention["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "job.failing"),
        "{attention}"
    );
}

/// Webhooks added at once, by separate processes, each remake the
/// triggers: none of them may be left out of what is recorded.
async fn concurrent_adds_are_all_heard(env: &Env) {
    let events = ["enqueued", "started", "succeeded", "failed"];
    let adds: Vec<std::process::Child> = events
        .iter()
        .map(|e| {
            Command::new(jobvisor_bin())
                .args([
                    "--database",
                    &env.db,
                    "webhook",
                    "add",
                    e,
                    "--url",
                    "http://127.0.0.1:9/",
                    "--events",
                    e,
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut a in adds {
        assert!(a.wait().unwrap().success());
    }
    let _serve = env.serve(&[]);
    env.ok(&["run", "echo"]);
    env.ok(&["run", "fail", "--payload", r#"{"retry": false}"#]);
    for e in events {
        eventually(&format!("a delivery of webhook {e}"), || async {
            let l = env.ok(&[
                "exec",
                "list",
                "--origin",
                "event",
                "--meta",
                &format!("webhook={e}"),
                "--json",
            ]);
            let runs: Vec<Value> = serde_json::from_str(&l).unwrap();
            (!runs.is_empty()).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn webhooks_added_at_once_are_all_heard_on_sqlite() {
    concurrent_adds_are_all_heard(&Env::new()).await;
}

#[tokio::test]
async fn webhooks_added_at_once_are_all_heard_on_postgres() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    concurrent_adds_are_all_heard(&env).await;
}
