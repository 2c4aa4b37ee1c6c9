//! `jobvisor bench --scenario mqtt --broker URL`: how soon a message
//! published to a broker starts its run.
//!
//! A service in this process subscribes (as `[[mqtt.subscribe]]` does) to
//! a topic of its own, its messages running `noop`. `--latency-samples`
//! messages are published with QoS 1, one every 2 ms, each holding the
//! time it was sent; a message's delay is its run's start less that time.
//! The baseline is a bare subscriber (QoS 1, acknowledging each message
//! as it arrives) on the same broker, sent the same messages the same way:
//! the broker's own delay, which no subscriber can beat.

use super::{percentile, CaseDatabases};
use crate::failure::CliError;
use jobvisor::service::declare::Declarations;
use jobvisor::service::mqtt::MqttSubscription;
use jobvisor::store::ExecFilter;
use jobvisor::Supervisor;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Spacing of the messages published.
const EVERY: Duration = Duration::from_millis(2);

/// Result of the MQTT scenario.
#[derive(Debug, Serialize)]
pub struct MqttBench {
    /// CPU cores this process may use.
    pub cores: usize,
    /// `sqlite`, `postgresql` or `mysql`.
    pub backend: &'static str,
    /// Messages measured in each case.
    pub messages: usize,
    /// Published to run started, p50, ms.
    pub to_started_p50_ms: f64,
    /// ... p99.
    pub to_started_p99_ms: f64,
    /// Published to received by a bare subscriber, p50, ms.
    pub bare_p50_ms: f64,
    /// ... p99.
    pub bare_p99_ms: f64,
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::Runtime(format!("bench mqtt: {e}"))
}

/// A client of `broker` (plain `mqtt://HOST[:PORT]`, as the bench needs
/// no more) with a clean session.
fn options(broker: &str, id: &str) -> Result<MqttOptions, CliError> {
    let u =
        reqwest::Url::parse(broker).map_err(|e| crate::failure::input(format!("--broker: {e}")))?;
    if u.scheme() != "mqtt" || u.host_str().is_none() {
        return Err(crate::failure::input(
            "--broker: give mqtt://HOST[:PORT] (the bench publishes in clear, with no login)",
        ));
    }
    let mut o = MqttOptions::new(
        id,
        u.host_str().unwrap_or_default(),
        u.port().unwrap_or(1883),
    );
    o.set_keep_alive(Duration::from_secs(30));
    Ok(o)
}

/// Publishes `n` messages to `topic`, one every [`EVERY`], each
/// `{"sent_us": T}`.
async fn publish(broker: &str, topic: &str, n: usize) -> Result<(), CliError> {
    let (client, mut events) = AsyncClient::new(
        options(broker, &format!("jvb-pub-{}", fastrand::u32(..)))?,
        1024,
    );
    let poller = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(runtime(e)),
            }
        }
        Ok(())
    });
    let mut tick = tokio::time::interval(EVERY);
    for _ in 0..n {
        tick.tick().await;
        let body = serde_json::json!({ "sent_us": jobvisor::model::now_micros() }).to_string();
        client
            .publish(topic, QoS::AtLeastOnce, false, body)
            .await
            .map_err(runtime)?;
    }
    tokio::time::timeout(Duration::from_secs(60), poller)
        .await
        .map_err(|_| runtime("the broker did not acknowledge every message in 60 s"))?
        .map_err(runtime)??;
    let _ = client.disconnect().await;
    Ok(())
}

/// The bare subscriber: each message's delay, published to received.
async fn bare(broker: &str, n: usize) -> Result<Vec<f64>, CliError> {
    let topic = format!("jobvisor-bench/{}/bare", uuid::Uuid::now_v7());
    let mut o = options(broker, &format!("jvb-sub-{}", fastrand::u32(..)))?;
    o.set_manual_acks(true);
    let (client, mut events) = AsyncClient::new(o, 4096);
    client
        .subscribe(&topic, QoS::AtLeastOnce)
        .await
        .map_err(runtime)?;
    loop {
        match events.poll().await.map_err(runtime)? {
            Event::Incoming(Packet::SubAck(_)) => break,
            _ => continue,
        }
    }
    let receiving = tokio::spawn(async move {
        let mut delays = Vec::with_capacity(n);
        while delays.len() < n {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = jobvisor::model::now_micros();
                    let _ = client.try_ack(&p);
                    if let Some(sent) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["sent_us"].as_i64())
                    {
                        delays.push((now - sent) as f64 / 1000.0);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(runtime(e)),
            }
        }
        Ok(delays)
    });
    publish(broker, &topic, n).await?;
    tokio::time::timeout(Duration::from_secs(60), receiving)
        .await
        .map_err(|_| runtime("the bare subscriber did not get every message in 60 s"))?
        .map_err(runtime)?
}

