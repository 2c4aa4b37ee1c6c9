//! The library API in-process: inproc mode's cancel, abort, timeout and
//! panic handling; retries; children that outlive the thread that spawned
//! them.

mod common;

use common::*;
use jobvisor::store::QueueChange;
use jobvisor::{HandlerError, Mode, RunSpec, Status, Supervisor};
use serde_json::json;
use std::time::Duration;
use tokio::sync::oneshot;
use uuid::Uuid;

async fn start(
    env: &Env,
    build: impl FnOnce(jobvisor::SupervisorBuilder) -> jobvisor::SupervisorBuilder,
) -> (Supervisor, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    start_supervisor(&env.db, build).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inproc_cancel_is_cooperative_and_a_handler_that_ignores_it_is_aborted_after_the_grace() {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.register(
            "deaf",
            |_ctx: jobvisor::Context, _p: serde_json::Value| async move {
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(json!(null))
            },
        )
    })
    .await;
    let store = sup.store().clone();
    let polite = sup
        .enqueue(RunSpec::new("sleep", json!({"ms": 600000})))
        .await
        .unwrap();
    let deaf = sup
        .enqueue(RunSpec::new("deaf", json!(null)))
        .await
        .unwrap();
    for id in [polite, deaf] {
        eventually("running", || async {
            let e = store.execution(id).await.unwrap()?;
            (e.status == Status::Running).then_some(())
        })
        .await;
        sup.cancel(id, "test").await.unwrap();
    }
    let p = finished(store.as_ref(), polite).await;
    assert_eq!(
        (p.status, p.cancel_outcome.as_deref()),
        (Status::Cancelled, Some("cooperative"))
    );
    let d = finished(store.as_ref(), deaf).await;
    assert_eq!(
        (d.status, d.cancel_outcome.as_deref()),
        (Status::Cancelled, Some("abort"))
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inproc_timeout_fails_the_execution_and_a_panic_stays_contained() {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.configure(|c| c.test_builtins = Some(Default::default()))
    })
    .await;
    let store = sup.store().clone();
    let mut spec = RunSpec::new("sleep", json!({"ms": 600000}));
    spec.timeout = Some(Duration::from_millis(200));
    let slow = sup.enqueue(spec).await.unwrap();
    let boom = sup
        .enqueue(RunSpec::new("panic", json!({"message": "kaboom"})))
        .await
        .unwrap();
    let s = finished(store.as_ref(), slow).await;
    assert_eq!(s.status, Status::Failed);
    assert!(s.timed_out);
    let b = finished(store.as_ref(), boom).await;
    assert_eq!(b.error.as_deref(), Some("panicked: kaboom"));
    let logs = store.logs(boom, 0, None, 10).await.unwrap();
    assert!(logs.iter().any(|l| l.level == jobvisor::Level::Panic));
    // Still serving.
    let ok = sup.enqueue(RunSpec::new("echo", json!(1))).await.unwrap();
    assert_eq!(finished(store.as_ref(), ok).await.output, Some(json!(1)));
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handler_runs_the_same_in_both_modes_and_retries_with_backoff() {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.register(
            "flaky",
            |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                ctx.info(format!("attempt {}", ctx.execution().attempt))
                    .await;
                if ctx.execution().attempt < 3 {
                    Err(HandlerError::retryable("not yet"))
                } else {
                    Ok(json!("third time lucky"))
                }
            },
        )
    })
    .await;
    let store = sup.store().clone();
    let mut spec = RunSpec::new("flaky", json!(null));
    spec.retries = 5;
    spec.backoff = Duration::from_millis(20);
    let first = sup.enqueue(spec).await.unwrap();
    let mut id = first;
    let mut seen = Vec::new();
    loop {
        let e = finished(store.as_ref(), id).await;
        seen.push(e.status);
        match e.next_id {
            Some(n) => id = n,
            None => break,
        }
    }
    assert_eq!(seen, [Status::Failed, Status::Failed, Status::Succeeded]);

    // The same built-in in either mode: same output, same progress.
    for mode in [Mode::Inproc, Mode::Process] {
        let id = sup
            .enqueue(RunSpec::new("progress", json!({"steps": 3, "delay_ms": 1})).mode(mode))
            .await
            .unwrap();
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{mode}: {e:?}");
        assert_eq!(e.output, Some(json!({"steps": 3})), "{mode}");
        assert_eq!(e.progress.percent, Some(100.0), "{mode}");
    }
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[test]
fn children_outlive_the_runtime_threads_that_asked_for_them() {
    // Blocking threads that retire after 50 ms idle: a child spawned from
    // one of them with a thread-bound death signal would be killed.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = Env::new();
        let (sup, stop, task) = start(&env, |b| b).await;
        let store = sup.store().clone();
        // Ask for the spawn from inside a blocking thread.
        let s = sup.clone();
        let id = tokio::task::spawn_blocking(move || {
            tokio::runtime::Handle::current().block_on(async move {
                s.enqueue(RunSpec::new("sleep", json!({"ms": 1500})).mode(Mode::Process))
                    .await
                    .unwrap()
            })
        })
        .await
        .unwrap();
        running_with_pid(store.as_ref(), id).await;
        // Let every blocking thread retire, and churn some more.
        for _ in 0..4 {
            tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(5)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let e = finished(store.as_ref(), id).await;
        assert_eq!(e.status, Status::Succeeded, "{e:?}");
        assert_eq!(e.signal, None);
        stop.send(()).unwrap();
        task.await.unwrap();
    });
}

