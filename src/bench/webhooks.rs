//! `jobvisor bench --scenario webhooks`: what webhooks cost the runs they
//! report, and how fast they deliver.
//!
//! - Cost: `--count` no-ops drained at `--concurrency`, with no webhook,
//!   and with one on `failed` (every run succeeds: nothing to deliver),
//!   `--repeat` rounds, each first in turn, each on a fresh database
//!   unless one is given. The ratio is with over without, round by round.
//! - Delivery: a webhook on `succeeded` posting to a receiver in this
//!   process (an HTTP/1.1 server that counts): `--process-count` no-ops,
//!   deliveries a second from the first enqueue to the last post
//!   received, and each post's delay from its run's end. The baseline is
//!   the same number of bare POSTs of the same bodies, 32 at a time, to
//!   the same receiver.

use super::{percentile, run_in_background, CaseDatabases};
use crate::failure::CliError;
use jobvisor::model::WebhookSpec;
use jobvisor::Supervisor;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Result of the webhooks scenario.
#[derive(Debug, Serialize)]
pub struct WebhooksBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// No-ops per throughput round.
    pub count: usize,
    /// Throughput without a webhook, per round, jobs/s.
    pub without_jobs_per_sec: Vec<f64>,
    /// Throughput with a webhook on `failed`, per round, jobs/s.
    pub with_jobs_per_sec: Vec<f64>,
    /// With over without, per round.
    pub cost_ratios: Vec<f64>,
    /// Deliveries measured.
    pub deliveries: usize,
    /// Deliveries a second, first enqueue to last post received.
    pub deliveries_per_sec: f64,
    /// Bare POSTs a second to the same receiver.
    pub bare_posts_per_sec: f64,
    /// Deliveries over bare POSTs.
    pub delivery_ratio: f64,
    /// A run's end to its delivery's post, p50, ms.
    pub end_to_post_p50_ms: f64,
    /// ... p99.
    pub end_to_post_p99_ms: f64,
}

