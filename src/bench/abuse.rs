//! `jobvisor bench --scenario abuse`: what a running `jobvisor serve` costs
//! while clients do what the API allows at its worst, measured from outside
//! against the same service at rest in the same run:
//! - memory while 4 clients list executions with 900 KB payloads, as fast
//!   as they can (the largest page the API gives);
//! - memory while 8 clients follow an execution with a log of 1 MiB lines,
//!   reading nothing (a slow reader holds what was sent to it);
//! - CPU while 500 clients follow a running execution's stream and
//!   nothing happens (500 is over the default `max_streams`, so that
//!   service is started with `--max-streams 1000`).
//!
//! Memory is the service's peak resident set (VmRSS sampled every 20 ms);
//! CPU is the sum over its threads from `/proc/PID/task/*/schedstat`.

use super::child::{wait_ended, Place, Serve};
use super::CaseDatabases;
use crate::failure::CliError;
use jobvisor::{RunSpec, Status, Supervisor};
use serde::Serialize;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// How long each load lasts.
const LOAD: Duration = Duration::from_secs(10);
/// Executions listed, and each one's payload.
const ROWS: usize = 100;
const PAYLOAD_BYTES: usize = 900_000;
/// Log lines of the followed execution, and each one's size.
const LOG_LINES: u64 = 40;
const LINE_BYTES: usize = 1 << 20;
/// Clients of each load.
const LISTERS: usize = 4;
const FOLLOWERS: usize = 8;
const IDLE_STREAMS: usize = 500;

/// Result of the abuse scenario.
#[derive(Debug, Serialize)]
pub struct AbuseBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// The service at rest, before each load: RSS MiB.
    pub rest_rss_mib: f64,
    /// Peak RSS while 4 clients list 900 KB-payload executions, MiB (goal: under 150).
    pub list_peak_rss_mib: f64,
    /// Pages listed per second, and the bytes of each.
    pub list_pages_per_sec: f64,
    /// Bytes of one page of the list.
    pub list_page_bytes: usize,
    /// Peak RSS while 8 clients follow a log of 1 MiB lines without reading, MiB (goal: under 200).
    pub follow_peak_rss_mib: f64,
    /// Idle streams open.
    pub idle_streams: usize,
    /// CPU of the service while they are open, % of a core (goal: under 5).
    pub idle_streams_cpu_pct: f64,
    /// CPU of the same service with no stream open, % of a core.
    pub rest_cpu_pct: f64,
}

pub(super) async fn bench_abuse(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    let dbs = CaseDatabases::new(database)?;
    let place = Place::new()?;

    let (rest_rss, list_peak, list_pages_per_sec, page_bytes) = listing(&dbs, &place).await?;
    let follow_peak = following(&dbs, &place).await?;
    let (rest_cpu, streams_cpu) = idle_streams(&dbs, &place).await?;

    let r = AbuseBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        rest_rss_mib: rest_rss,
        list_peak_rss_mib: list_peak,
        list_pages_per_sec,
        list_page_bytes: page_bytes,
        follow_peak_rss_mib: follow_peak,
        idle_streams: IDLE_STREAMS,
        idle_streams_cpu_pct: streams_cpu,
        rest_cpu_pct: rest_cpu,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    report(&r);
    Ok(())
}

