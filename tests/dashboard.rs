//! The dashboard in a real browser: Debian's chromium, driven by
//! playwright-core (`tests/browser/dashboard.mjs`), against a live `serve`
//! with a token and a read-only token, over seeded jobs, failures, a held
//! execution and a workflow.
//!
//! `scripts/test` installs playwright-core (`npm ci` in tests/browser);
//! `.ci/run` installs chromium. Without them this test says SKIPPED (under
//! CI it fails). `JOBVISOR_SCREENSHOTS=DIR` keeps a screenshot of each page.

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;

const TOKEN: &str = "dash-token-1";
const READONLY: &str = "dash-readonly-1";

fn call(addr: &str, method: &str, path: &str, body: &str) -> Value {
    let r = request(addr, method, path, Some(body), Some(TOKEN));
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    r.json()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let Some((dir, chromium)) = browser() else {
        return;
    };
    let env = Env::new();
    env.ok(&[
        "job",
        "add",
        "report",
        "--handler",
        "progress",
        "--payload",
        r#"{"steps":120,"delay_ms":250,"log":true}"#,
        "--cron",
        "0 0 1 1 *",
    ]);
    let serve = env.serve_env(
        &[],
        &[
            ("JOBVISOR_API_TOKEN", TOKEN),
            ("JOBVISOR_API_TOKEN_READONLY", READONLY),
        ],
    );
    let addr = serve.http_addr();
    let store = env.store().await;

    let mut failed = Vec::new();
    for i in 0..3 {
        let body =
            json!({"handler": "fail", "payload": {"message": format!("seeded failure {i}")}});
        failed.push(id_of(&call(
            &addr,
            "POST",
            "/v1/executions",
            &body.to_string(),
        )));
    }
    for i in 0..5 {
        let body = json!({"handler": "echo", "payload": {"n": i}});
        call(&addr, "POST", "/v1/executions", &body.to_string());
    }
    call(&addr, "POST", "/v1/queues/held/pause", "");
    let pending = id_of(&call(
        &addr,
        "POST",
        "/v1/executions",
        r#"{"handler":"noop","queue":"held"}"#,
    ));
    let wf = call(
        &addr,
        "POST",
        "/v1/workflows",
        r#"{"name":"nightly-etl","step":[{"name":"fetch","handler":"echo"},{"name":"transform","handler":"echo","after":["fetch"]},{"name":"report","handler":"noop","after":["transform"],"queue":"held"}]}"#,
    );
    for id in &failed {
        finished(store.as_ref(), id.parse().unwrap()).await;
    }
    let fetch: uuid::Uuid = wf["steps"][0][1].as_str().unwrap().parse().unwrap();
    finished(store.as_ref(), fetch).await;

    let seed =
        json!({"job": "report", "failed": failed, "pending": pending, "workflow": id_of(&wf)});
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("dashboard.mjs"))
        .env("JV_ADDR", &addr)
        .env("JV_TOKEN", TOKEN)
        .env("JV_READONLY", READONLY)
        .env("JV_SEED", seed.to_string())
        .env("JV_CHROMIUM", &chromium);
    if let Ok(shots) = std::env::var("JOBVISOR_SCREENSHOTS") {
        cmd.env("JV_SHOTS", shots);
    }
    let out = cmd.output().expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the browser checks failed");
    assert!(text.contains("all checks passed"));
}
