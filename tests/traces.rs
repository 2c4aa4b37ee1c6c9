//! OpenTelemetry traces against a real OTLP/HTTP receiver: Python's HTTP
//! server decoding the protobuf with PyPI's opentelemetry-proto
//! (tests/reference/otlp_receiver.py), and a Python worker that continues
//! the trace with a span of its own (tests/reference/traced_worker.py).

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The reference interpreter, if opentelemetry-proto is installed in it
/// (`scripts/test` installs it; under CI its absence fails).
fn reference_python() -> Option<String> {
    let python = std::env::var("JOBVISOR_REF_PYTHON").ok();
    let ok = python.as_ref().is_some_and(|p| {
        Command::new(p)
            .args(["-c", "import opentelemetry.proto"])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        let msg = "opentelemetry-proto is not installed: run ./scripts/test, which installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
        return None;
    }
    python
}

struct Receiver {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(env: &Env, python: &str) -> Receiver {
        let log = env.path("spans.jsonl");
        let mut child = Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/reference/otlp_receiver.py"
            ))
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut port = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut port)
            .unwrap();
        Receiver {
            child,
            url: format!("http://127.0.0.1:{}", port.trim()),
            log,
        }
    }

    fn spans(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// POSTs `body` to `/v1/executions` with curl (a real client), with a
/// `traceparent` header if given; the new execution's id.
fn post_run(addr: &str, body: &str, traceparent: Option<&str>) -> uuid::Uuid {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", "POST", "-H", "Content-Type: application/json"]);
    if let Some(tp) = traceparent {
        cmd.arg("-H").arg(format!("traceparent: {tp}"));
    }
    let out = cmd
        .args(["--data", body])
        .arg(format!("http://{addr}/v1/executions"))
        .output()
        .expect("curl runs");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["id"]
        .as_str()
        .unwrap_or_else(|| panic!("an id: {reply}"))
        .parse()
        .unwrap()
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A worker (`/bin/sh -c`) whose output is its `$TRACEPARENT`.
const SAYS_TRACEPARENT: &str = "printf '{\"type\":\"result\",\"status\":\"succeeded\",\"output\":{\"tp\":\"%s\"}}\\n' \"$TRACEPARENT\"";

/// The caller's `traceparent`.
fn caller() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// A run posted with a `traceparent` is one trace from the caller's span
/// through the run, its claim waits and attempts, into the Python worker's
/// own spans; a run with none starts a trace of its own.
#[tokio::test]
async fn a_trace_goes_from_the_http_caller_through_jobvisor_into_a_python_worker() {
    let Some(python) = reference_python() else {
        return;
    };
    let env = Env::new();
    let receiver = Receiver::start(&env, &python);
    env.ok(&[
        "handler",
        "add",
        "traced",
        "--exec",
        &python,
        "--arg",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/reference/traced_worker.py"
        ),
        "--env",
        concat!(
            "TRACED_WORKER_SDK=",
            env!("CARGO_MANIFEST_DIR"),
            "/sdk/python"
        ),
    ]);
    let serve = env.serve_env(
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
            ("OTEL_SERVICE_NAME", "jobvisor-under-test"),
        ],
    );
    let addr = serve.http_addr();
    let body = serde_json::json!({
        "handler": "traced",
        "payload": {"otlp": receiver.url},
        "retries": 1,
        "queue": "traced",
    })
    .to_string();
    let first = post_run(&addr, &body, Some(&caller())).to_string();
    // An ad-hoc run with no caller's trace: one of its own.
    let own = env.enqueue(&["echo", "--payload", "{}"]).to_string();

    let spans = eventually("the run's spans, and the worker's", || async {
        let s = receiver.spans();
        let run_done = s.iter().any(|x| x["name"] == "run traced");
        let workers = s.iter().filter(|x| x["service"] == "python-worker").count();
        let own_done = s
            .iter()
            .any(|x| x["name"] == "run echo" && x["trace_id"] == own.replace('-', ""));
        (run_done && workers == 2 && own_done).then_some(s)
    })
    .await;
    let ours: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == CALLER_TRACE)
        .collect();
    let named =
        |n: &str| -> Vec<&Value> { ours.iter().copied().filter(|s| s["name"] == n).collect() };
    let run = named("run traced");
    assert_eq!(run.len(), 1, "one span for the run: {ours:#?}");
    let run = run[0];
    assert_eq!(
        run["parent_span_id"], CALLER_SPAN,
        "the caller's span is its parent"
    );
    assert_eq!(run["service"], "jobvisor-under-test");
    assert_eq!(run["scope"], "jobvisor");
    assert_eq!(run["attributes"]["jobvisor.handler"], "traced");
    assert_eq!(run["attributes"]["jobvisor.queue"], "traced");
    assert_eq!(run["attributes"]["jobvisor.mode"], "process");
    assert_eq!(run["attributes"]["jobvisor.outcome"], "succeeded");
    assert_eq!(run["attributes"]["jobvisor.attempt"], 2);
    let run_id = run["span_id"].as_str().unwrap();
    let attempts = [named("attempt 1"), named("attempt 2")];
    let waits = named("claim wait");
    assert_eq!(waits.len(), 2, "a claim wait per attempt");
    for (i, a) in attempts.iter().enumerate() {
        assert_eq!(a.len(), 1, "attempt {}", i + 1);
        let a = a[0];
        assert_eq!(a["parent_span_id"], run_id);
        assert_eq!(a["attributes"]["jobvisor.attempt"], i as i64 + 1);
        assert_eq!(
            a["attributes"]["jobvisor.outcome"],
            if i == 0 { "failed" } else { "succeeded" }
        );
        assert!(a["start_us"].as_i64() >= run["start_us"].as_i64());
        assert!(a["end_us"].as_i64() <= run["end_us"].as_i64());
        // The worker's span is the attempt's child.
        let worker: Vec<&&Value> = ours
            .iter()
            .filter(|s| {
                s["service"] == "python-worker" && s["attributes"]["attempt"] == i as i64 + 1
            })
            .collect();
        assert_eq!(worker.len(), 1);
        assert_eq!(worker[0]["parent_span_id"], a["span_id"]);
    }
    assert_eq!(
        attempts[0][0]["attributes"]["jobvisor.execution_id"], first,
        "the first attempt is the execution the caller got"
    );
    for w in &waits {
        assert_eq!(w["parent_span_id"], run_id);
        assert!(w["end_us"].as_i64() <= w["start_us"].as_i64().map(|s| s + 60_000_000));
    }
    // The run with no caller: its trace is its first attempt's id, and its
    // span has no parent.
    let own_run = spans.iter().find(|s| s["name"] == "run echo").unwrap();
    assert_eq!(own_run["parent_span_id"], "");
    assert_eq!(own_run["attributes"]["jobvisor.mode"], "inproc");
}

