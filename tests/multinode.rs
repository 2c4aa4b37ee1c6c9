//! Several `jobvisor serve` processes on one database behave as one
//! supervisor: every test runs on PostgreSQL and on MariaDB. Each needs a
//! server (see tests/store.rs); without one these say so loudly, and under
//! CI they fail.

mod common;

use common::*;
use jobvisor::Status;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

/// Registers handler `mark`, whose side effect outside the database is a
/// line with its execution id in a file; returns the file.
fn add_mark_handler(env: &Env, before: &str) -> std::path::PathBuf {
    let log = env.dir.path().join("ran.txt");
    let script = format!(
        "{before}echo \"$JOBVISOR_EXECUTION_ID\" >> {}",
        log.display()
    );
    env.ok(&[
        "handler", "add", "mark", "--exec", "/bin/sh", "--arg", "-c", "--arg", &script,
    ]);
    log
}

/// The ids `mark` recorded; each attempt at most once.
fn marks(log: &std::path::Path) -> Vec<String> {
    let lines: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let distinct: HashSet<&String> = lines.iter().collect();
    assert_eq!(distinct.len(), lines.len(), "an attempt ran twice");
    lines
}

fn db_env(url: &str) -> Env {
    let mut env = Env::new();
    env.db = url.to_string();
    env
}