/// Listing large payloads: the service's RSS at rest, its peak while
/// clients list, pages a second, and the bytes of a page.
async fn listing(dbs: &CaseDatabases, place: &Place) -> Result<(f64, f64, f64, usize), CliError> {
    let db = dbs.of("abuse-list");
    let sup = Supervisor::builder().database(&db).build().await?;
    let blob = "y".repeat(PAYLOAD_BYTES);
    let mut last = Uuid::nil();
    for _ in 0..ROWS {
        last = sup
            .enqueue(RunSpec::new("noop", serde_json::json!({ "blob": blob })))
            .await?;
    }
    let mut serve = place.serve(&db, &[])?;
    let addr = serve.http_addr().await?;
    ended(&sup, last).await?;
    let rest_rss = rss_mib(serve.pid())?;
    let path = "/v1/executions?limit=1000";
    let (_, page_bytes) = get(&addr, path).await?;
    let pid = serve.pid();
    let t = Instant::now();
    let clients: Vec<_> = (0..LISTERS)
        .map(|_| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut pages = 0u64;
                while t.elapsed() < LOAD {
                    match get(&addr, path).await {
                        Ok((200, _)) => pages += 1,
                        _ => break,
                    }
                }
                pages
            })
        })
        .collect();
    let list_peak = peak_rss_while(pid, LOAD).await?;
    let mut pages = 0;
    for c in clients {
        pages += c.await.unwrap_or(0);
    }
    let list_pages_per_sec = pages as f64 / t.elapsed().as_secs_f64();
    stop(&mut serve).await?;

    Ok((rest_rss, list_peak, list_pages_per_sec, page_bytes))
}

/// Following a log of 1 MiB lines without reading: the peak RSS.
async fn following(dbs: &CaseDatabases, place: &Place) -> Result<f64, CliError> {
    let db = dbs.of("abuse-follow");
    let sup = Supervisor::builder().database(&db).build().await?;
    let message = "z".repeat(LINE_BYTES - 64);
    let logs = sup
        .enqueue(RunSpec::new(
            "logs",
            serde_json::json!({ "count": LOG_LINES, "message": message }),
        ))
        .await?;
    let mut serve = place.serve(&db, &[])?;
    let addr = serve.http_addr().await?;
    ended(&sup, logs).await?;
    let mut followers = Vec::new();
    for _ in 0..FOLLOWERS {
        followers.push(open_stream(&addr, &format!("/v1/executions/{logs}/stream")).await?);
    }
    let follow_peak = peak_rss_while(serve.pid(), LOAD).await?;
    drop(followers);
    stop(&mut serve).await?;

    Ok(follow_peak)
}

/// Idle streams on a running execution: the service's CPU at rest, and
/// with the streams open.
async fn idle_streams(dbs: &CaseDatabases, place: &Place) -> Result<(f64, f64), CliError> {
    let db = dbs.of("abuse-idle");
    let sup = Supervisor::builder().database(&db).build().await?;
    let sleeper = sup
        .enqueue(RunSpec::new("sleep", serde_json::json!({ "ms": 600_000 })))
        .await?;
    let mut serve = place.serve(&db, &["--max-streams", "1000"])?;
    let addr = serve.http_addr().await?;
    let pid = serve.pid();
    running(&sup, sleeper).await?;
    let rest_cpu = cpu_pct(pid, LOAD).await?;
    let mut streams = Vec::new();
    for _ in 0..IDLE_STREAMS {
        streams.push(open_stream(&addr, &format!("/v1/executions/{sleeper}/stream")).await?);
    }
    // Their first reads are done before the measurement.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let streams_cpu = cpu_pct(pid, LOAD).await?;
    drop(streams);
    stop(&mut serve).await?;

    Ok((rest_cpu, streams_cpu))
}

/// The abuse figures as text.
fn report(r: &AbuseBench) {
    println!(
        "{} cores | {} | jobvisor serve under abuse, {} s each; at rest {:.1} MiB, {:.2}% of a core",
        r.cores,
        r.backend,
        LOAD.as_secs(),
        r.rest_rss_mib,
        r.rest_cpu_pct
    );
    println!("{:<62} {:>10} {:>8}", "load", "measured", "goal");
    println!(
        "{:<62} {:>6.1} MiB {:>4} MiB",
        format!("{LISTERS} clients list {ROWS} rows of 900 KB payloads (peak RSS)"),
        r.list_peak_rss_mib,
        150
    );
    println!(
        "{:<62} {:>10}",
        format!(
            "  pages/s, and bytes a page ({:.0}, {} B)",
            r.list_pages_per_sec, r.list_page_bytes
        ),
        ""
    );
    println!(
        "{:<62} {:>6.1} MiB {:>4} MiB",
        format!(
            "{FOLLOWERS} clients follow {LOG_LINES} lines of 1 MiB, reading nothing (peak RSS)"
        ),
        r.follow_peak_rss_mib,
        200
    );
    println!(
        "{:<62} {:>8.2} % {:>6} %",
        format!("{IDLE_STREAMS} idle streams of a running execution (CPU)"),
        r.idle_streams_cpu_pct,
        5
    );
}

