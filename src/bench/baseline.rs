//! The bare baselines each mode is held against, measured in the same run:
//! a `tokio::spawn` of the handler, a bare worker process, a bare pool.

use super::*;

/// Runs handler `h` once with a context of its own, its messages drained,
/// as a baseline task does.
pub(super) async fn run_handler(h: Arc<dyn Handler>, i: usize, payload: Value) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let ctx = Context::new(
        ExecutionInfo {
            execution_id: i.to_string(),
            job: "bench".into(),
            handler: "bench".into(),
            attempt: 1,
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
        tx,
    );
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let _ = h.call(ctx, payload).await;
    let _ = drain.await;
}

/// The second inproc reference: a bare `tokio::spawn` of the handler per
/// execution, with no database.
pub(super) async fn baseline_spawn(h: Arc<dyn Handler>, payload: &Value, n: usize) -> BenchRow {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let h = h.clone();
        let payload = payload.clone();
        let spawned = Instant::now();
        tasks.push(tokio::spawn(async move {
            let start = spawned.elapsed();
            run_handler(h, i, payload).await;
            (start, spawned.elapsed())
        }));
    }
    let mut starts = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    for t in tasks {
        let (s, d) = t.await.expect("baseline task");
        starts.push(ms(s));
        totals.push(ms(d));
    }
    baseline_row(
        "reference: tokio::spawn, no database",
        started.elapsed(),
        starts,
        totals,
    )
}

/// A baseline's row from its per-run start and total times (ms).
pub(super) fn baseline_row(
    name: &str,
    elapsed: Duration,
    mut starts: Vec<f64>,
    mut totals: Vec<f64>,
) -> BenchRow {
    BenchRow {
        mode: String::new(),
        kind: "baseline",
        name: name.into(),
        backend: "none",
        executions: totals.len(),
        jobs_per_sec: totals.len() as f64 / elapsed.as_secs_f64(),
        baseline_jobs_per_sec: f64::NAN,
        ratio: f64::NAN,
        runs_jobs_per_sec: Vec::new(),
        start_p50_ms: percentile(&mut starts, 50.0),
        start_p99_ms: percentile(&mut starts, 99.0),
        total_p50_ms: percentile(&mut totals, 50.0),
        total_p99_ms: percentile(&mut totals, 99.0),
        loaded_start_p50_ms: None,
        peak_rss_mib: peak_rss_mib(),
    }
}

/// One bare worker run: spawn, write the run line, read to the result, wait.
pub(super) async fn bare_worker_run(
    worker: &PathBuf,
    handler: &str,
    payload: &Value,
) -> std::io::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(worker)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let spawned = t0.elapsed();
    let mut stdin = child.stdin.take().expect("piped");
    let run = serde_json::json!({
        "type": "run", "protocol": 1, "execution_id": "bench", "job": "bench",
        "handler": handler, "attempt": 1, "payload": payload,
    });
    stdin.write_all(format!("{run}\n").as_bytes()).await?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    while let Some(line) = lines.next_line().await? {
        if line.contains(r#""type":"result""#) {
            break;
        }
    }
    drop(stdin);
    child.wait().await?;
    Ok((spawned, t0.elapsed()))
}

pub(super) async fn baseline_process(
    worker: &PathBuf,
    handler: &str,
    payload: &Value,
    n: usize,
    concurrency: usize,
) -> Result<BenchRow, CliError> {
    // One probe first, so that a missing worker is a clear error.
    bare_worker_run(worker, handler, payload)
        .await
        .map_err(|e| crate::failure::input(format!("cannot run {}: {e}", worker.display())))?;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let worker = worker.to_path_buf();
        let handler = handler.to_string();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                samples.push(bare_worker_run(&worker, &handler, &payload).await?);
            }
            Ok::<_, std::io::Error>(samples)
        }));
    }
    Ok(collect_row(
        "baseline: bare spawn+run+wait of jobvisor-worker",
        started,
        tasks,
        n,
    )
    .await?)
}

/// A baseline task: the (start, total) time of each run it made.
type SampleTask = tokio::task::JoinHandle<std::io::Result<Vec<(Duration, Duration)>>>;

/// The row of a baseline from its tasks' samples.
pub(super) async fn collect_row(
    name: &str,
    started: Instant,
    tasks: Vec<SampleTask>,
    n: usize,
) -> std::io::Result<BenchRow> {
    let mut starts = Vec::with_capacity(n);
    let mut totals = Vec::with_capacity(n);
    for t in tasks {
        for (s, d) in t.await.expect("baseline task")? {
            starts.push(ms(s));
            totals.push(ms(d));
        }
    }
    Ok(baseline_row(name, started.elapsed(), starts, totals))
}

/// Pooled baseline: `workers` long-lived `jobvisor-worker` processes, each
/// sent run lines one after another, reading to each result (no database,
/// no supervisor).
pub(super) async fn baseline_pooled(
    worker: &PathBuf,
    handler: &str,
    payload: &Value,
    n: usize,
    workers: usize,
) -> Result<BenchRow, CliError> {
    let cannot =
        |e: std::io::Error| crate::failure::input(format!("cannot run {}: {e}", worker.display()));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let mut child = tokio::process::Command::new(worker)
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(cannot)?;
        let next = next.clone();
        let run = serde_json::json!({
            "type": "run", "protocol": 1, "execution_id": "bench", "job": "bench",
            "handler": handler, "attempt": 1, "payload": payload,
        });
        let run = format!("{run}\n");
        tasks.push(tokio::spawn(async move {
            let mut stdin = child.stdin.take().expect("piped");
            let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
            let mut samples = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let t0 = Instant::now();
                stdin.write_all(run.as_bytes()).await?;
                let start = t0.elapsed();
                loop {
                    match lines.next_line().await? {
                        Some(l) if l.contains(r#""type":"result""#) => break,
                        Some(_) => {}
                        None => return Err(std::io::Error::other("the worker exited")),
                    }
                }
                samples.push((start, t0.elapsed()));
            }
            drop(stdin);
            child.wait().await?;
            Ok::<_, std::io::Error>(samples)
        }));
    }
    collect_row("baseline: pipes to reused workers", started, tasks, n)
        .await
        .map_err(cannot)
}