/// Without an endpoint nothing is exported, and a run carries no trace
/// unless its caller gave one: its worker gets no TRACEPARENT.
#[tokio::test]
async fn without_an_endpoint_a_worker_gets_no_trace_unless_the_caller_sent_one() {
    let env = Env::new();
    env.sh_handler("env", SAYS_TRACEPARENT, &[]);
    let serve = env.serve(&[]);
    let addr = serve.http_addr();
    let store = env.store().await;
    let plain = env.enqueue(&["env"]);
    let e = finished(store.as_ref(), plain).await;
    assert_eq!(e.output.unwrap()["tp"], "", "{:?}", e.error);
    let id = post_run(&addr, r#"{"handler": "env"}"#, Some(&caller()));
    let e = finished(store.as_ref(), id).await;
    let tp = e.output.unwrap()["tp"].as_str().unwrap().to_string();
    assert!(
        tp.starts_with(&format!("00-{CALLER_TRACE}-"))
            && tp.ends_with("-01")
            && !tp.contains(CALLER_SPAN),
        "the worker's parent is its attempt's span, in the caller's trace: {tp}"
    );
    // A traceparent that does not parse is ignored, as W3C says.
    let id = post_run(&addr, r#"{"handler": "env"}"#, Some("garbage"));
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.output.unwrap()["tp"], "");
}

/// A library enqueue inside an OpenTelemetry context continues its span:
/// the worker's `TRACEPARENT` is in the caller's trace.
#[tokio::test]
async fn a_library_enqueue_continues_the_ambient_context() {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    let env = Env::new();
    env.sh_handler("env", SAYS_TRACEPARENT, &[]);
    let sup = jobvisor::Supervisor::builder()
        .database(&env.db)
        .build()
        .await
        .unwrap();
    let caller = SpanContext::new(
        TraceId::from_hex(CALLER_TRACE).unwrap(),
        SpanId::from_hex(CALLER_SPAN).unwrap(),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let id = {
        let _in_span = opentelemetry::Context::new()
            .with_remote_span_context(caller)
            .attach();
        sup.enqueue(jobvisor::RunSpec::new("env", Value::Null))
            .await
            .unwrap()
    };
    let running = tokio::spawn({
        let sup = sup.clone();
        async move { sup.run(std::future::pending()).await }
    });
    let e = finished(sup.store().as_ref(), id).await;
    running.abort();
    let tp = e.output.unwrap()["tp"].as_str().unwrap().to_string();
    assert!(tp.starts_with(&format!("00-{CALLER_TRACE}-")), "{tp}");
}
