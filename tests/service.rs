//! `jobvisor serve` as a service: systemd notifications, draining on
//! SIGTERM.

mod common;

use common::*;
use jobvisor::Status;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_notifies_ready_then_watchdog_pings_then_stopping() {
    let env = Env::new();
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut serve = env.serve_env(
        &[],
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    let mut stop_sent = false;
    while !got.iter().any(|m| m == "STOPPING=1") {
        assert!(start.elapsed() < DEADLINE, "messages so far: {got:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
        if pings >= 3 && !stop_sent {
            serve.signal(nix::sys::signal::Signal::SIGTERM);
            stop_sent = true;
        }
    }
    assert!(serve.stop().success());
    let kinds: Vec<&str> = got
        .iter()
        .map(|m| m.split('=').next().unwrap())
        .filter(|k| *k != "STATUS")
        .collect();
    assert_eq!(kinds.first(), Some(&"READY"), "{got:?}");
    assert_eq!(kinds.last(), Some(&"STOPPING"), "{got:?}");
    assert!(
        kinds[1..kinds.len() - 1].iter().all(|k| *k == "WATCHDOG"),
        "{got:?}"
    );
    assert!(
        got.iter().any(|m| m.starts_with("STATUS=running ")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_interrupts_the_rest_which_run_again_after_a_restart() {
    let env = Env::new();
    let lines = env.path("printed");
    // Prints numbered lines; each is appended to a file after it was
    // printed, so every line in the file must be in the database. A second
    // attempt ends at once.
    let script = format!(
        "[ \"$JOBVISOR_ATTEMPT\" = 2 ] && exit 0; i=0; while :; do i=$((i+1)); \
         echo \"$JOBVISOR_EXECUTION_ID $i\"; echo \"$JOBVISOR_EXECUTION_ID $i\" >> {}; sleep 0.02; done",
        lines.display()
    );
    env.sh_handler(
        "long",
        &script,
        &["--cancel-grace", "200ms", "--kill-grace", "200ms"],
    );
    env.sh_handler("short", "sleep 0.3; echo done", &[]);
    let mut serve = env.serve(&["--drain-timeout", "1s"]);
    let store = env.store().await;
    let long: Vec<_> = (0..5).map(|_| env.enqueue(&["long"])).collect();
    for id in &long {
        running_with_pid(store.as_ref(), *id).await;
    }
    let short: Vec<_> = (0..2).map(|_| env.enqueue(&["short"])).collect();
    for id in &short {
        running_with_pid(store.as_ref(), *id).await;
    }
    let t0 = Instant::now();
    let status = serve.stop();
    assert!(status.success(), "{status:?}\n{}", serve.log());
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "drained for the timeout"
    );
    for id in &short {
        let e = store.execution(*id).await.unwrap().unwrap();
        assert_eq!(
            e.status,
            Status::Succeeded,
            "finished within the drain: {e:?}"
        );
    }
    for id in &long {
        let e = store.execution(*id).await.unwrap().unwrap();
        assert_eq!(e.status, Status::Failed, "{e:?}");
        assert!(e.interrupted, "{e:?}");
        let next = store.execution(e.next_id.unwrap()).await.unwrap().unwrap();
        assert_eq!(next.status, Status::Pending);
        assert!(execution_processes(*id).is_empty());
        // Zero lines lost: everything the child printed is stored.
        let stored: std::collections::HashSet<String> = store
            .logs(*id, 0, None, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.message)
            .collect();
        let printed = std::fs::read_to_string(&lines).unwrap();
        let mine: Vec<&str> = printed
            .lines()
            .filter(|l| l.starts_with(&id.to_string()))
            .collect();
        assert!(!mine.is_empty());
        for l in mine {
            assert!(stored.contains(l), "line {l:?} was lost");
        }
    }
    // After a restart the interrupted executions run again.
    let _serve = env.serve(&[]);
    for id in &long {
        let e = store.execution(*id).await.unwrap().unwrap();
        let next = finished(store.as_ref(), e.next_id.unwrap()).await;
        assert_eq!(next.status, Status::Succeeded, "{next:?}");
        assert_eq!(next.attempt, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_skips_the_drain() {
    let env = Env::new();
    env.sh_handler("long", "exec sleep 1000", &["--cancel-grace", "200ms"]);
    let mut serve = env.serve(&["--drain-timeout", "1h"]);
    let store = env.store().await;
    let id = env.enqueue(&["long"]);
    running_with_pid(store.as_ref(), id).await;
    serve.signal(nix::sys::signal::Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(alive(serve.pid()), "draining, not gone");
    let t0 = Instant::now();
    assert!(serve.stop().success());
    assert!(t0.elapsed() < Duration::from_secs(30));
    let e = store.execution(id).await.unwrap().unwrap();
    assert!(e.interrupted, "{e:?}");
}

#[test]
fn the_packaged_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/jobvisor.service"
    ))
    .unwrap();
    for needed in [
        "Type=notify",
        "StateDirectory=jobvisor",
        "KillMode=mixed",
        "Delegate=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "WatchdogSec=",
        "ExecReload=",
    ] {
        assert!(unit.contains(needed), "unit lacks {needed}");
    }
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobvisor.service");
    let exec = jobvisor_bin().display().to_string();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/jobvisor serve", &format!("{exec} serve")),
    )
    .unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("!!! systemd-analyze not available ({e}); the unit was NOT verified");
            assert!(std::env::var_os("CI").is_none(), "CI must verify the unit");
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_log_comes_as_text_journald_or_json() {
    let env = Env::new();
    for (format, check) in [("json", "json"), ("journald", "journald"), ("text", "text")] {
        let mut serve = env.serve(&["--log-format", format]);
        let store = env.store().await;
        let id = env.enqueue(&["noop"]);
        finished(store.as_ref(), id).await;
        assert!(serve.stop().success());
        let log = serve.log();
        let serving = log
            .lines()
            .find(|l| l.contains("serving"))
            .unwrap_or_else(|| panic!("{format}: {log}"));
        match check {
            "json" => {
                let v: serde_json::Value = serde_json::from_str(serving).unwrap();
                assert_eq!(v["level"], "INFO");
                assert_eq!(v["message"], "serving");
                assert!(v["timestamp"].is_string());
            }
            "journald" => {
                assert!(
                    serving.starts_with("<6>jobvisor::cli::serve: serving"),
                    "{serving}"
                );
                let warn_or_info = log.lines().all(|l| l.starts_with('<'));
                assert!(warn_or_info, "{log}");
            }
            _ => assert!(
                serving.contains(" INFO ") && serving.starts_with("20"),
                "{serving}"
            ),
        }
    }
}

/// On SQLite, a running `serve` sees another process's enqueue through the
/// database file changing, not at its next poll: with a 10 s poll, runs
/// enqueued by separate `jobvisor run` processes each start within a
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_enqueue_starts_without_waiting_for_the_poll() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let _serve = env.serve(&["--poll-interval", "10s"]);
    let store = env.store().await;
    // Ready: the first run may meet the start's own claim.
    finished(store.as_ref(), env.enqueue(&["noop"])).await;
    for _ in 0..5 {
        // A pause, so that no claim or poll of the last run is under way.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = finished(store.as_ref(), env.enqueue(&["noop"])).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let waited = e.started_at.unwrap().micros() - e.enqueued_at.micros();
        assert!(
            waited < 1_000_000,
            "started {waited} us after the enqueue (the poll is 10 s)"
        );
    }
}

/// An idle `serve` on SQLite hardly polls (every other process's write is
/// announced by the WAL watch), yet what comes due by time alone starts on
/// time: a retry due 2 s after a failure, an execution another process
/// enqueued, and a job another process added. The poll interval here is
/// 10 s, and the scheduler's safety-net poll a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_watched_serve_starts_what_comes_due_on_time() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let _serve = env.serve(&["--poll-interval", "10s"]);
    let store = env.store().await;
    finished(store.as_ref(), env.enqueue(&["noop"])).await;
    // Idle long enough for the quiet polls.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A retry, scheduled by the serve's own completion, 2-4 s later (the
    // backoff's jitter): started at its due time, not at a poll.
    let first = finished(
        store.as_ref(),
        env.enqueue(&["fail", "--retries", "1", "--backoff", "2s"]),
    )
    .await;
    let retry = finished(store.as_ref(), first.next_id.expect("a retry")).await;
    assert_eq!(retry.attempt, 2);
    let late = retry.started_at.unwrap().micros() - retry.run_at.micros();
    assert!(
        (0..1_000_000).contains(&late),
        "the retry started {late} us after it came due"
    );

    // A job another process adds, due in a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.ok(&["job", "add", "later", "--handler", "noop", "--at", "+1s"]);
    let added = Instant::now();
    let runs = eventually("the added job to run", || async {
        let runs = attempts(store.as_ref(), "later").await;
        runs.first().filter(|e| e.status.is_terminal()).cloned()
    })
    .await;
    assert_eq!(runs.status, Status::Succeeded);
    assert!(
        added.elapsed() < Duration::from_secs(4),
        "the job ran {:?} after it was added, due a second after",
        added.elapsed()
    );
}

/// On a terminal (a real pty, from util-linux's `script`) the text log is
/// coloured, unless `NO_COLOR` is set.
#[test]
fn the_log_on_a_terminal_is_coloured_unless_no_color_is_set() {
    if which("script").is_none() {
        eprintln!("!!! the_log_on_a_terminal_is_coloured_unless_no_color_is_set: SKIPPED: no `script` (util-linux) here");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs util-linux's script"
        );
        return;
    }
    let env = Env::new();
    env.ok(&["migrate"]);
    let log = |no_color: Option<&str>| {
        // The service stops itself (timeout, inside the pty), so nothing
        // outlives the test.
        let inner = format!(
            "timeout -s TERM 3 {} --database {} serve --listen off",
            jobvisor_bin().display(),
            env.db
        );
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &inner, "/dev/null"])
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = log(None);
    assert!(coloured.contains("ready"), "{coloured:?}");
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = log(Some("1"));
    assert!(plain.contains("ready"), "{plain:?}");
    assert!(
        !plain.contains("\u{1b}["),
        "colour despite NO_COLOR: {plain:?}"
    );
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}
