//! Dependencies, chains and workflows through the real CLI and a real
//! `jobvisor serve`: steps run in dependency order, a process worker in
//! another language receives its parents' outputs over the protocol, bad
//! workflow files write nothing, and a cancel reaches every step.

mod common;

use common::*;
use jobvisor::model::Status;
use serde_json::{json, Value};
use uuid::Uuid;

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A one-shot Python worker (no `hello`): reads its `run` line and
/// succeeds with what its `inputs` were.
const INPUTS_WORKER: &str = r#"
import json, sys
run = json.loads(sys.stdin.readline())
inputs = run.get("inputs", [])
out = {"n": len(inputs), "outputs": [i["output"] for i in inputs],
       "statuses": [i["status"] for i in inputs], "handlers": [i["handler"] for i in inputs],
       "ids": [i["id"] for i in inputs], "payload": run.get("payload")}
print(json.dumps({"type": "result", "status": "succeeded", "output": out}), flush=True)
"#;

fn add_inputs_worker(env: &Env) {
    let script = env.path("inputs.py");
    std::fs::write(&script, INPUTS_WORKER).unwrap();
    env.ok(&[
        "handler",
        "add",
        "inputs",
        "--exec",
        &python(),
        "--arg",
        &script.display().to_string(),
    ]);
}

/// Waits until workflow `id` has ended (overall status not pending or
/// running); returns `workflow show --json`.
async fn workflow_ended(env: &Env, id: &str) -> Value {
    eventually(&format!("workflow {id} to end"), || async {
        let v = json_of(&env.ok(&["workflow", "show", id, "--json"]));
        let status = v["status"].as_str().unwrap().to_string();
        (!["pending", "running", "cancelling"].contains(&status.as_str())).then_some(v)
    })
    .await
}

