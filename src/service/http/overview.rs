//! What an operator looks at first: the nodes, the last hour's throughput
//! and durations, and what needs attention.

use super::error::{ok, ApiError, ApiResult};
use super::ApiState;
use crate::contract::{self, Since};
use crate::model::{now_micros, Execution, Timestamp};
use crate::store::TimelineRow;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A supervisor node.
#[derive(Serialize, ToSchema)]
pub(super) struct Node {
    /// Unique per start.
    id: String,
    hostname: String,
    pid: i64,
    started_at: Timestamp,
    /// Its last heartbeat.
    heartbeat_at: Timestamp,
    /// When it stopped cleanly.
    stopped_at: Option<Timestamp>,
    /// Whether it heartbeat within the node lease and has not stopped.
    live: bool,
    /// How many executions it runs at once (absent for a node from before
    /// nodes said).
    concurrency: Option<u32>,
}

/// Nodes seen in the last day, newest first, with their last heartbeat.
#[utoipa::path(get, path = "/v1/nodes", operation_id = "listNodes", tag = "system",
    responses((status = 200, description = "The nodes", body = Vec<Node>)))]
pub(super) async fn nodes(State(api): ApiState) -> ApiResult {
    let now = now_micros();
    let lease = api.sup.node_lease().as_micros() as i64;
    let nodes = api
        .sup
        .store()
        .recent_nodes(now - 24 * 3600 * 1_000_000)
        .await?;
    ok(nodes
        .into_iter()
        .map(|n| Node {
            live: n.stopped_at.is_none() && n.heartbeat_at >= now - lease,
            id: n.id,
            hostname: n.hostname,
            pid: n.pid,
            started_at: Timestamp(n.started_at),
            heartbeat_at: Timestamp(n.heartbeat_at),
            stopped_at: n.stopped_at.map(Timestamp),
            concurrency: n.concurrency,
        })
        .collect::<Vec<_>>())
}

/// A change to the node that answers.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NodeChange {
    /// How many executions it runs at once, until it stops (the config's
    /// is read again at the next start). A decrease interrupts nothing.
    #[schema(value_type = usize, required = true, minimum = 1, maximum = 100_000)]
    concurrency: Option<usize>,
}

/// This node's settings that change while it runs.
#[derive(Serialize, ToSchema)]
pub(super) struct NodeSettings {
    /// The node that answered.
    id: String,
    /// How many executions it runs at once.
    concurrency: usize,
}

/// Change the node that answers: how many executions it runs at once,
/// until its next restart. Running work is never interrupted by a
/// decrease. With several nodes behind a balancer, each is changed on its
/// own address.
#[utoipa::path(put, path = "/v1/node", operation_id = "changeNode", tag = "system",
    request_body = NodeChange,
    responses(
        (status = 200, description = "The node's settings now", body = NodeSettings),
        (status = 400, description = "Not a concurrency from 1 to 100,000", body = super::ErrorBody),
    ))]
pub(super) async fn change_node(State(api): ApiState, b: axum::body::Bytes) -> ApiResult {
    let change = super::error::body::<NodeChange>(&b)?;
    let n = change
        .concurrency
        .ok_or_else(|| ApiError::invalid("give concurrency"))?;
    api.sup.set_concurrency(n).await?;
    ok(NodeSettings {
        id: api.sup.node_id().to_string(),
        concurrency: api.sup.concurrency(),
    })
}

/// The window of a timeline.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TimelineQuery {
    /// From when (default the last hour).
    #[param(value_type = Option<Since>)]
    since: Option<String>,
}

/// Executions that ended since a time (whole minutes, from the one it
/// falls in), per minute, handler and status, with their mean and longest
/// durations: the throughput and duration charts.
#[utoipa::path(get, path = "/v1/timeline", operation_id = "showTimeline", tag = "executions", params(TimelineQuery),
    responses((status = 200, description = "One row per minute, handler and status that had any", body = Vec<TimelineRow>)))]
pub(super) async fn timeline(State(api): ApiState, Query(q): Query<TimelineQuery>) -> ApiResult {
    let now = now_micros();
    let since = match q.since {
        Some(s) => contract::time_bound(&s, now, true).map_err(ApiError::invalid)?,
        None => now - 3600 * 1_000_000,
    };
    ok(api.sup.store().timeline(since).await?)
}

/// A job whose occurrence is overdue.
#[derive(Serialize, ToSchema)]
pub(super) struct LateJob {
    /// The job.
    name: String,
    /// The occurrence that is due.
    next_run_at: Timestamp,
    /// How late it is, ms.
    late_ms: u64,
}

/// What needs an operator.
#[derive(Serialize, ToSchema)]
pub(super) struct Attention {
    /// Running past their timeout, or on a node whose heartbeat stopped.
    stuck: Vec<Execution>,
    /// Failed in the last hour, the newest first (at most 100).
    failed: Vec<Execution>,
    /// Jobs not paused whose next occurrence is more than a minute overdue.
    late: Vec<LateJob>,
    /// The alerts open now (`job.failing`, `job.late`, `job.silent`,
    /// `execution.stuck`), oldest first.
    alerts: Vec<crate::store::Incident>,
}

/// How late a job may be before it needs attention (the scheduler runs
/// due occurrences within a poll interval).
const LATE_US: i64 = 60 * 1_000_000;

/// What needs attention: the alerts open now, stuck executions, the last
/// hour's failures, late jobs.
#[utoipa::path(get, path = "/v1/attention", operation_id = "listAttention", tag = "executions",
    responses((status = 200, description = "Stuck, failed and late", body = Attention)))]
pub(super) async fn attention(State(api): ApiState) -> ApiResult {
    let now = now_micros();
    let store = api.sup.store();
    let stale = now - api.sup.node_lease().as_micros() as i64;
    let stuck = store.stuck(now, stale).await?;
    let failed = store.failed_since(now - 3600 * 1_000_000, 100).await?;
    let late = store
        .late_jobs(now - LATE_US)
        .await?
        .into_iter()
        .filter_map(|j| {
            let due = j.next_run_at?;
            Some(LateJob {
                name: j.spec.name,
                next_run_at: Timestamp(due),
                late_ms: ((now - due) / 1000).max(0) as u64,
            })
        })
        .collect();
    let alerts = store.incidents().await?;
    ok(Attention {
        stuck,
        failed,
        late,
        alerts,
    })
}
