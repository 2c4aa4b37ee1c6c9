//! The HTTP API of `jobvisor serve`, over real TCP: every route's happy
//! path and its 4xx, the token rule, Server-Sent Events, Prometheus text,
//! and the OpenAPI document against the routes.

mod common;

use common::*;
use jobvisor::Status;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Reads Server-Sent Events until `until` says stop; (event, data) pairs.
fn sse(addr: &str, path: &str, until: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    // Headers.
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    let mut events = Vec::new();
    let (mut event, mut data) = (String::from("message"), String::new());
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "events so far: {events:?}");
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            return events;
        }
        // Chunk-size lines of the chunked encoding carry no event.
        let l = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = l
            .strip_prefix("event: ")
            .or_else(|| l.strip_prefix("event:"))
        {
            event = v.to_string();
        } else if let Some(v) = l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")) {
            data = v.to_string();
        } else if l.is_empty() && !data.is_empty() {
            let stop = until(&event, &data);
            events.push((
                std::mem::replace(&mut event, "message".into()),
                std::mem::take(&mut data),
            ));
            if stop {
                return events;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_its_happy_path_and_its_errors() {
    let env = Env::new();
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "noop",
        "--every",
        "1h",
    ]);
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;

    let r = get(&addr, "/healthz");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "ok");

    // Handlers.
    let r = get(&addr, "/v1/handlers");
    assert_eq!(r.status, 200);
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "noop"));
    assert_eq!(get(&addr, "/v1/handlers/echo").json()["name"], "echo");
    let r = get(&addr, "/v1/handlers/nope");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));

    // Jobs.
    let r = get(&addr, "/v1/jobs");
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(get(&addr, "/v1/jobs/nightly").json()["name"], "nightly");
    assert_eq!(get(&addr, "/v1/jobs/missing").status, 404);
    let r = post(&addr, "/v1/jobs/nightly/trigger", "");
    assert_eq!(r.status, 202, "{}", r.body);
    let triggered = r.json()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        finished(store.as_ref(), triggered).await.status,
        Status::Succeeded
    );
    assert_eq!(post(&addr, "/v1/jobs/missing/trigger", "").status, 404);
    assert_eq!(
        post(&addr, "/v1/jobs/nightly/pause", "").json()["paused"],
        true
    );
    assert!(store.job("nightly").await.unwrap().unwrap().spec.paused);
    assert_eq!(
        post(&addr, "/v1/jobs/nightly/resume", "").json()["paused"],
        false
    );
    assert_eq!(post(&addr, "/v1/jobs/missing/pause", "").status, 404);

    // Executions.
    let r = post(
        &addr,
        "/v1/executions",
        r#"{"handler":"echo","payload":[1,2],"mode":"process"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.output, Some(json!([1, 2])));
    let r = get(&addr, &format!("/v1/executions/{id}"));
    assert_eq!(r.json()["status"], "succeeded");
    let r = get(&addr, "/v1/executions?status=succeeded&limit=10");
    assert!(r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["id"] == id.to_string()));
    // A unique key: the first is created, a duplicate names it (200).
    let body = r#"{"handler":"sleep","payload":{"ms":60000},"unique_key":"one-at-a-time","unique_for":"10m"}"#;
    let first = post(&addr, "/v1/executions", body);
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["duplicate"], false);
    let dup = post(&addr, "/v1/executions", body);
    assert_eq!(
        (dup.status, dup.json()["duplicate"].clone()),
        (200, json!(true))
    );
    assert_eq!(dup.json()["id"], first.json()["id"]);
    let r = post(
        &addr,
        "/v1/executions",
        r#"{"handler":"noop","unique_for":"1m"}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (400, "invalid"));
    let r = get(&addr, "/v1/executions?status=bogus");
    assert_eq!((r.status, r.code().as_str()), (400, "invalid"));
    let r = get(&addr, "/v1/executions?surprise=1");
    assert_eq!(r.status, 400);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("surprise"), "{msg}");
    let r = post(&addr, "/v1/executions", "{not json");
    assert_eq!((r.status, r.code().as_str()), (400, "invalid"));
    let r = post(&addr, "/v1/executions", r#"{"handler":"nope"}"#);
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let big = format!(
        r#"{{"handler":"echo","payload":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let r = post(&addr, "/v1/executions", &big);
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));
    let r = get(&addr, "/v1/executions/not-a-uuid");
    assert_eq!((r.status, r.code().as_str()), (400, "invalid"));
    let r = get(&addr, &format!("/v1/executions/{}", uuid::Uuid::now_v7()));
    assert_eq!(r.status, 404);

    // Logs.
    let logged = env.enqueue(&["logs", "--payload", r#"{"count":6,"level":"all"}"#]);
    finished(store.as_ref(), logged).await;
    let all = get(&addr, &format!("/v1/executions/{logged}/logs")).json();
    let n = all.as_array().unwrap().len();
    assert!(n >= 6, "{all}");
    let after = get(&addr, &format!("/v1/executions/{logged}/logs?after_seq=2")).json();
    assert_eq!(after.as_array().unwrap().len(), n - 2);
    assert_eq!(after[0]["seq"], 3);
    let errors = get(&addr, &format!("/v1/executions/{logged}/logs?level=error")).json();
    assert!(errors
        .as_array()
        .unwrap()
        .iter()
        .all(|l| ["error", "fatal", "panic"].contains(&l["level"].as_str().unwrap())));
    assert_eq!(
        get(&addr, &format!("/v1/executions/{logged}/logs?level=loud")).status,
        400
    );

    // Cancel.
    let sleeping = env.enqueue(&["sleep", "--mode", "process", "--payload", r#"{"ms":60000}"#]);
    running_with_pid(store.as_ref(), sleeping).await;
    let r = post(
        &addr,
        &format!("/v1/executions/{sleeping}/cancel"),
        r#"{"reason":"from a test"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let e = finished(store.as_ref(), sleeping).await;
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(e.cancel_reason.as_deref(), Some("from a test"));
    let r = post(&addr, &format!("/v1/executions/{sleeping}/cancel"), "");
    assert_eq!((r.status, r.code().as_str()), (409, "finished"));
    assert_eq!(
        post(
            &addr,
            &format!("/v1/executions/{}/cancel", uuid::Uuid::now_v7()),
            ""
        )
        .status,
        404
    );

    // Queues and stats.
    assert_eq!(
        post(&addr, "/v1/queues/batch/pause", "").json()["paused"],
        true
    );
    let qs = get(&addr, "/v1/queues").json();
    assert!(qs
        .as_array()
        .unwrap()
        .iter()
        .any(|q| q["name"] == "batch" && q["paused"] == true));
    assert_eq!(
        post(&addr, "/v1/queues/batch/resume", "").json()["paused"],
        false
    );
    // PUT sets what it names: a field left out stays, null removes it.
    let put = |body: &str| request(&addr, "PUT", "/v1/queues/batch", Some(body), None);
    let q = put(r#"{"limit": 4, "key_limit": 2, "rate": "10/1s"}"#);
    assert_eq!(q.status, 200, "{}", q.body);
    let q = q.json();
    assert_eq!(
        (&q["max_running"], &q["key_limit"], &q["rate"], &q["tokens"]),
        (&4.into(), &2.into(), &"10/1s".into(), &10.into())
    );
    let q = put(r#"{"rate": null}"#).json();
    assert_eq!((&q["max_running"], &q["key_limit"]), (&4.into(), &2.into()));
    assert!(q["rate"].is_null() && q["tokens"].is_null());
    for bad in [
        r#"{"rate": "0/1s"}"#,
        r#"{"rate": "5/0s"}"#,
        r#"{"limit": -1}"#,
        r#"{"key_limit": "two"}"#,
        r#"{"limit": 0}"#,
        r#"{"speed": 1}"#,
        "not json",
    ] {
        let r = put(bad);
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid".to_string()),
            "{bad}: {}",
            r.body
        );
    }
    let q = put("{}").json();
    assert_eq!((&q["max_running"], &q["key_limit"]), (&4.into(), &2.into()));
    let e = post(
        &addr,
        "/v1/executions",
        r#"{"handler": "noop", "queue": "batch", "concurrency_key": "tenant-1"}"#,
    );
    assert_eq!(e.status, 201, "{}", e.body);
    let listed = get(&addr, "/v1/executions?concurrency_key=tenant-1").json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["concurrency_key"], "tenant-1");
    let stats = get(&addr, "/v1/stats");
    assert_eq!(stats.status, 200);
    assert!(stats
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["job"] == "nightly"));

    // Unknown routes and methods are JSON errors too.
    let r = get(&addr, "/v2/nothing");
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = request(&addr, "DELETE", "/v1/jobs", None, None);
    assert_eq!((r.status, r.code().as_str()), (405, "method_not_allowed"));
    // No SQL in any error.
    assert!(!r.body.to_lowercase().contains("select"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;
    for _ in 0..3 {
        let id = env.enqueue(&["noop"]);
        finished(store.as_ref(), id).await;
    }
    let r = get(&addr, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .to_lowercase()
        .contains("content-type: text/plain; version=0.0.4"));
    let mut samples = std::collections::HashMap::new();
    for line in r.body.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            let kind = line.split_whitespace().nth(3);
            if line.starts_with("# TYPE ") {
                assert!(
                    matches!(kind, Some("gauge" | "counter" | "histogram")),
                    "{line}"
                );
            }
            continue;
        }
        // name{labels} value
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    assert_eq!(
        samples["jobvisor_executions{handler=\"noop\",status=\"succeeded\"}"],
        3.0
    );
    assert_eq!(
        samples["jobvisor_execution_duration_seconds_count{handler=\"noop\",status=\"succeeded\"}"],
        3.0
    );
    assert!(samples.contains_key("jobvisor_queue_pending{queue=\"default\"}"));
    assert!(samples.contains_key("jobvisor_running"));
    assert!(samples.contains_key("jobvisor_relay_queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let doc = get(&addr, "/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    // Served as the library makes it for this auth: with no token, no
    // security is declared (loopback needs none).
    assert_eq!(
        doc,
        jobvisor::http::openapi_document(&jobvisor::http::Auth::none())
    );
    assert!(doc["components"].get("securitySchemes").is_none());
    assert!(documented.len() >= 29, "{documented:?}");
    // Every documented route is routed: none answers "no such route" or
    // "method not allowed".
    for (method, path) in &documented {
        let concrete = path
            .replace("{name}", "x")
            .replace("{id}", &uuid::Uuid::now_v7().to_string());
        if concrete.ends_with("/stream") || concrete == "/v1/events" {
            continue; // streams; covered below
        }
        let r = request(&addr, method, &concrete, Some(""), None);
        let body = r.body.clone();
        assert_ne!(r.status, 405, "{method} {path}: {body}");
        assert!(
            !body.contains("no such route"),
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_listener_needs_a_token() {
    let env = Env::new();
    let out = env.cli(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a bearer token"));

    let serve = env.serve_env(
        &["--listen", "0.0.0.0:0"],
        &[("JOBVISOR_API_TOKEN", "s3cret-token-0123456789")],
    );
    let port = serve.http_addr().rsplit(':').next().unwrap().to_string();
    let addr = format!("127.0.0.1:{port}");
    let r = get(&addr, "/v1/jobs");
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized"));
    assert!(r.headers.contains("www-authenticate: Bearer"));
    let r = request(&addr, "GET", "/v1/jobs", None, Some("wrong"));
    assert_eq!(r.status, 401);
    let r = request(
        &addr,
        "GET",
        "/v1/jobs",
        None,
        Some("s3cret-token-0123456789"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // Health checks need no token.
    assert_eq!(get(&addr, "/healthz").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_reads_but_cannot_act_and_the_document_says_so() {
    let env = Env::new();
    // Not due at start: nothing but the refused actions could enqueue.
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "noop",
        "--cron",
        "0 3 1 1 *",
    ]);
    let serve = env.serve_env(
        &[],
        &[
            ("JOBVISOR_API_TOKEN", "rw-token"),
            ("JOBVISOR_API_TOKEN_READONLY", "ro-token"),
        ],
    );
    let addr = serve.http_addr();
    let r = request(&addr, "GET", "/v1/jobs", None, Some("ro-token"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(
        &addr,
        "GET",
        "/v1/executions?limit=5",
        None,
        Some("ro-token"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let store = env.store().await;
    let before = store.executions(&Default::default()).await.unwrap().len();
    for (method, path) in [
        ("POST", "/v1/jobs/nightly/trigger"),
        ("POST", "/v1/executions"),
        ("PUT", "/v1/queues/q"),
        ("POST", "/v1/executions/cancel"),
        (
            "POST",
            &format!("/v1/executions/{}/hold", uuid::Uuid::now_v7()),
        ),
    ] {
        let r = request(&addr, method, path, Some("{}"), Some("ro-token"));
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    let after = store.executions(&Default::default()).await.unwrap().len();
    assert_eq!(before, after, "a refused action enqueued something");
    let r = request(
        &addr,
        "POST",
        "/v1/jobs/nightly/trigger",
        Some(""),
        Some("rw-token"),
    );
    assert_eq!(r.status, 202, "{}", r.body);

    let doc = request(&addr, "GET", "/openapi.json", None, Some("ro-token")).json();
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let trigger = &doc["paths"]["/v1/jobs/{name}/trigger"]["post"];
    assert_eq!(
        trigger["security"],
        serde_json::json!([{"bearer": []}, {"session": []}])
    );
    assert!(trigger["responses"].get("403").is_some());
    assert_eq!(
        doc["paths"]["/healthz"]["get"]["security"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/v1/jobs"]["get"]["responses"]
        .get("403")
        .is_none());

    // A read-only token alone guards nothing: refused at start.
    let out = env.cli_env(&["serve"], &[("JOBVISOR_API_TOKEN_READONLY", "ro-token")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_stream_delivers_lines_written_after_it_opened_in_order() {
    let env = Env::new();
    env.sh_handler(
        "talker",
        "sleep 0.5; i=0; while [ $i -lt 20 ]; do i=$((i+1)); echo \"line $i\"; sleep 0.02; done; \
         echo '{\"type\":\"progress\",\"percent\":100}'",
        &[],
    );
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let id = env.enqueue(&["talker"]);
    let events = sse(&addr, &format!("/v1/executions/{id}/stream"), |event, _| {
        event == "end"
    });
    let lines: Vec<String> = events
        .iter()
        .filter(|(e, _)| e == "log")
        .map(|(_, d)| {
            serde_json::from_str::<Value>(d).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (1..=20).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected);
    assert!(events
        .iter()
        .any(|(e, d)| e == "progress" && d.contains("100")));
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "end");
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap()["status"],
        "succeeded"
    );
    assert_eq!(
        get(
            &addr,
            &format!("/v1/executions/{}/stream", uuid::Uuid::now_v7())
        )
        .status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_reports_executions_starting_and_finishing() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let addr2 = addr.clone();
    let enqueuer = std::thread::spawn({
        let db = env.path("jobvisor.db");
        move || {
            // Give the stream a moment to subscribe.
            std::thread::sleep(Duration::from_millis(300));
            let out = std::process::Command::new(jobvisor_bin())
                .args(["--database", db.to_str().unwrap(), "run", "noop"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        }
    });
    let events = sse(&addr2, "/v1/events", |_, data| {
        data.contains("\"succeeded\"")
    });
    let id = enqueuer.join().unwrap();
    let states: Vec<Value> = events
        .iter()
        .filter(|(e, _)| e == "state")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .filter(|v: &Value| v["id"] == id)
        .collect();
    assert_eq!(states.len(), 2, "{events:?}");
    assert_eq!(states[0]["status"], "running");
    assert_eq!(states[1]["status"], "succeeded");
}

/// The workflow routes and `after` on POST /v1/executions: happy paths and
/// their errors, over a real serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_and_dependencies_over_http() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;

    let body = r#"{"name": "api", "step": [
        {"name": "a", "handler": "echo", "payload": {"x": 1}},
        {"name": "b", "handler": "echo", "after": ["a"], "retries": 1, "timeout": "30s"}
    ]}"#;
    let r = post(&addr, "/v1/workflows", body);
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let steps = r.json()["steps"].clone();
    assert_eq!(steps[0][0], "a");
    let b: uuid::Uuid = steps[1][1].as_str().unwrap().parse().unwrap();
    assert_eq!(finished(store.as_ref(), b).await.status, Status::Succeeded);
    let shown = eventually("the workflow to succeed", || async {
        let v = get(&addr, &format!("/v1/workflows/{id}")).json();
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(shown["steps"][1]["after"], json!(["a"]));
    assert_eq!(shown["steps"][0]["output"], json!({"x": 1}));
    let list = get(&addr, "/v1/workflows?limit=5").json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["steps"]["succeeded"], 2);
    // The execution shows its links.
    let e = get(&addr, &format!("/v1/executions/{b}")).json();
    assert_eq!(e["parents"].as_array().unwrap().len(), 1);
    assert_eq!(e["workflow_id"], id.as_str());
    assert_eq!(e["step"], "b");

    // Refused whole and nothing written: 400 where the document forbids
    // it, 422 where the steps do not fit together.
    for (bad, status) in [
        (
            r#"{"name": "c", "step": [{"name": "a", "handler": "noop", "after": ["a"]}]}"#,
            422,
        ),
        (
            r#"{"name": "u", "step": [{"name": "a", "handler": "nope"}]}"#,
            422,
        ),
        (
            r#"{"name": "d", "step": [{"name": "a", "handler": "noop"}, {"name": "a", "handler": "noop"}]}"#,
            422,
        ),
        (
            r#"{"name": "x", "step": [{"name": "a", "handler": "noop", "after": ["zz"]}]}"#,
            422,
        ),
        (r#"{"step": []}"#, 400),
        (
            r#"{"name": "f", "steps": [{"name": "a", "handler": "noop", "colour": 1}]}"#,
            400,
        ),
    ] {
        let r = post(&addr, "/v1/workflows", bad);
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, "invalid"),
            "{bad}: {}",
            r.body
        );
    }
    assert_eq!(
        get(&addr, "/v1/workflows").json().as_array().unwrap().len(),
        1
    );
    let ghost = uuid::Uuid::now_v7();
    assert_eq!(get(&addr, &format!("/v1/workflows/{ghost}")).status, 404);
    assert_eq!(
        post(&addr, &format!("/v1/workflows/{ghost}/cancel"), "").status,
        404
    );
    assert_eq!(get(&addr, "/v1/workflows/nope").status, 400);

    // Cancel: a sleeping step stops, its dependent is cancelled.
    let r = post(
        &addr,
        "/v1/workflows",
        r#"{"name": "slow", "step": [{"name": "s", "handler": "sleep", "payload": {"ms": 60000}},
            {"name": "t", "handler": "noop", "after": ["s"]}]}"#,
    );
    let slow = r.json()["id"].as_str().unwrap().to_string();
    let s: uuid::Uuid = r.json()["steps"][0][1].as_str().unwrap().parse().unwrap();
    running(store.as_ref(), s).await;
    let r = post(
        &addr,
        &format!("/v1/workflows/{slow}/cancel"),
        r#"{"reason": "api"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["cancelled"].clone(), r.json()["requested"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(finished(store.as_ref(), s).await.status, Status::Cancelled);

    // after / after_policy on POST /v1/executions.
    let parent = post(&addr, "/v1/executions", r#"{"handler":"fail"}"#).json()["id"].clone();
    let body = json!({"handler": "noop", "after": [parent], "after_policy": "finished"});
    let r = post(&addr, "/v1/executions", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    let child: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        finished(store.as_ref(), child).await.status,
        Status::Succeeded
    );
    // 400 for what the document forbids; 422 for a parent that is not there.
    for (bad, status) in [
        (json!({"handler": "noop", "after": [ghost]}), 422),
        (json!({"handler": "noop", "after": ["nope"]}), 400),
        (json!({"handler": "noop", "after_policy": "finished"}), 400),
        (
            json!({"handler": "noop", "after": [parent], "after_policy": "sometimes"}),
            400,
        ),
        (
            json!({"handler": "noop", "after": [parent], "unique_key": "k", "replace": true}),
            400,
        ),
    ] {
        let r = post(&addr, "/v1/executions", &bad.to_string());
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, "invalid"),
            "{bad}: {}",
            r.body
        );
    }
}

/// `GET /v1/executions` filters, `POST /v1/executions/{id}/retry`, and the
/// bulk `POST /v1/executions/cancel` and `/retry` with a JSON filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_are_filtered_retried_and_acted_on_in_bulk_over_http() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        let r = post(
            &addr,
            "/v1/executions",
            r#"{"handler":"fail","queue":"q1"}"#,
        );
        let id: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
        failed.push(id);
    }
    for id in &failed {
        finished(store.as_ref(), *id).await;
    }
    let r = get(
        &addr,
        "/v1/executions?status=failed,succeeded&queue=q1&since=1h&limit=2",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let last = r.json()[1]["id"].as_str().unwrap().to_string();
    let r = get(&addr, &format!("/v1/executions?queue=q1&before={last}"));
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    for bad in ["?status=nope", "?since=soon", "?before=x", "?colour=red"] {
        let r = get(&addr, &format!("/v1/executions{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }

    let r = post(&addr, &format!("/v1/executions/{}/retry", failed[0]), "");
    assert_eq!(r.status, 201, "{}", r.body);
    let again: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(finished(store.as_ref(), again).await.attempt, 2);
    let r = post(&addr, &format!("/v1/executions/{}/retry", failed[0]), "");
    assert_eq!((r.status, r.code().as_str()), (409, "not_retryable"));
    let r = post(
        &addr,
        &format!("/v1/executions/{}/retry", uuid::Uuid::now_v7()),
        "",
    );
    assert_eq!(r.status, 404);

    let r = post(
        &addr,
        "/v1/executions/retry",
        r#"{"status": ["failed"], "queue": "q1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"matched": 4, "retried": 3}));
    for bad in [
        r#"{}"#,
        "",
        r#"{"reason": "x", "job": "j"}"#,
        r#"{"status": 3}"#,
    ] {
        let r = post(&addr, "/v1/executions/retry", bad);
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid"),
            "{bad}: {}",
            r.body
        );
    }
    let sleeper = post(
        &addr,
        "/v1/executions",
        r#"{"handler":"sleep","payload":{"ms":60000},"queue":"q2"}"#,
    );
    let sleeper: uuid::Uuid = sleeper.json()["id"].as_str().unwrap().parse().unwrap();
    running(store.as_ref(), sleeper).await;
    let r = post(
        &addr,
        "/v1/executions/cancel",
        r#"{"queue": "q2", "reason": "api bulk"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"matched": 1, "cancelled": 0, "requested": 1})
    );
    let e = finished(store.as_ref(), sleeper).await;
    assert_eq!(
        (e.status, e.cancel_reason.as_deref()),
        (Status::Cancelled, Some("api bulk"))
    );
    assert_eq!(post(&addr, "/v1/executions/cancel", "{}").status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_routes_show_nodes_throughput_attention_and_next_runs() {
    let env = Env::new();
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "noop",
        "--cron",
        "0 3 * * *",
    ]);
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;
    let mut ids = Vec::new();
    for body in [
        r#"{"handler":"echo","payload":1}"#,
        r#"{"handler":"fail"}"#,
        r#"{"handler":"logs","payload":{"count":50}}"#,
    ] {
        let id: uuid::Uuid = post(&addr, "/v1/executions", body).json()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        finished(store.as_ref(), id).await;
        ids.push(id);
    }
    let nodes = get(&addr, "/v1/nodes").json();
    assert_eq!(nodes[0]["live"], true, "{nodes}");
    assert!(nodes[0]["heartbeat_at"].as_str().unwrap().ends_with('Z'));

    let timeline = get(&addr, "/v1/timeline?since=1h").json();
    let count = |handler: &str, status: &str| -> u64 {
        timeline
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["handler"] == handler && r["status"] == status)
            .map(|r| r["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(count("echo", "succeeded"), 1, "{timeline}");
    assert_eq!(count("fail", "failed"), 1, "{timeline}");

    let attention = get(&addr, "/v1/attention").json();
    let failed: Vec<&str> = attention["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(failed, [ids[1].to_string()]);
    assert_eq!(attention["stuck"], json!([]));
    assert_eq!(attention["late"], json!([]));

    // The next runs of a cron job: 03:00 UTC on consecutive days.
    let next = get(&addr, "/v1/jobs/nightly/next?count=3").json();
    let next: Vec<&str> = next
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|t| t.contains("T03:00:00")), "{next:?}");
    assert_eq!(get(&addr, "/v1/jobs/nope/next").status, 404);

    // Log pages: the tail, the page before it, a text search.
    let logs = format!("/v1/executions/{}/logs", ids[2]);
    let tail = get(&addr, &format!("{logs}?from_end=true&limit=10")).json();
    let seqs = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|l| l["seq"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&tail), (41..=50).collect::<Vec<_>>());
    let before = get(
        &addr,
        &format!("{logs}?from_end=true&limit=5&before_seq=41"),
    )
    .json();
    assert_eq!(seqs(&before), (36..=40).collect::<Vec<_>>());
    let found = get(&addr, &format!("{logs}?q=line%2042")).json();
    assert_eq!(seqs(&found), [43]);
}

/// A request with a body and any method.
fn send(addr: &str, method: &str, path: &str, body: &str) -> Reply {
    request(addr, method, path, Some(body), None)
}

/// Jobs are created, replaced and removed over HTTP as `job add` does,
/// on both backends; bad definitions are a 4xx that writes nothing; a job
/// the configuration file declares is refused (409 over HTTP, exit 2 in
/// the CLI, naming the file); `/v1/preview` answers what `job preview
/// --json` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_created_replaced_removed_and_previewed_over_http() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let config = env.path("jobvisor.toml");
        std::fs::write(
            &config,
            "[[job]]\nname = \"owned\"\nhandler = \"noop\"\nevery = \"1h\"\n",
        )
        .unwrap();
        let serve = env.serve(&["--config", config.to_str().unwrap()]);
        let addr = serve.http_addr();
        let store = env.store().await;
        eventually("the declared job", || async {
            store.job("owned").await.unwrap().map(|_| ())
        })
        .await;

        // Created: 201 with the job, its next 5 runs, not declared.
        let r = post(
            &addr,
            "/v1/jobs",
            r#"{"name":"report","handler":"noop","cron":"0 7 * * *","tz":"Europe/Paris","retries":2,"queue":"reports","then":["owned"],"then_on":["failure"]}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let j = r.json();
        assert_eq!(
            (j["name"].as_str(), j["declared"].as_bool()),
            (Some("report"), Some(false))
        );
        assert_eq!(
            (j["retries"].as_u64(), j["queue"].as_str()),
            (Some(2), Some("reports"))
        );
        let runs = j["next_runs"].as_array().unwrap();
        assert_eq!(runs.len(), 5);
        let paris: chrono_tz::Tz = "Europe/Paris".parse().unwrap();
        for t in runs {
            let t = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
            assert_eq!(
                t.with_timezone(&paris).format("%H:%M:%S").to_string(),
                "07:00:00",
                "{t}"
            );
        }
        let spec = store.job("report").await.unwrap().unwrap().spec;
        assert_eq!(spec.then[0].job, "owned");
        assert_eq!(spec.then[0].on, jobvisor::model::ChainOn::Failure);

        // Pages, by name.
        let names = |path: &str| -> Vec<String> {
            let r = get(&addr, path);
            assert_eq!(r.status, 200, "{path}: {}", r.body);
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("/v1/jobs?limit=1"), ["owned"]);
        assert_eq!(names("/v1/jobs?after=owned&limit=1"), ["report"]);
        assert!(names("/v1/jobs?after=report").is_empty());
        assert_eq!(get(&addr, "/v1/jobs?limit=0").status, 400);
        let cli: Value = serde_json::from_str(
            &env.ok(&["job", "list", "--after", "owned", "--limit", "1", "--json"]),
        )
        .unwrap();
        assert_eq!(cli.as_array().unwrap().len(), 1);
        assert_eq!(cli[0]["name"], "report");

        // Refused, and nothing written.
        let count = || get(&addr, "/v1/jobs").json().as_array().unwrap().len();
        assert_eq!(count(), 2);
        // (400: what the document forbids; 422: what fits it but does
        // not go together.)
        for (body, status, code) in [
            (
                r#"{"name":"report","handler":"noop","every":"1h"}"#,
                409,
                "job_exists",
            ),
            (
                r#"{"name":"owned","handler":"noop","every":"1h"}"#,
                409,
                "declared_in_config",
            ),
            (
                r#"{"name":"x","handler":"noop","cron":"* * * * *","every":"1h"}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","every":"1h","daemon":true}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","tz":"Europe/Paris","every":"1h"}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","every":"0s"}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","at":"tomorrow"}"#,
                400,
                "invalid",
            ),
            (r#"{"handler":"noop","every":"1h"}"#, 400, "invalid"),
            (
                r#"{"name":"x","handler":"noop","every":"1h","surprise":1}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"nope","every":"1h"}"#,
                404,
                "not_found",
            ),
            (
                r#"{"name":"x","handler":"noop","every":"1h","condition":"nope"}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","daemon":true,"condition":"echo"}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","cron":"61 * * * *"}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","cron":"5-1 * * * *"}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","cron":"0 7 * * *","tz":"Mars/Olympus"}"#,
                400,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","every":"1h","then":["missing"]}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","every":"1h","then":["x"]}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x y","handler":"noop","every":"1h"}"#,
                422,
                "invalid",
            ),
            (
                r#"{"name":"x","handler":"noop","at":"2020-01-01T00:00:00Z","end":"2019-01-01T00:00:00Z"}"#,
                422,
                "invalid",
            ),
        ] {
            let r = post(&addr, "/v1/jobs", body);
            assert_eq!(
                (r.status, r.code().as_str()),
                (status, code),
                "{body}: {}",
                r.body
            );
            assert_eq!(r.body.lines().count(), 1, "{}", r.body);
        }
        assert_eq!(count(), 2);

        // Replaced: the whole definition, its history kept.
        let triggered: uuid::Uuid = post(&addr, "/v1/jobs/report/trigger", "").json()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        finished(store.as_ref(), triggered).await;
        let r = send(
            &addr,
            "PUT",
            "/v1/jobs/report",
            r#"{"name":"report","handler":"echo","every":"2h","payload":{"k":1}}"#,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let spec = store.job("report").await.unwrap().unwrap().spec;
        assert_eq!(
            (spec.handler.as_str(), spec.retries, spec.payload.clone()),
            ("echo", 0, json!({"k": 1}))
        );
        assert!(matches!(
            spec.schedule,
            jobvisor::schedule::ScheduleSpec::Interval {
                every_ms: 7_200_000,
                ..
            }
        ));
        assert_eq!(r.json()["next_runs"].as_array().unwrap().len(), 5);
        let owned_before = store.job("owned").await.unwrap().unwrap().spec;
        for (path, body, status) in [
            (
                "/v1/jobs/missing",
                r#"{"name":"missing","handler":"noop","every":"1h"}"#,
                404,
            ),
            (
                "/v1/jobs/report",
                r#"{"name":"other","handler":"noop","every":"1h"}"#,
                422,
            ),
            (
                "/v1/jobs/owned",
                r#"{"name":"owned","handler":"noop","every":"2h"}"#,
                409,
            ),
        ] {
            let r = send(&addr, "PUT", path, body);
            assert_eq!(r.status, status, "{path} {body}: {}", r.body);
        }
        assert_eq!(
            store.job("owned").await.unwrap().unwrap().spec,
            owned_before
        );

        // The declared job: shown as such, refused with the file named,
        // over HTTP and in the CLI alike.
        let owned = get(&addr, "/v1/jobs/owned").json();
        assert_eq!(owned["declared"], true);
        let r = send(&addr, "DELETE", "/v1/jobs/owned", "");
        assert_eq!((r.status, r.code().as_str()), (409, "declared_in_config"));
        let file = std::fs::canonicalize(&config)
            .unwrap()
            .display()
            .to_string();
        assert!(r.body.contains(&file), "{}", r.body);
        let out = env.cli(&["job", "remove", "owned"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&file) && err.lines().count() == 1, "{err}");
        assert!(store.job("owned").await.unwrap().is_some());

        // Removed; its history stays.
        let r = send(&addr, "DELETE", "/v1/jobs/report", "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(get(&addr, "/v1/jobs/report").status, 404);
        assert_eq!(send(&addr, "DELETE", "/v1/jobs/report", "").status, 404);
        assert_eq!(
            store
                .execution(triggered)
                .await
                .unwrap()
                .unwrap()
                .job
                .as_deref(),
            Some("report")
        );

        // The preview: across Paris's change to summer time, the same as
        // `job preview --json`.
        let q = "cron=0%207%20*%20*%20*&tz=Europe/Paris&from=2026-03-28T00:00:00Z&count=3";
        let r = get(&addr, &format!("/v1/preview?{q}"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json(),
            json!([
                "2026-03-28T06:00:00Z",
                "2026-03-29T05:00:00Z",
                "2026-03-30T05:00:00Z"
            ])
        );
        let cli = env.ok(&[
            "job",
            "preview",
            "--cron",
            "0 7 * * *",
            "--tz",
            "Europe/Paris",
            "--from",
            "2026-03-28T00:00:00Z",
            "--count",
            "3",
            "--json",
        ]);
        assert_eq!(serde_json::from_str::<Value>(&cli).unwrap(), r.json());
        let every = get(
            &addr,
            "/v1/preview?every=90m&start=2026-01-01T00:00:00Z&from=2025-12-31T23:59:59Z&count=2",
        );
        assert_eq!(
            every.json(),
            json!(["2026-01-01T00:00:00Z", "2026-01-01T01:30:00Z"]),
            "{}",
            every.body
        );
        for bad in [
            "",
            "cron=61%20*%20*%20*%20*",
            "cron=*%20*%20*%20*%20*&every=1h",
            "every=1h&tz=UTC",
            "at=soon",
            "cron=*%20*%20*%20*%20*&count=0",
        ] {
            let r = get(&addr, &format!("/v1/preview?{bad}"));
            assert_eq!(
                (r.status, r.code().as_str()),
                (400, "invalid"),
                "{bad}: {}",
                r.body
            );
        }
        drop(serve);
    }
}

/// Runs over HTTP and the CLI: delayed (`run_at`, `delay`, `--at`,
/// `--in`), given their id (a taken one refused, nothing written), and
/// enqueued in batches of up to 10,000 in one transaction (a bad run
/// refuses the batch, naming its index); on both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_delayed_given_their_id_and_enqueued_in_batches() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let serve = env.serve(&[]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let id_of = |r: &Reply| -> uuid::Uuid { r.json()["id"].as_str().unwrap().parse().unwrap() };
        let count = || count_executions(store.as_ref());

        // Delayed: pending until its time, then run.
        let t0 = jobvisor::model::now_micros();
        let later = post(
            &addr,
            "/v1/executions",
            r#"{"handler":"noop","delay":"1h"}"#,
        );
        assert_eq!(later.status, 201, "{}", later.body);
        let soon_at = chrono::Utc::now() + chrono::Duration::seconds(2);
        let soon = post(
            &addr,
            "/v1/executions",
            &format!(
                r#"{{"handler":"noop","run_at":"{}"}}"#,
                soon_at.to_rfc3339()
            ),
        );
        assert_eq!(soon.status, 201, "{}", soon.body);
        let e = finished(store.as_ref(), id_of(&soon)).await;
        assert_eq!(e.status, Status::Succeeded);
        assert!(
            e.started_at.unwrap().micros() >= soon_at.timestamp_micros(),
            "{e:?}"
        );
        let e = store.execution(id_of(&later)).await.unwrap().unwrap();
        assert_eq!(e.status, Status::Pending);
        let hour = 3_600_000_000;
        assert!(
            (t0 + hour..t0 + hour + 60_000_000).contains(&e.run_at.micros()),
            "{e:?}"
        );
        let r = post(
            &addr,
            "/v1/executions",
            r#"{"handler":"noop","delay":"1h","run_at":"2030-01-01T00:00:00Z"}"#,
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (400, "invalid"),
            "{}",
            r.body
        );
        // The CLI says when it is due.
        let id = env.ok(&["run", "noop", "--in", "2h"]).trim().to_string();
        let shown = env.ok(&["exec", "show", &id]);
        assert!(shown.contains("pending (due at "), "{shown}");

        // Given ids: kept; taken ones refused, with nothing written.
        let given = uuid::Uuid::now_v7();
        let r = post(
            &addr,
            "/v1/executions",
            &format!(r#"{{"handler":"noop","id":"{given}"}}"#),
        );
        assert_eq!((r.status, id_of(&r)), (201, given), "{}", r.body);
        let before = count().await;
        let r = post(
            &addr,
            "/v1/executions",
            &format!(r#"{{"handler":"echo","id":"{given}"}}"#),
        );
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "id_taken"),
            "{}",
            r.body
        );
        let out = env.cli(&["run", "echo", "--id", &given.to_string()]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
        let mine = uuid::Uuid::now_v7();
        assert_eq!(
            env.ok(&["run", "noop", "--id", &mine.to_string()]).trim(),
            mine.to_string()
        );
        assert_eq!(count().await, before + 1);

        // Batches: in order, duplicates flagged.
        let r = post(
            &addr,
            "/v1/executions/batch",
            r#"{"runs":[{"handler":"noop"},{"handler":"echo","unique_key":"k","delay":"1h"},{"handler":"echo","unique_key":"k"}]}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let runs = r.json()["runs"].as_array().unwrap().clone();
        assert_eq!(runs.len(), 3);
        assert_eq!(
            (
                runs[1]["duplicate"].as_bool(),
                runs[2]["duplicate"].as_bool()
            ),
            (Some(false), Some(true))
        );
        assert_eq!(runs[1]["id"], runs[2]["id"]);
        // All or nothing: a bad run anywhere refuses every run, and says
        // which.
        let before = count().await;
        for (body, status) in [
            (
                r#"{"runs":[{"handler":"noop"},{"handler":"nope"}]}"#.to_string(),
                404,
            ),
            (
                format!(r#"{{"runs":[{{"handler":"noop"}},{{"handler":"noop","id":"{given}"}}]}}"#),
                409,
            ),
            (
                r#"{"runs":[{"handler":"noop"},{"handler":"noop","unique_for":"1h"}]}"#.to_string(),
                400,
            ),
            (r#"{"runs":[]}"#.to_string(), 400),
        ] {
            let r = post(&addr, "/v1/executions/batch", &body);
            assert_eq!(r.status, status, "{body}: {}", r.body);
            if status != 400 {
                assert!(r.body.contains("runs[1]"), "{}", r.body);
            }
        }
        let twice = uuid::Uuid::now_v7();
        let r = post(
            &addr,
            "/v1/executions/batch",
            &format!(
                r#"{{"runs":[{{"handler":"noop","id":"{twice}"}},{{"handler":"noop","id":"{twice}"}}]}}"#
            ),
        );
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(count().await, before);
        // At most 10,000 runs at once.
        let runs = |n: usize| {
            format!(
                r#"{{"runs":[{}]}}"#,
                vec![r#"{"handler":"noop","delay":"1h"}"#; n].join(",")
            )
        };
        let r = post(&addr, "/v1/executions/batch", &runs(10_001));
        assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(300)]);
        assert_eq!(count().await, before);
        let r = post(&addr, "/v1/executions/batch", &runs(10_000));
        assert_eq!(r.status, 201, "{}", &r.body[..r.body.len().min(300)]);
        assert_eq!(count().await, before + 10_000);
        drop(serve);
    }
}

/// A held run is never claimed until released, over HTTP and the CLI; a
/// held child still counts its parents' ends, and is released to pending
/// once they are all over; a running or ended run is refused (409, exit 2),
/// an unknown one is 404; a held run can be cancelled. Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_held_and_released() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let serve = env.serve(&[]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let status = |id: uuid::Uuid| {
            let store = store.clone();
            async move { store.execution(id).await.unwrap().unwrap().status }
        };

        // Due in a second, held first: it stays held past its time.
        let id = env.enqueue(&["noop", "--in", "1s"]);
        let r = post(&addr, &format!("/v1/executions/{id}/hold"), "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!({"id": id, "status": "held"}));
        // Holding it again changes nothing.
        let again = post(&addr, &format!("/v1/executions/{id}/hold"), "");
        assert_eq!((again.status, again.json()), (200, r.json()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(status(id).await, Status::Held);
        let listed = env.ok(&["exec", "list", "--status", "held", "--json"]);
        assert!(listed.contains(&id.to_string()), "{listed}");
        let r = post(&addr, &format!("/v1/executions/{id}/release"), "");
        assert_eq!(
            r.json(),
            json!({"id": id, "status": "pending"}),
            "{}",
            r.body
        );
        assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);

        // Ended: refused, by both; unknown: 404.
        let r = post(&addr, &format!("/v1/executions/{id}/hold"), "");
        assert_eq!(
            (r.status, r.code().as_str()),
            (409, "not_holdable"),
            "{}",
            r.body
        );
        let out = env.cli(&["exec", "hold", &id.to_string()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("is succeeded") && err.lines().count() == 1,
            "{err}"
        );
        let r = post(&addr, &format!("/v1/executions/{id}/release"), "");
        assert_eq!((r.status, r.code().as_str()), (409, "not_holdable"));
        let r = post(
            &addr,
            &format!("/v1/executions/{}/hold", uuid::Uuid::now_v7()),
            "",
        );
        assert_eq!((r.status, r.code().as_str()), (404, "not_found"));

        // A waiting child, held: its parent's end is counted, and it stays
        // held; released, it runs.
        let parent = env.enqueue(&["noop", "--in", "1s"]);
        let child = env.enqueue(&["noop", "--after", &parent.to_string()]);
        assert_eq!(status(child).await, Status::Waiting);
        let held = env.ok(&["exec", "hold", &child.to_string(), "--json"]);
        let held: Value = serde_json::from_str(&held).unwrap();
        assert_eq!(held, json!({"id": child, "status": "held"}));
        assert_eq!(
            finished(store.as_ref(), parent).await.status,
            Status::Succeeded
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(status(child).await, Status::Held);
        let out = env.ok(&["exec", "release", &child.to_string()]);
        assert_eq!(out.trim(), format!("{child} pending"));
        assert_eq!(
            finished(store.as_ref(), child).await.status,
            Status::Succeeded
        );

        // Released while its parent has yet to end: back to waiting.
        let parent = env.enqueue(&["noop", "--in", "1h"]);
        let child = env.enqueue(&["noop", "--after", &parent.to_string()]);
        env.ok(&["exec", "hold", &child.to_string()]);
        let out = env.ok(&["exec", "release", &child.to_string(), "--json"]);
        let out: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(out["status"], "waiting");

        // A held run can be cancelled; its dependents follow.
        let held = env.enqueue(&["noop", "--in", "1h"]);
        env.ok(&["exec", "hold", &held.to_string()]);
        let after = env.enqueue(&["noop", "--after", &held.to_string()]);
        let r = post(&addr, &format!("/v1/executions/{held}/cancel"), "");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(status(held).await, Status::Cancelled);
        assert_eq!(status(after).await, Status::Cancelled);
    }
}

/// What a run carries: tags, meta and its origin, given on `run`, `job
/// add` (copied to each run, with the job's description), workflow steps
/// and `POST /v1/executions`; every attempt found by them, with `exec list
/// --tag/--meta/--origin` and `?tag=&meta=K:V&origin=`, and acted on in
/// bulk by them; their limits refused with one line and nothing written.
/// Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_carry_tags_meta_and_origin_and_are_found_by_them() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let serve = env.serve(&[]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let ids = |r: &Reply| -> Vec<String> {
            let mut v: Vec<String> = r
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        };
        let listed = |args: &[&str]| -> Vec<String> {
            let mut all = vec!["exec", "list", "--json"];
            all.extend_from_slice(args);
            let out: Value = serde_json::from_str(&env.ok(&all)).unwrap();
            let mut v: Vec<String> = out
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            v.sort();
            v
        };

        // Given on the CLI and over HTTP.
        let cli = env.enqueue(&[
            "noop",
            "--tag",
            "billing",
            "--tag",
            "eu",
            "--meta",
            "customer=42",
            "--meta",
            "note=a=b",
        ]);
        let r = post(
            &addr,
            "/v1/executions",
            r#"{"handler":"noop","tags":["billing"],"meta":{"customer":"7"}}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let api: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
        let e = finished(store.as_ref(), cli).await;
        assert_eq!(e.tags, ["billing", "eu"]);
        assert_eq!(
            serde_json::to_value(&e.meta).unwrap(),
            json!({"customer": "42", "note": "a=b"})
        );
        assert_eq!(e.origin, jobvisor::model::Origin::Manual);
        let shown = env.ok(&["exec", "show", &cli.to_string()]);
        for line in [
            "origin:      manual",
            "tags:        billing, eu",
            "meta:        customer=42",
        ] {
            assert!(shown.contains(line), "{line:?} in {shown}");
        }
        finished(store.as_ref(), api).await;
        let (cli_s, api_s) = (cli.to_string(), api.to_string());
        let mut both = vec![cli_s.clone(), api_s.clone()];
        both.sort();
        assert_eq!(listed(&["--tag", "billing"]), both);
        assert_eq!(
            listed(&["--tag", "billing", "--tag", "eu"]),
            [cli_s.as_str()]
        );
        assert_eq!(listed(&["--meta", "customer=7"]), [api_s.as_str()]);
        assert_eq!(ids(&get(&addr, "/v1/executions?tag=billing")), both);
        assert_eq!(
            ids(&get(&addr, "/v1/executions?tag=billing,eu")),
            [cli_s.as_str()]
        );
        assert_eq!(
            ids(&get(&addr, "/v1/executions?meta=customer:42")),
            [cli_s.as_str()]
        );
        assert_eq!(
            ids(&get(&addr, "/v1/executions?meta=note:a=b&tag=eu")),
            [cli_s.as_str()]
        );
        assert!(ids(&get(&addr, "/v1/executions?meta=customer:4")).is_empty());

        // A job's description, tags and meta; its runs carry them and say
        // how they came to be: triggered, and chained after it.
        env.ok(&[
            "job",
            "add",
            "follow-up",
            "--handler",
            "noop",
            "--cron",
            "0 3 1 1 *",
        ]);
        env.ok(&[
            "job",
            "add",
            "report",
            "--handler",
            "noop",
            "--cron",
            "0 3 1 1 *",
            "--description",
            "The monthly report",
            "--tag",
            "report",
            "--meta",
            "team=data",
            "--then",
            "follow-up",
        ]);
        let shown = env.ok(&["job", "show", "report"]);
        assert!(shown.contains("description: The monthly report"), "{shown}");
        assert!(shown.contains("tags:        report"), "{shown}");
        let jobs: Value = serde_json::from_str(&env.ok(&["job", "list", "--json"])).unwrap();
        let report = jobs
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == "report")
            .unwrap();
        assert_eq!(report["description"], "The monthly report");
        assert_eq!(report["meta"], json!({"team": "data"}));
        let r = get(&addr, "/v1/jobs/report");
        assert_eq!(
            (r.json()["description"].clone(), r.json()["tags"].clone()),
            (json!("The monthly report"), json!(["report"]))
        );
        env.ok(&["job", "trigger", "report"]);
        let chained = eventually("the chained run", || async {
            let r = get(&addr, "/v1/executions?origin=chained");
            r.json().as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(chained["job"], "follow-up");
        let triggered = get(&addr, "/v1/executions?origin=triggered").json();
        assert_eq!(triggered.as_array().unwrap().len(), 1, "{triggered}");
        assert_eq!(triggered[0]["tags"], json!(["report"]));
        assert_eq!(triggered[0]["meta"], json!({"team": "data"}));
        assert_eq!(
            listed(&["--origin", "triggered", "--meta", "team=data"]).len(),
            1
        );

        // Scheduled.
        env.ok(&[
            "job",
            "add",
            "tick",
            "--handler",
            "noop",
            "--every",
            "1s",
            "--tag",
            "tick",
        ]);
        let ticked = eventually("a scheduled run", || async {
            let r = get(&addr, "/v1/executions?origin=scheduled&tag=tick");
            r.json().as_array().unwrap().first().cloned()
        })
        .await;
        assert_eq!(ticked["job"], "tick");
        env.ok(&["job", "pause", "tick"]);

        // Every attempt of a retried run is found by the first's labels.
        let flaky = env.enqueue(&[
            "fail",
            "--retries",
            "1",
            "--backoff",
            "10ms",
            "--tag",
            "flaky",
            "--meta",
            "k=v",
        ]);
        let last = eventually("two attempts", || async {
            let found = listed(&["--tag", "flaky", "--meta", "k=v"]);
            (found.len() == 2).then_some(found)
        })
        .await;
        let retried: Vec<Value> = last
            .iter()
            .map(|id| get(&addr, &format!("/v1/executions/{id}")).json())
            .collect();
        let origins: Vec<&str> = retried
            .iter()
            .map(|e| e["origin"].as_str().unwrap())
            .collect();
        assert!(
            origins.contains(&"manual") && origins.contains(&"retry"),
            "{origins:?}"
        );
        assert!(last.contains(&flaky.to_string()));
        assert_eq!(listed(&["--origin", "retry", "--tag", "flaky"]).len(), 1);

        // A workflow's steps.
        let r = post(
            &addr,
            "/v1/workflows",
            r#"{"name":"etl","step":[{"name":"a","handler":"noop","tags":["wf"],"meta":{"step":"a"}}]}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let step = get(&addr, "/v1/executions?tag=wf").json();
        assert_eq!(
            (step[0]["origin"].clone(), step[0]["meta"].clone()),
            (json!("workflow"), json!({"step": "a"}))
        );

        // Acted on in bulk by label.
        let later = env.enqueue(&["noop", "--in", "1h", "--tag", "later"]);
        let r = post(&addr, "/v1/executions/cancel", r#"{"tags":["later"]}"#);
        assert_eq!(
            (r.status, r.json()["cancelled"].clone()),
            (200, json!(1)),
            "{}",
            r.body
        );
        assert_eq!(
            store.execution(later).await.unwrap().unwrap().status,
            Status::Cancelled
        );
        let dry = env.ok(&[
            "exec",
            "cancel",
            "--tag",
            "later",
            "--status",
            "pending",
            "--dry-run",
        ]);
        assert!(
            dry.contains("matched 0 executions: 0 would be cancelled"),
            "{dry}"
        );

        // Limits: one line, exit 2 or 4xx, nothing written.
        let count = || count_executions(store.as_ref());
        let before = count().await;
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        let mut args = vec!["run", "noop"];
        for t in &many {
            args.extend(["--tag", t.as_str()]);
        }
        let big = format!("blob={}", "x".repeat(5000));
        let long = "x".repeat(65);
        for bad in [
            args.clone(),
            vec!["run", "noop", "--tag", "two words"],
            vec!["run", "noop", "--tag", &long],
            vec!["run", "noop", "--meta", &big],
            vec!["run", "noop", "--meta", "novalue"],
            vec!["run", "noop", "--tag", "a", "--tag", "a"],
            vec![
                "job",
                "add",
                "j",
                "--handler",
                "noop",
                "--every",
                "1m",
                "--tag",
                "a,b",
            ],
        ] {
            let out = env.cli(&bad);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{bad:?}: {err}");
        }
        let tags = serde_json::to_string(&many).unwrap();
        // Each value fits the document; together they pass 4 KiB.
        let meta = json!({"a": "x".repeat(3000), "b": "x".repeat(3000)}).to_string();
        for (body, status) in [
            (format!(r#"{{"handler":"noop","tags":{tags}}}"#), 400),
            (
                r#"{"handler":"noop","tags":["two words"]}"#.to_string(),
                400,
            ),
            (r#"{"handler":"noop","tags":["a","a"]}"#.to_string(), 400),
            (r#"{"handler":"noop","meta":{"k":1}}"#.to_string(), 400),
            (format!(r#"{{"handler":"noop","meta":{meta}}}"#), 422),
        ] {
            let r = post(&addr, "/v1/executions", &body);
            assert_eq!(r.status, status, "{body}: {}", r.body);
        }
        let r = get(&addr, "/v1/executions?tag=a%20b");
        assert_eq!(r.status, 400, "{}", r.body);
        let r = get(&addr, "/v1/executions?origin=elsewhere");
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(count().await, before, "a refused run was written");
        assert!(get(&addr, "/v1/jobs/j").status == 404);
    }
}

/// A progress message's `data`: kept (the last in place of the one
/// before), shown by `exec show`, streamed over SSE; a value that is not
/// an object, or one over 64 KiB, is dropped with a warning in the log and
/// the rest of its message kept. Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_carries_free_form_data_up_to_64_kib() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        env.sh_handler(
            "stages",
            "sleep 0.5; \
             echo '{\"type\":\"progress\",\"percent\":10,\"data\":{\"stage\":\"download\"}}'; \
             echo '{\"type\":\"progress\",\"percent\":50,\"data\":{\"stage\":\"upload\",\"files\":[1,2]}}'; \
             echo '{\"type\":\"progress\",\"message\":\"odd\",\"data\":[1,2]}'; \
             big=$(head -c 70000 /dev/zero | tr '\\0' x); \
             printf '{\"type\":\"progress\",\"data\":{\"blob\":\"%s\"}}\\n' \"$big\"; \
             sleep 0.5",
            &[],
        );
        let serve = env.serve(&[]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let id = env.enqueue(&["stages"]);
        let events = sse(&addr, &format!("/v1/executions/{id}/stream"), |event, _| {
            event == "end"
        });
        assert!(
            events.iter().any(|(e, d)| e == "progress"
                && serde_json::from_str::<Value>(d).unwrap()["data"]["stage"] == "upload"),
            "{events:?}"
        );
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        assert_eq!(
            e.progress.data,
            Some(json!({"stage": "upload", "files": [1, 2]}))
        );
        // The odd message's text still counts.
        assert_eq!(
            (e.progress.percent, e.progress.message.as_deref()),
            (Some(50.0), Some("odd"))
        );
        let logs = store.logs(id, 0, None, 100).await.unwrap();
        let dropped: Vec<&str> = logs
            .iter()
            .filter(|l| l.message.starts_with("progress data dropped"))
            .map(|l| l.message.as_str())
            .collect();
        assert_eq!(dropped.len(), 2, "{logs:#?}");
        assert!(dropped[0].contains("not a JSON object"), "{dropped:?}");
        assert!(dropped[1].contains("at most 65536"), "{dropped:?}");
        let shown = env.ok(&["exec", "show", &id.to_string()]);
        assert!(
            shown.contains(r#"progress data: {"files":[1,2],"stage":"upload"}"#),
            "{shown}"
        );
        let r = get(&addr, &format!("/v1/executions/{id}"));
        assert_eq!(r.json()["progress"]["data"]["stage"], "upload");
    }
}

/// A node's concurrency changes while it runs: `PUT /v1/node` and a SIGHUP
/// reload of the config's `concurrency` apply at once; an increase starts
/// more, a decrease interrupts nothing; `GET /v1/nodes` shows it. Both
/// backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_concurrency_changes_without_a_restart() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let config = env.path("jobvisor.toml");
        std::fs::write(&config, "concurrency = 1\n").unwrap();
        let serve = env.serve(&["--config", config.to_str().unwrap()]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let ours = |addr: &str| -> Value {
            let nodes = get(addr, "/v1/nodes").json();
            nodes
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["live"] == true)
                .cloned()
                .unwrap()
        };
        assert_eq!(ours(&addr)["concurrency"], 1);
        let running = || async {
            store
                .executions(&jobvisor::store::ExecFilter {
                    statuses: vec![Status::Running],
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap()
                .len()
        };
        // One at a time, then three at once.
        let ids: Vec<uuid::Uuid> = (0..3)
            .map(|_| env.enqueue(&["sleep", "--payload", r#"{"ms":3000}"#]))
            .collect();
        eventually("one running", || async {
            (running().await == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(running().await, 1);
        let r = send(&addr, "PUT", "/v1/node", r#"{"concurrency":3}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["concurrency"], 3);
        assert_eq!(ours(&addr)["concurrency"], 3);
        eventually("three running", || async {
            (running().await == 3).then_some(())
        })
        .await;
        // Down to one: all three go on to succeed, none is stopped.
        let r = send(&addr, "PUT", "/v1/node", r#"{"concurrency":1}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        for id in &ids {
            let e = finished(store.as_ref(), *id).await;
            assert_eq!(
                (e.status, e.interrupted),
                (Status::Succeeded, false),
                "{e:?}"
            );
        }
        // Refused: 400, nothing changed.
        for bad in [
            r#"{"concurrency":0}"#,
            "{}",
            r#"{"concurrency":"2"}"#,
            r#"{"workers":2}"#,
        ] {
            let r = send(&addr, "PUT", "/v1/node", bad);
            assert_eq!(r.status, 400, "{bad}: {}", r.body);
        }
        assert_eq!(ours(&addr)["concurrency"], 1);
        // A reload that does not change the file's concurrency leaves what
        // PUT set; one that changes it applies it.
        let r = send(&addr, "PUT", "/v1/node", r#"{"concurrency":2}"#);
        assert_eq!(r.status, 200, "{}", r.body);
        serve.signal(nix::sys::signal::Signal::SIGHUP);
        eventually("the reload", || async {
            serve.log().contains("config reloaded").then_some(())
        })
        .await;
        assert_eq!(ours(&addr)["concurrency"], 2);
        std::fs::write(&config, "concurrency = 4\n").unwrap();
        serve.signal(nix::sys::signal::Signal::SIGHUP);
        eventually("the reloaded concurrency", || async {
            (ours(&addr)["concurrency"] == 4).then_some(())
        })
        .await;
    }
}

/// A run retried twice is one failure: `exec list --final` (`?final=true`)
/// shows its last attempt only, a dry run says exactly what the action then
/// does, and "needs attention" lists runs that failed for good, once.
/// Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_count_once_per_run_and_dry_runs_say_what_the_action_does() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let serve = env.serve(&[]);
        let addr = serve.http_addr();
        let store = env.store().await;
        let flaky = env.enqueue(&["fail", "--retries", "2", "--backoff", "10ms", "--tag", "f"]);
        let last = eventually("three attempts", || async {
            let all = store
                .executions(&jobvisor::store::ExecFilter {
                    tags: vec!["f".into()],
                    statuses: vec![Status::Failed],
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            (all.len() == 3 && all[0].next_id.is_none()).then(|| all[0].id)
        })
        .await;
        let ok = env.enqueue(&["noop", "--tag", "f"]);
        finished(store.as_ref(), ok).await;
        let ids = |v: Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect()
        };
        let listed = |args: &[&str]| -> Value {
            let mut all = vec!["exec", "list", "--json"];
            all.extend_from_slice(args);
            serde_json::from_str(&env.ok(&all)).unwrap()
        };
        assert_eq!(ids(listed(&["--tag", "f", "--status", "failed"])).len(), 3);
        assert_eq!(
            ids(listed(&["--tag", "f", "--status", "failed", "--final"])),
            [last.to_string()]
        );
        assert_eq!(
            ids(get(&addr, "/v1/executions?tag=f&status=failed&final=true").json()),
            [last.to_string()]
        );
        assert_eq!(ids(listed(&["--tag", "f", "--final"])).len(), 2);
        // The dry run says what the retry then does.
        let dry: Value =
            serde_json::from_str(&env.ok(&["exec", "retry", "--tag", "f", "--dry-run", "--json"]))
                .unwrap();
        assert_eq!(
            (dry["matched"].clone(), dry["retried"].clone()),
            (json!(4), json!(1)),
            "{dry}"
        );
        assert_eq!(ids(dry["executions"].clone()), [last.to_string()]);
        let text = env.ok(&["exec", "retry", "--tag", "f", "--dry-run"]);
        assert!(
            text.contains("matched 4 executions: 1 would be retried"),
            "{text}"
        );
        let done: Value =
            serde_json::from_str(&env.ok(&["exec", "retry", "--tag", "f", "--json"])).unwrap();
        assert_eq!(
            (done["matched"].clone(), done["retried"].clone()),
            (json!(4), json!(1)),
            "{done}"
        );
        // Cancel's dry run: one not started, none running.
        let later = env.enqueue(&["noop", "--in", "1h", "--tag", "g"]);
        let dry: Value =
            serde_json::from_str(&env.ok(&["exec", "cancel", "--tag", "g", "--dry-run", "--json"]))
                .unwrap();
        assert_eq!(
            (
                dry["matched"].clone(),
                dry["cancelled"].clone(),
                dry["requested"].clone(),
                dry["dry_run"].clone()
            ),
            (json!(1), json!(1), json!(0), json!(true)),
            "{dry}"
        );
        assert_eq!(
            store.execution(later).await.unwrap().unwrap().status,
            Status::Pending
        );
        // Needs attention: the run that failed for good (its retry, now
        // over too), once.
        let fourth = eventually("the retried attempt fails", || async {
            let e = store.execution(last).await.unwrap().unwrap();
            let next = store.execution(e.next_id?).await.unwrap()?;
            (next.status == Status::Failed).then_some(next.id)
        })
        .await;
        let attention = get(&addr, "/v1/attention").json();
        let failed = ids(attention["failed"].clone());
        assert_eq!(failed, [fourth.to_string()], "{attention}");
        assert!(!failed.contains(&flaky.to_string()));
    }
}
