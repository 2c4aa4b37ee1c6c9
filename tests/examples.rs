//! Every program in `examples/` runs end to end against the real
//! supervisor: the axum application that embeds it, and a worker in each
//! language (Rust through `jobvisor_worker::host`, Python through
//! `sdk/python/jobvisor_worker.py`, POSIX sh through `sdk/sh/jobvisor.sh`),
//! each reporting progress and logs, honouring a cancel and having its
//! failures classified.

mod common;

use common::*;
use jobvisor::{Execution, Status};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The compiled example `name`, built (or brought up to date) first: a
/// filtered `cargo test` does not build the examples by itself.
fn example(name: &str) -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--examples", "--quiet"])
            .current_dir(root())
            .output()
            .expect("cargo runs");
        assert!(
            out.status.success(),
            "cargo build --examples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // Test binaries live in target/<profile>/deps, examples beside it.
    let p = jobvisor_bin().parent().unwrap().join("examples").join(name);
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// What a worker scenario enqueues.
enum Run {
    /// 3 rows, succeeding.
    Ok,
    /// Rows enough to outlast the test, until cancelled.
    Long,
    /// Fails for good.
    Permanent,
    /// Fails, retryably.
    Retryable,
}

/// Runs the scenarios every worker passes: progress and logs of a
/// success, a cancel honoured, a permanent and a retryable failure told
/// apart. `enqueue` starts a run (with `--retries` as given). Returns the
/// service, still serving.
async fn worker_passes(env: &Env, lang: &str, enqueue: impl Fn(Run, &str) -> Uuid) -> Serve {
    let serve = env.serve(&[]);
    let store = env.store().await;

    // Progress and logs.
    let ok = enqueue(Run::Ok, "0");
    let e = finished(store.as_ref(), ok).await;
    assert_eq!(e.status, Status::Succeeded, "{lang}: {e:?}");
    assert_eq!(e.output, Some(json!({"rows": 3, "attempt": 1})), "{lang}");
    assert_eq!(
        (e.progress.done, e.progress.total, e.progress.percent),
        (Some(3), Some(3), Some(100.0)),
        "{lang}"
    );
    assert_eq!(e.progress.message.as_deref(), Some("row 3"), "{lang}");
    let logs = store.logs(ok, 0, None, 1000).await.unwrap();
    let rows: Vec<_> = logs
        .iter()
        .filter(|l| l.message == "row counted")
        .map(|l| {
            assert_eq!(
                (l.level.as_str(), l.stream.as_str()),
                ("debug", "log"),
                "{lang}"
            );
            l.fields.as_ref().unwrap()["row"].clone()
        })
        .collect();
    // The shell helper's fields are strings.
    let want: Vec<serde_json::Value> = match lang {
        "sh" => vec![json!("1"), json!("2"), json!("3")],
        _ => vec![json!(1), json!(2), json!(3)],
    };
    assert_eq!(rows, want, "{lang}: {logs:#?}");

    // A cancel, honoured: the worker logs where it stopped and ends as
    // cancelled.
    let long = enqueue(Run::Long, "0");
    eventually(&format!("{lang}: progress of the long run"), || async {
        let e = store.execution(long).await.unwrap()?;
        e.progress.done.filter(|d| *d >= 1)
    })
    .await;
    let asked = Instant::now();
    env.ok(&["exec", "cancel", &long.to_string()]);
    let e = finished(store.as_ref(), long).await;
    assert_eq!(e.status, Status::Cancelled, "{lang}: {e:?}");
    assert!(asked.elapsed() < Duration::from_secs(30), "{lang}");
    let logs = store.logs(long, 0, None, 100_000).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level.as_str() == "warn" && l.message.starts_with("cancelled at row")),
        "{lang}: the worker saw the cancel: {logs:#?}"
    );
    assert_no_survivors(long).await;

    // Failures, classified: a permanent one is not retried though retries
    // remain; a retryable one is.
    let permanent = enqueue(Run::Permanent, "2");
    let e = finished(store.as_ref(), permanent).await;
    assert_eq!(
        (e.status, e.error.as_deref(), e.next_id),
        (Status::Failed, Some("the report is wrong"), None),
        "{lang}: {e:?}"
    );
    let retryable = enqueue(Run::Retryable, "1");
    let e = finished(store.as_ref(), retryable).await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (Status::Failed, Some("the upstream is busy")),
        "{lang}: {e:?}"
    );
    let next = e
        .next_id
        .unwrap_or_else(|| panic!("{lang}: retried: {e:?}"));
    let e: Execution = finished(store.as_ref(), next).await;
    assert_eq!((e.status, e.attempt), (Status::Failed, 2), "{lang}: {e:?}");
    serve
}