#[test]
fn a_child_spawned_from_a_retiring_blocking_thread_is_not_killed_with_it() {
    use jobvisor::runner::{isolate, os};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_keep_alive(Duration::from_millis(50))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut child = tokio::task::spawn_blocking(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("30").kill_on_drop(true);
                // The death signal, set between fork and exec as for any
                // program that does not guard itself.
                let setup = isolate::Setup::plan(
                    &jobvisor::model::ProcessLimits::default(),
                    isolate::Options {
                        cgroup: false,
                        death_signal: true,
                        shim: None,
                        self_join: false,
                    },
                    "test",
                )
                .unwrap();
                setup.apply(&mut cmd);
                os::spawn(cmd).await.unwrap()
            })
        })
        .await
        .unwrap();
        // The blocking thread that asked for the spawn retires after 50 ms.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child was killed when the requesting thread retired"
        );
        child.kill().await.unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_leaves_the_applications_core_limit_alone_and_children_still_dump_no_core() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let env = Env::new();
    let (_, hard) = getrlimit(Resource::RLIMIT_CORE).unwrap();
    let soft = hard.min(1 << 20);
    assert!(
        soft > 0,
        "the hard core limit is 0 here: nothing to leave alone"
    );
    setrlimit(Resource::RLIMIT_CORE, soft, hard).unwrap();
    env.sh_handler("corelimit", "ulimit -c", &[]);
    let (sup, stop, task) = start(&env, |b| b).await;
    let id = sup
        .enqueue(RunSpec::new("corelimit", json!(null)))
        .await
        .unwrap();
    let store = sup.store().clone();
    let done = finished(store.as_ref(), id).await;
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    let logs = store.logs(id, 0, None, 10).await.unwrap();
    assert_eq!(logs[0].message, "0", "the child's core limit");
    assert_eq!(
        getrlimit(Resource::RLIMIT_CORE).unwrap(),
        (soft, hard),
        "the application's own limit changed"
    );
    let _ = stop.send(());
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggering_a_job_or_resuming_a_queue_wakes_the_dispatcher_by_itself() {
    let env = Env::new();
    env.ok(&["job", "add", "later", "--handler", "noop", "--at", "+1h"]);
    // Polling would take a minute: only the methods' own notice is quick.
    let (sup, stop, task) = start(&env, |b| {
        b.configure(|c| {
            c.poll_interval = Duration::from_secs(60);
            c.schedule_poll_interval = Duration::from_secs(60);
        })
    })
    .await;
    let store = sup.store().clone();
    let quick = Duration::from_secs(10);
    let id = sup.trigger_job("later").await.unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);
    assert!(t0.elapsed() < quick, "{:?}", t0.elapsed());

    sup.set_queue(
        "held",
        &QueueChange {
            paused: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut spec = RunSpec::new("noop", json!(null));
    spec.queue = "held".into();
    let id = sup.enqueue(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = store.execution(id).await.unwrap().unwrap();
    assert_eq!(e.status, Status::Pending, "a paused queue holds it");
    sup.set_queue(
        "held",
        &QueueChange {
            paused: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(finished(store.as_ref(), id).await.status, Status::Succeeded);
    assert!(t0.elapsed() < quick, "{:?}", t0.elapsed());
    assert!(sup
        .set_queue(
            "",
            &QueueChange {
                paused: Some(true),
                ..Default::default()
            }
        )
        .await
        .is_err());
    // Limits that could never let anything run are refused, not stored.
    for bad in [
        QueueChange {
            limit: Some(Some(0)),
            ..Default::default()
        },
        QueueChange {
            key_limit: Some(Some(0)),
            ..Default::default()
        },
        QueueChange {
            rate: Some(Some(jobvisor::model::Rate { n: 0, per_ms: 1000 })),
            ..Default::default()
        },
        QueueChange {
            rate: Some(Some(jobvisor::model::Rate { n: 5, per_ms: 0 })),
            ..Default::default()
        },
    ] {
        assert!(
            matches!(
                sup.set_queue("q", &bad).await,
                Err(jobvisor::Error::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    let q = sup.store().queues().await.unwrap();
    assert!(q.iter().all(|q| q.name != "q"), "nothing written: {q:?}");
    assert!(matches!(
        sup.pause_job("nosuch").await,
        Err(jobvisor::Error::UnknownJob(_))
    ));
    let _ = stop.send(());
    task.await.unwrap();
}

/// A panic in any actor of the supervisor (a bug in jobvisor, injected
/// here) is reported by `run` as an error naming the actor, and the
/// supervisor stops cleanly: what ran is closed as interrupted (it runs
/// again), nothing is left running, and the node is marked stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_actor_stops_the_supervisor_cleanly_and_is_reported() {
    use jobvisor::supervisor::Actor;
    for actor in [Actor::Scheduler, Actor::Maintenance, Actor::Dispatcher] {
        let env = Env::new();
        let sup = Supervisor::builder()
            .database(&env.db)
            .configure(|c| {
                c.worker_program = Some(worker_bin());
                c.poll_interval = Duration::from_millis(20);
            })
            .build()
            .await
            .unwrap();
        let store = sup.store().clone();
        let id = sup
            .enqueue(RunSpec::new("sleep", json!({"ms": 600000})).mode(Mode::Inproc))
            .await
            .unwrap();
        let run = tokio::spawn({
            let sup = sup.clone();
            async move { sup.run(std::future::pending()).await }
        });
        eventually("running", || async {
            let e = store.execution(id).await.unwrap()?;
            (e.status == Status::Running).then_some(())
        })
        .await;
        sup.inject_panic(actor);
        let result = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .unwrap_or_else(|_| panic!("{actor:?}: the supervisor did not stop"))
            .unwrap();
        match result {
            Err(jobvisor::Error::Panicked { actor: a, message }) => {
                assert_eq!(a, actor);
                assert!(message.contains("fault injected"), "{message}");
            }
            other => panic!("{actor:?}: {other:?}"),
        }
        let e = finished(store.as_ref(), id).await;
        assert!(
            e.status == Status::Failed && e.interrupted,
            "{actor:?}: {e:?}"
        );
        let retry = e.next_id.expect("an interrupted execution runs again");
        assert_eq!(
            store.execution(retry).await.unwrap().unwrap().status,
            Status::Pending
        );
        assert_eq!(sup.running_count(), 0, "{actor:?}");
        assert!(store.live_nodes(0).await.unwrap().is_empty(), "{actor:?}");
        // A supervisor runs once.
        assert!(matches!(
            sup.run(async {}).await,
            Err(jobvisor::Error::Invalid(_))
        ));
    }
}

/// Wakes are coalesced: a burst of changes (here 3,000 queue changes, more
/// than an actor's mailbox holds) neither floods the dispatcher nor holds
/// up its work or its stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_coalesced_and_the_stop_still_arrives() {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| b).await;
    for i in 0..3000 {
        sup.set_queue(
            "burst",
            &QueueChange {
                limit: Some(Some(1 + i % 3)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    let mut spec = RunSpec::new("noop", json!(null));
    spec.queue = "burst".into();
    let id = sup.enqueue(spec).await.unwrap();
    let e = finished(sup.store().as_ref(), id).await;
    assert_eq!(e.status, Status::Succeeded);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the supervisor stops")
        .unwrap();
}

/// `RunSpec::after` and `Supervisor::workflow` from Rust: a library
/// handler reads its parents' outputs through `Context::inputs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_handler_reads_its_parents_outputs_through_context_inputs() {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.register(
            "sum",
            |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                let total: i64 = ctx
                    .inputs()
                    .iter()
                    .map(|i| i.output["n"].as_i64().unwrap_or(0))
                    .sum();
                Ok(json!({"total": total, "parents": ctx.inputs().len()}))
            },
        )
    })
    .await;
    let store = sup.store().clone();
    let a = sup
        .enqueue(RunSpec::new("echo", json!({"n": 2})))
        .await
        .unwrap();
    let b = sup
        .enqueue(RunSpec::new("echo", json!({"n": 5})))
        .await
        .unwrap();
    let sum = sup
        .enqueue(RunSpec::new("sum", json!(null)).after(a).after(b))
        .await
        .unwrap();
    let e = finished(store.as_ref(), sum).await;
    assert_eq!(e.output, Some(json!({"total": 7, "parents": 2})));

    let spec = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "lib", "step": [
            {"name": "one", "handler": "echo", "payload": {"n": 1}},
            {"name": "two", "handler": "echo", "mode": "process", "payload": {"n": 10}},
            {"name": "sum", "handler": "sum", "after": ["one", "two"]}
        ]}"#,
    )
    .unwrap();
    let done = sup.workflow(&spec).await.unwrap();
    assert_eq!(done.steps.len(), 3);
    let (_, last) = done.steps.last().unwrap();
    let e = finished(store.as_ref(), *last).await;
    assert_eq!(e.output, Some(json!({"total": 11, "parents": 2})));
    // An unknown handler writes nothing.
    let bad = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "bad", "step": [{"name": "x", "handler": "missing"}]}"#,
    )
    .unwrap();
    assert!(matches!(
        sup.workflow(&bad).await,
        Err(jobvisor::Error::Invalid(_))
    ));
    assert_eq!(store.workflows(10).await.unwrap().len(), 1);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// The executions of the chain that starts at `id`, in order, once its
/// last one has ended.
async fn chain_of(store: &dyn jobvisor::store::Reads, id: uuid::Uuid) -> Vec<jobvisor::Execution> {
    let mut out = vec![finished(store, id).await];
    while let Some(next) = out.last().unwrap().next_id {
        out.push(finished(store, next).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_snoozes_without_using_its_retries_up_to_the_limit() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.register(
            "later",
            |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                let call = CALLS.fetch_add(1, Ordering::SeqCst);
                // Each attempt knows how often its chain snoozed before it.
                if ctx.execution().snoozes != call {
                    return Err(HandlerError::permanent(format!(
                        "snoozes {} at call {call}",
                        ctx.execution().snoozes
                    )));
                }
                match call {
                    0 => Err(HandlerError::snooze(Duration::from_millis(200))),
                    1 | 2 => Err(HandlerError::snooze_because(
                        Duration::from_millis(50),
                        "rate limited upstream",
                    )),
                    _ => Ok(json!("done")),
                }
            },
        )
        .register(
            "never",
            |_ctx: jobvisor::Context, _p: serde_json::Value| async move {
                Err::<(), _>(HandlerError::snooze(Duration::ZERO))
            },
        )
    })
    .await;
    let store = sup.store().clone();
    let id = sup
        .enqueue(RunSpec::new("later", json!(null)))
        .await
        .unwrap();
    let chain = chain_of(store.as_ref(), id).await;
    let statuses: Vec<Status> = chain.iter().map(|e| e.status).collect();
    use Status::{Snoozed, Succeeded};
    assert_eq!(statuses, [Snoozed, Snoozed, Snoozed, Succeeded]);
    for (i, e) in chain.iter().enumerate() {
        assert_eq!(
            (e.attempt, e.max_attempts, e.snoozes),
            (1, 1, i as u32),
            "{e:?}"
        );
        let origin = [
            jobvisor::model::Origin::Manual,
            jobvisor::model::Origin::Snooze,
        ];
        assert_eq!(e.origin, origin[usize::from(i > 0)], "{e:?}");
    }
    assert_eq!(chain[0].error.as_deref(), Some("snoozed for 200ms"));
    assert_eq!(
        chain[1].error.as_deref(),
        Some("snoozed for 50ms: rate limited upstream")
    );
    // Not before its delay.
    let gap = chain[1].run_at.micros() - chain[0].finished_at.unwrap().micros();
    assert!(gap >= 200_000, "due {gap} us after the snooze");
    assert!(chain[1].started_at.unwrap() >= chain[1].run_at);

    // A chain that always snoozes fails for good at the 1,001st.
    let id = sup
        .enqueue(RunSpec::new("never", json!(null)))
        .await
        .unwrap();
    let chain = chain_of(store.as_ref(), id).await;
    assert_eq!(chain.len(), 1_001);
    assert!(chain[..1_000].iter().all(|e| e.status == Status::Snoozed));
    let last = chain.last().unwrap();
    assert_eq!((last.status, last.snoozes), (Status::Failed, 1_000));
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .contains("snoozed 1000 times already"),
        "{last:?}"
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
    items: Vec<Item>,
    note: Option<String>,
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(serde::Serialize)]
struct Total {
    order: u64,
    units: u32,
    note: Option<String>,
}

async fn total(ctx: jobvisor::Context, order: Order) -> Result<Total, HandlerError> {
    ctx.info(format!(
        "order {} has {} lines",
        order.id,
        order.items.len()
    ))
    .await;
    Ok(Total {
        order: order.id,
        units: order.items.iter().map(|i| i.qty).sum(),
        note: order.note,
    })
}

#[derive(serde::Deserialize, Default)]
struct Optional {
    greeting: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_handler_gets_its_arguments_decoded_and_a_payload_that_does_not_decode_fails_for_good_naming_the_field(
) {
    let env = Env::new();
    let (sup, stop, task) = start(&env, |b| {
        b.register("total", total).register(
            "greet",
            |_ctx: jobvisor::Context, args: Optional| async move {
                Ok::<_, HandlerError>(args.greeting.unwrap_or_else(|| "hello".into()))
            },
        )
    })
    .await;
    let store = sup.store().clone();

    let args = json!({"id": 7, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 3}]});
    let ok = sup.enqueue(RunSpec::new("total", args)).await.unwrap();
    let e = finished(store.as_ref(), ok).await;
    assert_eq!(e.status, Status::Succeeded, "{e:?}");
    assert_eq!(
        e.output,
        Some(json!({"order": 7, "units": 5, "note": null}))
    );

    // RunSpec::with_args encodes what the handler decodes.
    let items = vec![Item {
        sku: "c".into(),
        qty: 4,
    }];
    let spec = RunSpec::with_args("total", &json!({"id": 8, "items": items})).unwrap();
    let e = finished(store.as_ref(), sup.enqueue(spec).await.unwrap()).await;
    assert_eq!(
        e.output,
        Some(json!({"order": 8, "units": 4, "note": null}))
    );

    // Retries are allowed, but the same payload cannot decode next time.
    for (payload, says) in [
        (
            json!({"id": 9, "items": [{"sku": "a", "qty": "two"}]}),
            "invalid payload: at `items[0].qty`: invalid type: string \"two\", expected u32",
        ),
        (json!({"items": []}), "invalid payload: missing field `id`"),
        (json!(null), "invalid payload: missing field `id`"),
    ] {
        let mut spec = RunSpec::new("total", payload.clone());
        spec.retries = 3;
        spec.backoff = Duration::from_millis(10);
        let e = finished(store.as_ref(), sup.enqueue(spec).await.unwrap()).await;
        assert_eq!(e.status, Status::Failed, "{payload}: {e:?}");
        assert_eq!(e.error.as_deref(), Some(says), "{payload}");
        assert_eq!((e.attempt, e.next_id), (1, None), "{payload}: not retried");
    }

    // No payload is an empty object to a struct whose fields are optional.
    let e = finished(
        store.as_ref(),
        sup.enqueue(RunSpec::new("greet", json!(null)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.output, Some(json!("hello")), "{e:?}");
    let e = finished(
        store.as_ref(),
        sup.enqueue(RunSpec::new("greet", json!({"greeting": "hi"})))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(e.output, Some(json!("hi")), "{e:?}");
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Executions that end without starting are announced too: cancelled by
/// hand while pending (one, in bulk, a workflow's), or because an upstream
/// failed (after that upstream's `failed`, and after their own `enqueued`
/// when the upstream had failed before they were inserted). A retry asked
/// for by hand is an `enqueued`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_ends_without_a_start_and_retries_by_hand() {
    use jobvisor::events::EventKind;
    use std::sync::{Arc, Mutex};
    let env = Env::new();
    let cancels: Arc<Mutex<Vec<Uuid>>> = Arc::default();
    let (sup, stop, task) = start(&env, |b| {
        let cancels = cancels.clone();
        b.on_cancel(move |e| cancels.lock().unwrap().push(e.execution_id))
    })
    .await;
    let mut rx = sup.events().await;
    let mut seen = Vec::new();
    let kinds = |seen: &[jobvisor::events::Event], id: Uuid| -> Vec<&'static str> {
        seen.iter()
            .filter(|e| e.execution_id == id)
            .map(|e| e.kind.name())
            .collect()
    };
    let later = || RunSpec {
        run_at: Some(jobvisor::model::now_micros() + 3_600_000_000),
        ..RunSpec::new("noop", json!(null))
    };

    // By hand, one pending.
    let one = sup.enqueue(later()).await.unwrap();
    sup.cancel(one, "not today").await.unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == one && e.kind.name() == "cancelled"
    })
    .await;
    assert_eq!(kinds(&seen, one), ["enqueued", "cancelled"]);
    let e = seen.last().unwrap();
    assert_eq!(
        (&e.kind, e.handler.as_str(), e.node.as_str()),
        (
            &EventKind::Cancelled {
                reason: Some("not today".into())
            },
            "noop",
            sup.node_id()
        )
    );

    // In bulk.
    let mut spec = later();
    spec.queue = "bulk".into();
    let bulk = sup.enqueue(spec).await.unwrap();
    let filter = jobvisor::store::ExecFilter {
        queue: Some("bulk".into()),
        ..Default::default()
    };
    let done = sup.cancel_matching(&filter, "draining").await.unwrap();
    assert_eq!(done.cancelled, Some(1));
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == bulk && e.kind.name() == "cancelled"
    })
    .await;

    // A workflow: its second step waits on a first that fails for good,
    // so it is cancelled after that failure is announced; a workflow
    // cancelled while its steps wait announces each.
    let spec = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "w", "steps": [
            {"name": "a", "handler": "fail", "payload": {"message": "broken", "retry": false}},
            {"name": "b", "handler": "noop", "after": ["a"]}]}"#,
    )
    .unwrap();
    let w = sup.workflow(&spec).await.unwrap();
    let (a, b) = (w.steps[0].1, w.steps[1].1);
    seen.clear();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == b && e.kind.name() == "cancelled"
    })
    .await;
    let order: Vec<(Uuid, &str)> = seen
        .iter()
        .filter(|e| matches!(e.kind.name(), "failed" | "cancelled"))
        .map(|e| (e.execution_id, e.kind.name()))
        .collect();
    assert_eq!(order, [(a, "failed"), (b, "cancelled")]);
    let why = format!("upstream {a} failed");
    assert_eq!(
        seen.last().unwrap().kind,
        EventKind::Cancelled {
            reason: Some(why.clone())
        }
    );

    // Inserted after its upstream failed: cancelled as it is inserted,
    // announced after its `enqueued`.
    let late = sup
        .enqueue(RunSpec {
            after: vec![a],
            ..RunSpec::new("noop", json!(null))
        })
        .await
        .unwrap();
    seen.clear();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == late && e.kind.name() == "cancelled"
    })
    .await;
    assert_eq!(kinds(&seen, late), ["enqueued", "cancelled"]);
    assert_eq!(
        seen.last().unwrap().kind,
        EventKind::Cancelled { reason: Some(why) }
    );

    // A retry by hand of the failed step.
    let jobvisor::store::RetryRequest::Retried(again) = sup.retry(a).await.unwrap() else {
        panic!("the failed step can be retried");
    };
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == again && e.kind.name() == "enqueued"
    })
    .await;
    assert_eq!(seen.last().unwrap().handler, "fail");
    // By filter, once that attempt has failed too.
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == again && e.kind.name() == "failed"
    })
    .await;
    let failed = jobvisor::store::ExecFilter {
        handler: Some("fail".into()),
        statuses: vec![jobvisor::Status::Failed],
        ..Default::default()
    };
    let done = sup.retry_matching(&failed).await.unwrap();
    assert_eq!(done.retried, Some(1), "{done:?}");
    events_until(&mut rx, &mut seen, |e| {
        e.handler == "fail" && ![a, again].contains(&e.execution_id) && e.kind.name() == "enqueued"
    })
    .await;

    // A job's run triggered by hand.
    let spec = jobvisor::model::JobSpec::new(
        "weekly",
        "noop",
        jobvisor::schedule::ScheduleSpec::Cron {
            expr: "0 9 * * 1".into(),
            tz: "UTC".into(),
        },
    );
    sup.add_job(spec).await.unwrap();
    let run = sup.trigger_job("weekly").await.unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == run && e.kind.name() == "enqueued"
    })
    .await;
    assert_eq!(seen.last().unwrap().job.as_deref(), Some("weekly"));

    let spec = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "w2", "steps": [{"name": "x", "handler": "noop", "after": ["y"]},
            {"name": "y", "handler": "sleep", "payload": {"ms": 600000}}]}"#,
    )
    .unwrap();
    let w2 = sup.workflow(&spec).await.unwrap();
    let step = |name: &str| w2.steps.iter().find(|(n, _)| n == name).unwrap().1;
    let (x, y) = (step("x"), step("y"));
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == y && e.kind.name() == "started"
    })
    .await;
    sup.cancel_workflow(w2.id, "stop it")
        .await
        .unwrap()
        .unwrap();
    seen.clear();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == y && e.kind.name() == "cancelled"
    })
    .await;
    // x waited on y: cancelled at once, before y's run ends.
    let ends: Vec<&jobvisor::events::Event> = seen
        .iter()
        .filter(|e| [x, y].contains(&e.execution_id))
        .collect();
    assert_eq!(ends.len(), 2, "{ends:#?}");
    assert_eq!(ends[0].execution_id, x);
    assert_eq!(
        ends[0].kind,
        EventKind::Cancelled {
            reason: Some("stop it".into())
        }
    );

    // The hook heard every one of them, in order.
    let want = [one, bulk, b, late, x, y];
    eventually("the cancel hooks ran", || async {
        let heard = cancels.lock().unwrap().clone();
        (heard.len() >= want.len()).then_some(heard)
    })
    .await;
    assert_eq!(*cancels.lock().unwrap(), want);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// The kinds of execution `id`'s events as heard, its `enqueued` first.
