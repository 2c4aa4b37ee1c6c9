//! Scheduling end to end: cron, overlap, daemons, priorities, queue
//! limits, and two supervisors on one SQLite file.

mod common;

use common::*;
use jobvisor::model::{Execution, Timestamp};
use jobvisor::Status;
use std::time::Duration;

fn micros(t: Timestamp) -> i64 {
    t.micros()
}

/// [start, end) of each started execution; a running one ends "now".
fn intervals(execs: &[Execution]) -> Vec<(i64, i64)> {
    let now = jobvisor::model::now_micros();
    execs
        .iter()
        .filter_map(|e| {
            let s = micros(e.started_at?);
            let f = e.finished_at.map_or(now, micros);
            Some((s, f))
        })
        .collect()
}

/// The most intervals that overlap at any instant.
fn max_overlap(iv: &[(i64, i64)]) -> usize {
    let mut events: Vec<(i64, i32)> = iv.iter().flat_map(|&(s, f)| [(s, 1), (f, -1)]).collect();
    // Ends sort before starts at the same instant.
    events.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in events {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_cron_job_whose_runs_take_longer_never_overlaps_with_skip() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    env.ok(&[
        "job",
        "add",
        "slow",
        "--handler",
        "sleep",
        "--payload",
        r#"{"ms":2500}"#,
        "--cron",
        "* * * * * *",
    ]);
    let store = env.store().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let execs = attempts(store.as_ref(), "slow").await;
    assert!(execs.len() >= 2, "{execs:?}");
    assert_eq!(max_overlap(&intervals(&execs)), 1, "{execs:?}");
    let job = store.job("slow").await.unwrap().unwrap();
    assert!(
        job.missed >= 2,
        "occurrences met a running execution and were skipped: {job:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_is_restarted_with_growing_delays_and_stops_for_good_when_paused() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    env.ok(&[
        "job",
        "add",
        "d",
        "--handler",
        "sleep",
        "--payload",
        r#"{"ms":50}"#,
        "--daemon",
        "--backoff",
        "150ms",
    ]);
    let store = env.store().await;
    let runs = eventually("five daemon runs", || async {
        let e = attempts(store.as_ref(), "d").await;
        let done: Vec<Execution> = e
            .into_iter()
            .filter(|e| e.status == Status::Succeeded)
            .collect();
        (done.len() >= 5).then_some(done)
    })
    .await;
    assert!(
        runs.iter()
            .all(|e| e.origin == jobvisor::model::Origin::Daemon),
        "{runs:?}"
    );
    // Gaps between one run's end and the next start double: 150, 300, 600 ms.
    let gaps: Vec<i64> = runs
        .windows(2)
        .map(|w| micros(w[1].started_at.unwrap()) - micros(w[0].finished_at.unwrap()))
        .collect();
    for w in gaps.windows(2).take(3) {
        assert!(
            w[1] as f64 >= w[0] as f64 * 1.5,
            "gaps should grow: {gaps:?}"
        );
    }
    assert!(gaps[0] >= 150_000, "{gaps:?}");

    env.ok(&["job", "pause", "d"]);
    eventually("the daemon to stop", || async {
        let e = attempts(store.as_ref(), "d").await;
        e.iter().all(|e| e.status.is_terminal()).then_some(())
    })
    .await;
    let count = attempts(store.as_ref(), "d").await.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        attempts(store.as_ref(), "d").await.len(),
        count,
        "restarted while paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_concurrency_one_a_high_priority_execution_starts_before_older_low_ones() {
    let env = Env::new();
    let _serve = env.serve(&["--concurrency", "1"]);
    let store = env.store().await;
    let blocker = env.enqueue(&["sleep", "--payload", r#"{"ms":1000}"#]);
    eventually("the blocker to run", || async {
        let e = store.execution(blocker).await.unwrap()?;
        (e.status == Status::Running).then_some(())
    })
    .await;
    let low: Vec<_> = (0..5).map(|_| env.enqueue(&["noop"])).collect();
    let high = env.enqueue(&["noop", "--priority", "10"]);
    let high = finished(store.as_ref(), high).await;
    for id in low {
        let l = finished(store.as_ref(), id).await;
        assert!(
            micros(high.started_at.unwrap()) < micros(l.started_at.unwrap()),
            "high {high:?} should start before low {l:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limited_to_three_never_runs_more_than_three() {
    let env = Env::new();
    env.ok(&["queue", "set-limit", "q", "3"]);
    let _serve = env.serve(&["--concurrency", "10"]);
    let store = env.store().await;
    let ids: Vec<_> = (0..20)
        .map(|_| env.enqueue(&["sleep", "--payload", r#"{"ms":200}"#, "--queue", "q"]))
        .collect();
    let mut execs = Vec::new();
    for id in ids {
        execs.push(finished(store.as_ref(), id).await);
    }
    assert!(execs.iter().all(|e| e.status == Status::Succeeded));
    assert_eq!(max_overlap(&intervals(&execs)), 3);
    let list = env.ok(&["queue", "list"]);
    assert!(list.contains("q ") && list.contains(" 3 "), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_stops_claims_and_resuming_starts_them_again() {
    let env = Env::new();
    env.ok(&["queue", "pause", "held"]);
    let _serve = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&["noop", "--queue", "held"]);
    let other = env.enqueue(&["noop"]);
    finished(store.as_ref(), other).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        store.execution(id).await.unwrap().unwrap().status,
        Status::Pending
    );
    env.ok(&["queue", "resume", "held"]);
    assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_supervisors_on_one_sqlite_file_run_each_cron_occurrence_exactly_once() {
    let env = Env::new();
    env.ok(&["migrate"]);
    let _a = env.serve(&[]);
    let _b = env.serve(&[]);
    // Which node ran each occurrence is a race: only "once" is promised.
    run_one_second_cron(&env, 10).await;
}

#[test]
fn bad_job_definitions_are_one_clear_line_and_write_nothing() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--cron", "0 25 * * *"], "field 2 (hour) \"25\""),
        (
            &["--cron", "* * * * *", "--tz", "Mars/Olympus"],
            "unknown time zone \"Mars/Olympus\"",
        ),
        (&["--every", "0s"], "--every must be longer than 0"),
        (
            &[
                "--every",
                "1m",
                "--start",
                "2030-01-02T00:00:00Z",
                "--end",
                "2030-01-01T00:00:00Z",
            ],
            "ends",
        ),
        (
            &["--cron", "* * * * *", "--every", "1m"],
            "cannot be used with",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["job", "add", "j", "--handler", "noop"];
        all.extend_from_slice(args);
        let out = env.cli(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} should mention {needle}"
        );
    }
    assert!(!env.ok(&["job", "list"]).contains('j'), "nothing written");
    env.ok(&["job", "add", "j", "--handler", "noop", "--every", "1h"]);
    let out = env.cli(&["job", "add", "j", "--handler", "noop", "--every", "1h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = env.cli(&["job", "add", "k", "--handler", "nosuch", "--every", "1h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown handler"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_listed_shown_triggered_and_counted_in_stats() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    env.ok(&[
        "job",
        "add",
        "nightly",
        "--handler",
        "echo",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Berlin",
        "--payload",
        "[1]",
    ]);
    let list = env.ok(&["job", "list"]);
    assert!(
        list.contains("nightly") && list.contains("T02:00:00") || list.contains("T01:00:00"),
        "{list}"
    );
    let id = env.ok(&["job", "trigger", "nightly"]);
    let store = env.store().await;
    let e = finished(store.as_ref(), uuid::Uuid::parse_str(id.trim()).unwrap()).await;
    assert_eq!(e.output, Some(serde_json::json!([1])));
    env.ok(&[
        "job",
        "add",
        "flaky",
        "--handler",
        "fail",
        "--every",
        "200ms",
        "--max-runs",
        "3",
    ]);
    let job = eventually("flaky to complete", || async {
        store
            .job("flaky")
            .await
            .unwrap()
            .filter(|j| j.completed_at.is_some())
    })
    .await;
    assert_eq!(job.runs, 3);
    eventually("three failures", || async {
        let s = store.stats(Some("flaky")).await.unwrap();
        s.into_iter().next().filter(|s| s.failed == 3)
    })
    .await;
    let stats: serde_json::Value = serde_json::from_str(&env.ok(&["stats", "--json"])).unwrap();
    let flaky = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == "flaky")
        .unwrap();
    assert_eq!(flaky["succeeded"], 0);
    assert_eq!(flaky["success_rate"], 0.0);
    assert_eq!(flaky["last_error"], "failed on purpose");
    let nightly = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["job"] == "nightly")
        .unwrap();
    assert_eq!(nightly["succeeded"], 1);
    let show = env.ok(&["job", "show", "flaky"]);
    assert!(
        show.contains("completed") && show.contains("3 failed"),
        "{show}"
    );
    env.ok(&["job", "remove", "flaky"]);
    assert!(!env.ok(&["job", "list"]).contains("flaky"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_queue_runs_every_occurrence_one_at_a_time() {
    let env = Env::new();
    let _serve = env.serve(&[]);
    // Starts after the supervisor has seen it; each run outlasts two periods.
    env.ok(&[
        "job",
        "add",
        "q",
        "--handler",
        "sleep",
        "--payload",
        r#"{"ms":1100}"#,
        "--every",
        "500ms",
        "--overlap",
        "queue",
        "--max-runs",
        "5",
        "--start",
        "+2s",
    ]);
    let store = env.store().await;
    let execs = eventually("five runs to finish", || async {
        let e = attempts(store.as_ref(), "q").await;
        (e.len() == 5 && e.iter().all(|e| e.status == Status::Succeeded)).then_some(e)
    })
    .await;
    // Queued, not skipped: consecutive occurrences, run one after another.
    assert_eq!(max_overlap(&intervals(&execs)), 1, "{execs:?}");
    let mut occ: Vec<i64> = execs.iter().map(|e| e.occurrence.unwrap()).collect();
    occ.sort();
    for w in occ.windows(2) {
        assert_eq!(w[1] - w[0], 500_000, "an occurrence was skipped: {occ:?}");
    }
    let job = store.job("q").await.unwrap().unwrap();
    assert_eq!(job.runs, 5);
    assert!(job.completed_at.is_some());
}

/// A job's condition runs before each occurrence, in its own mode, with
/// the occurrence's payload: `true` (or a plain program's exit 0) runs the
/// occurrence, `false` records it as `skipped` with the reason, a failure
/// fails it with the condition's error. Condition runs are no runs of the
/// job, and carry `condition_for`. Bad definitions write nothing. Both
/// backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_decides_each_occurrence() {
    let mut envs = vec![Env::new()];
    envs.extend(Env::postgres().await);
    for env in envs {
        let flag = env.path("ready");
        // The README's condition, from examples/.
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ready_condition.sh");
        env.ok(&[
            "handler",
            "add",
            "gate",
            "--exec",
            script.to_str().unwrap(),
            "--arg",
            flag.to_str().unwrap(),
        ]);
        env.sh_handler("plain-yes", "exit 0", &[]);
        env.sh_handler("broken", "echo 'disk full' >&2; exit 3", &[]);
        env.sh_handler(
            "chatty",
            "echo '{\"type\":\"result\",\"status\":\"succeeded\",\"output\":\"maybe\"}'",
            &[],
        );
        let _serve = env.serve(&[]);
        let store = env.store().await;
        let of = |job: &'static str, status: Status| {
            let store = store.clone();
            async move {
                store
                    .executions(&jobvisor::store::ExecFilter {
                        job: Some(job.into()),
                        statuses: vec![status],
                        limit: 100,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
            }
        };
        env.ok(&[
            "job",
            "add",
            "gated",
            "--handler",
            "noop",
            "--every",
            "1s",
            "--condition",
            "gate",
            "--payload",
            r#"{"region":"eu"}"#,
        ]);
        let shown = env.ok(&["job", "show", "gated"]);
        assert!(shown.contains("condition:   gate"), "{shown}");
        let skipped = eventually("a skipped occurrence", || async {
            of("gated", Status::Skipped).await.into_iter().next()
        })
        .await;
        assert_eq!(
            skipped.error.as_deref(),
            Some("condition gate answered false")
        );
        assert!(skipped.started_at.is_none(), "{skipped:?}");
        // The condition ran with the occurrence's payload.
        let gates = env.ok(&["exec", "list", "--meta", "condition_for=gated", "--json"]);
        let gates: serde_json::Value = serde_json::from_str(&gates).unwrap();
        assert_eq!(gates[0]["payload"], serde_json::json!({"region": "eu"}));
        std::fs::write(&flag, "").unwrap();
        let ran = eventually("an occurrence that ran", || async {
            of("gated", Status::Succeeded).await.into_iter().next()
        })
        .await;
        assert_eq!(ran.origin, jobvisor::model::Origin::Scheduled);
        // The job's own runs are its occurrences; the conditions are found
        // by their meta.
        let listed = env.ok(&["exec", "list", "--job", "gated", "--json"]);
        let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["handler"] == "noop"),
            "{listed}"
        );
        let gates = env.ok(&["exec", "list", "--meta", "condition_for=gated", "--json"]);
        let gates: serde_json::Value = serde_json::from_str(&gates).unwrap();
        assert!(
            gates
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["handler"] == "gate"),
            "{gates}"
        );
        assert!(gates.as_array().unwrap().len() >= 2, "{gates}");
        env.ok(&["job", "pause", "gated"]);

        // A plain program's exit 0 runs it; a failure fails it; an answer
        // that is neither true nor false fails it too.
        for (job, cond) in [("yes", "plain-yes"), ("no", "broken"), ("odd", "chatty")] {
            env.ok(&[
                "job",
                "add",
                job,
                "--handler",
                "noop",
                "--every",
                "1h",
                "--start",
                "now",
                "--condition",
                cond,
            ]);
        }
        eventually("the plain condition's occurrence ran", || async {
            of("yes", Status::Succeeded).await.into_iter().next()
        })
        .await;
        let failed = eventually("the failed condition's occurrence", || async {
            of("no", Status::Failed).await.into_iter().next()
        })
        .await;
        let error = failed.error.unwrap();
        assert!(error.starts_with("condition broken failed: "), "{error}");
        let odd = eventually("the odd answer's occurrence", || async {
            of("odd", Status::Failed).await.into_iter().next()
        })
        .await;
        assert_eq!(
            odd.error.as_deref(),
            Some("condition chatty answered \"maybe\": expected true or false")
        );

        // Refused, one line, nothing written.
        for bad in [
            vec![
                "job",
                "add",
                "x",
                "--handler",
                "noop",
                "--every",
                "1m",
                "--condition",
                "nope",
            ],
            vec![
                "job",
                "add",
                "x",
                "--handler",
                "noop",
                "--daemon",
                "--condition",
                "gate",
            ],
        ] {
            let out = env.cli(&bad);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{bad:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
        assert!(store.job("x").await.unwrap().is_none());

        // The policy on its own: after a run that answered false (already
        // ended when the child is enqueued), and one that will answer true.
        let no = env.enqueue(&["echo", "--payload", "false"]);
        finished(store.as_ref(), no).await;
        let skipped = env.enqueue(&[
            "noop",
            "--after",
            &no.to_string(),
            "--after-policy",
            "condition",
        ]);
        let e = store.execution(skipped).await.unwrap().unwrap();
        assert_eq!(
            (e.status, e.error.as_deref()),
            (Status::Skipped, Some("condition echo answered false"))
        );
        let yes = env.enqueue(&["echo", "--payload", "true", "--in", "1s"]);
        let runs = env.enqueue(&[
            "noop",
            "--after",
            &yes.to_string(),
            "--after-policy",
            "condition",
        ]);
        assert_eq!(
            finished(store.as_ref(), runs).await.status,
            Status::Succeeded
        );
    }
}
