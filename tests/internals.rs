//! The examples that documented the library's internals (the command
//! helpers, the store's command and engine methods, the supervisor's test
//! hooks) until they became crate-private, kept as tests with their
//! assertions: public only with the `testing` feature, they are no longer
//! doctests.

type Fallible<T> = Result<T, Box<dyn std::error::Error>>;

/// A fresh SQLite database's directory and path.
fn database() -> Fallible<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
    Ok((dir, db))
}

/// A supervisor on a fresh SQLite database (not running).
async fn fresh() -> Fallible<(tempfile::TempDir, jobvisor::Supervisor)> {
    let (dir, db) = database()?;
    let sup = jobvisor::Supervisor::builder()
        .database(&db)
        .build()
        .await?;
    Ok((dir, sup))
}

#[tokio::test(flavor = "current_thread")]
async fn bulk_matching() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    use jobvisor::store::ExecFilter;
    for _ in 0..3 {
        sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null))
            .await?;
    }
    // `limit` is ignored: every match, page by page.
    let filter = ExecFilter {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(jobvisor::bulk::matching(store, &filter).await?.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn bulk_cancel() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    use jobvisor::{model::now_micros, store::ExecFilter};
    sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null))
        .await?;
    let done =
        jobvisor::bulk::cancel(store, &ExecFilter::default(), "draining", now_micros()).await?;
    assert_eq!(done.cancelled, Some(1));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn bulk_retry() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    use jobvisor::{model::now_micros, store::ExecFilter, Status};
    let failed = ExecFilter {
        statuses: vec![Status::Failed],
        ..Default::default()
    };
    let done = jobvisor::bulk::retry_each(store, &failed, now_micros(), |_, _| {}).await?;
    assert_eq!((done.matched, done.retried), (0, Some(0)));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn engine_scheduler_pass() -> Fallible<()> {
    let (_dir, db) = database()?;
    let store = jobvisor::store::open(&db).await?.store().clone();
    let mut planner = jobvisor::scheduler::Planner::new();
    let outcome = planner.pass(store.as_ref()).await?;
    assert_eq!(outcome.inserted, 0, "no jobs, nothing due");
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_validate() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;
    use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    let mut spec = hourly();
    jobvisor::job::validate(store, &local, &mut spec).await?;
    assert_eq!(
        spec.mode,
        Some(jobvisor::Mode::Inproc),
        "the handler's mode, resolved"
    );
    let mut bad = JobSpec::new("no spaces please", "noop", ScheduleSpec::Daemon);
    assert!(jobvisor::job::validate(store, &local, &mut bad)
        .await
        .is_err());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_add() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    let first = jobvisor::job::add(store, &local, hourly()).await?;
    assert!(first.is_some());
    assert!(
        jobvisor::job::add(store, &local, hourly()).await.is_err(),
        "the name is taken"
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_replace() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    jobvisor::job::add(store, &local, hourly()).await?;
    let mut changed = hourly();
    changed.retries = 3;
    jobvisor::job::replace(store, &local, changed).await?;
    assert_eq!(store.job("sync").await?.unwrap().spec.retries, 3);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_pause() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    jobvisor::job::add(store, &local, hourly()).await?;
    jobvisor::job::pause(store, "sync").await?;
    assert!(store.job("sync").await?.unwrap().spec.paused);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_resume() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    jobvisor::job::add(store, &local, hourly()).await?;
    jobvisor::job::pause(store, "sync").await?;
    jobvisor::job::resume(store, "sync").await?;
    assert!(!store.job("sync").await?.unwrap().spec.paused);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_remove() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    jobvisor::job::add(store, &local, hourly()).await?;
    jobvisor::job::remove(store, "sync").await?;
    assert!(store.job("sync").await?.is_none());
    assert!(matches!(
        jobvisor::job::remove(store, "sync").await,
        Err(jobvisor::Error::UnknownJob(_))
    ));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn job_trigger() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;

    jobvisor::job::add(store, &local, hourly()).await?;
    let id = sup.trigger_job("sync").await?;
    assert_eq!(
        store.execution(id).await?.unwrap().job.as_deref(),
        Some("sync")
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn service_declare_check_handlers() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let d = declarations();
    jobvisor::service::declare::check_handlers(&d, Some(store)).await?; // noop is built in
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn service_declare_sync() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let d = declarations();
    let changes = jobvisor::service::declare::sync(store, &d).await?;
    assert_eq!(changes, 2);
    assert!(store.job("digest").await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_migrate() -> Fallible<()> {
    let (_dir, db) = database()?;
    let store = jobvisor::store::open(&db).await?.store().clone();
    store.migrate().await?; // `open` migrated already: a no-op
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_put_handler() -> Fallible<()> {
    let (_dir, db) = database()?;
    let store = jobvisor::store::open(&db).await?.store().clone();
    use jobvisor::model::{now_micros, HandlerKind, HandlerSpec, Mode, ProcessLimits};
    let spec = HandlerSpec {
        name: "hello".into(),
        kind: HandlerKind::Exec {
            program: "/bin/echo".into(),
            args: vec!["hi".into()],
        },
        mode: Mode::Process,
        limits: ProcessLimits::default(),
    };
    store.put_handler(&spec, now_micros()).await?;
    assert_eq!(store.handler("hello").await?, Some(spec));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_remove_handler() -> Fallible<()> {
    let (_dir, db) = database()?;
    let store = jobvisor::store::open(&db).await?.store().clone();
    assert!(!store.remove_handler("never-added").await?);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_cancel_workflow() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store();
    use jobvisor::model::now_micros;
    let spec = jobvisor::workflow::WorkflowSpec::parse(
        r#"{"name": "w", "steps": [{"name": "a", "handler": "noop"}]}"#,
    )?;
    let w = sup.workflow(&spec).await?;
    let done = store
        .cancel_workflow(w.id, "not needed", now_micros())
        .await?
        .unwrap();
    assert_eq!(done.cancelled, 1);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_retry() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store();
    use jobvisor::{model::now_micros, store::RetryRequest, Status};
    let id = sup
        .enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null))
        .await?;
    // Not ended yet: nothing to retry.
    assert_eq!(
        store.retry(id, now_micros()).await?,
        RetryRequest::NotEnded(Status::Pending)
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_request_cancel() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store();
    use jobvisor::{model::now_micros, store::CancelRequest};
    let id = sup
        .enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null))
        .await?;
    let r = store.request_cancel(id, "not needed", now_micros()).await?;
    assert_eq!(r, CancelRequest::CancelledPending);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn store_mod_set_queue() -> Fallible<()> {
    let (_dir, db) = database()?;
    let store = jobvisor::store::open(&db).await?.store().clone();
    use jobvisor::store::QueueChange;
    let pause = QueueChange {
        paused: Some(true),
        ..Default::default()
    };
    store.set_queue("mail", &pause).await?;
    assert!(store
        .queues()
        .await?
        .iter()
        .any(|q| q.name == "mail" && q.paused));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn submit_prepare() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    // What this process can run inproc: here, the built-ins.
    let local = builtin;
    let e =
        jobvisor::submit::prepare(store, &local, jobvisor::RunSpec::new("echo", 1.into())).await?;
    assert_eq!(
        (e.handler.as_str(), e.mode),
        ("echo", jobvisor::Mode::Inproc)
    );
    let unknown =
        jobvisor::submit::prepare(store, &local, jobvisor::RunSpec::new("nope", 1.into())).await;
    assert!(matches!(unknown, Err(jobvisor::Error::UnknownHandler(_))));
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn submit_prepare_many() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;
    let specs = vec![
        jobvisor::RunSpec::new("echo", 1.into()),
        jobvisor::RunSpec::new("echo", 2.into()),
    ];
    let execs = jobvisor::submit::prepare_many(store, &local, specs).await?;
    assert_eq!(execs.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn submit_enqueue() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let store = sup.store().store().as_ref();
    let local = builtin;
    let e =
        jobvisor::submit::prepare(store, &local, jobvisor::RunSpec::new("echo", 1.into())).await?;
    let out = jobvisor::submit::enqueue(store, &[e]).await?;
    assert!(!out[0].duplicate);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn supervisor_mod_subscribe_started() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let sup = sup.clone();
        async move {
            sup.run(async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let mut started = sup.subscribe_started();
    let id = sup
        .enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null))
        .await?;
    while started.recv().await? != id {}
    drop(stop);
    running.await??;
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn supervisor_mod_durations() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    assert!(sup.durations().0.is_empty()); // nothing finished yet
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn supervisor_mod_relay_queued() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    assert_eq!(sup.relay_queued(), 0);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn supervisor_mod_running_count() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    assert_eq!(sup.running_count(), 0);
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn workflow_submit() -> Fallible<()> {
    let (_dir, sup) = fresh().await?;
    use jobvisor::workflow::*;
    let spec = WorkflowSpec::parse(
        r#"
        name = "etl"
        [[step]]
        name = "extract"
        handler = "echo"
        payload = { rows = 42 }
        [[step]]
        name = "load"
        handler = "noop"
        after = ["extract"]
    "#,
    )?;
    let done = sup.workflow(&spec).await?;
    assert_eq!(done.steps.len(), 2);
    Ok(())
}

/// A queue and a daily job, as a service file declares them.
fn declarations() -> jobvisor::service::declare::Declarations {
    use jobvisor::service::declare::{Declarations, JobDecl, QueueDecl};
    use jobvisor::{model::JobSpec, schedule::ScheduleSpec};
    let mut d = Declarations::default();
    d.queues.push(QueueDecl {
        name: "mail".into(),
        limit: Some(4),
        key_limit: None,
        rate: None,
        paused: None,
    });
    d.jobs.push(JobDecl {
        spec: JobSpec::new(
            "digest",
            "noop",
            ScheduleSpec::Cron {
                expr: "0 7 * * *".into(),
                tz: "UTC".into(),
            },
        ),
        fixed_start: false,
        line: 12,
    });
    d
}

/// Job `sync`: a no-op every hour.
fn hourly() -> jobvisor::model::JobSpec {
    use jobvisor::schedule::ScheduleSpec;
    let every_hour = ScheduleSpec::Interval {
        every_ms: 3_600_000,
        anchor: 0,
    };
    jobvisor::model::JobSpec::new("sync", "noop", every_hour)
}

/// What this process runs itself: the built-ins.
fn builtin(name: &str) -> bool {
    jobvisor::Registry::with_builtins().get(name).is_some()
}