fn sequence(seen: &[jobvisor::events::Event], id: Uuid) -> Vec<&'static str> {
    enqueued_first(seen, id)
        .iter()
        .map(|e| e.kind.name())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_each_step_of_an_execution_and_hooks_hear_theirs() {
    use jobvisor::events::EventKind;
    use std::sync::{Arc, Mutex};
    let env = Env::new();
    let heard: Arc<Mutex<Vec<(String, Uuid)>>> = Arc::default();
    let hook = |name: &'static str| {
        let heard = heard.clone();
        move |e: &jobvisor::events::Event| heard.lock().unwrap().push((name.into(), e.execution_id))
    };
    let (sup, stop, task) = start(&env, |b| {
        b.on_start(hook("start"))
            .on_success(hook("success"))
            .on_failure(hook("failure"))
            .on_retry(hook("retry"))
            .on_cancel(hook("cancel"))
            .on_failure(|_| panic!("a hook that panics stops no other"))
            .register(
                "flaky",
                |ctx: jobvisor::Context, _p: serde_json::Value| async move {
                    ctx.step(1, 2, "half way").await;
                    match ctx.execution().attempt {
                        1 => Err(HandlerError::retryable("not yet")),
                        _ => Ok(json!({"attempt": ctx.execution().attempt})),
                    }
                },
            )
            .register(
                "sleepy",
                |_ctx: jobvisor::Context, _p: serde_json::Value| async move {
                    Err::<(), _>(HandlerError::snooze(Duration::from_millis(50)))
                },
            )
    })
    .await;
    let mut rx = sup.events().await;
    let mut seen = Vec::new();

    let mut spec = RunSpec::new("flaky", json!(null));
    spec.retries = 1;
    spec.backoff = Duration::from_millis(10);
    let first = sup.enqueue(spec).await.unwrap();
    events_until(&mut rx, &mut seen, |e| {
        matches!(e.kind, EventKind::Succeeded { .. })
    })
    .await;
    let retry = seen
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Retrying {
                attempt: 1,
                error,
                next_id,
                next_run_at,
            } => {
                assert_eq!(error, "not yet");
                assert!(*next_run_at > 0);
                Some(*next_id)
            }
            _ => None,
        })
        .expect("a retrying event");
    assert_eq!(
        sequence(&seen, first),
        ["enqueued", "started", "progress", "retrying"]
    );
    assert_eq!(sequence(&seen, retry), ["started", "progress", "succeeded"]);
    assert_eq!(seen.len(), 7, "{seen:#?}");
    for e in &seen {
        assert_eq!((e.handler.as_str(), e.job.as_deref()), ("flaky", None));
        assert_eq!(e.node, sup.node_id());
    }
    let progress = seen.iter().find(|e| e.kind.name() == "progress").unwrap();
    match &progress.kind {
        EventKind::Progress {
            percent,
            message,
            done,
            total,
        } => {
            assert_eq!(
                (*percent, message.as_deref(), *done, *total),
                (Some(50.0), Some("half way"), Some(1), Some(2))
            );
        }
        k => panic!("{k:?}"),
    }
    assert_eq!(
        seen.last().unwrap().kind,
        EventKind::Succeeded {
            attempt: 2,
            output: Some(json!({"attempt": 2}))
        }
    );

    // Failed for good, cancelled, snoozed.
    seen.clear();
    let failed = sup
        .enqueue(RunSpec::new(
            "fail",
            json!({"message": "broken", "retry": false}),
        ))
        .await
        .unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == failed && e.kind.name() == "failed"
    })
    .await;
    assert_eq!(
        seen.last().unwrap().kind,
        EventKind::Failed {
            attempt: 1,
            error: "broken".into()
        }
    );
    let long = sup
        .enqueue(RunSpec::new("sleep", json!({"ms": 600000})))
        .await
        .unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == long && e.kind.name() == "started"
    })
    .await;
    sup.cancel(long, "no longer wanted").await.unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == long && e.kind.name() == "cancelled"
    })
    .await;
    let snoozed = sup
        .enqueue(RunSpec::new("sleepy", json!(null)))
        .await
        .unwrap();
    events_until(&mut rx, &mut seen, |e| {
        e.execution_id == snoozed && e.kind.name() == "snoozed"
    })
    .await;
    let EventKind::Snoozed { next_id, until } = seen.last().unwrap().kind.clone() else {
        unreachable!()
    };
    assert_ne!(next_id, snoozed);
    assert!(until > 0);
    sup.cancel(next_id, "enough").await.unwrap();

    // The hooks heard their own kinds, in order, with the panicking hook
    // beside them.
    let want = [
        ("start", first),
        ("retry", first),
        ("start", retry),
        ("success", retry),
        ("start", failed),
        ("failure", failed),
        ("start", long),
        ("cancel", long),
        ("start", snoozed),
    ];
    eventually("the hooks ran", || async {
        let heard = heard.lock().unwrap().clone();
        (heard.len() >= want.len()).then_some(heard)
    })
    .await;
    // Per execution, in order (two executions' hooks may interleave: see
    // `sequence`).
    let heard = heard.lock().unwrap().clone();
    let want: Vec<(String, Uuid)> = want.iter().map(|(k, i)| (k.to_string(), *i)).collect();
    for id in [first, retry, failed, long, snoozed] {
        let of = |list: &[(String, Uuid)]| -> Vec<String> {
            list.iter()
                .filter(|(_, i)| *i == id)
                .map(|(k, _)| k.clone())
                .collect()
        };
        assert_eq!(of(&heard), of(&want), "{id}: {heard:?}");
    }

    // A workflow's steps are announced as they are inserted.
    let spec = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "w", "steps": [{"name": "a", "handler": "echo"},
            {"name": "b", "handler": "noop", "after": ["a"], "queue": "later"}]}"#,
    )
    .unwrap();
    let w = sup.workflow(&spec).await.unwrap();
    seen.clear();
    events_until(&mut rx, &mut seen, |e| e.execution_id == w.steps[1].1).await;
    let enqueued: Vec<(Uuid, &str, &str)> = seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Enqueued { queue, .. } => {
                Some((e.execution_id, e.handler.as_str(), queue.as_str()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        enqueued,
        [
            (w.steps[0].1, "echo", "default"),
            (w.steps[1].1, "noop", "later")
        ]
    );
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Drops a running supervisor (its run future and every handle) with an
/// execution in flight, a hook and a subscriber, and waits for every task
/// it started to end: none may outlive it.
async fn no_task_outlives_a_dropped_supervisor(db: &str) {
    let alive = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    assert_eq!(alive(), 0, "a fresh runtime");
    let sup = Supervisor::builder()
        .database(db)
        .configure(|c| c.poll_interval = Duration::from_millis(20))
        .on_event(|_| {})
        .build()
        .await
        .unwrap();
    let mut events = sup.events().await;
    let run = tokio::spawn({
        let sup = sup.clone();
        async move { sup.run(std::future::pending()).await }
    });
    let id = sup
        .enqueue(RunSpec::new("sleep", json!({"ms": 600_000})))
        .await
        .unwrap();
    let mut seen = Vec::new();
    events_until(&mut events, &mut seen, |e| {
        e.execution_id == id && e.kind.name() == "started"
    })
    .await;
    assert!(alive() > 1, "the actors, the relay and the hub run");
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    drop(events);
    drop(sup);
    let start = std::time::Instant::now();
    while alive() > 0 {
        assert!(
            start.elapsed() < DEADLINE,
            "{} tasks still alive after the supervisor was dropped",
            alive()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn no_task_outlives_a_supervisor_dropped_mid_run() {
    let env = Env::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(no_task_outlives_a_dropped_supervisor(&env.db));
    let pg = rt.block_on(pg_database());
    if let Some(url) = pg {
        // Another runtime, so that the first's tasks are not counted.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(no_task_outlives_a_dropped_supervisor(&url));
    }
}