/// A receiver in this process: counts posts, keeps each one's arrival
/// (µs since the epoch) and the `at` of its body.
struct Receiver {
    url: String,
    count: Arc<AtomicUsize>,
    delays: Arc<Mutex<Vec<f64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receiver() -> Result<Receiver, CliError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Runtime(format!("cannot listen on loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let count = Arc::new(AtomicUsize::new(0));
    let delays = Arc::new(Mutex::new(Vec::new()));
    let (c, d) = (count.clone(), delays.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (c, d) = (c.clone(), d.clone());
            async move {
                let now = jobvisor::model::now_micros();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    let at = v["at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.timestamp_micros());
                    if let Some(at) = at {
                        d.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((now - at) as f64 / 1000.0);
                    }
                }
                c.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver {
        url: format!("http://{addr}/hook"),
        count,
        delays,
        task,
    })
}

pub(super) async fn bench_webhooks(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    if a.count == 0 || a.process_count == 0 || a.repeat == 0 {
        return Err(crate::failure::input(
            "--count, --process-count and --repeat must be at least 1",
        ));
    }
    let dbs = CaseDatabases::new(database)?;
    let receiver = receiver().await?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    for r in 0..a.repeat {
        let failed = WebhookSpec::new("on-failed", &receiver.url, &["failed"]);
        // Each first in turn: on a database given (PostgreSQL), history
        // grows round by round, and the second of a round has more of it.
        if r % 2 == 0 {
            without.push(drain(&dbs.of(&format!("without-{r}")), a, None).await?);
            with.push(drain(&dbs.of(&format!("with-{r}")), a, Some(&failed)).await?);
        } else {
            with.push(drain(&dbs.of(&format!("with-{r}")), a, Some(&failed)).await?);
            without.push(drain(&dbs.of(&format!("without-{r}")), a, None).await?);
        }
    }
    let cost_ratios: Vec<f64> = with.iter().zip(&without).map(|(w, o)| w / o).collect();
    if receiver.count.load(Ordering::Relaxed) != 0 {
        return Err(crate::failure::input(
            "a webhook on `failed` posted, though every no-op succeeded",
        ));
    }

    // Delivery.
    let n = a.process_count;
    let db = dbs.of("deliveries");
    let sup = Supervisor::builder()
        .database(&db)
        .configure(|c| c.concurrency = a.concurrency)
        .build()
        .await?;
    let hook = WebhookSpec::new("on-succeeded", &receiver.url, &["succeeded"]);
    sup.add_webhook(&hook, true).await?;
    let (stop_tx, runner) = run_in_background(&sup);
    let started = Instant::now();
    super::enqueue_noops(&sup, n).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    while receiver.count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            return Err(crate::failure::input(format!(
                "{} of {n} deliveries in 10 minutes",
                receiver.count.load(Ordering::Relaxed)
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let delivered = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    runner.await.expect("supervisor task")?;
    let mut delays =
        std::mem::take(&mut *receiver.delays.lock().unwrap_or_else(|e| e.into_inner()));

    // The baseline: bare POSTs of a body of the same size.
    let body =
        serde_json::to_vec(&serde_json::json!({"event": "succeeded", "pad": "x".repeat(900)}))
            .expect("serializes");
    let client = reqwest::Client::new();
    let before = receiver.count.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut posters = Vec::new();
    for _ in 0..32 {
        let (client, url, body, next) = (
            client.clone(),
            receiver.url.clone(),
            body.clone(),
            next.clone(),
        );
        posters.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let _ = client.post(&url).body(body.clone()).send().await;
            }
        }));
    }
    for p in posters {
        let _ = p.await;
    }
    let bare =
        (receiver.count.load(Ordering::Relaxed) - before) as f64 / t0.elapsed().as_secs_f64();

    let r = WebhooksBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        count: a.count,
        without_jobs_per_sec: without,
        with_jobs_per_sec: with,
        cost_ratios,
        deliveries: n,
        deliveries_per_sec: delivered,
        bare_posts_per_sec: bare,
        delivery_ratio: delivered / bare,
        end_to_post_p50_ms: percentile(&mut delays, 50.0),
        end_to_post_p99_ms: percentile(&mut delays, 99.0),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    println!(
        "{} cores | {} | {} no-ops a round at concurrency {}, {} round(s) | {n} deliveries",
        r.cores, r.backend, r.count, a.concurrency, a.repeat
    );
    println!(
        "no webhook                  jobs/s  {}",
        super::figures(&r.without_jobs_per_sec, 0)
    );
    println!(
        "a webhook on failed         jobs/s  {}",
        super::figures(&r.with_jobs_per_sec, 0)
    );
    println!(
        "ratio (with / without)              {}",
        super::figures(&r.cost_ratios, 2)
    );
    println!(
        "deliveries to a local receiver: {:.0}/s; bare POSTs {:.0}/s; ratio {:.2}; end -> post p50 {:.1} ms, p99 {:.1} ms",
        r.deliveries_per_sec, r.bare_posts_per_sec, r.delivery_ratio, r.end_to_post_p50_ms, r.end_to_post_p99_ms
    );
    Ok(())
}

/// Drains `a.count` no-ops on `db` (with `webhook` added first); jobs/s.
async fn drain(
    db: &str,
    a: &super::BenchArgs,
    webhook: Option<&WebhookSpec>,
) -> Result<f64, CliError> {
    let sup = Supervisor::builder()
        .database(db)
        .configure(|c| c.concurrency = a.concurrency)
        .build()
        .await?;
    for w in sup.store().webhooks().await? {
        sup.remove_webhook(&w.name).await?;
    }
    if let Some(w) = webhook {
        sup.add_webhook(w, true).await?;
    }
    super::drain_noops(&sup, a.count).await
}