pub(super) async fn bench_mqtt(
    database: Option<String>,
    a: &super::BenchArgs,
) -> Result<(), CliError> {
    let Some(broker) = a.broker.clone() else {
        return Err(crate::failure::input(
            "--scenario mqtt needs --broker mqtt://HOST[:PORT], a running broker (mosquitto, say)",
        ));
    };
    let n = a.latency_samples;
    if n == 0 {
        return Err(crate::failure::input(
            "--latency-samples must be at least 1",
        ));
    }
    // The broker is reachable, before anything else is set up.
    options(&broker, "jvb-check")?;
    let dbs = CaseDatabases::new(database)?;
    let sup = Supervisor::builder()
        .database(dbs.of("mqtt"))
        .configure(|c| c.concurrency = a.concurrency)
        .build()
        .await?;
    let topic = format!("jobvisor-bench/{}/in", uuid::Uuid::now_v7());
    let mut sub = MqttSubscription::new(&broker, &topic, "noop");
    sub.client_id = Some(format!("jvb-{}", fastrand::u32(..)));
    let declared = Declarations {
        mqtt: vec![sub],
        retention: None,
        ..Declarations::default()
    };
    let service = jobvisor::service::Service::start(
        sup.clone(),
        Some(declared),
        None,
        jobvisor::http::Auth::none(),
    )
    .await
    .map_err(runtime)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until(
        async {
            let _ = stop_rx.await;
        },
        std::future::pending(),
    ));
    let store = sup.store();
    let count = || async {
        store
            .executions(&ExecFilter {
                handler: Some("noop".into()),
                limit: n + 1000,
                ..Default::default()
            })
            .await
    };
    // Subscribed once a probe runs.
    let t0 = Instant::now();
    loop {
        publish(&broker, &topic, 1).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !count().await?.is_empty() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            return Err(runtime("the service did not subscribe within 30 s"));
        }
    }
    let probes = count().await?.len();
    publish(&broker, &topic, n).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let runs = loop {
        let runs = count().await?;
        if runs.len() >= probes + n && runs.iter().all(|e| e.started_at.is_some()) {
            break runs;
        }
        if Instant::now() > deadline {
            return Err(runtime(format!(
                "{} of {n} messages ran in 2 minutes",
                runs.len() - probes
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut delays: Vec<f64> = runs
        .iter()
        .take(n)
        .filter_map(|e| {
            let sent = e.payload["sent_us"].as_i64()?;
            Some((e.started_at?.micros() - sent) as f64 / 1000.0)
        })
        .collect();
    let _ = stop_tx.send(());
    running.await.map_err(runtime)??;
    let mut bare = bare(&broker, n).await?;
    let r = MqttBench {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        backend: dbs.kind(),
        messages: n,
        to_started_p50_ms: percentile(&mut delays, 50.0),
        to_started_p99_ms: percentile(&mut delays, 99.0),
        bare_p50_ms: percentile(&mut bare, 50.0),
        bare_p99_ms: percentile(&mut bare, 99.0),
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r).expect("serializes"));
        return Ok(());
    }
    println!(
        "{} cores | {} | {n} messages, one every {} ms, QoS 1",
        r.cores,
        r.backend,
        EVERY.as_millis()
    );
    println!(
        "published -> run started     p50 {:.2} ms  p99 {:.2} ms",
        r.to_started_p50_ms, r.to_started_p99_ms
    );
    println!(
        "published -> bare subscriber p50 {:.2} ms  p99 {:.2} ms",
        r.bare_p50_ms, r.bare_p99_ms
    );
    Ok(())
}
