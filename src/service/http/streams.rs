//! Server-Sent Events: one execution's progress and log lines as they
//! come, and this node's executions starting and finishing.

use super::error::ApiError;
use super::executions::level;
use super::{Api, ApiState, ErrorBody};
use crate::model::{now_micros, Status};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The first event of `/v1/events`.
#[derive(Serialize, ToSchema)]
pub(super) struct Ready {
    /// This node's id.
    node: String,
    /// When it subscribed, microseconds since the epoch.
    at_us: i64,
}

/// An execution starting or ending on this node.
#[derive(Serialize, ToSchema)]
pub(super) struct StateEvent {
    /// The execution.
    id: Uuid,
    /// `running` when it starts; its end status when it ends.
    status: Status,
    /// When it ends: the retry scheduled for it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<Uuid>,
    /// When, microseconds since the epoch.
    at_us: i64,
}

/// The schema of a Server-Sent Events stream: each event one of `events`,
/// its `data` JSON of the schema given.
fn event_schema(events: &[(&str, Value)]) -> Value {
    let variants: Vec<Value> = events
        .iter()
        .map(|(name, data)| {
            json!({"properties": {
                "event": {"const": name},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data}}})
        })
        .collect();
    json!({"type": "object", "required": ["event", "data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string"},
            "id": {"type": "string"}, "retry": {"type": "integer"}},
        "oneOf": variants})
}

/// Writes each stream's event schema into `doc` (an event per item: what
/// OpenAPI 3.2 calls `itemSchema`, and how Server-Sent Events are checked).
pub(super) fn declare(doc: &mut Value) {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let streams = [
        (
            "/v1/executions/{id}/stream",
            event_schema(&[
                ("log", schema("LogEntry")),
                ("progress", schema("ProgressState")),
                ("end", schema("Execution")),
            ]),
        ),
        (
            "/v1/events",
            event_schema(&[
                ("ready", schema("Ready")),
                ("state", schema("StateEvent")),
                ("lagged", json!({"type": "integer", "minimum": 1})),
            ]),
        ),
    ];
    for (path, events) in streams {
        let content = &mut doc["paths"][path]["get"]["responses"]["200"]["content"];
        content["text/event-stream"]["schema"] = events;
    }
}

/// How long a stream waits without hearing of its execution before it
/// reads the store anyway: for an execution that another node (or
/// process) runs, whose rows this node's relay does not write. One that
/// this node runs is heard of as each batch of its rows commits.
const UNHEARD_RECHECK: Duration = Duration::from_secs(2);

/// The same for an execution this node runs (a safety net only).
const HEARD_RECHECK: Duration = Duration::from_secs(30);

/// A permit of the event streams' limit, or 503 with `Retry-After`.
fn stream_permit(api: &Api) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    api.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many event streams are open: try again later (the service's max_streams)",
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("5"),
        )
    })
}

/// Where a stream starts.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamQuery {
    /// Only lines after this one (a reconnecting client passes the last
    /// event id it saw).
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    /// Only lines at this level or above.
    #[param(schema_with = crate::model::level_schema)]
    level: Option<String>,
}

/// Follow an execution: `log` events (a log line each, its `seq` as the
/// event id), `progress` events when its progress changes, and one `end`
/// event with the execution once it has ended; then the stream ends.
#[utoipa::path(get, path = "/v1/executions/{id}/stream", operation_id = "streamExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id"), StreamQuery),
    responses(
        (status = 200, description = "Server-Sent Events: `log`, `progress`, then `end`", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 503, description = "Too many event streams are open", body = ErrorBody),
    ))]