#[test]
fn workflow_files_that_cannot_run_are_refused_whole_with_exit_2() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let cases = [
        (
            "cycle",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\nafter = [\"b\"]\n\
             [[step]]\nname = \"b\"\nhandler = \"noop\"\nafter = [\"a\"]\n\
             [[step]]\nname = \"c\"\nhandler = \"noop\"\n",
            "steps form a cycle: ",
        ),
        (
            "unknown step",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\nafter = [\"nope\"]\n",
            "step \"a\" runs after unknown step \"nope\"",
        ),
        (
            "unknown handler",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\n\
             [[step]]\nname = \"b\"\nhandler = \"no-such-handler\"\nafter = [\"a\"]\n",
            "unknown handler \"no-such-handler\"",
        ),
        (
            "duplicate step",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\n\
             [[step]]\nname = \"a\"\nhandler = \"echo\"\n",
            "duplicate step name \"a\"",
        ),
        (
            "unknown field",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandlr = \"noop\"\n",
            "invalid workflow TOML at line 4",
        ),
        (
            "bad JSON",
            "{\"name\": \"w\", \"step\": [{\"name\": \"a\"}]}",
            "invalid workflow JSON: missing field `handler`",
        ),
        (
            "bad policy",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\n\
             [[step]]\nname = \"b\"\nhandler = \"noop\"\nafter = [\"a\"]\nafter_policy = \"maybe\"\n",
            "at line 9: unknown variant `maybe`, expected one of `success`, `finished`, `condition`",
        ),
        (
            "bad timeout",
            "name = \"w\"\n[[step]]\nname = \"a\"\nhandler = \"noop\"\ntimeout = \"soon\"\n",
            "step \"a\": timeout: ",
        ),
    ];
    for (what, text, needle) in cases {
        let file = env.path("w.toml");
        std::fs::write(&file, text).unwrap();
        let out = env.cli(&["workflow", "run", &file.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(needle), "{what}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{what}: one line: {stderr}"
        );
        // Through stdin alike.
        let out = env.cli_stdin(&["workflow", "run", "-"], text);
        assert_eq!(out.status.code(), Some(2), "{what} on stdin");
    }
    let out = env.cli(&["workflow", "run", "/nonexistent/w.toml"]);
    assert_eq!(out.status.code(), Some(2));
    // Nothing was written by any of them.
    assert_eq!(json_of(&env.ok(&["workflow", "list", "--json"])), json!([]));
    assert_eq!(json_of(&env.ok(&["exec", "list", "--json"])), json!([]));
    // Unknown ids are bad input too.
    let ghost = Uuid::now_v7().to_string();
    for args in [
        vec!["workflow", "show", &ghost],
        vec!["workflow", "cancel", &ghost],
        vec!["workflow", "show", "not-a-uuid"],
    ] {
        assert_eq!(env.cli(&args).status.code(), Some(2), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_in_dependency_order_and_steps_get_their_parents_outputs() {
    let env = Env::new();
    add_inputs_worker(&env);
    let _serve = env.serve(&[]);
    // Steps given out of order; `count` is a Python process worker.
    let text = r#"
name = "etl"

[[step]]
name = "count"
handler = "inputs"
after = ["extract-a", "extract-b"]
payload = {table = "t"}

[[step]]
name = "extract-a"
handler = "echo"
payload = {rows = 3}

[[step]]
name = "extract-b"
handler = "echo"
mode = "process"
payload = {rows = 4}

[[step]]
name = "broken"
handler = "fail"
payload = {message = "disk full"}

[[step]]
name = "publish"
handler = "noop"
after = ["count", "broken"]

[[step]]
name = "report"
handler = "inputs"
after = ["publish", "count"]
after_policy = "finished"
"#;
    let out = env.cli_stdin(&["workflow", "run", "-"], text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Uuid::parse_str(&id).unwrap();

    let v = workflow_ended(&env, &id).await;
    assert_eq!(v["status"], "failed", "{v:#}");
    assert_eq!(v["name"], "etl");
    let steps = v["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    // Dependency order; among ready steps, the file's order.
    assert_eq!(
        names,
        [
            "extract-a",
            "extract-b",
            "count",
            "broken",
            "publish",
            "report"
        ]
    );
    let step = |name: &str| steps.iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(step("extract-a")["status"], "succeeded");
    assert_eq!(step("broken")["status"], "failed");
    // The Python worker read both parents' outputs, in id order.
    let count = step("count");
    assert_eq!(count["status"], "succeeded");
    assert_eq!(count["output"]["n"], 2);
    assert_eq!(
        count["output"]["outputs"],
        json!([{"rows": 3}, {"rows": 4}])
    );
    assert_eq!(count["output"]["payload"], json!({"table": "t"}));
    assert_eq!(
        count["output"]["ids"],
        json!([
            step("extract-a")["execution"],
            step("extract-b")["execution"]
        ])
    );
    // `publish` needed `broken` to succeed: cancelled, naming it.
    let publish = step("publish");
    assert_eq!(publish["status"], "cancelled");
    assert_eq!(
        publish["error"],
        format!(
            "upstream {} failed",
            step("broken")["execution"].as_str().unwrap()
        )
    );
    // `report` runs however its parents ended, and sees how.
    let report = step("report");
    assert_eq!(report["status"], "succeeded");
    let mut statuses: Vec<String> =
        serde_json::from_value(report["output"]["statuses"].clone()).unwrap();
    statuses.sort();
    assert_eq!(statuses, ["cancelled", "succeeded"]);

    // Each step ran after all of its parents had ended.
    let store = env.store().await;
    for s in steps {
        let Some(id) = s["execution"].as_str() else {
            continue;
        };
        let e = store
            .execution(Uuid::parse_str(id).unwrap())
            .await
            .unwrap()
            .unwrap();
        let links = store.links(e.id).await.unwrap();
        assert_eq!(links.parents.len(), s["after"].as_array().unwrap().len());
        for p in links.parents {
            let p = store.execution(p).await.unwrap().unwrap();
            if let Some(started) = e.started_at {
                assert!(
                    p.finished_at.unwrap() <= started,
                    "{} before its parent",
                    s["name"]
                );
            }
        }
    }
    // The list shows it, ended.
    let list = json_of(&env.ok(&["workflow", "list", "--json"]));
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["steps"]["succeeded"], 4);
    let text = env.ok(&["workflow", "show", &id]);
    assert!(
        text.starts_with(&format!("workflow {id} (etl): failed")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_after_waits_for_its_parent_and_exec_show_lists_the_links() {
    let env = Env::new();
    add_inputs_worker(&env);
    let parent = env.enqueue(&["sleep", "--payload", r#"{"ms": 1500}"#]);
    let out = env.ok(&["run", "inputs", "--after", &parent.to_string(), "--json"]);
    let child = Uuid::parse_str(json_of(&out)["id"].as_str().unwrap()).unwrap();
    let shown = json_of(&env.ok(&["exec", "show", &child.to_string(), "--json"]));
    assert_eq!(shown["status"], "waiting");
    assert_eq!(shown["parents"], json!([parent]));
    assert_eq!(shown["children"], json!([]));
    assert_eq!(shown["after_policy"], "success");
    let shown = json_of(&env.ok(&["exec", "show", &parent.to_string(), "--json"]));
    assert_eq!(shown["children"], json!([child]));
    let text = env.ok(&["exec", "show", &child.to_string()]);
    assert!(text.contains(&format!("parent:      {parent}")), "{text}");

    let _serve = env.serve(&[]);
    let store = env.store().await;
    let e = finished(store.as_ref(), child).await;
    assert_eq!(e.status, Status::Succeeded);
    let p = store.execution(parent).await.unwrap().unwrap();
    assert!(p.finished_at.unwrap() <= e.started_at.unwrap());
    assert_eq!(
        e.output.as_ref().unwrap()["outputs"],
        json!([{"slept_ms": 1500}])
    );

    // `--wait` follows a waiting dependent to its end; a failed parent
    // cancels it (exit 1), `--after-policy finished` runs it anyway.
    let failed = env.enqueue(&["fail"]);
    let out = env.cli(&["run", "noop", "--after", &failed.to_string(), "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.cli(&[
        "run",
        "noop",
        "--after",
        &failed.to_string(),
        "--after-policy",
        "finished",
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(0));

    // Bad input: not a UUID, no such execution, a policy without --after,
    // --replace with --after.
    let ghost = Uuid::now_v7().to_string();
    for (args, needle) in [
        (vec!["run", "noop", "--after", "x"], "invalid execution id"),
        (vec!["run", "noop", "--after", &ghost], "no execution"),
        (vec!["run", "noop", "--after-policy", "finished"], "--after"),
        (
            vec![
                "run",
                "noop",
                "--after",
                &ghost,
                "--unique-key",
                "k",
                "--replace",
            ],
            "--replace",
        ),
        (
            vec![
                "run",
                "noop",
                "--after",
                &ghost,
                "--after-policy",
                "sometimes",
            ],
            "sometimes",
        ),
    ] {
        let out = env.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_chain_enqueues_the_jobs_its_ends_name() {
    let env = Env::new();
    add_inputs_worker(&env);
    for name in ["cleanup", "notify", "celebrate"] {
        env.ok(&[
            "job",
            "add",
            name,
            "--handler",
            "inputs",
            "--at",
            "+1d",
            "--paused",
        ]);
    }
    // Bad chains are refused: unknown job, itself, mismatched --then-on.
    for (args, needle) in [
        (
            vec!["job", "add", "x", "--handler", "noop", "--then", "nope"],
            "no job of that name",
        ),
        (
            vec!["job", "add", "x", "--handler", "noop", "--then", "x"],
            "cannot chain to itself",
        ),
        (
            vec![
                "job",
                "add",
                "x",
                "--handler",
                "noop",
                "--then",
                "cleanup",
                "--then",
                "notify",
                "--then-on",
                "failure",
                "--then-on",
                "always",
                "--then-on",
                "success",
            ],
            "--then-on is given 3 times",
        ),
    ] {
        let out = env.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "fail",
        "--payload",
        r#"{"message": "no space"}"#,
        "--then",
        "cleanup",
        "--then-on",
        "failure",
        "--then",
        "notify",
        "--then-on",
        "always",
        "--then",
        "celebrate",
        "--then-on",
        "success",
    ]);
    let shown = env.ok(&["job", "show", "nightly"]);
    assert!(
        shown.contains("then:        cleanup (on failure)"),
        "{shown}"
    );
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let chained = eventually("the chained runs to end", || async {
        let mut done = Vec::new();
        for job in ["cleanup", "notify"] {
            let runs = attempts(store.as_ref(), job).await;
            match runs.first() {
                Some(e) if e.status.is_terminal() => done.push(e.clone()),
                _ => return None,
            }
        }
        Some(done)
    })
    .await;
    let nightly = attempts(store.as_ref(), "nightly").await;
    assert_eq!(nightly.len(), 1);
    assert_eq!(nightly[0].status, Status::Failed);
    for e in &chained {
        assert_eq!(e.status, Status::Succeeded, "{:?}", e.job);
        let out = e.output.as_ref().unwrap();
        assert_eq!(out["ids"], json!([nightly[0].id]));
        assert_eq!(out["statuses"], json!(["failed"]));
        assert_eq!(
            store.links(e.id).await.unwrap().parents,
            vec![nightly[0].id]
        );
    }
    // Not on success: nothing for `celebrate`.
    assert!(attempts(store.as_ref(), "celebrate").await.is_empty());
    let shown = json_of(&env.ok(&["exec", "show", &nightly[0].id.to_string(), "--json"]));
    assert_eq!(shown["children"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_workflow_stops_its_running_steps_and_cancels_the_rest() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    let text = r#"{"name": "long", "step": [
        {"name": "inproc", "handler": "sleep", "payload": {"ms": 60000}},
        {"name": "process", "handler": "sleep", "mode": "process", "payload": {"ms": 60000}},
        {"name": "next", "handler": "noop", "after": ["inproc", "process"]},
        {"name": "last", "handler": "noop", "after": ["next"], "after_policy": "finished"}
    ]}"#;
    let file = env.path("long.json");
    std::fs::write(&file, text).unwrap();
    let id = env.ok(&["workflow", "run", &file.display().to_string()]);
    let id = id.trim();
    let store = env.store().await;
    eventually("both sleeps to run", || async {
        let v = json_of(&env.ok(&["workflow", "show", id, "--json"]));
        let running = v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "running")
            .count();
        (running == 2).then_some(())
    })
    .await;
    let out = env.ok(&["workflow", "cancel", id, "--reason", "enough"]);
    assert!(
        out.contains("2 steps cancelled before they started, 2 running asked to stop"),
        "{out}"
    );
    let v = workflow_ended(&env, id).await;
    assert_eq!(v["status"], "cancelled", "{v:#}");
    for s in v["steps"].as_array().unwrap() {
        assert_eq!(s["status"], "cancelled", "{s}");
        let e = store
            .execution(Uuid::parse_str(s["execution"].as_str().unwrap()).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.cancel_reason.as_deref(), Some("enough"), "{s}");
    }
    assert!(v["cancelled_at"].is_string());
    // Nothing is left to run, and a second cancel changes nothing.
    let out = env.ok(&["workflow", "cancel", id]);
    assert!(
        out.contains("0 steps cancelled before they started, 0 running"),
        "{out}"
    );
}

/// `bench --scenario workflow` runs end to end (small sizes) and reports
/// every figure.
#[test]
fn the_workflow_bench_reports_its_figures() {
    let env = Env::new();
    let out = env.ok(&[
        "bench",
        "--scenario",
        "workflow",
        "--fanout",
        "300",
        "--chain",
        "40",
        "--keys",
        "200",
        "--json",
    ]);
    let r = json_of(&out);
    assert_eq!(r["database"], "sqlite");
    for field in [
        "fanout_insert_s",
        "fanout_total_s",
        "fanout_plain_s",
        "chain_s",
        "chain_plain_s",
        "chain_by_client_s",
        "plain_enqueue_per_s",
        "hot_key_enqueue_per_s",
        "distinct_keys_enqueue_per_s",
    ] {
        assert!(r[field].as_f64().unwrap() > 0.0, "{field}: {r}");
    }
    // The fan-in started after its last parent ended.
    assert!(r["fanin_start_ms"].as_f64().unwrap() >= 0.0, "{r}");
    let bad = env.cli(&["bench", "--scenario", "workflow", "--chain", "0"]);
    assert_eq!(bad.status.code(), Some(2));
}