/// Stops `serve`, saying what it said if it had died.
async fn stop(serve: &mut Serve) -> Result<(), CliError> {
    if serve.exited() {
        return Err(crate::failure::input(format!(
            "serve died under the load ({}): {}",
            serve.exit_text().unwrap_or_default(),
            serve.tail()
        )));
    }
    serve.stop().await;
    Ok(())
}

/// Waits for execution `id` to succeed.
async fn ended(sup: &Supervisor, id: Uuid) -> Result<(), CliError> {
    let e = wait_ended(
        sup.store().as_ref(),
        id,
        Duration::from_secs(120),
        Duration::from_millis(50),
    )
    .await?;
    match e {
        Some(e) if e.status == Status::Succeeded => Ok(()),
        Some(e) => Err(crate::failure::input(format!(
            "the seeded run ended {}: {}",
            e.status,
            e.error.unwrap_or_default()
        ))),
        None => Err(crate::failure::input(
            "the seeded run did not end within 120 s",
        )),
    }
}

/// Waits for execution `id` to run.
async fn running(sup: &Supervisor, id: Uuid) -> Result<(), CliError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let e = sup.store().execution(id).await?;
        if e.is_some_and(|e| e.status == Status::Running) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(crate::failure::input(
                "the sleeping run did not start within 60 s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One GET over a fresh connection: status and body length.
async fn get(addr: &str, path: &str) -> Result<(u16, usize), CliError> {
    let fail = |e: std::io::Error| crate::failure::input(format!("GET {path}: {e}"));
    let mut s = TcpStream::connect(addr).await.map_err(fail)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(fail)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.map_err(fail)?;
    let head_end = memchr::memmem::find(&raw, b"\r\n\r\n").unwrap_or(raw.len());
    let status = String::from_utf8_lossy(&raw[..head_end])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, raw.len().saturating_sub(head_end + 4)))
}

/// Opens an event stream and reads its status line, then leaves it unread.
async fn open_stream(addr: &str, path: &str) -> Result<TcpStream, CliError> {
    let fail = |e: std::io::Error| crate::failure::input(format!("GET {path}: {e}"));
    let mut s = TcpStream::connect(addr).await.map_err(fail)?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(fail)?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.map_err(fail)?;
    if &head != b"HTTP/1.1 200" {
        return Err(crate::failure::input(format!(
            "GET {path}: {}",
            String::from_utf8_lossy(&head)
        )));
    }
    Ok(s)
}

/// The resident set of `pid`, MiB.
fn rss_mib(pid: i32) -> Result<f64, CliError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| crate::failure::input(format!("serve is gone: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .ok_or_else(|| crate::failure::input("no VmRSS in /proc/PID/status"))
}

/// The highest resident set of `pid` over `span`, sampled every 20 ms.
async fn peak_rss_while(pid: i32, span: Duration) -> Result<f64, CliError> {
    let t = Instant::now();
    let mut peak = 0f64;
    while t.elapsed() < span {
        peak = peak.max(rss_mib(pid)?);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(peak)
}

/// CPU of `pid` over `span`, % of one core.
async fn cpu_pct(pid: i32, span: Duration) -> Result<f64, CliError> {
    let before = super::idle::threads(pid)?;
    let t = Instant::now();
    tokio::time::sleep(span).await;
    let after = super::idle::threads(pid)?;
    let ns: u64 = after
        .iter()
        .map(|(tid, (ns, _))| ns.saturating_sub(before.get(tid).map_or(0, |b| b.0)))
        .sum();
    Ok(ns as f64 / 1e9 / t.elapsed().as_secs_f64() * 100.0)
}
