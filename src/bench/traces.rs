//! `jobvisor bench --scenario traces`: what exporting traces costs.
//!
//! `--count` no-ops drained at `--concurrency` with traces off, and with
//! them exported over OTLP/HTTP to a collector in this process (an HTTP
//! server that counts the bytes it is sent), `--repeat` rounds, each first
//! in turn, each on a fresh database unless one is given. The ratio is on
//! over off, round by round. With traces on every run is traced: three
//! spans a run (its span, its claim wait, its attempt).

use super::CaseDatabases;
use crate::failure::CliError;
use jobvisor::Supervisor;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Result of the traces scenario.
#[derive(Debug, Serialize)]
pub struct TracesBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// No-ops per round.
    pub count: usize,
    /// Throughput with traces off, per round, jobs/s.
    pub off_jobs_per_sec: Vec<f64>,
    /// Throughput with traces exported, per round, jobs/s.
    pub on_jobs_per_sec: Vec<f64>,
    /// On over off, per round.
    pub ratios: Vec<f64>,
    /// OTLP requests the collector received.
    pub exports: usize,
    /// Protobuf bytes it received.
    pub exported_bytes: usize,
}

pub(super) async fn bench_traces(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    if a.count == 0 || a.repeat == 0 {
        return Err(crate::failure::input(
            "--count and --repeat must be at least 1",
        ));
    }
    // The collector: counts what it is sent, answers 200 with an empty
    // ExportTraceServiceResponse (an empty protobuf message).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Runtime(format!("cannot listen on loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let (requests, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, b) = (requests.clone(), bytes.clone());
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (r, b) = (r.clone(), b.clone());
            async move {
                r.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(body.len(), Ordering::Relaxed);
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let collector = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let dbs = CaseDatabases::new(database)?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for r in 0..a.repeat {
        let order: [bool; 2] = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for traced in order {
            // The exporter reads the standard variables when a supervisor
            // starts; this process sets nothing else meanwhile.
            if traced {
                std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
            } else {
                std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
                std::env::remove_var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
                jobvisor::model::trace::set_exporting(false);
            }
            let db = dbs.of(&format!("{}-{r}", if traced { "on" } else { "off" }));
            let sup = Supervisor::builder()
                .database(&db)
                .configure(|c| c.concurrency = a.concurrency)
                .build()
                .await?;
            let rate = super::drain_noops(&sup, a.count).await?;
            if traced {
                on.push(rate);
            } else {
                off.push(rate);
            }
        }
    }
    std::env::remove_var("OTEL_EXPORTER_OTLP_ENDPOINT");
    collector.abort();
    let r = TracesBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        count: a.count,
        ratios: on.iter().zip(&off).map(|(n, f)| n / f).collect(),
        off_jobs_per_sec: off,
        on_jobs_per_sec: on,
        exports: requests.load(Ordering::Relaxed),
        exported_bytes: bytes.load(Ordering::Relaxed),
    };
    if r.exports == 0 {
        return Err(CliError::Runtime(
            "bench traces: the collector received nothing with traces on".into(),
        ));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    println!(
        "{} cores | {} | {} no-ops a round at concurrency {}, {} round(s)",
        r.cores, r.backend, r.count, a.concurrency, a.repeat
    );
    println!(
        "traces off      jobs/s  {}",
        super::figures(&r.off_jobs_per_sec, 0)
    );
    println!(
        "traces exported jobs/s  {}",
        super::figures(&r.on_jobs_per_sec, 0)
    );
    println!("ratio (on / off)        {}", super::figures(&r.ratios, 2));
    println!(
        "collector: {} OTLP requests, {} bytes",
        r.exports, r.exported_bytes
    );
    Ok(())
}
