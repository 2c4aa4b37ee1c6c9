//! Process mode end to end: the real `jobvisor serve`, real child
//! processes, real SQLite.

mod common;

use common::*;
use jobvisor::Status;
use jobvisor_worker::Level;
use std::collections::HashSet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_worker_speaking_the_protocol_lands_everything_in_the_database() {
    let env = Env::new();
    let script = env.script(
        "worker.py",
        r#"
import json, os, sys
def send(o):
    print(json.dumps(o), flush=True)
run = json.loads(sys.stdin.readline())
send({"type": "progress", "percent": 10, "message": "starting"})
for lvl in ["trace", "debug", "info", "warn", "error", "fatal", "panic"]:
    send({"type": "log", "level": lvl, "message": "at " + lvl, "fields": {"lvl": lvl}})
print("a plain stdout line", flush=True)
print("a stderr line", file=sys.stderr, flush=True)
send({"type": "heartbeat"})
send({"type": "progress", "done": 3, "total": 4, "message": "nearly"})
send({"type": "result", "status": "succeeded",
      "output": {"echo": run["payload"], "id": os.environ["JOBVISOR_EXECUTION_ID"],
                 "attempt": os.environ["JOBVISOR_ATTEMPT"], "run_id": run["execution_id"]}})
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "py",
        "--exec",
        &python(),
        "--arg",
        &script,
    ]);
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["py", "--payload", r#"{"n":7}"#]);
    let store = env.store().await;
    let e = finished(store.as_ref(), id).await;

    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    let out = e.output.unwrap();
    assert_eq!(out["echo"]["n"], 7);
    assert_eq!(out["id"], id.to_string());
    assert_eq!(out["run_id"], id.to_string());
    assert_eq!(out["attempt"], "1");
    assert_eq!(e.progress.percent, Some(75.0));
    assert_eq!(e.progress.done, Some(3));
    assert_eq!(e.progress.total, Some(4));
    assert_eq!(e.progress.message.as_deref(), Some("nearly"));
    assert_eq!(e.exit_code, Some(0));
    assert!(e.pid.is_some());

    let logs = store.logs(id, 0, None, 1000).await.unwrap();
    let levels: HashSet<Level> = logs
        .iter()
        .filter(|l| l.stream == "log")
        .map(|l| l.level)
        .collect();
    assert_eq!(levels, Level::ALL.into_iter().collect());
    let warn = logs.iter().find(|l| l.message == "at warn").unwrap();
    assert_eq!(warn.fields.as_ref().unwrap()["lvl"], "warn");
    assert!(logs.iter().any(|l| l.stream == "stdout"
        && l.message == "a plain stdout line"
        && l.level == Level::Info));
    assert!(logs
        .iter()
        .any(|l| l.stream == "stderr" && l.message == "a stderr line"));
    // Numbered from 1 without gaps.
    let seqs: Vec<i64> = logs.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, (1..=logs.len() as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_ignores_cancel_and_sigterm_is_sigkilled_after_the_graces() {
    let env = Env::new();
    let script = env.script(
        "stubborn.py",
        r#"
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "stubborn",
        "--exec",
        &python(),
        "--arg",
        &script,
        "--cancel-grace",
        "300ms",
        "--kill-grace",
        "300ms",
    ]);
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["stubborn"]);
    let store = env.store().await;
    let e = running_with_pid(store.as_ref(), id).await;
    log_line(store.as_ref(), id, |l| (l.message == "ready").then_some(())).await;
    env.ok(&["exec", "cancel", &id.to_string()]);
    let done = finished(store.as_ref(), id).await;

    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(done.cancel_outcome.as_deref(), Some("sigkill"));
    assert_eq!(done.signal.as_deref(), Some("SIGKILL"));
    assert_eq!(done.cancel_reason.as_deref(), Some("requested by operator"));
    assert!(done.cancel_requested_at.is_some());
    let notes: Vec<String> = store
        .logs(id, 0, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|l| l.stream == "supervisor")
        .map(|l| l.message)
        .collect();
    assert!(notes.iter().any(|m| m.contains("SIGTERM")), "{notes:?}");
    assert!(notes.iter().any(|m| m.contains("SIGKILL")), "{notes:?}");
    assert!(!alive(e.pid.unwrap() as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_honours_cancel_ends_cooperatively() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    let id = env.enqueue(&[
        "sleep",
        "--mode",
        "process",
        "--payload",
        r#"{"ms":600000}"#,
    ]);
    let store = env.store().await;
    running_with_pid(store.as_ref(), id).await;
    env.ok(&[
        "exec",
        "cancel",
        &id.to_string(),
        "--reason",
        "test says stop",
    ]);
    let done = finished(store.as_ref(), id).await;
    assert_eq!(done.status, Status::Cancelled, "{done:?}");
    assert_eq!(done.cancel_outcome.as_deref(), Some("cooperative"));
    assert_eq!(done.cancel_reason.as_deref(), Some("test says stop"));
    assert_eq!(done.signal, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_worker_with_a_grandchild_leaves_no_process_of_its_group() {
    let env = Env::new();
    env.ok(&[
        "handler",
        "add",
        "spawner",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "trap '' TERM; sleep 600 & echo \"grandchild $!\"; wait",
        "--cancel-grace",
        "200ms",
        "--kill-grace",
        "200ms",
    ]);
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["spawner"]);
    let store = env.store().await;
    let e = running_with_pid(store.as_ref(), id).await;
    let pgid = e.pid.unwrap() as i32;
    let grandchild = grandchild_pid(store.as_ref(), id).await;
    assert!(alive(grandchild));
    assert!(group_members(pgid).len() >= 2);

    env.ok(&["exec", "cancel", &id.to_string()]);
    let done = finished(store.as_ref(), id).await;
    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(done.cancel_outcome.as_deref(), Some("sigkill"));
    eventually("the group to be gone", || async {
        (group_members(pgid).is_empty() && !alive(grandchild)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_thousand_log_lines_from_one_child_are_all_stored_in_order() {
    let env = Env::new();
    env.ok(&[
        "handler", "add", "count", "--exec", "seq", "--arg", "1", "--arg", "200000",
    ]);
    let _serve = env.serve(&[]);
    let id = env.enqueue(&["count"]);
    let store = env.store().await;
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    let logs = store.logs(id, 0, None, 1_000_000).await.unwrap();
    assert_eq!(logs.len(), 200_000);
    for (i, l) in logs.iter().enumerate() {
        assert_eq!(l.seq, i as i64 + 1);
        assert_eq!(l.message, (i + 1).to_string());
        assert_eq!(l.stream, "stdout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_output_is_contained_and_the_execution_completes() {
    let env = Env::new();
    let script = env.script(
        "hostile.py",
        r#"
import sys
out = sys.stdout.buffer
out.write(b"x" * (10 * 1024 * 1024) + b"\n")
out.write(b"bad utf8 \xff\xfe here\n")
out.write(b'{"type":"log","level":\n')
out.write(b'{"type":"from-the-future","x":1}\n')
out.write(b'{"type":"progress","percent":250}\n')
out.write(b'{"type":"log","level":"shout","message":"odd level"}\n')
out.write(b'{"type":"result","status":"succeeded","output":{"ok":true}}\n')
out.flush()
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "hostile",
        "--exec",
        &python(),
        "--arg",
        &script,
    ]);
    let serve = env.serve(&[]);
    let id = env.enqueue(&["hostile"]);
    let store = env.store().await;
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    assert_eq!(e.output.unwrap()["ok"], true);
    assert_eq!(e.progress.percent, Some(100.0));

    let logs = store.logs(id, 0, None, 1000).await.unwrap();
    let long = &logs[0];
    assert_eq!(long.message.len(), 1024 * 1024, "cut at the 1 MiB default");
    assert_eq!(long.fields.as_ref().unwrap()["truncated"], true);
    assert!(logs
        .iter()
        .any(|l| l.message == "bad utf8 \u{FFFD}\u{FFFD} here"));
    assert!(logs
        .iter()
        .any(|l| l.message == r#"{"type":"log","level":"# && l.level == Level::Info));
    assert!(logs
        .iter()
        .any(|l| l.message.contains("from-the-future") && l.level == Level::Debug));
    let odd = logs.iter().find(|l| l.message == "odd level").unwrap();
    assert_eq!(odd.level, Level::Info);
    assert_eq!(odd.fields.as_ref().unwrap()["level"], "shout");

    // The supervisor is unaffected: it still runs work.
    let next = env.enqueue(&["echo", "--mode", "process", "--payload", "[1]"]);
    assert_eq!(
        finished(store.as_ref(), next).await.status,
        Status::Succeeded
    );
    assert!(alive(serve.pid()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_decide_the_outcome_of_a_plain_program() {
    let env = Env::new();
    env.ok(&[
        "handler",
        "add",
        "exit3",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "echo hi; exit 3",
    ]);
    env.ok(&[
        "handler",
        "add",
        "segv",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "kill -SEGV $$",
    ]);
    env.ok(&[
        "handler",
        "add",
        "fine",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "echo fine >&2",
    ]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let a = env.enqueue(&["exit3"]);
    let b = env.enqueue(&["segv"]);
    let c = env.enqueue(&["fine"]);

    let a = finished(store.as_ref(), a).await;
    assert_eq!((a.status, a.exit_code), (Status::Failed, Some(3)));
    assert_eq!(a.error.as_deref(), Some("exited with code 3"));
    let b = finished(store.as_ref(), b).await;
    assert_eq!(b.status, Status::Failed);
    assert_eq!(b.signal.as_deref(), Some("SIGSEGV"));
    assert_eq!(b.error.as_deref(), Some("killed by SIGSEGV"));
    let c = finished(store.as_ref(), c).await;
    assert_eq!((c.status, c.exit_code), (Status::Succeeded, Some(0)));
    let logs = store.logs(c.id, 0, None, 10).await.unwrap();
    assert_eq!(logs[0].message, "fine");
    assert_eq!(logs[0].stream, "stderr");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_past_its_timeout_fails_as_timed_out() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&[
        "sleep",
        "--mode",
        "process",
        "--payload",
        r#"{"ms":600000}"#,
        "--timeout",
        "500ms",
    ]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Failed);
    assert!(e.timed_out);
    assert_eq!(e.error.as_deref(), Some("timed out after 500ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_closes_stdout_but_keeps_running_is_waited_for() {
    let env = Env::new();
    env.ok(&[
        "handler",
        "add",
        "quiet",
        "--exec",
        "/bin/sh",
        "--arg",
        "-c",
        "--arg",
        "echo before; exec 1>&-; sleep 1; exit 4",
    ]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["quiet"]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.exit_code, Some(4));
    assert_eq!(e.error.as_deref(), Some("exited with code 4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_fails_after_its_heartbeat_timeout() {
    let env = Env::new();
    let script = env.script(
        "beats.py",
        r#"
import json, time
for _ in range(5):
    print(json.dumps({"type": "heartbeat"}), flush=True)
    time.sleep(0.1)
time.sleep(600)
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "beats",
        "--exec",
        &python(),
        "--arg",
        &script,
        "--heartbeat-timeout",
        "1s",
        "--cancel-grace",
        "200ms",
        "--kill-grace",
        "200ms",
    ]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["beats"]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Failed);
    assert_eq!(e.error.as_deref(), Some("no heartbeat for 1s"));
    assert!(!e.timed_out);
    // It beat for about half a second, then went silent for the timeout.
    assert!(e.duration_ms.unwrap() >= 1400.0, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_program_past_its_timeout_gets_sigterm_at_once_not_after_the_cancel_grace() {
    let env = Env::new();
    // Default graces (5 s each): only a program that said hello waits out
    // the cancel grace.
    env.sh_handler("plain", "echo started; sleep 30", &["--timeout", "2s"]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["plain"]);
    let done = finished(store.as_ref(), id).await;
    assert_eq!(done.status, Status::Failed, "{done:?}");
    assert!(done.timed_out);
    assert_eq!(done.signal.as_deref(), Some("SIGTERM"));
    let ran_ms = done.duration_ms.unwrap();
    assert!(
        (1900.0..4500.0).contains(&ran_ms),
        "ran {ran_ms} ms: SIGTERM must follow the 2 s timeout at once"
    );

    // A cancel, likewise.
    let (done, took) = run_and_cancel(&env, store.as_ref(), "plain", None).await;
    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(done.cancel_outcome.as_deref(), Some("sigterm"));
    assert!(took < std::time::Duration::from_millis(4500), "{took:?}");
}

/// Runs `handler`, cancels it once it runs (and, if given, once it logged
/// `ready`: a worker's hello is known only once it is read, and a cancel
/// before it treats the worker as one that never speaks the protocol); its
/// end and how long the cancel took.
async fn run_and_cancel(
    env: &Env,
    store: &dyn jobvisor::store::Store,
    handler: &str,
    ready: Option<&str>,
) -> (jobvisor::model::Execution, std::time::Duration) {
    let id = env.enqueue(&[handler]);
    running_with_pid(store, id).await;
    if let Some(ready) = ready {
        eventually(&format!("{handler} to log {ready:?}"), || async {
            let logs = store.logs(id, 0, None, 100).await.unwrap();
            logs.iter().any(|l| l.message == ready).then_some(())
        })
        .await;
    }
    let asked = std::time::Instant::now();
    env.ok(&["exec", "cancel", &id.to_string()]);
    let done = finished(store, id).await;
    (done, asked.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_said_hello_keeps_the_cooperative_step_before_sigterm() {
    let env = Env::new();
    let script = env.script(
        "polite.py",
        r#"
import json, sys, time
print(json.dumps({"type": "hello", "protocol": 1}), flush=True)
print(json.dumps({"type": "log", "level": "info", "message": "ready"}), flush=True)
for line in sys.stdin:
    msg = json.loads(line)
    if msg["type"] == "cancel":
        print("got cancel", flush=True)
        time.sleep(60)
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "polite",
        "--exec",
        &python(),
        "--arg",
        &script,
        "--cancel-grace",
        "1500ms",
    ]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let (done, took) = run_and_cancel(&env, store.as_ref(), "polite", Some("ready")).await;
    assert_eq!(done.status, Status::Cancelled);
    assert_eq!(done.cancel_outcome.as_deref(), Some("sigterm"));
    assert!(
        took >= std::time::Duration::from_millis(1500),
        "SIGTERM came before the cancel grace: {took:?}"
    );
    let logs = store.logs(done.id, 0, None, 100).await.unwrap();
    assert!(logs.iter().any(|l| l.message == "got cancel"), "{logs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_lines_are_stored_at_the_handlers_stderr_level() {
    let env = Env::new();
    env.sh_handler("df", "echo checking; echo 'disk full' >&2", &[]);
    env.sh_handler(
        "chatty",
        "echo 'progress 1' >&2",
        &["--stderr-level", "debug"],
    );
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let a = env.enqueue(&["df"]);
    let b = env.enqueue(&["chatty"]);
    finished(store.as_ref(), a).await;
    finished(store.as_ref(), b).await;
    let warn = env.ok(&["exec", "logs", &a.to_string(), "--level", "warn"]);
    assert!(warn.contains("disk full"), "{warn}");
    assert!(!warn.contains("checking"), "{warn}");
    let logs = store.logs(b, 0, None, 10).await.unwrap();
    assert_eq!(logs[0].level, Level::Debug);
    assert_eq!(logs[0].stream, "stderr");
    let out = env.cli(&[
        "handler",
        "add",
        "x",
        "--exec",
        "/bin/true",
        "--stderr-level",
        "loud",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_wait_prints_the_last_ten_log_lines_under_a_failure() {
    let env = Env::new();
    env.sh_handler(
        "noisy",
        "for i in $(seq 1 25); do echo \"line $i\"; done; sleep 0.5; echo 'disk full' >&2; exit 4",
        &[],
    );
    let _serve = env.serve(&[]);
    let out = env.cli(&["run", "noisy", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error: exited with code 4"), "{stdout}");
    let tail: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("last 10 log lines:"))
        .skip(1)
        .collect();
    assert_eq!(tail.len(), 10, "{stdout}");
    assert!(tail[0].ends_with("line 17"), "{stdout}");
    assert!(tail[8].ends_with("line 25"), "{stdout}");
    assert!(
        tail[9].contains("stderr") && tail[9].contains("warn") && tail[9].ends_with("disk full"),
        "{stdout}"
    );
    // A success prints no log.
    let ok = env.ok(&["run", "echo", "--wait"]);
    assert!(!ok.contains("log lines"), "{ok}");
}

/// A worker in any language snoozes with one protocol line: the execution
/// ends as snoozed, and the next of its chain runs after the delay with its
/// retries untouched. A snooze after a cancel is not honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_snoozes_with_a_protocol_line_and_runs_again_later() {
    let env = Env::new();
    let marker = env.path("snoozed-once");
    let script = format!(
        r#"if [ -e {m} ]; then echo second; exit 0; fi
touch {m}
echo '{{"type":"log","level":"info","message":"upstream busy"}}'
echo '{{"type":"snooze","delay_ms":300,"reason":"upstream busy"}}'
echo 'after the snooze: kept as a log line'"#,
        m = marker.display()
    );
    env.sh_handler("polite", &script, &[]);
    env.sh_handler(
        "stubborn",
        r#"echo '{"type":"hello","protocol":1}'; echo '{"type":"log","level":"info","message":"ready"}'; read run; read cancel; echo '{"type":"snooze","delay_ms":10}'"#,
        &["--cancel-grace", "5s"],
    );
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["polite", "--retries", "0"]);
    let first = finished(store.as_ref(), id).await;
    assert_eq!(first.status, Status::Snoozed, "{first:?}");
    assert_eq!(
        first.error.as_deref(),
        Some("snoozed for 300ms: upstream busy")
    );
    let next = finished(store.as_ref(), first.next_id.unwrap()).await;
    assert_eq!(
        (next.status, next.attempt, next.max_attempts, next.snoozes),
        (Status::Succeeded, 1, 1, 1)
    );
    assert!(next.started_at.unwrap().micros() >= first.finished_at.unwrap().micros() + 300_000);
    let logs = store.logs(id, 0, None, 100).await.unwrap();
    assert!(logs.iter().any(|l| l.message == "upstream busy"));
    assert!(
        logs.iter().any(|l| l.message.contains("after the snooze")),
        "{logs:?}"
    );
    let shown = env.ok(&["exec", "list", "--status", "snoozed", "--json"]);
    assert!(shown.contains(&id.to_string()), "{shown}");

    // Told to cancel, it answers with a snooze: the stop decides.
    let id = env.enqueue(&["stubborn"]);
    // Its hello read first: a cancel before it gets SIGTERM at once.
    log_line(store.as_ref(), id, |l| (l.message == "ready").then_some(())).await;
    env.ok(&["exec", "cancel", &id.to_string()]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!((e.status, e.next_id), (Status::Cancelled, None), "{e:?}");
    assert_eq!(e.cancel_outcome.as_deref(), Some("cooperative"));
}

/// A protocol worker cancelled while it is still starting (an interpreter
/// loading its modules, before its hello) is not taken for a plain program:
/// the stop waits briefly for its hello, and it ends cooperatively.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cancelled_before_its_hello_still_gets_the_cooperative_step() {
    let env = Env::new();
    let script = env.script(
        "slow_start.py",
        r#"
import json, sys, time
time.sleep(0.4)
print(json.dumps({"type": "hello", "protocol": 1}), flush=True)
for line in sys.stdin:
    if json.loads(line)["type"] == "cancel":
        print(json.dumps({"type": "result", "status": "cancelled"}), flush=True)
        sys.exit(0)
"#,
    );
    env.ok(&[
        "handler",
        "add",
        "slow",
        "--exec",
        &python(),
        "--arg",
        &script,
    ]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["slow"]);
    running_with_pid(store.as_ref(), id).await;
    env.ok(&["exec", "cancel", &id.to_string()]);
    let done = finished(store.as_ref(), id).await;
    assert_eq!(done.status, Status::Cancelled, "{done:?}");
    assert_eq!(
        done.cancel_outcome.as_deref(),
        Some("cooperative"),
        "{done:?}"
    );
}