async fn three_nodes_run_every_execution_exactly_once(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    // A side effect outside the database: each run appends its id.
    let log = add_mark_handler(&env, "");
    let nodes: Vec<Serve> = (0..3).map(|_| env.serve(&["--concurrency", "8"])).collect();
    let store = env.store().await;
    let mut ids = Vec::new();
    let sup = jobvisor::Supervisor::builder()
        .database(&url)
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let specs = (0..500)
            .map(|_| jobvisor::RunSpec::new("mark", serde_json::Value::Null))
            .collect();
        ids.extend(sup.enqueue_many(specs).await.unwrap());
    }
    let inproc: Vec<_> = (0..20)
        .map(|_| {
            (0..1000)
                .map(|_| jobvisor::RunSpec::new("noop", serde_json::Value::Null))
                .collect()
        })
        .collect::<Vec<Vec<_>>>();
    let mut noop_ids = Vec::new();
    for specs in inproc {
        noop_ids.extend(sup.enqueue_many(specs).await.unwrap());
    }
    for id in ids.iter().chain(&noop_ids) {
        let e = finished(store.as_ref(), *id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
    }
    let lines = marks(&log);
    assert_eq!(
        lines.len(),
        ids.len(),
        "every process execution ran exactly once"
    );
    let by_node: HashSet<String> = store
        .executions(&jobvisor::store::ExecFilter {
            limit: 30_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.node)
        .collect();
    assert!(by_node.len() >= 3, "all three nodes took part: {by_node:?}");
    drop(nodes);
}

async fn a_cancel_issued_anywhere_reaches_the_node_running_the_execution(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let _a = env.serve(&[]);
    let _b = env.serve(&[]);
    let store = env.store().await;
    let id = env.enqueue(&[
        "sleep",
        "--mode",
        "process",
        "--payload",
        r#"{"ms":600000}"#,
    ]);
    running_with_pid(store.as_ref(), id).await;
    let asked = std::time::Instant::now();
    env.ok(&["exec", "cancel", &id.to_string()]);
    let e = finished(store.as_ref(), id).await;
    assert_eq!(e.status, Status::Cancelled);
    assert_eq!(e.cancel_outcome.as_deref(), Some("cooperative"));
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
}

async fn a_one_second_cron_on_three_nodes_runs_each_occurrence_once(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let _nodes: Vec<Serve> = (0..3).map(|_| env.serve(&[])).collect();
    // Which node ran each occurrence is a race: only "once" is promised.
    run_one_second_cron(&env, 20).await;
}

async fn a_killed_node_is_rescued_and_a_stale_node_cannot_complete_what_was_rescued(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let lease = ["--node-lease", "3s"];
    let store = env.store().await;

    // A runs an execution, then is frozen (SIGSTOP) past its lease.
    let a = env.serve(&lease);
    let frozen = env.enqueue(&[
        "sleep",
        "--mode",
        "process",
        "--payload",
        r#"{"ms":2500}"#,
        "--retries",
        "1",
    ]);
    let e = running_with_pid(store.as_ref(), frozen).await;
    let node_a = e.node.clone().unwrap();
    a.signal(nix::sys::signal::Signal::SIGSTOP);
    let b = env.serve(&lease);
    let stopped_at = std::time::Instant::now();
    let rescued = finished(store.as_ref(), frozen).await;
    assert!(rescued.interrupted, "{rescued:?}");
    assert!(stopped_at.elapsed() < Duration::from_secs(30));
    let retry = rescued.next_id.expect("retried");
    let r = finished(store.as_ref(), retry).await;
    assert_eq!(r.status, Status::Succeeded);
    assert_ne!(r.node.as_deref(), Some(node_a.as_str()));
    // A wakes up; its child finished long ago. Its late completion is
    // rejected: the rescued attempt stays interrupted.
    a.signal(nix::sys::signal::Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = store.execution(frozen).await.unwrap().unwrap();
    assert_eq!(after.status, Status::Failed);
    assert!(after.interrupted);
    assert!(after.output.is_none());

    // B is killed outright while running; A (alive again) rescues its work.
    let killed = env.enqueue(&[
        "sleep",
        "--mode",
        "process",
        "--payload",
        r#"{"ms":600000}"#,
        "--retries",
        "1",
    ]);
    let e = eventually("an execution running on B", || async {
        let e = store.execution(killed).await.unwrap()?;
        (e.status == Status::Running && e.pid.is_some()).then_some(e)
    })
    .await;
    let mut b = b;
    if e.node.as_deref() == Some(node_a.as_str()) {
        // It landed on A: the roles swap, the property is the same.
        drop(a);
    } else {
        b.child.kill().unwrap();
        b.child.wait().unwrap();
    }
    let killed_at = std::time::Instant::now();
    let gone = finished(store.as_ref(), killed).await;
    assert!(gone.interrupted, "{gone:?}");
    assert!(
        killed_at.elapsed() < Duration::from_secs(30),
        "rescued in {:?}",
        killed_at.elapsed()
    );
    assert!(
        !alive(e.pid.unwrap() as i32),
        "the killed node's child died with it"
    );
}

async fn three_supervisors_record_twenty_thousand_side_effects_exactly_once(url: String) {
    let pool = AppPool::connect(&url).await;
    pool.run("CREATE TABLE side_effects (execution_id VARCHAR(36) PRIMARY KEY, node INT NOT NULL)")
        .await;
    // Three supervisors, each with its own connections and node id, run a
    // handler whose side effect is a row under a unique constraint: running
    // any execution twice would fail that insert.
    let mut nodes = Vec::new();
    for n in 0..3i32 {
        let pool = pool.clone();
        let sup = jobvisor::Supervisor::builder()
            .database(&url)
            .configure(|c| c.concurrency = 64)
            .register(
                "record",
                move |ctx: jobvisor::Context, _p: serde_json::Value| {
                    let pool = pool.clone();
                    async move {
                        pool.execute(
                            "INSERT INTO side_effects VALUES ($1, $2)",
                            &ctx.execution().execution_id,
                            n,
                        )
                        .await
                        .map_err(|e| jobvisor::HandlerError::permanent(e.to_string()))?;
                        Ok(serde_json::Value::Null)
                    }
                },
            )
            .build()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let s = sup.clone();
        let task = tokio::spawn(async move {
            s.run(async {
                let _ = rx.await;
            })
            .await
            .unwrap()
        });
        nodes.push((sup, tx, task));
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        let specs = (0..1000)
            .map(|_| jobvisor::RunSpec::new("record", serde_json::Value::Null))
            .collect();
        ids.extend(nodes[0].0.enqueue_many(specs).await.unwrap());
    }
    let store = nodes[0].0.store().clone();
    eventually("all 20,000 to finish", || async {
        let pending = pool
            .integer("SELECT COUNT(*) FROM executions WHERE status IN ('pending', 'running')")
            .await;
        (pending == 0).then_some(())
    })
    .await;
    let failed = pool
        .integer("SELECT COUNT(*) FROM executions WHERE status <> 'succeeded'")
        .await;
    assert_eq!(
        failed, 0,
        "a failed execution means a duplicate side effect"
    );
    let effects = pool.integer("SELECT COUNT(*) FROM side_effects").await;
    assert_eq!(effects, 20_000);
    let per_node = pool
        .integers("SELECT COUNT(*) FROM side_effects GROUP BY node")
        .await;
    assert_eq!(
        per_node.len(),
        3,
        "all three supervisors took part: {per_node:?}"
    );
    assert_eq!(ids.len(), 20_000);
    let _ = store;
    for (_, tx, task) in nodes {
        tx.send(()).unwrap();
        task.await.unwrap();
    }
}

async fn a_node_killed_halfway_loses_nothing_and_no_attempt_runs_twice(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let log = add_mark_handler(&env, "sleep 0.05; ");
    let lease = ["--node-lease", "3s", "--concurrency", "6"];
    let mut nodes: Vec<Serve> = (0..3).map(|_| env.serve(&lease)).collect();
    let sup = jobvisor::Supervisor::builder()
        .database(&url)
        .build()
        .await
        .unwrap();
    let mut spec = jobvisor::RunSpec::new("mark", serde_json::Value::Null);
    spec.retries = 3;
    spec.backoff = Duration::from_millis(50);
    let roots = sup.enqueue_many(vec![spec; 3000]).await.unwrap();
    let pool = AppPool::connect(&url).await;
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { pool.integer(sql).await }
    };
    eventually("half of the work done", || async {
        (count("SELECT COUNT(*) FROM executions WHERE status = 'succeeded'").await >= 1200)
            .then_some(())
    })
    .await;
    // Kill one node that is running something.
    let victim = nodes.remove(0);
    let mut victim = victim;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    eventually("everything to end", || async {
        (count("SELECT COUNT(*) FROM executions WHERE status IN ('pending', 'running')").await == 0)
            .then_some(())
    })
    .await;
    // Every root ends in exactly one succeeded attempt.
    let store = env.store().await;
    for root in &roots {
        let mut e = store.execution(*root).await.unwrap().unwrap();
        while let Some(next) = e.next_id {
            assert!(e.interrupted || e.status == Status::Failed, "{e:?}");
            e = store.execution(next).await.unwrap().unwrap();
        }
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
    }
    // Each attempt's side effect at most once; every success recorded.
    let lines = marks(&log);
    let succeeded = count("SELECT COUNT(*) FROM executions WHERE status = 'succeeded'").await;
    assert_eq!(succeeded, 3000);
    let interrupted = count("SELECT COUNT(*) FROM executions WHERE interrupted = 1").await;
    assert!(interrupted >= 1, "the killed node had work in flight");
    assert!(lines.len() as i64 >= succeeded);
}

/// 50 enqueues of one unique key at once, spread over the HTTP APIs of
/// three nodes, create exactly one execution: one answer is 201, the other
/// 49 are 200 and name it.
async fn fifty_enqueues_of_one_key_through_three_nodes_make_one_execution(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let nodes: Vec<Serve> = (0..3).map(|_| env.serve(&[])).collect();
    let addrs: Vec<String> = nodes.iter().map(Serve::http_addr).collect();
    let body = r#"{"handler":"sleep","payload":{"ms":600000},"unique_key":"only-one"}"#;
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let addr = addrs[i % 3].clone();
            std::thread::spawn(move || post(&addr, "/v1/executions", body))
        })
        .collect();
    let replies: Vec<Reply> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        replies.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    let id = created[0].json()["id"].clone();
    for r in &replies {
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        assert_eq!(r.json()["id"], id);
        assert_eq!(r.json()["duplicate"], r.status == 200);
    }
    let store = env.store().await;
    let all = store
        .executions(&jobvisor::store::ExecFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].unique_key.as_deref(), Some("only-one"));
}

