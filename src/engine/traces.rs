//! OpenTelemetry traces: each run is a span from its enqueue to its end,
//! with a child span for each attempt's wait for its claim and for each
//! attempt, exported over OTLP/HTTP (protobuf).
//!
//! Export is on only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and `OTEL_SDK_DISABLED`
//! is not `true`; `OTEL_SERVICE_NAME` names the service (`jobvisor` by
//! default), and the exporter reads the other standard `OTEL_EXPORTER_OTLP_*`
//! variables (headers, timeout). Off, nothing here runs and a run carries
//! no trace unless its caller gave one.
//!
//! The spans are written after the fact, from the stored execution, with
//! ids derived from the execution ids ([`crate::model::trace`]): the node
//! that ends an attempt writes its spans, and the run's when it ends for
//! good, whichever node ran the attempts before.

use crate::model::trace::{span_id, SpanOf};
use crate::model::{Execution, Status, TraceContext};
use crate::store::{Finished, Store};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Ends gathered into one read and one export at most.
const BATCH: usize = 512;
/// How long ends are gathered before they are exported.
const LINGER: Duration = Duration::from_millis(200);

/// The exporter, if the environment asks for one.
pub(crate) struct Exporter {
    inner: opentelemetry_otlp::SpanExporter,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exporter")
    }
}

/// The OTLP exporter the environment configures, or `None` when it sets
/// no endpoint (or disables the SDK). A bad setting is an error.
pub(crate) fn from_env() -> Result<Option<Exporter>, String> {
    let set = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(None);
    }
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let mut inner = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(Client(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("jobvisor/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot set up the OTLP client: {e}"))?,
        ))
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if set("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("jobvisor");
    }
    inner.set_resource(&resource.build());
    Ok(Some(Exporter { inner }))
}

/// OTLP's HTTP requests, sent with the reqwest client jobvisor already has.
#[derive(Debug)]
struct Client(reqwest::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut r = self.0.request(parts.method, parts.uri.to_string());
        for (k, v) in parts.headers.iter() {
            r = r.header(k, v);
        }
        let response = r.body(body).send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        let mut out = http::Response::builder().status(status);
        for (k, v) in headers.iter() {
            out = out.header(k, v);
        }
        Ok(out.body(body)?)
    }
}

/// Writes the spans of the executions that end (as `finished` hears them)
/// until `stop`, then those heard so far, and flushes.
pub(crate) async fn run(
    store: Arc<dyn Store>,
    exporter: Exporter,
    mut finished: broadcast::Receiver<Finished>,
    node: String,
    stop: tokio_util::sync::CancellationToken,
) {
    let Exporter { inner } = exporter;
    let mut failing = false;
    let mut lagged = 0u64;
    loop {
        let mut ends: Vec<Finished> = Vec::new();
        let first = tokio::select! {
            _ = stop.cancelled() => None,
            r = finished.recv() => Some(r),
        };
        let stopping = first.is_none();
        let closed = matches!(first, Some(Err(broadcast::error::RecvError::Closed)));
        match first {
            Some(Ok(f)) => ends.push(f),
            Some(Err(broadcast::error::RecvError::Lagged(n))) => lagged += n,
            Some(Err(broadcast::error::RecvError::Closed)) | None => {}
        }
        if !stopping {
            let until = tokio::time::Instant::now() + LINGER;
            while ends.len() < BATCH {
                match tokio::time::timeout_at(until, finished.recv()).await {
                    Ok(Ok(f)) => ends.push(f),
                    Ok(Err(broadcast::error::RecvError::Lagged(n))) => lagged += n,
                    Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => break,
                }
            }
        }
        // What is heard already is written before the exporter closes.
        while let Ok(f) = finished.try_recv() {
            ends.push(f);
        }
        if lagged > 0 {
            tracing::warn!(ends = lagged, "traces: ends went by unheard (the node is busier than the exporter); their spans are missing");
            lagged = 0;
        }
        if !ends.is_empty() {
            match spans(store.as_ref(), &ends, &node).await {
                Ok(spans) if spans.is_empty() => {}
                Ok(spans) => match inner.export(spans).await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "traces: cannot export spans; dropping them and trying with the next");
                    }
                    Err(_) => {}
                },
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "traces: cannot read ended executions")
                }
            }
        }
        if stopping || closed {
            let _ = inner.force_flush();
            let _ = inner.shutdown();
            return;
        }
    }
}

