//! The HTTP API against its own OpenAPI document, checked by a client we
//! did not write: schemathesis (PyPI), `--checks all`, against a live
//! `serve` with the tokens it really has, over seeded data so that each
//! route meets things that exist as well as things that do not.
//!
//! `scripts/test` installs schemathesis into `target/reference-venv` and
//! names that interpreter in JOBVISOR_REF_PYTHON. The seed is fixed, so a
//! failure replays (`JOBVISOR_SCHEMATHESIS_SEED` picks another).

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "contract-token-1";
const READONLY: &str = "contract-readonly-1";

/// The reference interpreter, if schemathesis is installed in it.
fn schemathesis() -> Option<PathBuf> {
    reference_with("schemathesis")
}

/// The reference interpreter, if Python module `module` is installed in it.
fn reference_with(module: &str) -> Option<PathBuf> {
    let python = PathBuf::from(std::env::var("JOBVISOR_REF_PYTHON").ok()?);
    let probe = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output();
    probe.is_ok_and(|o| o.status.success()).then_some(python)
}

/// The document itself passes a validator we did not write,
/// openapi-spec-validator (PyPI), which holds operation ids unique among
/// other things (client generators name their methods after them); and
/// every operation has one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_passes_openapi_spec_validator() {
    let Some(python) = reference_with("openapi_spec_validator") else {
        let msg = "openapi-spec-validator is not installed: run ./scripts/test, which installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
        return;
    };
    let env = Env::new();
    let serve = env.serve_env(&[], &[("JOBVISOR_API_TOKEN", TOKEN)]);
    let r = request(
        &serve.http_addr(),
        "GET",
        "/openapi.json",
        None,
        Some(TOKEN),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let file = env.path("openapi.json");
    std::fs::write(&file, &r.body).unwrap();
    let out = Command::new(&python)
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = r.json();
    let mut ids = std::collections::BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str();
            let id = id.unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} twice");
        }
    }
    drop(serve);
}

fn call(addr: &str, method: &str, path: &str, body: &str) -> Value {
    let r = request(addr, method, path, Some(body), Some(TOKEN));
    assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
    r.json()
}

