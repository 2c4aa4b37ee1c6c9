//! Pooled process mode end to end: real `jobvisor serve`, real pooled
//! workers (the built-in `jobvisor-worker` and a Python one).

mod common;

use common::*;
use jobvisor::model::Execution;
use jobvisor::Status;
use std::collections::{BTreeMap, HashSet};
use uuid::Uuid;

async fn run_all(env: &Env, args: &[&str], n: usize) -> Vec<Execution> {
    let ids: Vec<Uuid> = (0..n).map(|_| env.enqueue(args)).collect();
    let store = env.store().await;
    let mut out = Vec::new();
    for id in ids {
        out.push(finished(store.as_ref(), id).await);
    }
    out
}

fn pids(execs: &[Execution]) -> HashSet<i64> {
    execs.iter().map(|e| e.pid.unwrap()).collect()
}

/// Registers `python SCRIPT` as handler `name` on a pool of `size`
/// workers, with extra `handler add` flags.
fn python_pool(env: &Env, name: &str, script: &str, size: &str, flags: &[&str]) {
    let python = python();
    let mut args = vec![
        "handler",
        "add",
        name,
        "--exec",
        &python,
        "--arg",
        script,
        "--pool-size",
        size,
    ];
    args.extend_from_slice(flags);
    env.ok(&args);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_handlers_run_on_a_pool_of_reused_workers() {
    let env = Env::new();
    env.pooled_builtin("echo", "2", &[]);
    let shown = env.ok(&["handler", "show", "echo", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["limits"]["pool_size"], 2);
    let mut serve = env.serve(&[]);
    let execs = run_all(&env, &["echo", "--payload", "[42]"], 60).await;
    for e in &execs {
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        assert_eq!(e.mode, jobvisor::Mode::Process);
        assert_eq!(e.output, Some(serde_json::json!([42])));
    }
    let workers = pids(&execs);
    assert!(workers.len() <= 2, "at most pool_size workers: {workers:?}");
    // The workers are retired with the supervisor.
    assert!(serve.stop().success());
    for p in workers {
        assert!(
            !alive(p as i32),
            "pooled worker {p} outlived the supervisor"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_worker_is_recycled_after_max_runs() {
    let env = Env::new();
    env.pooled_builtin("noop", "1", &["--max-runs-per-worker", "5"]);
    let _serve = env.serve(&[]);
    let execs = run_all(&env, &["noop"], 20).await;
    let mut per_pid: BTreeMap<i64, usize> = BTreeMap::new();
    for e in &execs {
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        *per_pid.entry(e.pid.unwrap()).or_default() += 1;
    }
    assert_eq!(per_pid.len(), 4, "{per_pid:?}");
    assert!(per_pid.values().all(|n| *n == 5), "{per_pid:?}");
    let store = env.store().await;
    // Each worker's fifth execution carries the recycling note.
    let mut notes = 0;
    for e in &execs {
        let logs = store.logs(e.id, 0, None, 100).await.unwrap();
        notes += logs
            .iter()
            .filter(|l| {
                l.message.starts_with("recycling pooled worker")
                    && l.message.ends_with("after 5 executions")
            })
            .count();
    }
    assert_eq!(notes, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_worker_is_recycled_after_the_run_that_crossed_max_rss() {
    let env = Env::new();
    let script = env.script(
        "leaky.py",
        r#"
import json, os, sys
def send(o):
    print(json.dumps(o), flush=True)
send({"type": "hello", "protocol": 1, "pooled": True})
keep = []
for line in sys.stdin:
    m = json.loads(line)
    if m.get("type") != "run":
        continue
    keep.append(b"x" * (m["payload"]["mb"] << 20))
    send({"type": "result", "status": "succeeded", "output": {"pid": os.getpid()}})
"#,
    );
    python_pool(
        &env,
        "leaky",
        &script,
        "1",
        &["--max-rss-per-worker", "64M"],
    );
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let id = env.enqueue(&["leaky", "--payload", r#"{"mb": 24}"#]);
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let logs = store.logs(id, 0, None, 100).await.unwrap();
        let recycled = logs.iter().any(|l| {
            l.message.starts_with("recycling pooled worker")
                && l.message.contains("resident memory")
        });
        seen.push((e.pid.unwrap(), recycled));
    }
    // 24 MiB a run: the second or third run crosses 64 MiB; the next run
    // starts on a fresh worker, which then grows again.
    let first_recycle = seen.iter().position(|(_, r)| *r).expect("a recycle");
    assert!((1..=2).contains(&first_recycle), "{seen:?}");
    for w in seen.windows(2) {
        let ((pid_a, recycled), (pid_b, _)) = (w[0], w[1]);
        assert_eq!(
            pid_a != pid_b,
            recycled,
            "a new worker exactly after a recycle: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_while_idle_is_replaced_without_failing_anything() {
    let env = Env::new();
    env.pooled_builtin("noop", "1", &[]);
    let _serve = env.serve(&[]);
    let first = run_all(&env, &["noop"], 1).await;
    let pid = first[0].pid.unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    eprintln!("killed idle worker {pid}");
    eventually("the idle worker to die", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let after = run_all(&env, &["noop"], 10).await;
    for e in &after {
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        assert_ne!(e.pid, Some(pid as i64));
    }
    assert_eq!(pids(&after).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_cancel_keeps_the_worker_and_a_killed_one_is_replaced() {
    let env = Env::new();
    env.pooled_builtin("progress", "1", &[]);
    // A pooled worker that ignores cancel and SIGTERM.
    let script = env.script(
        "stubborn.py",
        r#"
import json, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print(json.dumps({"type": "hello", "protocol": 1, "pooled": True}), flush=True)
for line in sys.stdin:
    if json.loads(line).get("type") == "run":
        print(json.dumps({"type": "log", "level": "info", "message": "ready"}), flush=True)
        time.sleep(1000)
"#,
    );
    python_pool(
        &env,
        "stubborn",
        &script,
        "1",
        &["--cancel-grace", "200ms", "--kill-grace", "200ms"],
    );
    let _serve = env.serve(&[]);
    let store = env.store().await;
    // Each is cancelled once it has logged: by then its worker's hello
    // has been read (a cancel before it would treat the worker as one that
    // does not speak the protocol: SIGTERM at once).
    let logged = |id: Uuid| {
        let store = store.clone();
        async move {
            eventually("a log line", || async {
                let logs = store.logs(id, 0, None, 10).await.unwrap();
                (!logs.is_empty()).then_some(())
            })
            .await
        }
    };

    let id = env.enqueue(&[
        "progress",
        "--payload",
        r#"{"steps": 600, "delay_ms": 100, "log": true}"#,
    ]);
    let running = running_with_pid(store.as_ref(), id).await;
    logged(id).await;
    env.ok(&["exec", "cancel", &id.to_string()]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(e.cancel_outcome.as_deref(), Some("cooperative"));
    let next = run_all(
        &env,
        &["progress", "--payload", r#"{"steps": 1, "delay_ms": 1}"#],
        1,
    )
    .await;
    assert_eq!(next[0].status, Status::Succeeded);
    assert_eq!(
        next[0].pid, running.pid,
        "a worker that honoured the cancel is reused"
    );

    let id = env.enqueue(&["stubborn"]);
    let running = running_with_pid(store.as_ref(), id).await;
    logged(id).await;
    env.ok(&["exec", "cancel", &id.to_string()]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.cancel_outcome.as_deref(), Some("sigkill"));
    assert!(!alive(running.pid.unwrap() as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_pooling_runs_once_per_process_even_with_a_pool() {
    let env = Env::new();
    let script = env.script(
        "once.py",
        r#"
import json, sys
json.loads(sys.stdin.readline())
print(json.dumps({"type": "result", "status": "succeeded"}), flush=True)
"#,
    );
    python_pool(&env, "once", &script, "2", &[]);
    let _serve = env.serve(&[]);
    let execs = run_all(&env, &["once"], 6).await;
    assert!(execs.iter().all(|e| e.status == Status::Succeeded));
    assert_eq!(pids(&execs).len(), 6, "no hello, no reuse");
}

/// An execution on a pooled worker ends with its result: a process it
/// started and left running is killed then (the worker lives on), and its
/// log says so. The worker is reused for the next execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_a_pooled_execution_leaves_running_is_killed_when_it_ends() {
    let env = Env::with_test_builtins();
    env.pooled_builtin("misbehave", "1", &[]);
    let _serve = env.serve(&[]);
    let mark = format!("3600.{}", std::process::id());
    let payload = serde_json::json!({"do": "grandchild", "mark": mark}).to_string();
    let store = env.store().await;
    let first = finished(
        store.as_ref(),
        env.enqueue(&["misbehave", "--payload", &payload]),
    )
    .await;
    assert_eq!(first.status, Status::Succeeded, "{first:?}");
    let left = first.output.as_ref().unwrap()["left_behind"]
        .as_i64()
        .unwrap() as i32;
    eventually("the grandchild to be gone", || async {
        (!alive(left)).then_some(())
    })
    .await;
    assert!(alive(first.pid.unwrap() as i32), "the worker lives on");
    let logs = store.logs(first.id, 0, None, 100).await.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.message.starts_with("killed 1 process(es)")
                && l.message.contains(&left.to_string())),
        "{logs:?}"
    );
    let second = finished(
        store.as_ref(),
        env.enqueue(&["misbehave", "--payload", &payload]),
    )
    .await;
    assert_eq!(second.pid, first.pid, "the same worker ran the next one");
}

/// What a pooled worker started before its first run is its own: it
/// outlives the executions (only what an execution started dies with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helper_a_pooled_worker_started_at_start_up_outlives_its_executions() {
    let env = Env::new();
    let script = env.script(
        "helper.py",
        r#"
import json, subprocess, sys
helper = subprocess.Popen(["sleep", "600"])
print(json.dumps({"type": "hello", "protocol": 1, "pooled": True}), flush=True)
for line in sys.stdin:
    if json.loads(line).get("type") == "run":
        print(json.dumps({"type": "result", "status": "succeeded", "output": helper.pid}), flush=True)
"#,
    );
    python_pool(&env, "helped", &script, "1", &[]);
    let _serve = env.serve(&[]);
    let execs = run_all(&env, &["helped"], 3).await;
    for e in &execs {
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
    }
    assert_eq!(pids(&execs).len(), 1, "one worker ran them all");
    let helper = execs[0].output.as_ref().unwrap().as_i64().unwrap() as i32;
    assert!(alive(helper), "the worker's own helper was killed");
    let store = env.store().await;
    for e in &execs {
        let logs = store.logs(e.id, 0, None, 100).await.unwrap();
        assert!(
            !logs.iter().any(|l| l.message.starts_with("killed")),
            "{logs:?}"
        );
    }
}