/// The spans of `ends`: each attempt's claim wait and run, and each run
/// that ended for good.
async fn spans(
    store: &dyn Store,
    ends: &[Finished],
    node: &str,
) -> Result<Vec<SpanData>, crate::store::StoreError> {
    let ids: Vec<uuid::Uuid> = ends.iter().map(|f| f.id).collect();
    let retried: std::collections::HashSet<uuid::Uuid> = ends
        .iter()
        .filter(|f| f.retry.is_some())
        .map(|f| f.id)
        .collect();
    let rows = store.traced(&ids).await?;
    let mut out = Vec::with_capacity(rows.len() * 3);
    for (e, trace) in rows {
        // A first attempt enqueued where no trace was exported (by the
        // CLI, say) is traced from here: its own trace, from its id.
        let trace = trace.or_else(|| {
            (e.attempt == 1).then(|| TraceContext::for_run(e.id, None, e.enqueued_at.micros()))
        });
        let Some(t) = trace.filter(|t| t.sampled) else {
            continue;
        };
        out.extend(spans_of(&e, &t, retried.contains(&e.id), node));
    }
    Ok(out)
}

fn time(micros: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros.max(0) as u64)
}

/// The spans of attempt `e` of a run traced as `t` (`retried`: another
/// attempt follows, so the run's span is not yet written).
pub(crate) fn spans_of(
    e: &Execution,
    t: &TraceContext,
    retried: bool,
    node: &str,
) -> Vec<SpanData> {
    let trace_id = TraceId::from_bytes(t.trace_id);
    let run_span = SpanId::from_bytes(t.run_span);
    let context = |span: [u8; 8]| {
        SpanContext::new(
            trace_id,
            SpanId::from_bytes(span),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    let scope = InstrumentationScope::builder("jobvisor")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let outcome = e.status.to_string();
    let mut common = vec![
        KeyValue::new("jobvisor.execution_id", e.id.to_string()),
        KeyValue::new("jobvisor.handler", e.handler.clone()),
        KeyValue::new("jobvisor.mode", e.mode.to_string()),
        KeyValue::new("jobvisor.queue", e.queue.clone()),
        KeyValue::new("jobvisor.attempt", i64::from(e.attempt)),
    ];
    if let Some(job) = &e.job {
        common.push(KeyValue::new("jobvisor.job", job.clone()));
    }
    let failed = !matches!(
        e.status,
        Status::Succeeded | Status::Skipped | Status::Snoozed
    );
    let status = if failed {
        SpanStatus::error(e.error.clone().unwrap_or_else(|| outcome.clone()))
    } else {
        SpanStatus::Ok
    };
    let span = |name: String,
                id: [u8; 8],
                parent: SpanId,
                remote: bool,
                kind: SpanKind,
                start: i64,
                end: i64,
                attributes: Vec<KeyValue>,
                status: SpanStatus| SpanData {
        span_context: context(id),
        parent_span_id: parent,
        parent_span_is_remote: remote,
        span_kind: kind,
        name: name.into(),
        start_time: time(start),
        end_time: time(end.max(start)),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    };
    let mut out = Vec::with_capacity(3);
    let due = e.enqueued_at.micros().max(e.run_at.micros());
    let end = e.finished_at.map_or(due, |f| f.micros());
    if let Some(started) = e.started_at.map(|s| s.micros()) {
        // Its parent, the attempt beside it, says the rest.
        let wait_attributes = vec![
            KeyValue::new("jobvisor.execution_id", e.id.to_string()),
            KeyValue::new("jobvisor.attempt", i64::from(e.attempt)),
        ];
        out.push(span(
            "claim wait".into(),
            span_id(e.id, SpanOf::Wait),
            run_span,
            false,
            SpanKind::Internal,
            due.min(started),
            started,
            wait_attributes,
            SpanStatus::Unset,
        ));
        let mut attributes = common.clone();
        attributes.push(KeyValue::new("jobvisor.outcome", outcome.clone()));
        if let Some(n) = &e.node {
            attributes.push(KeyValue::new("jobvisor.node", n.clone()));
        } else {
            attributes.push(KeyValue::new("jobvisor.node", node.to_string()));
        }
        out.push(span(
            format!("attempt {}", e.attempt),
            span_id(e.id, SpanOf::Attempt),
            run_span,
            false,
            SpanKind::Consumer,
            started,
            end,
            attributes,
            status.clone(),
        ));
    }
    if !retried {
        let mut attributes = common;
        attributes.push(KeyValue::new("jobvisor.outcome", outcome));
        let name = match &e.job {
            Some(job) => format!("run {job}"),
            None => format!("run {}", e.handler),
        };
        out.push(span(
            name,
            t.run_span,
            t.parent_span.map_or(SpanId::INVALID, SpanId::from_bytes),
            t.parent_span.is_some(),
            SpanKind::Consumer,
            t.since.min(end),
            end,
            attributes,
            status,
        ));
    }
    out
}
