//! One store contract, three backends: every test body here runs against
//! SQLite, a real PostgreSQL and a real MariaDB (a fresh database per test).
//!
//! PostgreSQL comes from `JOBVISOR_TEST_POSTGRES` (an admin URL) or the
//! libpq variables (`PGHOST`, `PGUSER`, ...) that `pg_virtualenv` sets;
//! `scripts/test` provides one. Without a server the PostgreSQL half says so
//! loudly, and under CI (`CI=true`) it fails. MariaDB comes from
//! `JOBVISOR_TEST_MYSQL`, which `scripts/test` sets as it starts one
//! (`scripts/mariadb-virtualenv`).

mod common;

use jobvisor::model::{
    now_micros, AfterPolicy, Chain, ChainOn, JobSpec, Mode, NewExecution, Outcome, Overlap,
    ProgressState, RetryPolicy, Status, UniqueKey, DEFAULT_QUEUE,
};
use jobvisor::schedule::{Misfire, ScheduleSpec};
use jobvisor::store::{
    Batch, CancelRequest, Completion, ExecFilter, JobAdvance, LogPage, LogRow, NodeInfo, Notice,
    QueueChange, Store,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

async fn sqlite_store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    jobvisor::store::open(&dir.path().join("t.db").display().to_string())
        .await
        .unwrap()
        .store()
        .clone()
}

/// A store on a fresh PostgreSQL database, or `None` (said loudly) when no
/// server is configured outside CI.
async fn pg_store() -> Option<Arc<dyn Store>> {
    let url = common::pg_database().await?;
    Some(jobvisor::store::open(&url).await.unwrap().store().clone())
}

/// A store on a fresh MySQL/MariaDB database, or `None` (said loudly) when
/// no server is configured outside CI.
async fn mysql_store() -> Option<Arc<dyn Store>> {
    let url = common::mysql_database().await?;
    Some(jobvisor::store::open(&url).await.unwrap().store().clone())
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$name(super::sqlite_store(&dir).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::pg_store().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::mysql_store().await {
                        super::$name(store).await;
                    }
                }
            )*
        }
    };
}

both!(
    claims_take_the_best_first_and_never_the_same_row_twice,
    a_long_meta_value_is_kept_whole_and_found_by_all_of_it,
    a_clipped_list_cuts_large_payloads_and_says_so,
    completions_are_fenced_and_failures_schedule_linked_retries,
    logs_progress_and_pids_land_together,
    queue_limits_and_paused_queues_bound_claims,
    cancel_requests_end_pending_rows_and_flag_running_ones,
    job_advances_apply_once_however_many_passes_try,
    handlers_nodes_queues_and_stats_round_trip,
    history_daemons_declarations_and_notices,
    a_unique_key_has_one_holder_until_it_ends_and_through_its_hold,
    a_replacing_key_debounces_and_keeps_one_running_and_one_pending,
    dependents_wait_for_every_parent_and_receive_their_outputs,
    a_failed_parent_cancels_success_dependents_through_the_graph,
    a_retried_parent_counts_when_its_last_attempt_ends,
    parents_already_ended_or_missing_decide_at_enqueue,
    concurrent_parent_ends_make_the_child_ready_exactly_once,
    workflows_insert_at_once_and_cancel_every_step_not_ended,
    retention_keeps_parents_of_children_yet_to_run,
    a_chained_job_runs_after_the_execution_that_ended,
    filters_narrow_and_keyset_pages_are_stable_under_inserts,
    retries_and_bulk_cancels_act_only_where_they_may,
    stats_count_runs_apart_from_attempts,
    key_limits_hold_each_key_and_let_other_keys_by,
    rates_hold_starts_per_window_and_say_when_the_next_is_due,
    a_late_claim_is_stamped_when_it_runs,
    the_timeline_holds_what_the_executions_say_ended,
    a_snooze_runs_again_later_without_using_a_retry,
    every_kind_of_limit_holds_at_once,
    ids_are_found_by_a_prefix_or_a_suffix_of_their_hex_digits,
    text_with_a_nul_from_a_worker_is_stored,
    labels_find_every_attempt_and_go_with_their_runs,
    retention_keeps_a_jobs_newest_ended_runs_by_count,
);

async fn retention_keeps_a_jobs_newest_ended_runs_by_count(store: Arc<dyn Store>) {
    let kept = JobSpec {
        keep_last: Some(2),
        ..JobSpec::new("kept", "noop", ScheduleSpec::Daemon)
    };
    assert!(store.insert_job(&kept, None, now_micros()).await.unwrap());
    let mut ids = Vec::new();
    for job in ["kept", "kept", "kept", "kept", "kept", "other", "other"] {
        let e = exec(job, 0, DEFAULT_QUEUE);
        store
            .enqueue(std::slice::from_ref(&e), now_micros())
            .await
            .unwrap();
        let started = now_micros();
        assert_eq!(
            store
                .claim("n1", 1, started)
                .await
                .unwrap()
                .executions
                .len(),
            1
        );
        finish_after(&store, e.id, started, 1, Outcome::Succeeded).await;
        ids.push(e.id);
    }
    // One still pending is no ended run: the two newest ended stay.
    let pending = exec("kept", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&pending), now_micros())
        .await
        .unwrap();
    let later = now_micros() + 60_000_000;
    assert_eq!(store.prune(later, None, &[], 100).await.unwrap().0, 5);
    let left: Vec<Uuid> = store
        .executions(&ExecFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, [pending.id, ids[4], ids[3]]);
    // Per job too; and a job with fewer than N keeps them all.
    assert_eq!(
        store.prune(later, Some("kept"), &[], 100).await.unwrap().0,
        0
    );
}

/// A meta value as long as a run's meta allows is kept whole, and found by
/// the whole of it (MySQL indexes its first 690 characters only).
async fn a_long_meta_value_is_kept_whole_and_found_by_all_of_it(store: Arc<dyn Store>) {
    let long = "é".repeat(1500);
    let mut l = exec("labelled", 0, DEFAULT_QUEUE);
    l.meta.insert("long".into(), long.clone());
    let mut near = exec("labelled", 0, DEFAULT_QUEUE);
    near.meta
        .insert("long".into(), format!("{}x", &long[..long.len() - 2]));
    store
        .enqueue(&[l.clone(), near.clone()], now_micros())
        .await
        .unwrap();
    let filter = ExecFilter {
        meta: [("long".to_string(), long.clone())].into(),
        limit: 100,
        ..Default::default()
    };
    let found = store.executions(&filter).await.unwrap();
    assert_eq!(found.iter().map(|e| e.id).collect::<Vec<_>>(), [l.id]);
    let back = store.execution(l.id).await.unwrap().unwrap();
    assert_eq!(back.meta.get("long"), Some(&long));
}