pub(super) async fn execution(
    State(api): ApiState,
    Path(id): Path<Uuid>,
    Query(q): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let min = level(q.level.as_deref())?;
    if api.sup.store().execution(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    let permit = stream_permit(&api)?;
    struct S {
        api: Arc<Api>,
        after: i64,
        progress: Option<Value>,
        done: bool,
        queue: std::collections::VecDeque<Event>,
        watch: crate::engine::relay::Watch,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let s = S {
        watch: api.sup.watch(id),
        api,
        after: q.after_seq.unwrap_or(0),
        progress: None,
        done: false,
        queue: Default::default(),
        _permit: permit,
    };
    let events = stream::unfold(s, move |mut s| async move {
        loop {
            if let Some(e) = s.queue.pop_front() {
                return Some((Ok(e), s));
            }
            if s.done {
                return None;
            }
            let store = s.api.sup.store().clone();
            // Read the state first: lines written before it finished are
            // then all in the read that follows.
            let exec = store.execution(id).await.ok().flatten();
            let page = crate::store::LogPage {
                after_seq: s.after,
                min_level: min,
                limit: super::executions::MAX_LIST,
                max_bytes: Some(super::executions::LOG_PAGE_BYTES),
                ..Default::default()
            };
            if let Ok(lines) = store.log_page(id, &page).await {
                // A page is cut by count or by bytes: another may follow
                // at once.
                let full = !lines.is_empty();
                for l in lines {
                    s.after = l.seq;
                    let data = serde_json::to_string(&l).unwrap_or_default();
                    s.queue.push_back(
                        Event::default()
                            .event("log")
                            .id(l.seq.to_string())
                            .data(data),
                    );
                }
                if full {
                    continue;
                }
            }
            let here = exec
                .as_ref()
                .is_some_and(|e| e.node.as_deref() == Some(s.api.sup.node_id()));
            if let Some(e) = exec {
                let p = serde_json::to_value(&e.progress).unwrap_or(Value::Null);
                let reported = e.progress != crate::model::ProgressState::default();
                if reported && s.progress.as_ref() != Some(&p) {
                    s.queue
                        .push_back(Event::default().event("progress").data(p.to_string()));
                    s.progress = Some(p);
                }
                if e.status.is_terminal() {
                    let data = serde_json::to_string(&e).unwrap_or_default();
                    s.queue.push_back(Event::default().event("end").data(data));
                    s.done = true;
                }
            } else {
                s.done = true;
            }
            if s.queue.is_empty() {
                let recheck = if here { HEARD_RECHECK } else { UNHEARD_RECHECK };
                let _ = tokio::time::timeout(recheck, s.watch.changed()).await;
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Follow this node: a `ready` event once subscribed (with the node's id),
/// then a `state` event for each execution starting (`running`) or ending
/// (its status, and whether a retry follows); `lagged` with a count if the
/// client fell behind and events were dropped. It does not end.
#[utoipa::path(get, path = "/v1/events", operation_id = "streamEvents", tag = "executions",
    responses(
        (status = 200, description = "Server-Sent Events: `ready`, then `state` (and `lagged`)", content_type = "text/event-stream", body = String),
        (status = 503, description = "Too many event streams are open", body = ErrorBody),
    ))]
pub(super) async fn events(
    State(api): ApiState,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = stream_permit(&api)?;
    let started = api.sup.subscribe_started();
    let finished = api.sup.subscribe();
    let ready = Ready {
        node: api.sup.node_id().to_string(),
        at_us: now_micros(),
    };
    let ready = Event::default()
        .event("ready")
        .data(serde_json::to_string(&ready).unwrap_or_default());
    let s = stream::unfold(
        (started, finished, permit),
        |(mut started, mut finished, permit)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let event = tokio::select! {
                r = started.recv() => match r {
                    Ok(id) => state(StateEvent { id, status: Status::Running, retry: None, at_us: now_micros() }),
                    Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(RecvError::Closed) => return None,
                },
                r = finished.recv() => match r {
                    Ok(f) => state(StateEvent { id: f.id, status: f.status, retry: f.retry, at_us: now_micros() }),
                    Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                    Err(RecvError::Closed) => return None,
                },
            };
            Some((Ok(event), (started, finished, permit)))
        },
    );
    let s = stream::once(async move { Ok(ready) }).chain(s);
    fn state(e: StateEvent) -> Event {
        Event::default()
            .event("state")
            .data(serde_json::to_string(&e).unwrap_or_default())
    }
    Ok(Sse::new(s).keep_alive(KeepAlive::default()))
}