/// A workflow (1 -> 60 -> 1 -> 20 -> 1 steps) on three nodes, one of them
/// killed while it runs steps: every step ends in exactly one succeeded
/// attempt, each attempt's side effect happens at most once, and no step
/// starts before all of its parents have ended.
async fn a_workflow_survives_a_node_killed_mid_run_with_no_step_lost_or_run_twice(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let log = add_mark_handler(&env, "sleep 0.1; ");
    let step = |name: String, after: Vec<String>| {
        serde_json::json!({"name": name, "handler": "mark", "retries": 3, "backoff": "50ms",
                           "after": after})
    };
    let middle: Vec<String> = (0..60).map(|i| format!("m{i}")).collect();
    let leaves: Vec<String> = (0..20).map(|i| format!("l{i}")).collect();
    let mut steps = vec![step("root".into(), vec![])];
    steps.extend(middle.iter().map(|m| step(m.clone(), vec!["root".into()])));
    steps.push(step("join".into(), middle.clone()));
    steps.extend(leaves.iter().map(|l| step(l.clone(), vec!["join".into()])));
    steps.push(step("end".into(), leaves.clone()));
    let file = env.path("dag.json");
    std::fs::write(
        &file,
        serde_json::json!({"name": "dag", "step": steps}).to_string(),
    )
    .unwrap();

    let lease = ["--node-lease", "3s", "--concurrency", "4"];
    let mut nodes: Vec<Serve> = (0..3).map(|_| env.serve(&lease)).collect();
    let id = env.ok(&["workflow", "run", &file.display().to_string()]);
    let id = uuid::Uuid::parse_str(id.trim()).unwrap();
    let store = env.store().await;
    // Once a dozen middle steps are done, kill a node that is running one.
    let victim_pid = eventually("a node running a middle step", || async {
        let (info, _, execs) = store.workflow(id).await.unwrap()?;
        if info.steps.get(&Status::Succeeded).copied().unwrap_or(0) < 12 {
            return None;
        }
        let node = execs
            .iter()
            .find(|e| e.status == Status::Running && e.step.as_deref() != Some("root"))?
            .node
            .clone()?;
        let live = store.live_nodes(0).await.unwrap();
        live.into_iter()
            .find(|n| n.id == node)
            .map(|n| n.pid as i32)
    })
    .await;
    let at = nodes.iter().position(|n| n.pid() == victim_pid).unwrap();
    let mut victim = nodes.remove(at);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();

    let (info, _, execs) = eventually("the workflow to end", || async {
        let w = store.workflow(id).await.unwrap()?;
        (jobvisor::workflow::overall(&w.0) != "running").then_some(w)
    })
    .await;
    assert_eq!(jobvisor::workflow::overall(&info), "succeeded", "{info:?}");
    assert_eq!(execs.len(), 83);
    // Each step: earlier attempts interrupted or failed, the last succeeded,
    // and it started after every parent's last attempt ended.
    let mut interrupted = 0;
    let mut attempts = 0;
    for e in &execs {
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        let mut a = e.clone();
        while let Some(prev) = a.previous_id {
            a = store.execution(prev).await.unwrap().unwrap();
            assert!(a.interrupted || a.status == Status::Failed, "{a:?}");
            interrupted += a.interrupted as usize;
            attempts += 1;
        }
        attempts += 1;
        for p in store.links(e.id).await.unwrap().parents {
            let p = store.execution(p).await.unwrap().unwrap();
            assert_eq!(p.status, Status::Succeeded);
            assert!(
                p.finished_at.unwrap() <= e.started_at.unwrap(),
                "{e:?} before {p:?}"
            );
        }
    }
    assert!(interrupted >= 1, "the killed node had a step in flight");
    // Each attempt's side effect at most once (marks() checks), and no more
    // attempts than recorded.
    let lines = marks(&log);
    assert!(
        lines.len() >= execs.len() && lines.len() <= attempts,
        "{} marks, {attempts} attempts",
        lines.len()
    );
}

