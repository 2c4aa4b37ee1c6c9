//! The configuration file: declarative handlers, jobs and queues synced at
//! start and on SIGHUP, rejected whole when invalid; retention.

mod common;

use common::*;
use jobvisor::Status;
use std::time::Duration;

fn config(env: &Env, body: &str) -> String {
    let path = env.path("jobvisor.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

const BASE: &str = r#"
concurrency = 8

[queues.slow]
limit = 2
key_limit = 3
rate = "5/1s"

[[handler]]
name = "hello"
exec = "/bin/sh"
args = ["-c", "echo hello from $JOBVISOR_JOB"]
timeout = "30s"
open_files = 256

[[job]]
name = "tick"
handler = "hello"
cron = "* * * * * *"

[[job]]
name = "keep"
handler = "echo"
every = "1h"
payload = { kept = true }
"#;

fn job_names(env: &Env) -> Vec<String> {
    let out = env.ok(&["job", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_handlers_and_jobs_sync_at_start_and_on_sighup() {
    let env = Env::new();
    let path = config(&env, BASE);
    let checked = env.ok(&["check-config", &path]);
    assert!(
        checked.contains("valid (1 handlers, 2 jobs, 1 queues, 0 webhooks)"),
        "{checked}"
    );
    // A job added by hand is never touched by the file.
    env.ok(&["job", "add", "manual", "--handler", "noop", "--every", "1h"]);
    let serve = env.serve(&["--config", &path]);
    eventually("the declared jobs", || async {
        (job_names(&env) == ["keep", "manual", "tick"]).then_some(())
    })
    .await;
    let shown = env.ok(&["handler", "show", "hello", "--json"]);
    let h: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(h["limits"]["open_files"], 256);
    assert_eq!(h["limits"]["timeout_ms"], 30_000);
    let queues: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["queue", "list", "--json"])).unwrap();
    let slow = queues.iter().find(|q| q["name"] == "slow").unwrap();
    assert_eq!(
        (&slow["max_running"], &slow["key_limit"], &slow["rate"]),
        (&2.into(), &3.into(), &"5/1s".into()),
        "{slow}"
    );
    // The declared cron job runs.
    let store = env.store().await;
    eventually("a run of the declared cron job", || async {
        let runs = attempts(store.as_ref(), "tick").await;
        runs.iter()
            .any(|e| e.status == Status::Succeeded)
            .then_some(())
    })
    .await;

    // Edit: a new job, one removed, one changed.
    let edited = BASE
        .replace("name = \"keep\"", "name = \"fresh\"")
        .replace("cron = \"* * * * * *\"", "cron = \"*/2 * * * * *\"");
    config(&env, &edited);
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("the edit to apply", || async {
        (job_names(&env) == ["fresh", "manual", "tick"]).then_some(())
    })
    .await;
    let tick = env.ok(&["job", "show", "tick", "--json"]);
    assert!(tick.contains("*/2 * * * * *"), "{tick}");
    assert!(
        serve.log().contains("config: job removed"),
        "{}",
        serve.log()
    );

    // An invalid edit is rejected whole, with its line; nothing changes.
    let broken =
        format!("{edited}\n[[job]]\nname = \"bad\"\nhandler = \"hello\"\ncron = \"not a cron\"\n");
    config(&env, &broken);
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("the rejection", || async {
        serve.log().contains("config rejected").then_some(())
    })
    .await;
    let log = serve.log();
    let line = log.lines().find(|l| l.contains("config rejected")).unwrap();
    assert!(line.contains("jobvisor.toml:"), "{line}");
    assert!(
        line.contains("job \\\"bad\\\"") || line.contains("job \"bad\""),
        "{line}"
    );
    assert_eq!(job_names(&env), ["fresh", "manual", "tick"]);
    assert!(alive(serve.pid()));
    // And the running config keeps working.
    let id = env.enqueue(&["hello"]);
    assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_stops_serve_with_one_line() {
    let env = Env::new();
    for (body, expect) in [
        ("concurrency = \"many\"\n", "jobvisor.toml:1:"),
        (
            "[[handler]]\nname = \"x\"\nexec = \"/no/such/program\"\n",
            "jobvisor.toml:1: handler \"x\"",
        ),
        (
            "\n\n[[job]]\nname = \"j\"\nhandler = \"nope\"\nevery = \"1m\"\n",
            "unknown handler",
        ),
        ("surprise = 1\n", "unknown field"),
        ("listen = \"0.0.0.0:0\"\n", "needs a bearer token"),
        (
            "\n[queues.q]\nrate = \"0/1s\"\n",
            "jobvisor.toml:2: queues.q.rate: invalid rate",
        ),
        (
            "[queues.q]\nkey_limit = 0\n",
            "jobvisor.toml:1: queues.q.key_limit must be at least 1",
        ),
        ("[queues.q]\nkey_limit = -2\n", "jobvisor.toml:2:"),
    ] {
        let path = config(&env, body);
        // `check-config` refuses exactly what `serve` refuses, with the
        // same reason, whether or not a database exists yet.
        let out = env.cli(&["check-config", &path]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{body}: {err}");
        let out = env.cli(&["serve", "--config", &path]);
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("jobvisor: ") && last.contains(expect),
            "{body}: {err}"
        );
    }
    // A handler registered in the database counts, for both.
    env.ok(&["handler", "add", "nope", "--exec", "/bin/true"]);
    let path = config(
        &env,
        "listen = \"off\"\n[[job]]\nname = \"j\"\nhandler = \"nope\"\nevery = \"1m\"\n",
    );
    assert!(env.ok(&["check-config", &path]).contains("valid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_old_executions_and_their_logs() {
    let env = Env::new();
    env.ok(&[
        "job",
        "add",
        "important",
        "--handler",
        "logs",
        "--at",
        "now",
        "--payload",
        r#"{"count":3}"#,
    ]);
    let mut serve = env.serve(&[]);
    let store = env.store().await;
    let old = env.enqueue(&["logs", "--payload", r#"{"count":5}"#]);
    finished(store.as_ref(), old).await;
    let important = eventually("the important job's run", || async {
        attempts(store.as_ref(), "important")
            .await
            .into_iter()
            .find(|e| e.status.is_terminal())
    })
    .await;
    assert!(!store.logs(old, 0, None, 100).await.unwrap().is_empty());
    assert!(serve.stop().success());
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let path = config(
        &env,
        "[retention]\nexecutions = \"1s\"\nevery = \"1s\"\n\n[[job]]\nname = \"important\"\nhandler = \"logs\"\nat = \"2030-01-01T00:00:00Z\"\nretention = \"30d\"\n",
    );
    let serve = env.serve(&["--config", &path]);
    eventually("the old execution to be pruned", || async {
        store.execution(old).await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(store.logs(old, 0, None, 100).await.unwrap().is_empty());
    // The job with a longer retention keeps its history.
    assert!(store.execution(important.id).await.unwrap().is_some());
    eventually("the retention log line", || async {
        serve.log().contains("retention: pruned").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_config_file_is_logged_and_harmless() {
    let env = Env::new();
    let serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["noop"]);
    finished(store.as_ref(), id).await;
    serve.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("the SIGHUP log line", || async {
        serve
            .log()
            .contains("no config file to reload")
            .then_some(())
    })
    .await;
    assert!(alive(serve.pid()));
    let id = env.enqueue(&["noop"]);
    assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);
}

/// A declared job's chain (`then`, `then_on`) is applied like the rest: its
/// execution's end enqueues the chained job, with it as the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_chain_runs_the_job_it_names() {
    let env = Env::new();
    let path = config(
        &env,
        r#"
[[job]]
name = "main"
handler = "echo"
payload = { made = 1 }
then = ["follow"]
then_on = ["success"]

[[job]]
name = "follow"
handler = "noop"
at = "2030-01-01T00:00:00Z"
paused = true
"#,
    );
    env.ok(&["check-config", &path]);
    let _serve = env.serve(&["--config", &path]);
    let store = env.store().await;
    let follow = eventually("the chained run to end", || async {
        attempts(store.as_ref(), "follow")
            .await
            .into_iter()
            .find(|e| e.status.is_terminal())
    })
    .await;
    assert_eq!(follow.status, Status::Succeeded);
    let main = attempts(store.as_ref(), "main").await;
    assert_eq!(
        store.links(follow.id).await.unwrap().parents,
        vec![main[0].id]
    );
    let shown = env.ok(&["job", "show", "main"]);
    assert!(
        shown.contains("then:        follow (on success)"),
        "{shown}"
    );
}