/// Enqueues `handler` with `payload` and `--retries`, backing off briefly.
fn run(env: &Env, handler: &str, payload: &serde_json::Value, retries: &str) -> Uuid {
    env.enqueue(&[
        handler,
        "--payload",
        &payload.to_string(),
        "--retries",
        retries,
        "--backoff",
        "50ms",
    ])
}

fn payload(r: Run) -> serde_json::Value {
    match r {
        Run::Ok => json!({"rows": 3}),
        Run::Long => json!({"rows": 100000, "delay_ms": 50}),
        Run::Permanent => json!({"rows": 1, "fail": "permanent"}),
        Run::Retryable => json!({"rows": 1, "fail": "retryable"}),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_rust_worker_hosts_typed_handlers_in_process_mode() {
    let env = Env::new();
    let program = example("custom_worker");
    let program = program.to_str().unwrap();
    env.ok(&[
        "handler",
        "add",
        "report",
        "--exec",
        program,
        "--pool-size",
        "2",
    ]);
    let _serve = worker_passes(&env, "rust", |r, retries| {
        run(&env, "report", &payload(r), retries)
    })
    .await;

    // The payload is decoded in the worker process: one that does not
    // decode fails for good there, naming the field.
    let store = env.store().await;
    let bad = run(&env, "report", &json!({"rows": "five"}), "2");
    let e = finished(store.as_ref(), bad).await;
    assert_eq!(e.status, Status::Failed, "{e:?}");
    assert_eq!(e.next_id, None, "{e:?}");
    let error = e.error.unwrap();
    assert!(
        error.starts_with("invalid payload: at `rows`: invalid type: string \"five\""),
        "{error}"
    );
    let unknown = run(&env, "report", &json!({"rows": 1, "colour": "red"}), "0");
    let e = finished(store.as_ref(), unknown).await;
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .contains("unknown field `colour`"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_written_with_the_helper_reports_cancels_and_fails_as_told() {
    let env = Env::new();
    let script = root().join("examples/python_worker.py");
    env.ok(&[
        "handler",
        "add",
        "report",
        "--exec",
        &python(),
        "--arg",
        script.to_str().unwrap(),
    ]);
    let _serve = worker_passes(&env, "python", |r, retries| {
        run(&env, "report", &payload(r), retries)
    })
    .await;

    // An unexpected exception is a retryable failure, its traceback logged.
    let store = env.store().await;
    let e = finished(store.as_ref(), run(&env, "report", &json!({}), "0")).await;
    assert_eq!(e.error.as_deref(), Some("KeyError: 'rows'"), "{e:?}");
    let logs = store.logs(e.id, 0, None, 100).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.level.as_str() == "error" && l.message.contains("Traceback")),
        "{logs:#?}"
    );

    // The same helper keeps a pooled worker for execution after execution.
    let pooled = env.script(
        "pooled.py",
        &format!(
            "import os, sys\nsys.path.insert(0, {:?})\nimport jobvisor_worker as jv\n\n\
             @jv.worker(pooled=True)\ndef pid(payload):\n    jv.progress(50, message='half')\n    return os.getpid()\n\n\
             if __name__ == '__main__':\n    pid()\n",
            root().join("sdk/python").display().to_string()
        ),
    );
    env.ok(&[
        "handler",
        "add",
        "pid",
        "--exec",
        &python(),
        "--arg",
        &pooled,
        "--pool-size",
        "1",
    ]);
    let mut pids = Vec::new();
    for _ in 0..3 {
        let e = finished(store.as_ref(), run(&env, "pid", &json!(null), "0")).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        // A lone number is a percentage.
        assert_eq!(e.progress.percent, Some(50.0), "{e:?}");
        assert_eq!(e.progress.message.as_deref(), Some("half"), "{e:?}");
        pids.push(e.output.unwrap());
    }
    assert!(
        pids.windows(2).all(|w| w[0] == w[1]),
        "one process: {pids:?}"
    );

    // A worker that polls until ready: it sees how often its chain has
    // snoozed (in the run message and the environment), and its labels.
    let poll = env.script(
        "poll.py",
        &format!(
            "import os, sys\nsys.path.insert(0, {:?})\nimport jobvisor_worker as jv\n\n\
             @jv.worker\ndef poll(payload):\n    if jv.snoozes() < 2:\n        raise jv.Snooze(0.05, 'not ready')\n\
             \x20   run = jv.execution()\n\
             \x20   return {{'snoozes': jv.snoozes(), 'env': os.environ['JOBVISOR_SNOOZES'], 'meta': run['meta'], 'tags': run['tags']}}\n\n\
             if __name__ == '__main__':\n    poll()\n",
            root().join("sdk/python").display().to_string()
        ),
    );
    env.ok(&[
        "handler",
        "add",
        "poll",
        "--exec",
        &python(),
        "--arg",
        &poll,
    ]);
    let first = env.enqueue(&["poll", "--tag", "billing", "--meta", "customer=42"]);
    let chain = eventually("the poll to succeed", || async {
        let all = store
            .executions(&jobvisor::store::ExecFilter {
                tags: vec!["billing".into()],
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        all.iter()
            .any(|e| e.status == Status::Succeeded)
            .then_some(all)
    })
    .await;
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(
        chain[0].output,
        Some(json!({"snoozes": 2, "env": "2", "meta": {"customer": "42"}, "tags": ["billing"]}))
    );
    assert_eq!(chain[2].id, first);
    assert_eq!(chain[0].origin, jobvisor::model::Origin::Snooze);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_worker_written_with_the_helper_reports_cancels_and_fails_as_told() {
    let env = Env::new();
    let script = root().join("examples/shell_worker.sh");
    let script = script.to_str().unwrap();
    for (name, args) in [
        ("report-ok", vec!["3"]),
        ("report-long", vec!["100000", "0.05"]),
        ("report-permanent", vec!["1", "0", "permanent"]),
        ("report-retryable", vec!["1", "0", "retryable"]),
    ] {
        let mut add = vec!["handler", "add", name, "--exec", script];
        for a in &args {
            add.extend(["--arg", a]);
        }
        env.ok(&add);
    }
    worker_passes(&env, "sh", |r, retries| {
        let name = match r {
            Run::Ok => "report-ok",
            Run::Long => "report-long",
            Run::Permanent => "report-permanent",
            Run::Retryable => "report-retryable",
        };
        run(&env, name, &json!(null), retries)
    })
    .await;
}

#[test]
fn the_axum_example_enqueues_from_a_route_and_runs_the_typed_job_in_process() {
    let env = Env::new();
    let mut app = Command::new(example("axum_app"))
        .arg("127.0.0.1:0")
        .env("JOBVISOR_DATABASE", &env.db)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(app.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();

    let poll = |id: &str, want: &str| {
        let start = Instant::now();
        loop {
            let r = get(&addr, &format!("/signups/{id}"));
            assert_eq!(r.status, 200, "{}", r.body);
            let body = r.json();
            if body["status"] == want {
                return body;
            }
            assert!(start.elapsed() < DEADLINE, "{id}: {body}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let r = post(&addr, "/signups", r#"{"email": "ada@example.com"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let body = poll(&id, "succeeded");
    assert_eq!(
        body["output"],
        json!({"to": "ada@example.com", "attempt": 1})
    );

    let r = post(&addr, "/signups", r#"{"email": "nobody"}"#);
    let bad = r.json()["id"].as_str().unwrap().to_string();
    let body = poll(&bad, "failed");
    assert_eq!(body["error"], "\"nobody\" is not an email address");
    assert_eq!(
        get(&addr, &format!("/signups/{}", Uuid::now_v7())).status,
        404
    );

    // The CLI reads what the application's supervisor recorded.
    let out = env.ok(&["exec", "show", &id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["handler"], "welcome_email");

    // SIGTERM stops it cleanly; the failure hook had spoken on stderr.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = app.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains(&format!(
            "welcome email {bad} failed: \"nobody\" is not an email address"
        )),
        "{stderr}"
    );
}

#[test]
fn the_python_helper_and_example_need_no_python_newer_than_3_8() {
    // vermin (PyPI) reads the source for the features each Python version
    // added; it is installed into the reference venv by scripts/test.
    let Some(python) = std::env::var_os("JOBVISOR_REF_PYTHON").filter(|p| {
        Command::new(p)
            .args(["-c", "import vermin"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        let msg = "vermin is not installed: run ./scripts/test, which installs it";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let out = Command::new(python)
        .args(["-c", "import sys, vermin; sys.exit(vermin.main())"])
        .args(["--no-tips", "--violations", "-t=3.8-"])
        .arg(root().join("sdk/python/jobvisor_worker.py"))
        .arg(root().join("examples/python_worker.py"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The program that ties jobs to its own transactions: the order that
/// commits is shipped by its second attempt (the first one's write rolled
/// back with it), the order rolled back has no run, and the condition,
/// reading the orders in its own transaction, skips the reminder.
#[test]
fn the_transactional_example_ships_once_and_rolls_back_with_the_application() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    let out = Command::new(example("transactional"))
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let shipped = lines[0]
        .strip_prefix("order 1 shipped by attempt 2 (")
        .unwrap_or_else(|| panic!("{text}"));
    let run = &shipped[..36];
    assert!(
        shipped.ends_with(&format!("orders: [(1, Some(\"{run}\"))]")),
        "{text}"
    );
    assert_eq!(lines[1], "order 2 rolled back; its run exists: false");
    assert_eq!(
        lines[2],
        "reminder skipped: condition orders_waiting answered false"
    );
}