/// A clipped list (the dashboard's) cuts a large payload in the database
/// and says so, and leaves a small one whole.
async fn a_clipped_list_cuts_large_payloads_and_says_so(store: Arc<dyn Store>) {
    let mut big = exec("clipped", 0, DEFAULT_QUEUE);
    big.payload = json!({ "text": "x".repeat(10_000) });
    let mut small = exec("clipped", 0, DEFAULT_QUEUE);
    small.payload = json!({ "n": 1 });
    store
        .enqueue(&[big.clone(), small.clone()], now_micros())
        .await
        .unwrap();
    let listed = store
        .executions(&ExecFilter {
            clip: Some(100),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let of = |id: Uuid| listed.iter().find(|e| e.id == id).unwrap();
    assert!(of(big.id).payload_truncated);
    let cut = of(big.id).payload.as_str().unwrap().to_string();
    assert!(
        cut.starts_with("{\"text\":\"xxx") && cut.len() == 100,
        "{cut}"
    );
    assert!(!of(small.id).payload_truncated);
    assert_eq!(of(small.id).payload, small.payload);
}

async fn labels_find_every_attempt_and_go_with_their_runs(store: Arc<dyn Store>) {
    use jobvisor::model::Origin;
    let tagged = |tags: &[&str], meta: &[(&str, &str)]| ExecFilter {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        limit: 100,
        ..Default::default()
    };
    let ids = |v: Vec<jobvisor::model::Execution>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let mut e = exec("labelled", 0, DEFAULT_QUEUE);
    e.tags = vec!["a".into(), "b".into()];
    e.meta.insert("k".into(), "v".into());
    e.retry.max_attempts = 2;
    e.retry.backoff_base_ms = 0;
    let plain = exec("labelled", 0, DEFAULT_QUEUE);
    store
        .enqueue(&[e.clone(), plain.clone()], now_micros())
        .await
        .unwrap();
    let found = store.executions(&tagged(&["a", "b"], &[("k", "v")])).await;
    assert_eq!(ids(found.unwrap()), [e.id]);
    assert!(store
        .executions(&tagged(&["a", "c"], &[]))
        .await
        .unwrap()
        .is_empty());
    // Its retry carries them, and says it is one.
    let started = now_micros();
    let claimed = store.claim("n1", 2, started).await.unwrap().executions;
    assert_eq!(claimed.len(), 2);
    finish_after(
        &store,
        e.id,
        started,
        1,
        Outcome::Failed { retryable: true },
    )
    .await;
    finish_after(&store, plain.id, started, 1, Outcome::Succeeded).await;
    let attempts = store
        .executions(&tagged(&["b"], &[("k", "v")]))
        .await
        .unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(
        attempts.iter().map(|a| a.origin).collect::<Vec<_>>(),
        [Origin::Retry, Origin::Manual]
    );
    assert_eq!(attempts[0].tags, ["a", "b"]);
    let retry = ExecFilter {
        origin: Some(Origin::Retry),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(
        ids(store.executions(&retry).await.unwrap()),
        [attempts[0].id]
    );
    // Pruned, a run's labels go with it: an execution given its id later
    // is not found by them.
    let started = now_micros();
    store.claim("n1", 1, started).await.unwrap();
    finish_after(&store, attempts[0].id, started, 1, Outcome::Succeeded).await;
    let later = now_micros() + 60_000_000;
    assert_eq!(store.prune(later, None, &[], 100).await.unwrap().0, 3);
    let again = NewExecution {
        id: e.id,
        ..exec("labelled", 0, DEFAULT_QUEUE)
    };
    store.enqueue(&[again], now_micros()).await.unwrap();
    assert!(store
        .executions(&tagged(&["a"], &[]))
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .executions(&tagged(&[], &[("k", "v")]))
        .await
        .unwrap()
        .is_empty());
}

async fn ids_are_found_by_a_prefix_or_a_suffix_of_their_hex_digits(store: Arc<dyn Store>) {
    use jobvisor::store::IdTable;
    // Ids chosen to share a prefix and a suffix pairwise.
    let ids: Vec<Uuid> = [
        "01a23b71-c420-700b-8836-95eaa92fe2e9",
        "01a23b71-c420-700b-8836-000000000001",
        "01a23b72-0000-700b-8836-0000000fe2e9",
    ]
    .iter()
    .map(|s| Uuid::parse_str(s).unwrap())
    .collect();
    let execs: Vec<NewExecution> = ids
        .iter()
        .map(|id| NewExecution {
            id: *id,
            ..exec("h", 0, "default")
        })
        .collect();
    store.enqueue(&execs, now_micros()).await.unwrap();
    let find = |hex: &'static str| {
        let store = store.clone();
        async move {
            store
                .ids_matching(IdTable::Executions, hex, 10)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        find("01a23b71c420").await,
        [ids[1], ids[0]],
        "a shared prefix"
    );
    assert_eq!(find("01A23B72").await, [ids[2]], "a prefix, either case");
    assert_eq!(find("95eaa92fe2e9").await, [ids[0]], "a suffix");
    assert_eq!(find("fe2e9").await, [ids[0], ids[2]], "a shared suffix");
    assert_eq!(find("000000000001").await, [ids[1]]);
    assert_eq!(
        find("01a23b71c420700b883695eaa92fe2e9").await,
        [ids[0]],
        "all 32"
    );
    assert!(find("abcdef").await.is_empty());
    assert!(find("not hex").await.is_empty());
    assert!(find("%").await.is_empty(), "no LIKE pattern gets through");
    let two = store
        .ids_matching(IdTable::Executions, "01a23b7", 2)
        .await
        .unwrap();
    assert_eq!(two.len(), 2, "at most the limit");
    assert!(store
        .ids_matching(IdTable::Workflows, "01a23b71", 10)
        .await
        .unwrap()
        .is_empty());
}

fn exec(handler: &str, priority: i32, queue: &str) -> NewExecution {
    NewExecution {
        id: Uuid::now_v7(),
        job: Some(handler.into()),
        handler: handler.into(),
        mode: Mode::Inproc,
        payload: json!({"p": priority}),
        retry: RetryPolicy::default(),
        timeout_ms: None,
        priority,
        run_at: now_micros() - 1,
        attempt: 1,
        previous_id: None,
        queue: queue.into(),
        occurrence: None,
        unique: None,
        concurrency_key: None,
        after: Vec::new(),
        after_policy: Default::default(),
        step: None,
        origin: Default::default(),
        meta: Default::default(),
        tags: Vec::new(),
        trace: None,
    }
}

fn limit(n: u32) -> QueueChange {
    QueueChange {
        limit: Some(Some(n)),
        ..Default::default()
    }
}

fn paused(p: bool) -> QueueChange {
    QueueChange {
        paused: Some(p),
        ..Default::default()
    }
}

async fn claims_take_the_best_first_and_never_the_same_row_twice(store: Arc<dyn Store>) {
    // A claim of one takes one, whatever plan the database picks: with the
    // pick in an IN (subquery), PostgreSQL ran it again for each row it
    // updated, each run skipping the rows the last had locked, and a claim
    // of one took both of these.
    let (best, other) = (
        exec("noop", 8, DEFAULT_QUEUE),
        exec("noop", 7, DEFAULT_QUEUE),
    );
    store
        .enqueue(&[best.clone(), other.clone()], now_micros())
        .await
        .unwrap();
    let one = store.claim("n1", 1, now_micros()).await.unwrap().executions;
    assert_eq!(one.iter().map(|c| c.id).collect::<Vec<_>>(), [best.id]);
    assert_eq!(status(&store, best.id).await.status, Status::Running);
    assert_eq!(status(&store, other.id).await.status, Status::Pending);
    let one = store.claim("n1", 1, now_micros()).await.unwrap().executions;
    assert_eq!(one.iter().map(|c| c.id).collect::<Vec<_>>(), [other.id]);

    let mut execs: Vec<_> = (0..10)
        .map(|i| exec("noop", i % 3, DEFAULT_QUEUE))
        .collect();
    let mut future = exec("noop", 9, DEFAULT_QUEUE);
    future.run_at = now_micros() + 3_600_000_000;
    execs.push(future);
    store.enqueue(&execs, now_micros()).await.unwrap();
    let first = store.claim("n1", 3, now_micros()).await.unwrap().executions;
    assert_eq!(first.len(), 3);
    assert!(
        first.iter().all(|c| c.payload["p"] == 2),
        "highest priority first"
    );
    let rest = store
        .claim("n1", 100, now_micros())
        .await
        .unwrap()
        .executions;
    assert_eq!(rest.len(), 7, "the future row is not due");
    assert!(store
        .claim("n1", 100, now_micros())
        .await
        .unwrap()
        .executions
        .is_empty());

    // Four claimers at once over 400 rows: each row goes to exactly one.
    let many: Vec<_> = (0..400).map(|_| exec("noop", 0, DEFAULT_QUEUE)).collect();
    store.enqueue(&many, now_micros()).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = store
                    .claim(&format!("n{n}"), 16, now_micros())
                    .await
                    .unwrap()
                    .executions;
                if c.is_empty() {
                    return got;
                }
                got.extend(c.into_iter().map(|c| c.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), 400);
    assert_eq!(distinct.len(), 400);
}

async fn completions_are_fenced_and_failures_schedule_linked_retries(store: Arc<dyn Store>) {
    let mut e = exec("fail", 0, DEFAULT_QUEUE);
    e.retry = RetryPolicy {
        max_attempts: 2,
        backoff_base_ms: 10,
        backoff_cap_ms: 10,
    };
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    let c = store.claim("n1", 1, now_micros()).await.unwrap().executions;
    assert_eq!(c[0].id, e.id);
    let mut done = Completion::new(e.id, Outcome::Failed { retryable: true }, now_micros());
    done.error = Some("boom".into());
    let f = store
        .apply(&Batch {
            completions: vec![done.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let retry = f[0].retry.expect("a retry");
    // A second (stale) completion of the same attempt changes nothing.
    let again = store
        .apply(&Batch {
            completions: vec![Completion::new(e.id, Outcome::Succeeded, now_micros())],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(again.is_empty());
    // So do late lines and progress of the ended attempt.
    store
        .apply(&Batch {
            logs: vec![LogRow {
                execution_id: e.id,
                seq: 99,
                ts: now_micros(),
                level: "info",
                stream: "stdout",
                message: "late".into(),
                fields: None,
            }],
            progress: vec![(
                e.id,
                ProgressState {
                    percent: Some(99.0),
                    ..Default::default()
                },
            )],
            pids: vec![(e.id, 7)],
            completions: vec![],
        })
        .await
        .unwrap();
    assert!(store.logs(e.id, 0, None, 10).await.unwrap().is_empty());
    let first = store.execution(e.id).await.unwrap().unwrap();
    assert_eq!((first.progress.percent, first.pid), (None, None));
    assert_eq!(first.status, Status::Failed);
    assert_eq!(first.next_id, Some(retry));
    let second = store.execution(retry).await.unwrap().unwrap();
    assert_eq!((second.attempt, second.previous_id), (2, Some(e.id)));
    assert_eq!(second.status, Status::Pending);
    // The last attempt fails for good.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let c = store.claim("n1", 1, now_micros()).await.unwrap().executions;
    assert_eq!(c[0].id, retry);
    let done = Completion::new(retry, Outcome::Failed { retryable: true }, now_micros());
    let f = store
        .apply(&Batch {
            completions: vec![done],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(f[0].retry, None);
}

async fn logs_progress_and_pids_land_together(store: Arc<dyn Store>) {
    let e = exec("logs", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    store.claim("n1", 1, now_micros()).await.unwrap();
    let logs: Vec<LogRow> = (1..=2500)
        .map(|i| LogRow {
            execution_id: e.id,
            seq: i,
            ts: now_micros(),
            level: if i % 2 == 0 { "warn" } else { "info" },
            stream: "log",
            message: format!("line {i}"),
            fields: (i == 1).then(|| r#"{"k":1}"#.to_string()),
        })
        .collect();
    store
        .apply(&Batch {
            logs,
            progress: vec![(
                e.id,
                ProgressState {
                    percent: Some(40.0),
                    message: Some("half".into()),
                    done: Some(2),
                    total: Some(5),
                    data: Some(json!({"stage": "copy"})),
                },
            )],
            pids: vec![(e.id, 4242)],
            completions: vec![],
        })
        .await
        .unwrap();
    // A later report carrying only a message keeps the other values.
    store
        .apply(&Batch {
            progress: vec![(
                e.id,
                ProgressState {
                    message: Some("later".into()),
                    ..Default::default()
                },
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    let got = store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(got.pid, Some(4242));
    assert_eq!(got.progress.percent, Some(40.0));
    assert_eq!(got.progress.message.as_deref(), Some("later"));
    assert_eq!((got.progress.done, got.progress.total), (Some(2), Some(5)));
    assert_eq!(got.progress.data, Some(json!({"stage": "copy"})));
    let all = store.logs(e.id, 0, None, 10_000).await.unwrap();
    assert_eq!(all.len(), 2500);
    assert!(all.iter().enumerate().all(|(i, l)| l.seq == i as i64 + 1));
    assert_eq!(all[0].fields.as_ref().unwrap()["k"], 1);
    let warn = store
        .logs(e.id, 100, Some(jobvisor::Level::Warn), 10_000)
        .await
        .unwrap();
    assert_eq!(warn.len(), 1200);
    assert_eq!(warn[0].seq, 102);
    let tail = store.last_logs(e.id, 10).await.unwrap();
    let seqs: Vec<i64> = tail.iter().map(|l| l.seq).collect();
    assert_eq!(
        seqs,
        (2491..=2500).collect::<Vec<_>>(),
        "the last ten, oldest first"
    );
    assert_eq!(tail[9].message, "line 2500");
    assert_eq!(tail[9].level, jobvisor::Level::Warn);
    // Pages of at most 100 bytes of text and fields, as the dashboard and
    // the API ask for: "line 2490" to "line 2500" are 99 bytes from the
    // end; from the start, "line 1" with its fields `{"k":1}` is 13, to
    // "line 14" 96.
    let page = |from_end| LogPage {
        limit: 500,
        from_end,
        max_bytes: Some(100),
        ..Default::default()
    };
    let seqs = |lines: Vec<jobvisor::model::execution::LogEntry>| {
        lines.iter().map(|l| l.seq).collect::<Vec<_>>()
    };
    let last = store.log_page(e.id, &page(true)).await.unwrap();
    assert_eq!(seqs(last), (2490..=2500).collect::<Vec<_>>());
    let first = store.log_page(e.id, &page(false)).await.unwrap();
    assert_eq!(seqs(first), (1..=14).collect::<Vec<_>>());
    // A search finds a text as written: wildcards of any backend's own
    // (MySQL's LIKE) match only themselves.
    let searched = exec("logs", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&searched), now_micros())
        .await
        .unwrap();
    store.claim("n1", 1, now_micros()).await.unwrap();
    let odd = |seq: i64, message: &str| LogRow {
        execution_id: searched.id,
        seq,
        ts: now_micros(),
        level: "info",
        stream: "log",
        message: message.into(),
        fields: None,
    };
    store
        .apply(&Batch {
            logs: vec![odd(1, "50%_x!y"), odd(2, "50ab_x!y")],
            ..Default::default()
        })
        .await
        .unwrap();
    let search = |text: &str| LogPage {
        contains: Some(text.into()),
        limit: 500,
        ..Default::default()
    };
    let found = store.log_page(e.id, &search("line 25")).await.unwrap();
    let mut expect = vec![25];
    expect.extend(250..=259);
    expect.push(2500);
    assert_eq!(seqs(found), expect);
    let found = store.log_page(searched.id, &search("0%_x!")).await;
    assert_eq!(seqs(found.unwrap()), [1]);
    assert!(store
        .last_logs(Uuid::now_v7(), 10)
        .await
        .unwrap()
        .is_empty());

    // The fence: in one batch, a line of a running execution is stored, a
    // line of one that is not running (pending here) is not, and a line
    // sent twice is stored once; after its end, nothing more is.
    let line = |id: Uuid, seq: i64| LogRow {
        execution_id: id,
        seq,
        ts: now_micros(),
        level: "info",
        stream: "log",
        message: format!("late {seq}"),
        fields: None,
    };
    let pending = exec("logs", 0, DEFAULT_QUEUE);
    let mut later = pending.clone();
    later.run_at = now_micros() + 3_600_000_000;
    store.enqueue(&[later], now_micros()).await.unwrap();
    let batch = Batch {
        logs: vec![line(e.id, 2501), line(pending.id, 1), line(e.id, 2501)],
        ..Default::default()
    };
    store.apply(&batch).await.unwrap();
    assert_eq!(store.logs(e.id, 2500, None, 10).await.unwrap().len(), 1);
    assert!(store
        .logs(pending.id, 0, None, 10)
        .await
        .unwrap()
        .is_empty());
    let end = Batch {
        completions: vec![Completion::new(e.id, Outcome::Succeeded, now_micros())],
        ..Default::default()
    };
    store.apply(&end).await.unwrap();
    let after_end = Batch {
        logs: vec![line(e.id, 2502)],
        ..Default::default()
    };
    store.apply(&after_end).await.unwrap();
    assert_eq!(store.logs(e.id, 0, None, 10_000).await.unwrap().len(), 2501);
}

async fn queue_limits_and_paused_queues_bound_claims(store: Arc<dyn Store>) {
    store.set_queue("q", &limit(2)).await.unwrap();
    store.set_queue("held", &paused(true)).await.unwrap();
    let q: Vec<_> = (0..5).map(|_| exec("noop", 0, "q")).collect();
    let held = exec("noop", 5, "held");
    let free = exec("noop", 0, DEFAULT_QUEUE);
    store.enqueue(&q, now_micros()).await.unwrap();
    store
        .enqueue(&[held.clone(), free.clone()], now_micros())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = store
        .claim("n1", 100, now_micros())
        .await
        .unwrap()
        .executions;
    let ids: HashSet<Uuid> = c.iter().map(|c| c.id).collect();
    assert_eq!(c.len(), 3, "two of q and the free one: {c:?}");
    assert!(ids.contains(&free.id) && !ids.contains(&held.id));
    assert!(store
        .claim("n1", 100, now_micros())
        .await
        .unwrap()
        .executions
        .is_empty());
    let queues = store.queues().await.unwrap();
    let qi = queues.iter().find(|x| x.name == "q").unwrap();
    assert_eq!((qi.max_running, qi.running, qi.pending), (Some(2), 2, 3));
    assert!(queues.iter().find(|x| x.name == "held").unwrap().paused);
    store.set_queue("held", &paused(false)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = store
        .claim("n1", 100, now_micros())
        .await
        .unwrap()
        .executions;
    assert_eq!(c.iter().map(|c| c.id).collect::<Vec<_>>(), vec![held.id]);
}

async fn cancel_requests_end_pending_rows_and_flag_running_ones(store: Arc<dyn Store>) {
    let a = exec("sleep", 1, DEFAULT_QUEUE);
    let b = exec("sleep", 0, DEFAULT_QUEUE);
    store
        .enqueue(&[a.clone(), b.clone()], now_micros())
        .await
        .unwrap();
    store.claim("n1", 1, now_micros()).await.unwrap();
    let now = now_micros();
    assert_eq!(
        store.request_cancel(a.id, "stop", now).await.unwrap(),
        CancelRequest::Requested
    );
    assert_eq!(
        store.request_cancel(b.id, "stop", now).await.unwrap(),
        CancelRequest::CancelledPending
    );
    assert_eq!(
        store
            .request_cancel(Uuid::now_v7(), "stop", now)
            .await
            .unwrap(),
        CancelRequest::NotFound
    );
    assert_eq!(
        store.request_cancel(b.id, "again", now).await.unwrap(),
        CancelRequest::AlreadyFinished(Status::Cancelled)
    );
    assert_eq!(
        store.cancel_requests("n1").await.unwrap(),
        vec![(a.id, "stop".to_string())]
    );
    assert!(store.cancel_requests("n2").await.unwrap().is_empty());
}

async fn job_advances_apply_once_however_many_passes_try(store: Arc<dyn Store>) {
    let spec = JobSpec {
        mode: Some(Mode::Inproc),
        overlap: Overlap::Allow,
        ..JobSpec::new(
            "tick",
            "noop",
            ScheduleSpec::Interval {
                every_ms: 1000,
                anchor: 0,
            },
        )
    };
    let due = now_micros() - 1000;
    assert!(store
        .insert_job(&spec, Some(due), now_micros())
        .await
        .unwrap());
    assert!(
        !store
            .insert_job(&spec, Some(due), now_micros())
            .await
            .unwrap(),
        "duplicate"
    );
    let jobs = store.due_jobs(now_micros(), 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    let step = |occ: i64| {
        let mut e = exec("noop", 0, DEFAULT_QUEUE);
        e.job = Some("tick".into());
        e.occurrence = Some(occ);
        JobAdvance {
            name: "tick".into(),
            expected_next: Some(due),
            expected_runs: 0,
            next: Some(due + 1_000_000),
            run: Some(e),
            condition: None,
            missed: 0,
            complete: false,
            daemon_streak: None,
        }
    };
    // Two passes that read the same state: only the first applies.
    assert_eq!(
        store
            .advance_jobs(&[step(due)], now_micros())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .advance_jobs(&[step(due)], now_micros())
            .await
            .unwrap(),
        0
    );
    let job = store.job("tick").await.unwrap().unwrap();
    assert_eq!((job.runs, job.next_run_at), (1, Some(due + 1_000_000)));
    let execs = store
        .executions(&ExecFilter {
            job: Some("tick".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].occurrence, Some(due));
    assert_eq!(store.next_due().await.unwrap(), Some(due + 1_000_000));
    assert!(store
        .set_job_paused("tick", true, now_micros())
        .await
        .unwrap());
    assert!(store.due_jobs(i64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .active_jobs(&["tick".into(), "other".into()])
            .await
            .unwrap(),
        HashSet::from(["tick".to_string()])
    );
    assert!(store.remove_job("tick").await.unwrap());
    assert!(store.job("tick").await.unwrap().is_none());

    // Its run ends; the job is added again and counts its runs anew. The
    // occurrence that ended is in the history (PostgreSQL's other
    // partition, where the insert's own conflict does not look): it is
    // passed over, not run twice.
    run_to_end(&store, execs[0].id, Outcome::Succeeded).await;
    assert!(store
        .insert_job(&spec, Some(due), now_micros())
        .await
        .unwrap());
    assert_eq!(
        store
            .advance_jobs(&[step(due)], now_micros())
            .await
            .unwrap(),
        0,
        "an occurrence already run"
    );
    let job = store.job("tick").await.unwrap().unwrap();
    assert_eq!(job.runs, 0);
    // The pass moved the job on all the same: its next occurrence runs.
    let mut later = step(due + 1_000_000);
    later.expected_next = Some(due + 1_000_000);
    later.next = Some(due + 2_000_000);
    assert_eq!(store.advance_jobs(&[later], now_micros()).await.unwrap(), 1);
}

async fn handlers_nodes_queues_and_stats_round_trip(store: Arc<dyn Store>) {
    use jobvisor::model::{HandlerKind, HandlerSpec, ProcessLimits};
    let h = HandlerSpec {
        name: "py".into(),
        kind: HandlerKind::Exec {
            program: "/usr/bin/python3".into(),
            args: vec!["-u".into()],
        },
        mode: Mode::Process,
        limits: ProcessLimits::default(),
    };
    store.put_handler(&h, now_micros()).await.unwrap();
    assert_eq!(store.handler("py").await.unwrap(), Some(h.clone()));
    assert_eq!(store.handlers().await.unwrap(), vec![h]);
    assert!(store.remove_handler("py").await.unwrap());
    assert!(!store.remove_handler("py").await.unwrap());

    let now = now_micros();
    let node = NodeInfo {
        id: "node-a".into(),
        hostname: "h".into(),
        pid: 1,
        started_at: now,
        heartbeat_at: now,
        stopped_at: None,
        concurrency: Some(8),
    };
    store.register_node(&node).await.unwrap();
    store.heartbeat_node("node-a", now + 5).await.unwrap();
    store.set_node_concurrency("node-a", 3).await.unwrap();
    assert_eq!(store.live_nodes(now).await.unwrap()[0].concurrency, Some(3));
    assert_eq!(
        store.live_nodes(now).await.unwrap()[0].heartbeat_at,
        now + 5
    );
    let e = exec("noop", 0, DEFAULT_QUEUE);
    store.enqueue(std::slice::from_ref(&e), now).await.unwrap();
    store.claim("node-a", 1, now_micros()).await.unwrap();
    let on = |node: &str| ExecFilter {
        node: Some(node.into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.executions(&on("node-a")).await.unwrap()[0].id, e.id);
    assert!(store.executions(&on("node-b")).await.unwrap().is_empty());
    let foreign = store.foreign_running("node-b").await.unwrap();
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].node.as_ref().unwrap().id, "node-a");
    store.stop_node("node-a", now + 10).await.unwrap();
    assert!(store.live_nodes(now).await.unwrap().is_empty());
    let mut c = Completion::new(e.id, Outcome::Succeeded, now_micros());
    c.output = Some(json!({"ok": true}));
    store
        .apply(&Batch {
            completions: vec![c],
            ..Default::default()
        })
        .await
        .unwrap();
    let stats = store.stats(Some("noop")).await.unwrap();
    assert_eq!(
        (stats[0].runs, stats[0].attempts, stats[0].succeeded),
        (1, 1, 1)
    );
    assert_eq!(stats[0].success_rate, Some(1.0));
    assert!(stats[0].p95_ms.is_some() && stats[0].avg_ms.is_some());
    assert!(!store.has_due(now_micros()).await.unwrap());
}

/// Completes `e` (claimed) as `outcome`, `ms` after it started.
async fn finish_after(store: &Arc<dyn Store>, id: Uuid, started: i64, ms: i64, outcome: Outcome) {
    let mut c = Completion::new(id, outcome, started + ms * 1000);
    c.error = Some(format!("after {ms} ms"));
    let batch = Batch {
        completions: vec![c],
        ..Default::default()
    };
    store.apply(&batch).await.unwrap();
}

async fn history_daemons_declarations_and_notices(store: Arc<dyn Store>) {
    // Migrating again is a no-op. Both backends have notices: PostgreSQL's
    // NOTIFY, SQLite's file changes (tests of their own below).
    store.migrate().await.unwrap();
    let notices = store.listen().await.unwrap();
    assert!(notices.is_some(), "no notices");

    // 20 runs of 1..=20 ms: p95 by nearest rank is the 19th (ceil(0.95 * 20)).
    let mut ids = Vec::new();
    for ms in 1..=20 {
        let e = exec("timed", 0, DEFAULT_QUEUE);
        store
            .enqueue(std::slice::from_ref(&e), now_micros())
            .await
            .unwrap();
        // A second ahead: the claim stamps no earlier than it runs, and
        // the durations below are measured from this stamp.
        let started = now_micros() + 1_000_000;
        let claimed = store.claim("n1", 1, started).await.unwrap().executions;
        assert_eq!(claimed[0].id, e.id);
        let outcome = if ms == 20 {
            Outcome::Failed { retryable: false }
        } else {
            Outcome::Succeeded
        };
        finish_after(&store, e.id, started, ms, outcome).await;
        ids.push(e.id);
    }
    let stats = store.stats(None).await.unwrap();
    let timed = stats.iter().find(|s| s.job == "timed").unwrap();
    assert_eq!(
        (timed.runs, timed.attempts, timed.succeeded, timed.failed),
        (20, 20, 19, 1)
    );

    assert_eq!(
        (timed.min_ms, timed.p95_ms, timed.max_ms),
        (Some(1.0), Some(19.0), Some(20.0))
    );
    assert_eq!(timed.avg_ms, Some(10.5));
    assert_eq!(timed.last_error.as_deref(), Some("after 20 ms"));
    assert_eq!(timed.success_rate, Some(0.95));
    assert_eq!(
        store.counts().await.unwrap(),
        vec![
            ("timed".to_string(), "failed".to_string(), 1),
            ("timed".to_string(), "succeeded".to_string(), 19)
        ]
    );

    // A pending one is active; pruning takes only finished ones, up to the
    // limit, and never of a job in `except`.
    let pending = exec("timed", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&pending), now_micros())
        .await
        .unwrap();
    assert_eq!(
        store.active_executions("timed").await.unwrap(),
        vec![pending.id]
    );
    let later = now_micros() + 60_000_000;
    assert_eq!(
        store
            .prune(later, None, &["timed".into()], 100)
            .await
            .unwrap(),
        (0, 0)
    );
    assert_eq!(
        store.prune(later, Some("timed"), &[], 5).await.unwrap().0,
        5
    );
    assert_eq!(store.prune(later, None, &[], 100).await.unwrap().0, 15);
    assert!(store.execution(ids[19]).await.unwrap().is_none());
    assert!(store.execution(pending.id).await.unwrap().is_some());

    // A daemon with no execution is idle, and never ran.
    let daemon = JobSpec {
        payload: json!({"k": 1}),
        misfire: Misfire::Skip,
        ..JobSpec::new("keeper", "noop", ScheduleSpec::Daemon)
    };
    assert!(store.insert_job(&daemon, None, now_micros()).await.unwrap());
    let jobs = store.jobs().await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].spec, daemon);
    let idle = store.idle_daemons().await.unwrap();
    assert_eq!((idle.len(), idle[0].last_run), (1, None));

    // Declarations are replaced whole, per kind.
    let names: Vec<String> = (0..3).map(|i| format!("h{i}")).collect();
    store.set_declared("handler", &names).await.unwrap();
    store.set_declared("job", &["keeper".into()]).await.unwrap();
    store.set_declared("handler", &names[1..]).await.unwrap();
    assert_eq!(store.declared("handler").await.unwrap(), names[1..]);
    assert_eq!(
        store.declared("job").await.unwrap(),
        vec!["keeper".to_string()]
    );
}

/// PostgreSQL: the listener (a connection of its own) hears of new work,
/// this store's included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notices_say_what_changed() {
    let Some(store) = pg_store().await else {
        return;
    };
    let mut rx = store.listen().await.unwrap().expect("LISTEN");
    store
        .enqueue(&[exec("timed", 0, DEFAULT_QUEUE)], now_micros())
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv()).await;
    assert!(matches!(got, Ok(Some(Notice::Work))), "{got:?}");
    // Under a limit, an end frees a slot: every node hears of it, since
    // held executions are not polled for often.
    let within = std::time::Duration::from_secs(30);
    store.set_queue("capped", &limit(1)).await.unwrap();
    // (A change of limits is heard as work.)
    assert_eq!(next_notice(&mut rx, within).await, Some(Notice::Work));
    let e = exec("timed", 0, "capped");
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    assert_eq!(next_notice(&mut rx, within).await, Some(Notice::Work));
    // (The first execution, in the default queue, is claimed first.)
    let claimed = store.claim("n1", 2, now_micros()).await.unwrap().executions;
    assert!(claimed.iter().any(|c| c.id == e.id), "{claimed:?}");
    let end = Batch {
        completions: vec![Completion::new(e.id, Outcome::Succeeded, now_micros())],
        ..Default::default()
    };
    store.apply(&end).await.unwrap();
    assert_eq!(next_notice(&mut rx, within).await, Some(Notice::Work));
}

/// PostgreSQL keeps what has yet to end and the history in two partitions
/// of `executions`, and an end moves its row from one to the other. A
/// cancel that waited on that row's lock meanwhile is failed by the server
/// (a serialization failure): it runs again and finds the execution ended,
/// rather than reporting an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_cancel_that_waited_on_an_end_finds_it_ended() {
    use sqlx::Connection;
    let Some(url) = common::pg_database().await else {
        return;
    };
    let store = jobvisor::store::open(&url).await.unwrap().store().clone();
    let e = exec("noop", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    assert_eq!(
        store
            .claim("n1", 1, now_micros())
            .await
            .unwrap()
            .executions
            .len(),
        1
    );
    // Another session ends it, and holds its transaction open.
    let mut ender = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut ender).await.unwrap();
    sqlx::query("UPDATE executions SET status = 'succeeded', finished_at = 1 WHERE id = $1")
        .bind(e.id)
        .execute(&mut ender)
        .await
        .unwrap();
    let cancel = tokio::spawn({
        let store = store.clone();
        async move { store.request_cancel(e.id, "stop", now_micros()).await }
    });
    // The cancel waits on the row's lock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut ender)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cancel never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sqlx::query("COMMIT").execute(&mut ender).await.unwrap();
    assert_eq!(
        cancel.await.unwrap().unwrap(),
        CancelRequest::AlreadyFinished(Status::Succeeded)
    );
}

/// A PostgreSQL session that hears events says so (a shared advisory lock
/// held while it listens), so that nodes publish only while one hears; it
/// hears what is published, and when it stops, nobody hears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_are_heard_only_while_a_session_listens() {
    let Some(url) = common::pg_database().await else {
        return;
    };
    let store = jobvisor::store::open(&url).await.unwrap().store().clone();
    assert!(!store.events_heard().await.unwrap(), "nobody listens yet");
    let mut rx = store.listen_events().await.unwrap().expect("LISTEN");
    let other = jobvisor::store::open(&url).await.unwrap().store().clone();
    assert!(
        other.events_heard().await.unwrap(),
        "seen from another pool"
    );
    other.publish_events(r#"[{"a":1}]"#).await.unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv()).await;
    assert_eq!(got, Ok(Some(r#"[{"a":1}]"#.to_string())));
    drop(rx);
    common::eventually("the hearing lock to go with its session", || async {
        (!other.events_heard().await.unwrap()).then_some(())
    })
    .await;
}

/// The next notice within `within`, if any.
async fn next_notice(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>,
    within: std::time::Duration,
) -> Option<Notice> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

/// SQLite: the WAL watch announces that it watches, then every commit of
/// another connection (another process's store, here a second store on the
/// file), and none of this store's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_notices_announce_other_writers_and_not_its_own() {
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(&dir).await;
    let other = sqlite_store(&dir).await;
    let mut rx = store.listen().await.unwrap().expect("a watch");
    assert!(matches!(
        next_notice(&mut rx, Duration::from_secs(30)).await,
        Some(Notice::Watched)
    ));
    for round in 0..3 {
        other
            .enqueue(&[exec("timed", 0, DEFAULT_QUEUE)], now_micros())
            .await
            .unwrap();
        let got = next_notice(&mut rx, Duration::from_secs(30)).await;
        assert!(
            matches!(got, Some(Notice::Changed)),
            "round {round}: {got:?}"
        );
        // This store's own writes (the recheck 20 ms after each included).
        for _ in 0..3 {
            store
                .enqueue(&[exec("timed", 0, DEFAULT_QUEUE)], now_micros())
                .await
                .unwrap();
        }
        store.heartbeat_node("n1", now_micros()).await.unwrap();
        let got = next_notice(&mut rx, Duration::from_millis(300)).await;
        assert!(
            got.is_none(),
            "round {round}: its own write announced: {got:?}"
        );
    }
}

fn keyed(key: &str, hold_ms: Option<u64>) -> NewExecution {
    let mut e = exec("uniq", 0, DEFAULT_QUEUE);
    e.unique = Some(UniqueKey {
        key: key.into(),
        hold_ms,
        replace: false,
    });
    e
}

/// Claims `id` (the only due execution) and ends it as `outcome`.
async fn run_to_end(
    store: &Arc<dyn Store>,
    id: Uuid,
    outcome: Outcome,
) -> Vec<jobvisor::store::Finished> {
    let claimed = store
        .claim("n1", 10, now_micros())
        .await
        .unwrap()
        .executions;
    assert_eq!(claimed.iter().map(|c| c.id).collect::<Vec<_>>(), vec![id]);
    let batch = Batch {
        completions: vec![Completion::new(id, outcome, now_micros())],
        ..Default::default()
    };
    store.apply(&batch).await.unwrap()
}

async fn a_unique_key_has_one_holder_until_it_ends_and_through_its_hold(store: Arc<dyn Store>) {
    // 50 enqueues of one key at once: exactly one execution, and every
    // enqueue names it.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .enqueue(&[keyed("k", None)], now_micros())
                    .await
                    .unwrap()[0]
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let holder = got
        .iter()
        .find(|e| !e.duplicate)
        .expect("one enqueue inserts")
        .id;
    assert_eq!(got.iter().filter(|e| !e.duplicate).count(), 1, "{got:?}");
    assert!(got.iter().all(|e| e.id == holder), "{got:?}");
    let all = ExecFilter {
        job: Some("uniq".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.executions(&all).await.unwrap().len(), 1);
    assert_eq!(
        store
            .execution(holder)
            .await
            .unwrap()
            .unwrap()
            .unique_key
            .as_deref(),
        Some("k")
    );
    // In one batch, the second of a key is a duplicate of the first.
    let (a, b) = (keyed("pair", None), keyed("pair", None));
    let out = store.enqueue(&[a.clone(), b], now_micros()).await.unwrap();
    assert_eq!(
        out.iter().map(|e| (e.id, e.duplicate)).collect::<Vec<_>>(),
        vec![(a.id, false), (a.id, true)]
    );
    store
        .request_cancel(a.id, "not this test's", now_micros())
        .await
        .unwrap();

    // Running still holds it; the end frees it.
    run_to_end(&store, holder, Outcome::Succeeded).await;
    let next = keyed("k", None);
    let out = store
        .enqueue(std::slice::from_ref(&next), now_micros())
        .await
        .unwrap();
    assert_eq!(
        (out[0].id, out[0].duplicate),
        (next.id, false),
        "freed at the end"
    );

    // A cancel before it started frees it too.
    store
        .request_cancel(next.id, "changed my mind", now_micros())
        .await
        .unwrap();
    let again = keyed("k", None);
    assert!(
        !store
            .enqueue(std::slice::from_ref(&again), now_micros())
            .await
            .unwrap()[0]
            .duplicate
    );

    // A retry keeps the key: the holder is now the retry.
    let mut flaky = keyed("k2", None);
    flaky.retry.max_attempts = 2;
    flaky.retry.backoff_base_ms = 0;
    store
        .enqueue(std::slice::from_ref(&flaky), now_micros())
        .await
        .unwrap();
    store
        .request_cancel(again.id, "out of the way", now_micros())
        .await
        .unwrap();
    let finished = run_to_end(&store, flaky.id, Outcome::Failed { retryable: true }).await;
    let retry = finished[0].retry.expect("a retry");
    let dup = store
        .enqueue(&[keyed("k2", None)], now_micros())
        .await
        .unwrap()[0];
    assert_eq!((dup.id, dup.duplicate), (retry, true));
    assert_eq!(
        store
            .execution(retry)
            .await
            .unwrap()
            .unwrap()
            .unique_key
            .as_deref(),
        Some("k2")
    );
    store
        .request_cancel(retry, "done with it", now_micros())
        .await
        .unwrap();

    // With a hold, the key counts after the end, until the hold is over.
    let held = keyed("t", Some(60_000));
    store
        .enqueue(std::slice::from_ref(&held), now_micros())
        .await
        .unwrap();
    run_to_end(&store, held.id, Outcome::Succeeded).await;
    let dup = store
        .enqueue(&[keyed("t", Some(60_000))], now_micros())
        .await
        .unwrap()[0];
    assert_eq!(
        (dup.id, dup.duplicate),
        (held.id, true),
        "held for a minute"
    );
    let later = now_micros() + 61_000_000;
    let after = keyed("t", Some(60_000));
    let out = store
        .enqueue(std::slice::from_ref(&after), later)
        .await
        .unwrap()[0];
    assert_eq!(
        (out.id, out.duplicate),
        (after.id, false),
        "free after the hold"
    );
}

async fn a_replacing_key_debounces_and_keeps_one_running_and_one_pending(store: Arc<dyn Store>) {
    let replacing = |n: i64| {
        let mut e = keyed("r", None);
        e.unique.as_mut().unwrap().replace = true;
        e.payload = json!({ "n": n });
        e
    };
    let payload = |id| {
        let store = store.clone();
        async move { store.execution(id).await.unwrap().unwrap().payload["n"].clone() }
    };
    // Not started: a replace changes the holder's payload and due time.
    let first = replacing(1);
    store
        .enqueue(std::slice::from_ref(&first), now_micros())
        .await
        .unwrap();
    let mut second = replacing(2);
    second.run_at = first.run_at + 5;
    let out = store
        .enqueue(std::slice::from_ref(&second), now_micros())
        .await
        .unwrap()[0];
    assert_eq!(
        (out.id, out.duplicate, out.replaced),
        (first.id, true, true)
    );
    assert_eq!(payload(first.id).await, json!(2));
    let e = store.execution(first.id).await.unwrap().unwrap();
    assert_eq!(e.run_at.micros(), first.run_at + 5);

    // Running: the next one waits to follow it, and replaces itself.
    let claimed = store
        .claim("n1", 10, now_micros())
        .await
        .unwrap()
        .executions;
    assert_eq!(claimed[0].id, first.id);
    let third = replacing(3);
    let out = store
        .enqueue(std::slice::from_ref(&third), now_micros())
        .await
        .unwrap()[0];
    assert_eq!(
        (out.id, out.duplicate, out.replaced),
        (third.id, false, false)
    );
    assert_eq!(
        store.execution(third.id).await.unwrap().unwrap().status,
        Status::Waiting
    );
    let out = store.enqueue(&[replacing(4)], now_micros()).await.unwrap()[0];
    assert_eq!(
        (out.id, out.duplicate, out.replaced),
        (third.id, true, true)
    );
    assert_eq!(payload(third.id).await, json!(4));
    assert!(
        store
            .claim("n1", 10, now_micros())
            .await
            .unwrap()
            .executions
            .is_empty(),
        "a follower waits"
    );
    // A plain duplicate names the running holder.
    let dup = store
        .enqueue(&[keyed("r", None)], now_micros())
        .await
        .unwrap()[0];
    assert_eq!((dup.id, dup.duplicate), (first.id, true));

    // The holder's end hands the key to the follower, which becomes due.
    let batch = Batch {
        completions: vec![Completion::new(first.id, Outcome::Succeeded, now_micros())],
        ..Default::default()
    };
    store.apply(&batch).await.unwrap();
    assert_eq!(
        store.execution(third.id).await.unwrap().unwrap().status,
        Status::Pending
    );
    let dup = store
        .enqueue(&[keyed("r", None)], now_micros())
        .await
        .unwrap()[0];
    assert_eq!((dup.id, dup.duplicate), (third.id, true));
    let claimed = store
        .claim("n1", 10, now_micros())
        .await
        .unwrap()
        .executions;
    assert_eq!(
        claimed.iter().map(|c| c.id).collect::<Vec<_>>(),
        vec![third.id]
    );

    // A cancelled follower is forgotten: the next replace makes a new one.
    let follower = replacing(5);
    store
        .enqueue(std::slice::from_ref(&follower), now_micros())
        .await
        .unwrap();
    assert_eq!(
        store
            .request_cancel(follower.id, "no", now_micros())
            .await
            .unwrap(),
        CancelRequest::CancelledPending
    );
    let again = replacing(6);
    let out = store
        .enqueue(std::slice::from_ref(&again), now_micros())
        .await
        .unwrap()[0];
    assert_eq!((out.id, out.duplicate), (again.id, false));
    assert_eq!(
        store.execution(again.id).await.unwrap().unwrap().status,
        Status::Waiting
    );
}

/// An execution of `handler` after `parents`.
fn after(handler: &str, parents: &[Uuid], policy: AfterPolicy) -> NewExecution {
    let mut e = exec(handler, 0, DEFAULT_QUEUE);
    e.after = parents.to_vec();
    e.after_policy = policy;
    e
}

/// Claims exactly `ids` (the due executions) and returns the claims.
async fn claim_exactly(store: &Arc<dyn Store>, ids: &[Uuid]) -> Vec<jobvisor::store::Claimed> {
    let claimed = store
        .claim("n1", 1000, now_micros())
        .await
        .unwrap()
        .executions;
    let mut got: Vec<Uuid> = claimed.iter().map(|c| c.id).collect();
    let mut want = ids.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want, "claimed");
    claimed
}

/// Ends running executions: `(id, outcome, output)`.
async fn end(
    store: &Arc<dyn Store>,
    ends: Vec<(Uuid, Outcome, Option<serde_json::Value>)>,
) -> Vec<jobvisor::store::Finished> {
    let completions = ends
        .into_iter()
        .map(|(id, outcome, output)| {
            let mut c = Completion::new(id, outcome, now_micros());
            c.output = output;
            c
        })
        .collect();
    let batch = Batch {
        completions,
        ..Default::default()
    };
    store.apply(&batch).await.unwrap()
}

async fn status(store: &Arc<dyn Store>, id: Uuid) -> jobvisor::model::Execution {
    store.execution(id).await.unwrap().unwrap()
}

async fn dependents_wait_for_every_parent_and_receive_their_outputs(store: Arc<dyn Store>) {
    let (a, b) = (exec("a", 0, DEFAULT_QUEUE), exec("b", 0, DEFAULT_QUEUE));
    let c = after("c", &[a.id, b.id], AfterPolicy::Success);
    let d = after("d", &[c.id], AfterPolicy::Finished);
    let all = [a.clone(), b.clone(), c.clone(), d.clone()];
    store.enqueue(&all, now_micros()).await.unwrap();
    assert_eq!(status(&store, c.id).await.status, Status::Waiting);
    assert_eq!(status(&store, c.id).await.waiting_on, 2);
    assert_eq!(status(&store, d.id).await.status, Status::Waiting);
    let links = store.links(c.id).await.unwrap();
    let mut parents = vec![a.id, b.id];
    parents.sort();
    assert_eq!(links.parents, parents);
    assert_eq!(links.children, vec![d.id]);

    // Only the parents are claimable; one ending is not enough.
    claim_exactly(&store, &[a.id, b.id]).await;
    end(
        &store,
        vec![(a.id, Outcome::Succeeded, Some(json!({"rows": 3})))],
    )
    .await;
    let e = status(&store, c.id).await;
    assert_eq!((e.status, e.waiting_on), (Status::Waiting, 1));
    assert!(!store.has_due(now_micros()).await.unwrap());
    end(&store, vec![(b.id, Outcome::Succeeded, None)]).await;
    assert_eq!(status(&store, c.id).await.status, Status::Pending);

    // The child's claim carries its parents' ends, in id order.
    let claimed = claim_exactly(&store, &[c.id]).await;
    let inputs = &claimed[0].inputs;
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].id, a.id.to_string());
    assert_eq!(inputs[0].handler, "a");
    assert_eq!(inputs[0].status, "succeeded");
    assert_eq!(inputs[0].output, json!({"rows": 3}));
    assert_eq!(inputs[1].id, b.id.to_string());
    assert_eq!(inputs[1].output, serde_json::Value::Null);
    // A child of policy `finished` runs after a failure too.
    end(
        &store,
        vec![(c.id, Outcome::Failed { retryable: false }, None)],
    )
    .await;
    let claimed = claim_exactly(&store, &[d.id]).await;
    assert_eq!(claimed[0].inputs[0].status, "failed");
    // A run with no parents gets no inputs.
    store
        .enqueue(&[exec("solo", 0, DEFAULT_QUEUE)], now_micros())
        .await
        .unwrap();
    let solo = store
        .claim("n1", 10, now_micros())
        .await
        .unwrap()
        .executions;
    assert!(solo[0].inputs.is_empty());
}

async fn a_failed_parent_cancels_success_dependents_through_the_graph(store: Arc<dyn Store>) {
    // a -> c (success) -> d (success)
    //        \-> f (finished)
    // a -> g (finished)
    let a = exec("a", 0, DEFAULT_QUEUE);
    let c = after("c", &[a.id], AfterPolicy::Success);
    let d = after("d", &[c.id], AfterPolicy::Success);
    let f = after("f", &[c.id], AfterPolicy::Finished);
    let g = after("g", &[a.id], AfterPolicy::Finished);
    let all = [a.clone(), c.clone(), d.clone(), f.clone(), g.clone()];
    store.enqueue(&all, now_micros()).await.unwrap();
    claim_exactly(&store, &[a.id]).await;
    end(
        &store,
        vec![(a.id, Outcome::Failed { retryable: false }, None)],
    )
    .await;

    let c_now = status(&store, c.id).await;
    assert_eq!(c_now.status, Status::Cancelled);
    assert_eq!(c_now.error, Some(format!("upstream {} failed", a.id)));
    assert_eq!(c_now.cancel_outcome.as_deref(), Some("before-start"));
    let d_now = status(&store, d.id).await;
    assert_eq!(d_now.status, Status::Cancelled);
    assert_eq!(d_now.error, Some(format!("upstream {} failed", c.id)));
    // Those that run however their parents ended do.
    assert_eq!(status(&store, f.id).await.status, Status::Pending);
    assert_eq!(status(&store, g.id).await.status, Status::Pending);
    let claimed = claim_exactly(&store, &[f.id, g.id]).await;
    let f_inputs = &claimed.iter().find(|x| x.id == f.id).unwrap().inputs;
    assert_eq!(f_inputs[0].status, "cancelled");

    // A cancel by an operator propagates alike.
    let p = exec("p", 0, DEFAULT_QUEUE);
    let q = after("q", &[p.id], AfterPolicy::Success);
    let r = after("r", &[q.id], AfterPolicy::Success);
    store
        .enqueue(&[p.clone(), q.clone(), r.clone()], now_micros())
        .await
        .unwrap();
    assert_eq!(
        store
            .request_cancel(p.id, "no", now_micros())
            .await
            .unwrap(),
        CancelRequest::CancelledPending
    );
    assert_eq!(status(&store, q.id).await.status, Status::Cancelled);
    assert_eq!(status(&store, r.id).await.status, Status::Cancelled);
    // A waiting dependent can be cancelled itself, and its own children follow.
    let x = exec("x", 0, DEFAULT_QUEUE);
    let y = after("y", &[x.id], AfterPolicy::Success);
    let z = after("z", &[y.id], AfterPolicy::Success);
    store
        .enqueue(&[x.clone(), y.clone(), z.clone()], now_micros())
        .await
        .unwrap();
    assert_eq!(
        store
            .request_cancel(y.id, "no", now_micros())
            .await
            .unwrap(),
        CancelRequest::CancelledPending
    );
    assert_eq!(status(&store, z.id).await.status, Status::Cancelled);
    assert_eq!(status(&store, x.id).await.status, Status::Pending);
    // Nothing is left waiting.
    let waiting = store
        .executions(&ExecFilter {
            statuses: vec![Status::Waiting],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(waiting.is_empty(), "{waiting:?}");
}

async fn a_retried_parent_counts_when_its_last_attempt_ends(store: Arc<dyn Store>) {
    let mut a = exec("a", 0, DEFAULT_QUEUE);
    a.retry = RetryPolicy {
        max_attempts: 2,
        backoff_base_ms: 1,
        backoff_cap_ms: 1,
    };
    let c = after("c", &[a.id], AfterPolicy::Success);
    store
        .enqueue(&[a.clone(), c.clone()], now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[a.id]).await;
    let done = end(
        &store,
        vec![(a.id, Outcome::Failed { retryable: true }, None)],
    )
    .await;
    let retry = done[0].retry.expect("retried");
    // The failed attempt is not the end: c waits on the retry now.
    assert_eq!(status(&store, c.id).await.status, Status::Waiting);
    assert_eq!(store.links(c.id).await.unwrap().parents, vec![retry]);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    claim_exactly(&store, &[retry]).await;
    end(&store, vec![(retry, Outcome::Succeeded, Some(json!(2)))]).await;
    let claimed = claim_exactly(&store, &[c.id]).await;
    assert_eq!(claimed[0].inputs[0].id, retry.to_string());
    assert_eq!(claimed[0].inputs[0].output, json!(2));

    // A retried dependent keeps its parents (and its inputs).
    let mut c2 = after("c2", &[retry], AfterPolicy::Success);
    c2.retry = a.retry;
    store
        .enqueue(std::slice::from_ref(&c2), now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[c2.id]).await;
    let done = end(
        &store,
        vec![(c2.id, Outcome::Failed { retryable: true }, None)],
    )
    .await;
    let again = done[0].retry.expect("retried");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // c's own claim above is still running; only the retry is due.
    let claimed = claim_exactly(&store, &[again]).await;
    assert_eq!(claimed[0].inputs[0].id, retry.to_string());
}

async fn parents_already_ended_or_missing_decide_at_enqueue(store: Arc<dyn Store>) {
    let (ok, bad) = (exec("ok", 0, DEFAULT_QUEUE), exec("bad", 0, DEFAULT_QUEUE));
    store
        .enqueue(&[ok.clone(), bad.clone()], now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[ok.id, bad.id]).await;
    end(
        &store,
        vec![
            (ok.id, Outcome::Succeeded, None),
            (bad.id, Outcome::Failed { retryable: false }, None),
        ],
    )
    .await;
    let runs = after("runs", &[ok.id], AfterPolicy::Success);
    let cancelled = after("cancelled", &[ok.id, bad.id], AfterPolicy::Success);
    let anyway = after("anyway", &[bad.id], AfterPolicy::Finished);
    let batch = [runs.clone(), cancelled.clone(), anyway.clone()];
    store.enqueue(&batch, now_micros()).await.unwrap();
    assert_eq!(status(&store, runs.id).await.status, Status::Pending);
    let e = status(&store, cancelled.id).await;
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(e.error, Some(format!("upstream {} failed", bad.id)));
    assert_eq!(status(&store, anyway.id).await.status, Status::Pending);

    // An unknown parent writes nothing, not even the rest of the batch.
    let fine = exec("fine", 0, DEFAULT_QUEUE);
    let ghost = Uuid::now_v7();
    let orphan = after("orphan", &[ghost], AfterPolicy::Success);
    let err = store
        .enqueue(&[fine.clone(), orphan.clone()], now_micros())
        .await
        .unwrap_err();
    assert!(
        matches!(err, jobvisor::store::StoreError::NoParent(id) if id == ghost),
        "{err}"
    );
    assert!(store.execution(fine.id).await.unwrap().is_none());
    // A parent later in the batch is refused too (it is not known yet).
    let first = after("first", &[fine.id], AfterPolicy::Success);
    let err = store
        .enqueue(&[first, fine.clone()], now_micros())
        .await
        .unwrap_err();
    assert!(
        matches!(err, jobvisor::store::StoreError::NoParent(_)),
        "{err}"
    );
    assert!(store.execution(fine.id).await.unwrap().is_none());
}

async fn concurrent_parent_ends_make_the_child_ready_exactly_once(store: Arc<dyn Store>) {
    // 40 parents ended by 40 concurrent transactions (as by many nodes),
    // with two children sharing them: each child is counted down to
    // pending once, never stranded, never double-counted.
    let parents: Vec<NewExecution> = (0..40).map(|_| exec("p", 0, DEFAULT_QUEUE)).collect();
    let ids: Vec<Uuid> = parents.iter().map(|p| p.id).collect();
    let c1 = after("c1", &ids, AfterPolicy::Success);
    let c2 = after("c2", &ids, AfterPolicy::Finished);
    let mut all = parents.clone();
    all.extend([c1.clone(), c2.clone()]);
    store.enqueue(&all, now_micros()).await.unwrap();
    claim_exactly(&store, &ids).await;
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let batch = Batch {
                        completions: vec![Completion::new(id, Outcome::Succeeded, now_micros())],
                        ..Default::default()
                    };
                    // A PostgreSQL deadlock or serialization failure is
                    // retried, as the relay does.
                    if store.apply(&batch).await.is_ok() {
                        break;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for c in [&c1, &c2] {
        let e = status(&store, c.id).await;
        assert_eq!(
            (e.status, e.waiting_on),
            (Status::Pending, 0),
            "{}",
            c.handler
        );
    }
    let claimed = claim_exactly(&store, &[c1.id, c2.id]).await;
    assert!(claimed.iter().all(|c| c.inputs.len() == 40));
}

async fn workflows_insert_at_once_and_cancel_every_step_not_ended(store: Arc<dyn Store>) {
    let wf = jobvisor::store::NewWorkflow {
        id: Uuid::now_v7(),
        name: "etl".into(),
        spec: json!({"name": "etl", "step": [{"name": "e", "handler": "e"}]}),
    };
    let mut e = exec("e", 0, DEFAULT_QUEUE);
    e.step = Some((wf.id, "e".into()));
    let mut t = after("t", &[e.id], AfterPolicy::Success);
    t.step = Some((wf.id, "t".into()));
    let mut l = after("l", &[t.id], AfterPolicy::Finished);
    l.step = Some((wf.id, "l".into()));
    let steps = [e.clone(), t.clone(), l.clone()];
    store
        .enqueue_workflow(&wf, &steps, now_micros())
        .await
        .unwrap();
    // Outside the workflow, something runs after its last step.
    let outside = after("outside", &[l.id], AfterPolicy::Success);
    store
        .enqueue(std::slice::from_ref(&outside), now_micros())
        .await
        .unwrap();

    let (info, spec, execs) = store.workflow(wf.id).await.unwrap().unwrap();
    assert_eq!(info.name, "etl");
    assert_eq!(spec, wf.spec);
    assert_eq!(execs.len(), 3);
    assert_eq!(info.steps.get(&Status::Pending), Some(&1));
    assert_eq!(info.steps.get(&Status::Waiting), Some(&2));
    assert!(execs.iter().all(|x| x.workflow_id == Some(wf.id)));
    let listed = store.workflows(10).await.unwrap();
    assert_eq!(listed, vec![info]);

    claim_exactly(&store, &[e.id]).await;
    let done = store
        .cancel_workflow(wf.id, "stop", now_micros())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((done.cancelled, done.requested), (2, 1));
    // The running step is flagged for its node; the others are over.
    assert!(status(&store, e.id).await.cancel_requested_at.is_some());
    for id in [t.id, l.id, outside.id] {
        assert_eq!(status(&store, id).await.status, Status::Cancelled);
    }
    // Its end, cancelled, retries nothing and strands nothing.
    let ended = end(
        &store,
        vec![(e.id, Outcome::Failed { retryable: true }, None)],
    )
    .await;
    assert_eq!(ended[0].retry, None);
    let (info, _, _) = store.workflow(wf.id).await.unwrap().unwrap();
    assert!(info.cancelled_at.is_some());
    assert_eq!(info.steps.get(&Status::Cancelled), Some(&2));
    assert_eq!(info.steps.get(&Status::Failed), Some(&1));
    assert!(store
        .cancel_workflow(Uuid::now_v7(), "x", now_micros())
        .await
        .unwrap()
        .is_none());
    assert!(store.workflow(Uuid::now_v7()).await.unwrap().is_none());
}

async fn retention_keeps_parents_of_children_yet_to_run(store: Arc<dyn Store>) {
    let (a, b) = (exec("a", 0, DEFAULT_QUEUE), exec("b", 0, DEFAULT_QUEUE));
    let c = after("c", &[a.id, b.id], AfterPolicy::Success);
    store
        .enqueue(&[a.clone(), b.clone(), c.clone()], now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[a.id, b.id]).await;
    end(&store, vec![(a.id, Outcome::Succeeded, Some(json!("out")))]).await;
    // a ended; c waits on b, and will read a's output: a stays.
    let later = now_micros() + 1_000_000;
    assert_eq!(store.prune(later, None, &[], 1000).await.unwrap().0, 0);
    end(&store, vec![(b.id, Outcome::Succeeded, None)]).await;
    // c pending: still kept.
    assert_eq!(store.prune(later, None, &[], 1000).await.unwrap().0, 0);
    let claimed = claim_exactly(&store, &[c.id]).await;
    assert_eq!(claimed[0].inputs[0].output, json!("out"));
    end(&store, vec![(c.id, Outcome::Succeeded, None)]).await;
    // All ended: everything goes, edges too.
    assert_eq!(store.prune(later, None, &[], 1000).await.unwrap().0, 3);
    assert_eq!(store.links(c.id).await.unwrap(), Default::default());

    // Expired unique keys go; held ones stay.
    let k = keyed("expired", Some(1));
    store
        .enqueue(std::slice::from_ref(&k), now_micros())
        .await
        .unwrap();
    run_to_end(&store, k.id, Outcome::Succeeded).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.prune(0, None, &[], 1000).await.unwrap();
    // The key is free again (its row gone): a new enqueue takes it.
    let again = keyed("expired", None);
    let got = store
        .enqueue(std::slice::from_ref(&again), now_micros())
        .await
        .unwrap();
    assert!(!got[0].duplicate);
}

async fn a_chained_job_runs_after_the_execution_that_ended(store: Arc<dyn Store>) {
    let now = now_micros();
    let job = |name: &str, then: Vec<Chain>| JobSpec {
        mode: Some(Mode::Inproc),
        payload: json!({"job": name}),
        overlap: Overlap::Allow,
        then,
        ..JobSpec::new(
            name,
            name,
            ScheduleSpec::Once {
                at: now + 3_600_000_000,
            },
        )
    };
    let chain = |job: &str, on: ChainOn| Chain {
        job: job.into(),
        on,
    };
    for spec in [
        job("on-ok", vec![]),
        job("on-fail", vec![]),
        job("always", vec![]),
        job(
            "main",
            vec![
                chain("on-ok", ChainOn::Success),
                chain("on-fail", ChainOn::Failure),
                chain("always", ChainOn::Always),
                chain("gone", ChainOn::Always),
            ],
        ),
    ] {
        assert!(store.insert_job(&spec, None, now).await.unwrap());
    }
    assert_eq!(store.job("main").await.unwrap().unwrap().spec.then.len(), 4);
    let mut m = exec("main", 0, DEFAULT_QUEUE);
    m.job = Some("main".into());
    store
        .enqueue(std::slice::from_ref(&m), now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[m.id]).await;
    end(
        &store,
        vec![(m.id, Outcome::Succeeded, Some(json!("made")))],
    )
    .await;
    // on-ok and always (gone no longer exists), each after m.
    let children = store.links(m.id).await.unwrap().children;
    assert_eq!(children.len(), 2);
    let claimed = store
        .claim("n1", 10, now_micros())
        .await
        .unwrap()
        .executions;
    let mut jobs: Vec<&str> = claimed.iter().map(|c| c.job.as_str()).collect();
    jobs.sort();
    assert_eq!(jobs, ["always", "on-ok"]);
    for c in &claimed {
        assert_eq!(c.payload, json!({"job": c.job}));
        assert_eq!(c.inputs.len(), 1);
        assert_eq!(c.inputs[0].id, m.id.to_string());
        assert_eq!(c.inputs[0].output, json!("made"));
    }
}

async fn filters_narrow_and_keyset_pages_are_stable_under_inserts(store: Arc<dyn Store>) {
    let mut all = Vec::new();
    for i in 0..30 {
        let mut e = exec(if i % 2 == 0 { "even" } else { "odd" }, 0, DEFAULT_QUEUE);
        if i % 3 == 0 {
            e.queue = "slow".into();
        }
        if i == 7 {
            e.unique = Some(UniqueKey {
                key: "k7".into(),
                hold_ms: None,
                replace: false,
            });
        }
        all.push(e);
    }
    store.enqueue(&all, now_micros()).await.unwrap();
    let list = |f: ExecFilter| {
        let store = store.clone();
        async move { store.executions(&f).await.unwrap() }
    };
    let base = ExecFilter {
        limit: 100,
        ..Default::default()
    };
    let evens = list(ExecFilter {
        handler: Some("even".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(evens.len(), 15);
    let slow_odd = list(ExecFilter {
        handler: Some("odd".into()),
        queue: Some("slow".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(slow_odd.len(), 5);
    let keyed = list(ExecFilter {
        unique_key: Some("k7".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(
        keyed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![all[7].id]
    );
    assert!(list(ExecFilter {
        since: Some(now_micros() + 60_000_000),
        ..base.clone()
    })
    .await
    .is_empty());
    assert_eq!(
        list(ExecFilter {
            until: Some(now_micros() + 60_000_000),
            ..base.clone()
        })
        .await
        .len(),
        30
    );
    // Two statuses at once.
    claim_exactly(&store, &all.iter().map(|e| e.id).collect::<Vec<_>>()).await;
    end(&store, vec![(all[0].id, Outcome::Succeeded, None)]).await;
    end(
        &store,
        vec![(all[1].id, Outcome::Failed { retryable: false }, None)],
    )
    .await;
    let ended = list(ExecFilter {
        statuses: vec![Status::Succeeded, Status::Failed],
        ..base.clone()
    })
    .await;
    assert_eq!(ended.len(), 2);
    // Active statuses alone, and a status with a narrower filter.
    let running = list(ExecFilter {
        statuses: vec![Status::Running],
        ..base.clone()
    })
    .await;
    assert_eq!(running.len(), 28);
    assert!(
        running.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let even_running = list(ExecFilter {
        statuses: vec![Status::Running, Status::Pending],
        handler: Some("even".into()),
        ..base.clone()
    })
    .await;
    assert_eq!(even_running.len(), 14);
    // Pages of 7, newest first; rows inserted meanwhile (newer) do not
    // shift the pages that follow.
    let mut seen = Vec::new();
    let mut page = ExecFilter {
        limit: 7,
        ..Default::default()
    };
    loop {
        let got = store.executions(&page).await.unwrap();
        if seen.is_empty() {
            store
                .enqueue(&[exec("late", 0, DEFAULT_QUEUE)], now_micros())
                .await
                .unwrap();
        }
        seen.extend(got.iter().map(|e| e.id));
        match got.last() {
            Some(e) if got.len() == 7 => page.before = Some(e.id),
            _ => break,
        }
    }
    let mut want: Vec<Uuid> = all.iter().map(|e| e.id).collect();
    want.sort();
    want.reverse();
    assert_eq!(seen, want);
}

async fn retries_and_bulk_cancels_act_only_where_they_may(store: Arc<dyn Store>) {
    use jobvisor::store::RetryRequest;
    let (ok, bad, run, wait) = (
        exec("ok", 0, DEFAULT_QUEUE),
        exec("bad", 0, DEFAULT_QUEUE),
        exec("run", 0, DEFAULT_QUEUE),
        exec("wait", 0, DEFAULT_QUEUE),
    );
    store
        .enqueue(&[ok.clone(), bad.clone(), run.clone()], now_micros())
        .await
        .unwrap();
    claim_exactly(&store, &[ok.id, bad.id, run.id]).await;
    end(
        &store,
        vec![
            (ok.id, Outcome::Succeeded, None),
            (bad.id, Outcome::Failed { retryable: false }, Some(json!(1))),
        ],
    )
    .await;
    let now = now_micros();
    assert_eq!(
        store.retry(ok.id, now).await.unwrap(),
        RetryRequest::Succeeded
    );
    assert_eq!(
        store.retry(run.id, now).await.unwrap(),
        RetryRequest::NotEnded(Status::Running)
    );
    assert_eq!(
        store.retry(Uuid::now_v7(), now).await.unwrap(),
        RetryRequest::NotFound
    );
    let RetryRequest::Retried(again) = store.retry(bad.id, now).await.unwrap() else {
        panic!("a failed execution is retried")
    };
    assert_eq!(
        store.retry(bad.id, now).await.unwrap(),
        RetryRequest::AlreadyRetried(again)
    );
    let e = status(&store, again).await;
    assert_eq!(
        (e.status, e.attempt, e.previous_id),
        (Status::Pending, 2, Some(bad.id))
    );
    assert!(e.max_attempts >= 2);
    assert_eq!(status(&store, bad.id).await.next_id, Some(again));

    // Bulk cancel by handler: the pending retry is cancelled, the running
    // one flagged, the ended ones left alone; a waiting dependent settles.
    let mut dependent = after("wait", &[run.id], AfterPolicy::Success);
    dependent.id = wait.id;
    store
        .enqueue(std::slice::from_ref(&dependent), now_micros())
        .await
        .unwrap();
    let ids = [again, run.id, ok.id];
    let done = store
        .cancel_many(&ids[..2], "bulk", now_micros())
        .await
        .unwrap();
    assert_eq!((done.cancelled, done.requested), (1, 1));
    assert_eq!(status(&store, again).await.status, Status::Cancelled);
    assert!(status(&store, run.id).await.cancel_requested_at.is_some());
    end(
        &store,
        vec![(
            run.id,
            Outcome::Cancelled {
                how: Some("cooperative"),
            },
            None,
        )],
    )
    .await;
    assert_eq!(status(&store, wait.id).await.status, Status::Cancelled);
    // A cancelled execution can be retried too.
    assert!(matches!(
        store.retry(again, now_micros()).await.unwrap(),
        RetryRequest::Retried(_)
    ));
}

async fn stats_count_runs_apart_from_attempts(store: Arc<dyn Store>) {
    // Runs are counted apart from attempts: two runs of three attempts
    // each (two failures, then the last attempt ends) are two runs, one
    // succeeded and one failed: 50 %, not 1 in 6.
    for last in [Outcome::Succeeded, Outcome::Failed { retryable: true }] {
        let mut e = exec("flaky", 0, DEFAULT_QUEUE);
        e.retry = RetryPolicy {
            max_attempts: 3,
            backoff_base_ms: 1,
            backoff_cap_ms: 1,
        };
        store
            .enqueue(std::slice::from_ref(&e), now_micros())
            .await
            .unwrap();
        let mut id = e.id;
        for attempt in 1..=3 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let claimed = store.claim("n1", 1, now_micros()).await.unwrap().executions;
            assert_eq!(claimed[0].id, id);
            let outcome = if attempt < 3 {
                Outcome::Failed { retryable: true }
            } else {
                last.clone()
            };
            let done = end(&store, vec![(id, outcome, None)]).await;
            if let Some(next) = done[0].retry {
                id = next;
            }
        }
    }
    let flaky = store.stats(Some("flaky")).await.unwrap().remove(0);
    assert_eq!(
        (flaky.runs, flaky.attempts, flaky.succeeded, flaky.failed),
        (2, 6, 1, 1)
    );
    assert_eq!(flaky.success_rate, Some(0.5));
}

fn with_key(queue: &str, key: Option<&str>) -> NewExecution {
    NewExecution {
        concurrency_key: key.map(str::to_string),
        ..exec("noop", 0, queue)
    }
}

async fn key_limits_hold_each_key_and_let_other_keys_by(store: Arc<dyn Store>) {
    let keyed = QueueChange {
        key_limit: Some(Some(1)),
        ..Default::default()
    };
    store.set_queue("k", &keyed).await.unwrap();
    // Three of key a first (best), then two of b, two without a key, and
    // one of key a in another queue, which has no key limit.
    let mut rows: Vec<NewExecution> = (0..3).map(|_| with_key("k", Some("a"))).collect();
    rows.extend((0..2).map(|_| with_key("k", Some("b"))));
    rows.extend((0..2).map(|_| with_key("k", None)));
    rows.push(with_key(DEFAULT_QUEUE, Some("a")));
    store.enqueue(&rows, now_micros()).await.unwrap();
    let ids = |c: &[jobvisor::store::Claimed]| c.iter().map(|c| c.id).collect::<HashSet<_>>();
    let first = store.claim("n1", 100, now_micros()).await.unwrap();
    let want: HashSet<Uuid> = [rows[0].id, rows[3].id, rows[5].id, rows[6].id, rows[7].id].into();
    assert_eq!(ids(&first.executions), want, "one per key, all without one");
    assert_eq!(first.next_token_at, None, "no rate, no token time");
    let again = store.claim("n1", 100, now_micros()).await.unwrap();
    assert!(again.executions.is_empty(), "a and b are full: {again:?}");
    // a's end frees a's slot only.
    end(&store, vec![(rows[0].id, Outcome::Succeeded, None)]).await;
    let next = store.claim("n1", 100, now_micros()).await.unwrap();
    assert_eq!(ids(&next.executions), [rows[1].id].into());
    // Found by its key.
    let by_key = store
        .executions(&ExecFilter {
            concurrency_key: Some("a".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_key.len(), 4);
    assert_eq!(by_key[0].concurrency_key.as_deref(), Some("a"));
    let q = store.queues().await.unwrap();
    let k = q.iter().find(|q| q.name == "k").unwrap();
    assert_eq!((k.key_limit, k.running, k.pending), (Some(1), 4, 2));
    // Lifting the limit lets the rest run at the next claim.
    let lifted = QueueChange {
        key_limit: Some(None),
        ..Default::default()
    };
    store.set_queue("k", &lifted).await.unwrap();
    let rest = store.claim("n1", 100, now_micros()).await.unwrap();
    assert_eq!(ids(&rest.executions), [rows[2].id, rows[4].id].into());
}

/// A claim whose time was taken long before it ran (a node cut off from
/// the database, a wait for the writer) stamps its starts when it runs,
/// never before: a child released by a parent's end is never stamped as
/// started before that end.
async fn a_late_claim_is_stamped_when_it_runs(store: Arc<dyn Store>) {
    let stale = now_micros() - 10_000_000;
    let e = exec("noop", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&e), stale)
        .await
        .unwrap();
    let before = now_micros();
    let claimed = store.claim("n1", 1, stale).await.unwrap().executions;
    assert_eq!(claimed.len(), 1);
    assert!(
        claimed[0].started_at >= before,
        "stamped {} < {before}",
        claimed[0].started_at
    );
    let stored = store.execution(e.id).await.unwrap().unwrap();
    assert_eq!(stored.started_at.map(|t| t.0), Some(claimed[0].started_at));
}

async fn rates_hold_starts_per_window_and_say_when_the_next_is_due(store: Arc<dyn Store>) {
    let rate = |r: &str| QueueChange {
        rate: Some(Some(r.parse().unwrap())),
        ..Default::default()
    };
    store.set_queue("r", &rate("3/1m")).await.unwrap();
    let rows: Vec<NewExecution> = (0..5).map(|_| exec("noop", 0, "r")).collect();
    let other: Vec<NewExecution> = (0..4).map(|_| exec("noop", 0, DEFAULT_QUEUE)).collect();
    store.enqueue(&rows, now_micros()).await.unwrap();
    store.enqueue(&other, now_micros()).await.unwrap();
    let first = store.claim("n1", 100, now_micros()).await.unwrap();
    // Stamped when its turn came.
    let t0 = first.executions[0].started_at;
    let in_r = |c: &jobvisor::store::Claims| {
        c.executions
            .iter()
            .filter(|c| rows.iter().any(|r| r.id == c.id))
            .count()
    };
    assert_eq!(in_r(&first), 3, "three of r: {first:?}");
    assert_eq!(
        first.executions.len(),
        7,
        "and every row of an unrated queue"
    );
    // The window is full until its oldest start leaves it, a minute on.
    assert_eq!(first.next_token_at, Some(t0 + 60_000_000));
    let q = store.queues().await.unwrap();
    let r = q.iter().find(|q| q.name == "r").unwrap();
    assert_eq!(r.rate.map(|r| r.to_string()), Some("3/1m".into()));
    assert_eq!((r.tokens, r.pending), (Some(0), 2));
    let early = store.claim("n1", 100, t0 + 59_999_999).await.unwrap();
    assert!(early.executions.is_empty());
    assert_eq!(early.next_token_at, Some(t0 + 60_000_000));
    let later = store.claim("n1", 100, t0 + 60_000_000).await.unwrap();
    assert_eq!(in_r(&later), 2);
    // A lower rate counts the starts already made in its window.
    store.set_queue("r", &rate("1/2m")).await.unwrap();
    store.enqueue(&[exec("noop", 0, "r")], t0).await.unwrap();
    let none = store.claim("n1", 100, t0 + 61_000_000).await.unwrap();
    assert!(none.executions.is_empty());
    assert_eq!(none.next_token_at, Some(t0 + 60_000_000 + 120_000_000));
    let lifted = QueueChange {
        rate: Some(None),
        ..Default::default()
    };
    store.set_queue("r", &lifted).await.unwrap();
    let free = store.claim("n1", 100, t0 + 61_000_000).await.unwrap();
    assert_eq!((free.executions.len(), free.next_token_at), (1, None));
    let q = store.queues().await.unwrap();
    let r = q.iter().find(|q| q.name == "r").unwrap();
    assert_eq!((r.rate, r.tokens), (None, None));
}

async fn a_snooze_runs_again_later_without_using_a_retry(store: Arc<dyn Store>) {
    let e = exec("noop", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    let claimed = store.claim("n1", 1, now_micros()).await.unwrap().executions;
    assert_eq!((claimed[0].id, claimed[0].snoozes), (e.id, 0));
    let before = now_micros();
    let done = end(
        &store,
        vec![(e.id, Outcome::Snoozed { delay_ms: 60_000 }, None)],
    )
    .await;
    let next = done[0].retry.expect("a snooze is followed");
    assert_eq!(done[0].status, Status::Snoozed);
    let (old, new) = (status(&store, e.id).await, status(&store, next).await);
    assert_eq!((old.status, old.next_id), (Status::Snoozed, Some(next)));
    assert_eq!(
        (
            new.status,
            new.attempt,
            new.max_attempts,
            new.snoozes,
            new.previous_id
        ),
        (Status::Pending, 1, 1, 1, Some(e.id)),
        "the same attempt, no retry used"
    );
    assert!(
        new.run_at.micros() >= before + 60_000_000,
        "{:?}",
        new.run_at
    );
    assert!(store
        .claim("n1", 1, now_micros())
        .await
        .unwrap()
        .executions
        .is_empty());
    let claimed = store
        .claim("n1", 1, now_micros() + 61_000_000)
        .await
        .unwrap()
        .executions;
    assert_eq!((claimed[0].id, claimed[0].snoozes), (next, 1));
    // Its retries are still all there: a retryable failure on attempt 1
    // of 1 ends it for good.
    let done = end(
        &store,
        vec![(next, Outcome::Failed { retryable: true }, None)],
    )
    .await;
    assert_eq!((done[0].status, done[0].retry), (Status::Failed, None));
    let stats = store.stats(Some("noop")).await.unwrap().remove(0);
    assert_eq!((stats.runs, stats.attempts, stats.failed), (1, 2, 1));
}

async fn every_kind_of_limit_holds_at_once(store: Arc<dyn Store>) {
    let now = now_micros();
    let capped = JobSpec {
        mode: Some(Mode::Inproc),
        queue: "all".into(),
        overlap: Overlap::Allow,
        max_parallel: Some(1),
        ..JobSpec::new(
            "capped",
            "noop",
            ScheduleSpec::Once {
                at: now + 3_600_000_000,
            },
        )
    };
    assert!(store.insert_job(&capped, None, now).await.unwrap());
    let all = QueueChange {
        limit: Some(Some(3)),
        key_limit: Some(Some(1)),
        rate: Some(Some("4/1m".parse().unwrap())),
        paused: None,
    };
    store.set_queue("all", &all).await.unwrap();
    let row = |priority: i32, job: Option<&str>, key: Option<&str>| NewExecution {
        job: job.map(str::to_string),
        concurrency_key: key.map(str::to_string),
        ..exec("noop", priority, "all")
    };
    let rows = [
        row(9, Some("capped"), None),
        row(8, Some("capped"), None),
        row(7, None, Some("a")),
        row(6, None, Some("a")),
        row(5, None, None),
        row(4, None, None),
    ];
    store.enqueue(&rows, now).await.unwrap();
    let ids =
        |c: &jobvisor::store::Claims| c.executions.iter().map(|c| c.id).collect::<HashSet<_>>();
    // The job's cap and the key's limit pass over 8 and 6; the queue's
    // limit stops at three.
    let first = store.claim("n1", 100, now_micros()).await.unwrap();
    assert_eq!(ids(&first), [rows[0].id, rows[2].id, rows[4].id].into());
    let ends = |c: &jobvisor::store::Claims| {
        c.executions
            .iter()
            .map(|c| (c.id, Outcome::Succeeded, None))
            .collect::<Vec<_>>()
    };
    end(&store, ends(&first)).await;
    // The rate has one start left of four.
    let second = store.claim("n1", 100, now_micros()).await.unwrap();
    assert_eq!(ids(&second), [rows[1].id].into());
    end(&store, ends(&second)).await;
    let third = store.claim("n1", 100, now_micros()).await.unwrap();
    assert!(third.executions.is_empty());
    assert!(third.next_token_at.is_some());
}

/// Another node's store set the limit: this one's next claim applies it,
/// though it had just found no limits at all.
async fn a_limit_set_elsewhere_applies_at_the_next_claim(
    here: Arc<dyn Store>,
    there: Arc<dyn Store>,
) {
    let before = store_claim_ids(&here).await;
    assert!(before.is_empty(), "nothing due yet, and no limits cached");
    let rows: Vec<NewExecution> = (0..3).map(|_| exec("noop", 0, "late")).collect();
    here.enqueue(&rows, now_micros()).await.unwrap();
    let rate = QueueChange {
        rate: Some(Some("1/1m".parse().unwrap())),
        ..Default::default()
    };
    there.set_queue("late", &rate).await.unwrap();
    assert_eq!(store_claim_ids(&here).await.len(), 1, "one start a minute");
    let keyed = QueueChange {
        rate: Some(None),
        key_limit: Some(Some(1)),
        ..Default::default()
    };
    there.set_queue("late", &keyed).await.unwrap();
    assert_eq!(
        store_claim_ids(&here).await.len(),
        2,
        "no key: not held back"
    );
}

async fn store_claim_ids(store: &Arc<dyn Store>) -> Vec<Uuid> {
    let c = store.claim("n1", 100, now_micros()).await.unwrap();
    c.executions.iter().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_by_another_node_applies_at_the_next_claim_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let (here, there) = (sqlite_store(&dir).await, sqlite_store(&dir).await);
    a_limit_set_elsewhere_applies_at_the_next_claim(here, there).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_set_by_another_node_applies_at_the_next_claim_postgres() {
    let Some(url) = common::pg_database().await else {
        return;
    };
    let here = jobvisor::store::open(&url).await.unwrap().store().clone();
    let there = jobvisor::store::open(&url).await.unwrap().store().clone();
    a_limit_set_elsewhere_applies_at_the_next_claim(here, there).await;
}

/// A timeline row: minute, handler, status, count, mean and longest ms.
type Tl = (i64, String, Status, u64, Option<f64>, Option<f64>);

/// The timeline as the execution rows have it: per minute, handler and
/// status, the count, and the mean and longest durations of those that
/// started (ms).
fn timeline_of(execs: &[jobvisor::model::Execution], since: i64) -> Vec<Tl> {
    let mut groups: std::collections::BTreeMap<(i64, String, Status), Vec<Option<i64>>> =
        Default::default();
    for e in execs {
        let Some(end) = e.finished_at else { continue };
        if end.0.div_euclid(60_000_000) < since.div_euclid(60_000_000) {
            continue;
        }
        groups
            .entry((
                end.0.div_euclid(60_000_000) * 60_000_000,
                e.handler.clone(),
                e.status,
            ))
            .or_default()
            .push(e.started_at.map(|s| end.0 - s.0));
    }
    let mut rows: Vec<_> = groups
        .into_iter()
        .map(|((minute, handler, status), durations)| {
            let timed: Vec<i64> = durations.iter().flatten().copied().collect();
            let avg = (!timed.is_empty())
                .then(|| timed.iter().sum::<i64>() as f64 / timed.len() as f64 / 1000.0);
            let max = timed.iter().max().map(|us| *us as f64 / 1000.0);
            (minute, handler, status, durations.len() as u64, avg, max)
        })
        .collect();
    // As the store orders them: by the status's name.
    rows.sort_by(|a, b| (a.0, &a.1, a.2.as_str()).cmp(&(b.0, &b.1, b.2.as_str())));
    rows
}

async fn the_timeline_holds_what_the_executions_say_ended(store: Arc<dyn Store>) {
    // Every way an execution ends: completions (a retried failure, a
    // timeout, a success in the next minute, a running cancel), a pending
    // cancel, a bulk cancel, a dependent cancelled by its failed parent; a
    // duplicate completion counts once.
    let mut flaky = exec("a", 0, DEFAULT_QUEUE);
    flaky.retry = RetryPolicy {
        max_attempts: 2,
        backoff_base_ms: 3_600_000,
        backoff_cap_ms: 3_600_000,
    };
    let (ok, slow, late, stopped, parent) = (
        exec("a", 0, DEFAULT_QUEUE),
        exec("a", 0, DEFAULT_QUEUE),
        exec("b", 0, DEFAULT_QUEUE),
        exec("b", 0, DEFAULT_QUEUE),
        exec("b", 0, DEFAULT_QUEUE),
    );
    let running = [&flaky, &ok, &slow, &late, &stopped, &parent].map(|e| e.clone());
    store.enqueue(&running, now_micros()).await.unwrap();
    let claimed = claim_exactly(&store, &running.iter().map(|e| e.id).collect::<Vec<_>>()).await;
    let started = |id: Uuid| claimed.iter().find(|c| c.id == id).unwrap().started_at;
    let (child, unstarted, bulk) = (
        after("c", &[parent.id], AfterPolicy::Success),
        exec("c", 0, DEFAULT_QUEUE),
        exec("d", 0, DEFAULT_QUEUE),
    );
    let mut later = [unstarted.clone(), bulk.clone()];
    for e in &mut later {
        e.run_at = now_micros() + 3_600_000_000;
    }
    store
        .enqueue(std::slice::from_ref(&child), now_micros())
        .await
        .unwrap();
    store.enqueue(&later, now_micros()).await.unwrap();

    let done =
        |id: Uuid, outcome: Outcome, ms: i64| Completion::new(id, outcome, started(id) + ms * 1000);
    let batch = Batch {
        completions: vec![
            done(flaky.id, Outcome::Failed { retryable: true }, 3),
            done(ok.id, Outcome::Succeeded, 5),
            done(slow.id, Outcome::TimedOut, 250),
            done(late.id, Outcome::Succeeded, 61_000),
            done(
                stopped.id,
                Outcome::Cancelled {
                    how: Some("sigterm"),
                },
                7,
            ),
            done(parent.id, Outcome::Failed { retryable: false }, 2),
        ],
        ..Default::default()
    };
    let finished = store.apply(&batch).await.unwrap();
    assert_eq!(finished.len(), 6);
    assert!(finished
        .iter()
        .any(|f| f.id == flaky.id && f.retry.is_some()));
    // The same completion again changes nothing.
    let again = Batch {
        completions: vec![done(ok.id, Outcome::Succeeded, 9)],
        ..Default::default()
    };
    assert!(store.apply(&again).await.unwrap().is_empty());
    assert_eq!(status(&store, child.id).await.status, Status::Cancelled);
    assert_eq!(
        store
            .request_cancel(unstarted.id, "no", now_micros())
            .await
            .unwrap(),
        CancelRequest::CancelledPending
    );
    let bulk_cancel = store
        .cancel_many(&[bulk.id], "all", now_micros())
        .await
        .unwrap();
    assert_eq!(bulk_cancel.cancelled, 1);

    let all = store
        .executions(&ExecFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.iter().filter(|e| e.finished_at.is_some()).count(), 9);
    let rows = |since: i64| {
        let store = store.clone();
        async move {
            store
                .timeline(since)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.minute.0, r.handler, r.status, r.count, r.avg_ms, r.max_ms))
                .collect::<Vec<_>>()
        }
    };
    let close = |got: &[Tl], want: &[Tl]| {
        let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-6,
            (a, b) => a == b,
        };
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| {
                (g.0, &g.1, g.2, g.3) == (w.0, &w.1, w.2, w.3) && near(g.4, w.4) && near(g.5, w.5)
            })
    };
    let got = rows(0).await;
    let want = timeline_of(&all, 0);
    assert!(
        close(&got, &want),
        "timeline {got:?}\nexecutions say {want:?}"
    );
    // The cancels before a start count, with no duration.
    let unstarted_rows: Vec<_> = got.iter().filter(|r| r.1 == "c").collect();
    assert_eq!(unstarted_rows.iter().map(|r| r.3).sum::<u64>(), 2);
    assert!(unstarted_rows
        .iter()
        .all(|r| r.2 == Status::Cancelled && r.4.is_none() && r.5.is_none()));
    // From the middle of the last minute: that whole minute, no earlier.
    let last = got.iter().map(|r| r.0).max().unwrap();
    let from_last = rows(last + 30_000_000).await;
    assert!(!from_last.is_empty() && from_last.iter().all(|r| r.0 == last));
    assert!(close(&from_last, &timeline_of(&all, last)));

    // The global retention takes the timeline's old minutes with it; a
    // job's does not.
    store
        .prune(last + 120_000_000, Some("a"), &[], 1000)
        .await
        .unwrap();
    assert!(!rows(0).await.is_empty());
    store
        .prune(last + 120_000_000, None, &[], 1000)
        .await
        .unwrap();
    assert!(rows(0).await.is_empty());
}

/// A worker's text may hold NUL, which PostgreSQL's text cannot: its log
/// lines, error and progress message are stored with each NUL as U+FFFD
/// on both backends, and the batch that carries them is written, not
/// refused (a refused batch would hold up every end after it).
async fn text_with_a_nul_from_a_worker_is_stored(store: Arc<dyn Store>) {
    let e = exec("nul", 0, DEFAULT_QUEUE);
    store
        .enqueue(std::slice::from_ref(&e), now_micros())
        .await
        .unwrap();
    store.claim("n1", 1, now_micros()).await.unwrap();
    let mut done = Completion::failed(e.id, false, "bad\0end");
    done.output = Some(json!({"k": "v\u{0}w"}));
    let batch = Batch {
        logs: vec![LogRow {
            execution_id: e.id,
            seq: 1,
            ts: now_micros(),
            level: "info",
            stream: "log",
            message: "a\0b".into(),
            fields: Some(r#"{"k":"x\u0000y"}"#.into()),
        }],
        progress: vec![(
            e.id,
            ProgressState {
                message: Some("p\0q".into()),
                ..Default::default()
            },
        )],
        completions: vec![done],
        ..Default::default()
    };
    let finished = tokio::time::timeout(std::time::Duration::from_secs(60), store.apply(&batch))
        .await
        .expect("the batch is written")
        .unwrap();
    assert_eq!(finished.len(), 1);
    let got = status(&store, e.id).await;
    assert_eq!(got.status, Status::Failed);
    assert_eq!(got.error.as_deref(), Some("bad\u{FFFD}end"));
    assert_eq!(got.progress.message.as_deref(), Some("p\u{FFFD}q"));
    let logs = store.logs(e.id, 0, None, 10).await.unwrap();
    assert_eq!(logs[0].message, "a\u{FFFD}b");
}

/// The migrations are numbered alike on every backend; an SQLite database
/// made before that (its `run model`, `webhooks` and `traces` recorded as
/// 10 to 12) opens, its history renumbered once, its rows kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqlite_database_with_the_old_migration_numbers_opens_renumbered() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db").display().to_string();
    let store = sqlite_store_at(&path).await;
    let id = store
        .enqueue(&[exec("noop", 0, DEFAULT_QUEUE)], now_micros())
        .await
        .unwrap()[0]
        .id;
    drop(store);
    let url = format!("sqlite://{path}");
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let today = history(&mut conn).await.unwrap();
    assert_eq!(today.len(), 13);
    assert_eq!(today[9], (10, "live and ended".to_string()));
    // The history as the old numbering left it.
    for stmt in [
        "DELETE FROM _sqlx_migrations WHERE version = 10",
        "UPDATE _sqlx_migrations SET version = 10 WHERE version = 11",
        "UPDATE _sqlx_migrations SET version = 11 WHERE version = 12",
        "UPDATE _sqlx_migrations SET version = 12 WHERE version = 13",
    ] {
        sqlx::query(stmt).execute(&mut conn).await.unwrap();
    }
    assert_eq!(history(&mut conn).await.unwrap()[9].1, "run model");
    conn.close().await.unwrap();
    let store = sqlite_store_at(&path).await;
    assert!(store.execution(id).await.unwrap().is_some());
    drop(store);
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    assert_eq!(history(&mut conn).await.unwrap(), today);
}

async fn history(conn: &mut sqlx::SqliteConnection) -> Result<Vec<(i64, String)>, sqlx::Error> {
    sqlx::query_as("SELECT version, description FROM _sqlx_migrations ORDER BY version")
        .fetch_all(conn)
        .await
}

async fn sqlite_store_at(path: &str) -> Arc<dyn Store> {
    jobvisor::store::open(path).await.unwrap().store().clone()
}