/// A workflow cancelled through one node's HTTP API stops its steps running
/// on every node and cancels the rest; nothing pending or running is left,
/// and no step is retried.
async fn a_workflow_cancel_through_one_node_stops_its_steps_on_every_node(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    let nodes: Vec<Serve> = (0..3).map(|_| env.serve(&["--concurrency", "2"])).collect();
    let mut steps: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            serde_json::json!({"name": format!("s{i}"), "handler": "sleep", "retries": 5,
                "mode": if i % 2 == 0 { "process" } else { "inproc" },
                "payload": {"ms": 600000}})
        })
        .collect();
    let names: Vec<String> = (0..6).map(|i| format!("s{i}")).collect();
    steps.push(serde_json::json!({"name": "after", "handler": "noop", "after": names}));
    steps.push(
        serde_json::json!({"name": "anyway", "handler": "noop", "after": ["after"],
        "after_policy": "finished"}),
    );
    let body = serde_json::json!({"name": "spread", "step": steps}).to_string();
    let r = post(&nodes[1].http_addr(), "/v1/workflows", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let id: uuid::Uuid = r.json()["id"].as_str().unwrap().parse().unwrap();
    let store = env.store().await;
    // Six sleeps on three nodes of two slots each: one per slot.
    let running_on = eventually("all six sleeps running", || async {
        let (_, _, execs) = store.workflow(id).await.unwrap()?;
        let running: Vec<_> = execs
            .iter()
            .filter(|e| e.status == Status::Running)
            .collect();
        (running.len() == 6).then(|| {
            running
                .iter()
                .filter_map(|e| e.node.clone())
                .collect::<HashSet<_>>()
        })
    })
    .await;
    assert_eq!(running_on.len(), 3, "every node runs some");
    let asked = std::time::Instant::now();
    let r = post(
        &nodes[0].http_addr(),
        &format!("/v1/workflows/{id}/cancel"),
        r#"{"reason": "stop everything"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["requested"], 6);
    assert_eq!(r.json()["cancelled"], 2);
    let (info, _, execs) = eventually("every step to end", || async {
        let w = store.workflow(id).await.unwrap()?;
        w.2.iter().all(|e| e.status.is_terminal()).then_some(w)
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(jobvisor::workflow::overall(&info), "cancelled");
    for e in &execs {
        assert_eq!(e.status, Status::Cancelled, "{e:?}");
        assert_eq!(e.attempt, 1, "no step was retried: {e:?}");
    }
    let all = store
        .executions(&jobvisor::store::ExecFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(all.iter().all(|e| e.status.is_terminal()), "{all:?}");
}

/// Each execution's key, start and end (microseconds), in start order.
async fn spans(
    store: &dyn jobvisor::store::Store,
    ids: &[uuid::Uuid],
) -> Vec<(Option<String>, i64, i64, String)> {
    let mut out = Vec::new();
    for id in ids {
        let e = finished(store, *id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        out.push((
            e.concurrency_key.clone(),
            e.started_at.unwrap().micros(),
            e.finished_at.unwrap().micros(),
            e.node.clone().unwrap(),
        ));
    }
    out.sort_by_key(|s| s.1);
    out
}

async fn three_nodes_hold_a_key_limit_and_run_other_keys_at_once(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    env.ok(&["queue", "set-key-limit", "keyed", "1"]);
    // Two slots a node: three keys at once take at least two nodes.
    let nodes: Vec<Serve> = (0..3).map(|_| env.serve(&["--concurrency", "2"])).collect();
    let store = env.store().await;
    let sup = jobvisor::Supervisor::builder()
        .database(&url)
        .build()
        .await
        .unwrap();
    let specs = (0..30)
        .map(|i| {
            let mut s = jobvisor::RunSpec::new("sleep", serde_json::json!({"ms": 500}))
                .concurrency_key(format!("k{}", i % 3));
            s.queue = "keyed".into();
            s
        })
        .collect();
    let ids = sup.enqueue_many(specs).await.unwrap();
    // Never two running with one key, as the database says while they run.
    let running = jobvisor::store::ExecFilter {
        queue: Some("keyed".into()),
        statuses: vec![Status::Running],
        limit: 100,
        ..Default::default()
    };
    let mut polls = 0;
    loop {
        let now = store.executions(&running).await.unwrap();
        let keys: Vec<_> = now.iter().map(|e| e.concurrency_key.clone()).collect();
        let distinct: HashSet<_> = keys.iter().collect();
        assert_eq!(
            distinct.len(),
            keys.len(),
            "two running with one key: {keys:?}"
        );
        polls += 1;
        let pending = store
            .executions(&jobvisor::store::ExecFilter {
                queue: Some("keyed".into()),
                statuses: vec![Status::Pending],
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        if pending.is_empty() && now.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(polls > 20, "the database was looked at while they ran");
    let spans = spans(store.as_ref(), &ids).await;
    // And by their stamps: each starts after the one before it (of its
    // key) ended. A start is stamped before the claim statement that saw
    // the end and an end before it is recorded, so on a loaded machine the
    // stamps may cross by a scheduling delay; a second run would overlap
    // by the whole 500 ms.
    for key in ["k0", "k1", "k2"] {
        let mine: Vec<_> = spans
            .iter()
            .filter(|s| s.0.as_deref() == Some(key))
            .collect();
        assert_eq!(mine.len(), 10);
        for w in mine.windows(2) {
            assert!(
                w[1].1 >= w[0].2 - 50_000,
                "key {key}: {:?} overlaps {:?}",
                w[1],
                w[0]
            );
        }
    }
    // Three keys ran at once most of the time: sampled every 10 ms from
    // the first start to the last end.
    let (first, last) = (spans[0].1, spans.iter().map(|s| s.2).max().unwrap());
    let (mut samples, mut all_three) = (0, 0);
    for t in (first..last).step_by(10_000) {
        let running: HashSet<&str> = spans
            .iter()
            .filter(|s| s.1 <= t && t < s.2)
            .filter_map(|s| s.0.as_deref())
            .collect();
        samples += 1;
        all_three += usize::from(running.len() == 3);
    }
    let share = all_three as f64 / samples as f64;
    assert!(
        share > 0.5,
        "three keys ran at once {:.0} % of the time",
        share * 100.0
    );
    let by_node: HashSet<&String> = spans.iter().map(|s| &s.3).collect();
    assert!(
        by_node.len() >= 2,
        "more than one node took part: {by_node:?}"
    );
    drop(nodes);
}

async fn three_nodes_hold_a_rate_and_a_change_applies_without_a_restart(url: String) {
    let env = db_env(&url);
    env.ok(&["migrate"]);
    env.ok(&["queue", "set-rate", "rated", "5/1s"]);
    // Two at once per node and 300 ms each: a window's five starts need
    // all three nodes, so the rate is shown held across nodes (one node
    // that took every window would hold it alone), whichever node wakes
    // first.
    let nodes: Vec<Serve> = (0..3).map(|_| env.serve(&["--concurrency", "2"])).collect();
    let store = env.store().await;
    let sup = jobvisor::Supervisor::builder()
        .database(&url)
        .build()
        .await
        .unwrap();
    let specs = (0..30)
        .map(|_| {
            let mut s = jobvisor::RunSpec::new("sleep", serde_json::json!({"ms": 300}));
            s.queue = "rated".into();
            s
        })
        .collect();
    let ids = sup.enqueue_many(specs).await.unwrap();
    let spans = spans(store.as_ref(), &ids).await;
    let starts: Vec<i64> = spans.iter().map(|s| s.1).collect();
    // Measured from started_at: no window of a second holds more than 5.
    for (i, s) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|t| **t < s + 1_000_000)
            .count();
        assert!(within <= 5, "{within} started within 1s of {s}: {starts:?}");
    }
    // And the rate was used, not starved: 30 at 5/s take about 5 s.
    let took = starts[29] - starts[0];
    assert!(
        (5_000_000..=9_000_000).contains(&took),
        "30 starts took {took} us"
    );
    let by_node: HashSet<&String> = spans.iter().map(|s| &s.3).collect();
    assert_eq!(by_node.len(), 3, "every node took part: {by_node:?}");

    // Lifted while a backlog waits: every node starts the rest at once.
    env.ok(&["queue", "set-rate", "rated", "1/1h"]);
    let specs = (0..20)
        .map(|_| {
            let mut s = jobvisor::RunSpec::new("noop", serde_json::Value::Null);
            s.queue = "rated".into();
            s
        })
        .collect();
    let held = sup.enqueue_many(specs).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = store
        .executions(&jobvisor::store::ExecFilter {
            queue: Some("rated".into()),
            statuses: vec![Status::Pending],
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 20, "1/1h: the window is full");
    let lifted = std::time::Instant::now();
    env.ok(&["queue", "set-rate", "rated", "none"]);
    for id in &held {
        finished(store.as_ref(), *id).await;
    }
    assert!(
        lifted.elapsed() < Duration::from_secs(5),
        "the backlog ran {:?} after the rate was lifted",
        lifted.elapsed()
    );
    drop(nodes);
}

async fn events_from_another_node_reach_a_subscriber_and_hooks_hear_only_their_own_node(
    url: String,
) {
    use jobvisor::events::{Event, EventKind};
    use std::sync::{Arc, Mutex};
    let env = db_env(&url);
    env.ok(&["migrate"]);
    // Node A embeds the supervisor and subscribes; it does not run, so
    // node B (a `jobvisor serve`) runs everything.
    let hooked: Arc<Mutex<Vec<Event>>> = Arc::default();
    let h = hooked.clone();
    let a = jobvisor::Supervisor::builder()
        .database(&url)
        .on_event(move |e| h.lock().unwrap().push(e.clone()))
        .build()
        .await
        .unwrap();
    let mut rx = a.events().await;
    let _b = env.serve(&[]);
    let store = env.store().await;
    let ok = a
        .enqueue(jobvisor::RunSpec::new(
            "progress",
            serde_json::json!({"steps": 2, "delay_ms": 300}),
        ))
        .await
        .unwrap();
    let bad = a
        .enqueue(jobvisor::RunSpec::new(
            "fail",
            serde_json::json!({"message": "broken", "retry": false}),
        ))
        .await
        .unwrap();
    finished(store.as_ref(), ok).await;
    finished(store.as_ref(), bad).await;
    let b_node = store.execution(ok).await.unwrap().unwrap().node.unwrap();
    assert_ne!(b_node, a.node_id());

    let seen = hear_until(&mut rx, |seen| {
        saw(seen, ok, "succeeded") && saw(seen, bad, "failed")
    })
    .await;
    // Each execution's events as heard, its `enqueued` (from node A) put
    // first: events from two nodes are in no set order.
    let of = |id| -> Vec<(&str, &str)> {
        enqueued_first(&seen, id)
            .iter()
            .map(|e| (e.node.as_str(), e.kind.name()))
            .collect()
    };
    let (a_node, b_node) = (a.node_id(), b_node.as_str());
    assert_eq!(
        of(ok),
        [
            (a_node, "enqueued"),
            (b_node, "started"),
            (b_node, "progress"),
            (b_node, "progress"),
            (b_node, "succeeded"),
        ]
    );
    assert_eq!(
        of(bad),
        [
            (a_node, "enqueued"),
            (b_node, "started"),
            (b_node, "failed")
        ]
    );
    let last = seen.iter().rfind(|e| e.execution_id == ok).unwrap();
    assert_eq!(last.handler, "progress");
    assert_eq!(
        last.kind,
        EventKind::Succeeded {
            attempt: 1,
            output: Some(serde_json::json!({"steps": 2}))
        }
    );
    let failed = seen.iter().rfind(|e| e.execution_id == bad).unwrap();
    assert_eq!(
        failed.kind,
        EventKind::Failed {
            attempt: 1,
            error: "broken".into()
        }
    );
    // A's hooks heard A's own events (the enqueues) and nothing of B's.
    let hooked: Vec<(Uuid, String)> = hooked
        .lock()
        .unwrap()
        .iter()
        .map(|e| (e.execution_id, e.node.clone()))
        .collect();
    assert_eq!(
        hooked,
        [(ok, a_node.to_string()), (bad, a_node.to_string())]
    );

    // A dependent that B cancels, because its upstream failed there, is
    // heard on A too, after that failure. The upstream is due in a few
    // seconds, so that the dependent is inserted while it waits.
    let mut parent = jobvisor::RunSpec::new(
        "fail",
        serde_json::json!({"message": "broken", "retry": false}),
    );
    parent.run_at = Some(jobvisor::model::now_micros() + 3_000_000);
    let parent = a.enqueue(parent).await.unwrap();
    let mut child = jobvisor::RunSpec::new("noop", serde_json::Value::Null);
    child.after = vec![parent];
    let child = a.enqueue(child).await.unwrap();
    let seen = hear_until(&mut rx, |seen| saw(seen, child, "cancelled")).await;
    let ends: Vec<(Uuid, &str, &str)> = seen
        .iter()
        .filter(|e| matches!(e.kind.name(), "failed" | "cancelled"))
        .map(|e| (e.execution_id, e.node.as_str(), e.kind.name()))
        .collect();
    assert_eq!(
        ends,
        [(parent, b_node, "failed"), (child, b_node, "cancelled")]
    );
    assert_eq!(
        seen.last().unwrap().kind,
        EventKind::Cancelled {
            reason: Some(format!("upstream {parent} failed"))
        }
    );

    // A CLI command is no node, but what it does is heard: an enqueue,
    // and a cancel of a run that has not started (its queue is paused).
    env.ok(&["queue", "pause", "held"]);
    let held = env.ok(&["run", "noop", "--queue", "held"]);
    let held: Uuid = held.trim().parse().unwrap();
    env.ok(&["exec", "cancel", &held.to_string(), "--reason", "not now"]);
    let seen = hear_until(&mut rx, |seen| saw(seen, held, "cancelled")).await;
    let held: Vec<&Event> = seen.iter().filter(|e| e.execution_id == held).collect();
    assert_eq!(held.len(), 2, "{held:#?}");
    assert!(held[0].node.starts_with("cli@"), "{held:#?}");
    assert_eq!(held[0].node, held[1].node);
    assert_eq!(held[0].handler, "noop");
    assert!(matches!(&held[0].kind, EventKind::Enqueued { queue, .. } if queue == "held"));
    assert_eq!(
        held[1].kind,
        EventKind::Cancelled {
            reason: Some("not now".into())
        }
    );
}

/// Each test on a fresh PostgreSQL database and on a fresh MariaDB one.
macro_rules! nodes {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(url) = super::pg_database().await {
                        super::$name(url).await;
                    }
                }
            )*
        }
        mod mysql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(url) = super::mysql_database().await {
                        super::$name(url).await;
                    }
                }
            )*
        }
    };
}

nodes!(
    three_nodes_run_every_execution_exactly_once,
    a_cancel_issued_anywhere_reaches_the_node_running_the_execution,
    a_one_second_cron_on_three_nodes_runs_each_occurrence_once,
    a_killed_node_is_rescued_and_a_stale_node_cannot_complete_what_was_rescued,
    three_supervisors_record_twenty_thousand_side_effects_exactly_once,
    a_node_killed_halfway_loses_nothing_and_no_attempt_runs_twice,
    fifty_enqueues_of_one_key_through_three_nodes_make_one_execution,
    a_workflow_survives_a_node_killed_mid_run_with_no_step_lost_or_run_twice,
    a_workflow_cancel_through_one_node_stops_its_steps_on_every_node,
    three_nodes_hold_a_key_limit_and_run_other_keys_at_once,
    three_nodes_hold_a_rate_and_a_change_applies_without_a_restart,
    events_from_another_node_reach_a_subscriber_and_hooks_hear_only_their_own_node,
);