/// A TOML array of strings.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_meets_its_openapi_document_under_schemathesis() {
    let Some(st) = schemathesis() else {
        let msg = "schemathesis is not installed: run ./scripts/test, which installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("!!! SKIPPED: {msg}");
        return;
    };
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
    env.ok(&[
        "job",
        "add",
        "paused-job",
        "--handler",
        "echo",
        "--every",
        "1d",
    ]);
    env.ok(&["handler", "add", "script", "--exec", "/bin/true"]);
    // A job the configuration file owns: the API refuses to change or
    // remove it, so the job routes always meet one that exists.
    let config = env.path("jobvisor.toml");
    std::fs::write(
        &config,
        "[[job]]\nname = \"declared-job\"\nhandler = \"noop\"\nevery = \"1h\"\n",
    )
    .unwrap();
    // schemathesis tries bad tokens on purpose, and expects 401 each time.
    let serve = env.serve_env(
        &[
            "--max-auth-failures",
            "0",
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("JOBVISOR_API_TOKEN", TOKEN),
            ("JOBVISOR_API_TOKEN_READONLY", READONLY),
        ],
    );
    let addr = serve.http_addr();
    let store = env.store().await;

    // Seed: executions that succeed, fail and wait; a workflow; queues.
    let mut executions = Vec::new();
    for body in [
        r#"{"handler":"echo","payload":{"n":1}}"#,
        r#"{"handler":"fail","payload":{"message":"seeded failure"}}"#,
        r#"{"handler":"script","mode":"process"}"#,
        r#"{"handler":"noop","queue":"held","unique_key":"seeded-key"}"#,
    ] {
        let id = call(&addr, "POST", "/v1/executions", body)["id"]
            .as_str()
            .unwrap()
            .to_string();
        executions.push(id);
    }
    call(&addr, "POST", "/v1/queues/held/pause", "");
    for id in &executions[..3] {
        finished(store.as_ref(), id.parse().unwrap()).await;
    }
    let wf = call(
        &addr,
        "POST",
        "/v1/workflows",
        r#"{"name":"seeded","step":[{"name":"a","handler":"echo"},{"name":"b","handler":"noop","after":["a"]}]}"#,
    );
    let workflow = wf["id"].as_str().unwrap().to_string();
    call(
        &addr,
        "PUT",
        "/v1/queues/limited",
        r#"{"limit":2,"rate":"10/1s"}"#,
    );

    let dir = env.path("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        r#"
# Every action says it sends JSON, body or not, as the document requires.
headers = {{ Authorization = "Bearer {TOKEN}", "Content-Type" = "application/json" }}
request-timeout = 10
max-stream-events = 1
workers = 2

[generation]
max-examples = 30

# 422: a request that fits the document but whose fields do not go
# together (each operation that can give it says when).
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# 413: a body over the 1 MiB limit is refused before its schema is read
# (a batch of 10,000 large runs can be).
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[dictionaries.executions]
values = {executions}
[dictionaries.workflows]
values = {workflows}
[dictionaries.jobs]
values = ["nightly", "paused-job", "declared-job"]
[dictionaries.handlers]
values = ["echo", "noop", "script", "fail"]
[dictionaries.queues]
values = ["default", "held", "limited"]
[dictionaries.steps]
values = ["a", "b", "c"]

[[operations]]
include-path-regex = "^/v1/executions"
parameters = {{ "path.id" = {{ dictionary = "executions", probability = 0.8 }}, "query.before" = {{ dictionary = "executions", probability = 0.3 }}, "query.queue" = {{ dictionary = "queues", probability = 0.3 }}, "query.handler" = {{ dictionary = "handlers", probability = 0.3 }}, "body.handler" = {{ dictionary = "handlers", probability = 0.8 }}, "body.after[*]" = {{ dictionary = "executions", probability = 0.8 }} }}

[[operations]]
include-path-regex = "^/v1/workflows"
parameters = {{ "path.id" = {{ dictionary = "workflows", probability = 0.8 }}, "body.step[*].handler" = {{ dictionary = "handlers", probability = 0.8 }}, "body.step[*].name" = {{ dictionary = "steps", probability = 0.8 }}, "body.step[*].after[*]" = {{ dictionary = "steps", probability = 0.8 }} }}

[[operations]]
include-path-regex = "^/v1/jobs/"
parameters = {{ "path.name" = {{ dictionary = "jobs", probability = 0.6 }}, "body.name" = {{ dictionary = "jobs", probability = 0.6 }}, "body.handler" = {{ dictionary = "handlers", probability = 0.8 }} }}

[[operations]]
include-path-regex = "^/v1/jobs$"
parameters = {{ "body.handler" = {{ dictionary = "handlers", probability = 0.8 }} }}

# A schedule that is missing or does not parse is a 400 (as `job preview`
# exits 2), which query parameters cannot state.
[[operations]]
include-path-regex = "^/v1/preview$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "429"]

[[operations]]
include-path-regex = "^/v1/handlers/"
parameters = {{ "path.name" = {{ dictionary = "handlers", probability = 0.6 }} }}

[[operations]]
include-path-regex = "^/v1/queues/"
parameters = {{ "path.name" = {{ dictionary = "queues", probability = 0.6 }} }}
"#,
        executions = list(&executions),
        workflows = list(&[workflow]),
    );
    let config_path = dir.join("schemathesis.toml");
    std::fs::write(&config_path, config).unwrap();
    let seed = std::env::var("JOBVISOR_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let runner = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/schemathesis_run.py"
    );
    let out = Command::new(&st)
        .arg(runner)
        .arg("--config-file")
        .arg(&config_path)
        .args(["run", &format!("http://{addr}/openapi.json")])
        .args(["--checks", "all", "--seed", &seed])
        .args(["--report", "har", "--report-dir"])
        .arg(&dir)
        .current_dir(&dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    if let Ok(keep) = std::env::var("JOBVISOR_SCHEMATHESIS_OUT") {
        std::fs::write(keep, text.as_bytes()).unwrap();
    }
    let tail: Vec<&str> = text.lines().rev().take(40).collect();
    eprintln!(
        "--- schemathesis (seed {seed}), last lines:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It tested every operation, and none only ever as a 404.
    let selected = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .and_then(|s| s.split('/').nth(1))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no operation count in:\n{text}"));
    assert!(
        text.contains(&format!("Tested: {selected}")),
        "not every operation was tested:\n{text}"
    );
    // Every operation met something that exists: each answered at least
    // once with other than a 404 (read from the HAR report of every call).
    let doc = request(&addr, "GET", "/openapi.json", None, Some(TOKEN)).json();
    let mut answered: std::collections::BTreeMap<(String, String), Vec<u16>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| ((m.to_uppercase(), path.clone()), Vec::new()))
        })
        .collect();
    let har = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("har-"))
        })
        .expect("a HAR report");
    // JOBVISOR_SCHEMATHESIS_HAR=FILE keeps every call and answer, to see
    // why an operation is answered as it is.
    if let Ok(keep) = std::env::var("JOBVISOR_SCHEMATHESIS_HAR") {
        std::fs::copy(&har, keep).unwrap();
    }
    let har: Value = serde_json::from_str(&std::fs::read_to_string(har).unwrap()).unwrap();
    for entry in har["log"]["entries"].as_array().unwrap() {
        let method = entry["request"]["method"].as_str().unwrap().to_string();
        let url = entry["request"]["url"].as_str().unwrap();
        let path = url
            .split("://")
            .nth(1)
            .and_then(|u| u.find('/').map(|i| &u[i..]));
        let path = path.unwrap_or("/").split('?').next().unwrap();
        let status = entry["response"]["status"].as_u64().unwrap_or(0) as u16;
        if let Some(op) = template_of(&answered, &method, path) {
            answered.get_mut(&op).unwrap().push(status);
        }
    }
    // (The document itself it loads rather than tests.)
    answered.remove(&("GET".to_string(), "/openapi.json".to_string()));
    let only_404: Vec<_> = answered
        .iter()
        .filter(|(_, s)| s.iter().all(|s| *s == 404))
        .map(|(op, s)| format!("{} {} ({} calls)", op.0, op.1, s.len()))
        .collect();
    assert!(
        only_404.is_empty(),
        "never met anything that exists: {only_404:?}"
    );
    drop(serve);
}

/// The operation of `answered` whose path template `path` fits, the one
/// with the most literal segments where several do.
fn template_of(
    answered: &std::collections::BTreeMap<(String, String), Vec<u16>>,
    method: &str,
    path: &str,
) -> Option<(String, String)> {
    let segments: Vec<&str> = path.split('/').collect();
    answered
        .keys()
        .filter(|(m, _)| m == method)
        .filter_map(|(m, t)| {
            let ts: Vec<&str> = t.split('/').collect();
            if ts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (t, s) in ts.iter().zip(&segments) {
                if t.starts_with('{') {
                    continue;
                }
                if t != s {
                    return None;
                }
                literal += 1;
            }
            Some((literal, (m.clone(), t.clone())))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, op)| op)
}
