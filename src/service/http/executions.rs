//! Executions: list and filter, enqueue, show, cancel, retry, act in bulk,
//! read logs.

use super::error::{body, bounded, ok, with_status, ApiError, ApiResult};
use super::{ApiState, ErrorBody};
use crate::contract::{self, Name, Since, Text, Until};
use crate::model::{AfterPolicy, Enqueued, Execution, LogEntry, Meta, Mode, Origin, Status};
use crate::store::{CancelRequest, ExecFilter, HoldRequest, RetryRequest};
use crate::RunSpec;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use jobvisor_worker::Level;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The filters of `exec list`, as query parameters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only these statuses (any of them), comma-separated.
    #[param(value_type = Option<Vec<Status>>, style = Form, explode = false)]
    status: Option<String>,
    /// Only this job's.
    #[param(value_type = Option<Name>)]
    job: Option<String>,
    /// Only this handler's.
    #[param(value_type = Option<Name>)]
    handler: Option<String>,
    /// Only those in this queue.
    #[param(value_type = Option<Name>)]
    queue: Option<String>,
    /// Only those this node claimed.
    #[param(value_type = Option<Name>)]
    node: Option<String>,
    /// Only those with this unique key.
    #[param(value_type = Option<Name>)]
    unique_key: Option<String>,
    /// Only those with this concurrency key.
    #[param(value_type = Option<Name>)]
    concurrency_key: Option<String>,
    /// Only those enqueued at or after this time.
    #[param(value_type = Option<Since>)]
    since: Option<String>,
    /// Only those enqueued before this time.
    #[param(value_type = Option<Until>)]
    until: Option<String>,
    /// Only those older than this execution: pass a page's last id for the
    /// next page.
    before: Option<Uuid>,
    /// Only those with every one of these tags, comma-separated.
    #[param(value_type = Option<contract::TagList>, style = Form, explode = false)]
    tag: Option<String>,
    /// Only those with this meta pair, `KEY:VALUE`.
    #[param(value_type = Option<contract::MetaPair>)]
    meta: Option<String>,
    /// Only those that came to be this way.
    origin: Option<Origin>,
    /// Only the last attempt of each run (a run retried twice counts once).
    #[serde(default, rename = "final")]
    last_attempt: bool,
    /// At most this many, newest first.
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<usize>,
}

/// `since` and `until` as times (each a [`Since`] or an [`Until`]).
fn time_bounds(
    since: Option<String>,
    until: Option<String>,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let now = crate::model::now_micros();
    let time = |what: &str, v: Option<String>, since: bool| {
        v.map(|v| contract::time_bound(&v, now, since))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("{what}: {e}")))
    };
    Ok((time("since", since, true)?, time("until", until, false)?))
}

impl ListQuery {
    pub(super) fn filter(self) -> Result<ExecFilter, ApiError> {
        let statuses = match self.status.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|s| {
                    s.parse::<Status>()
                        .map_err(|_| ApiError::invalid(format!("unknown status {s:?}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let (since, until) = time_bounds(self.since, self.until)?;
        let tags: Vec<String> = match self.tag.as_deref() {
            None | Some("") => Vec::new(),
            Some(list) => list.split(',').map(str::to_string).collect(),
        };
        let mut meta = Meta::new();
        if let Some(pair) = self.meta {
            let (k, v) = pair
                .split_once(':')
                .ok_or_else(|| ApiError::invalid(format!("meta {pair:?} is not KEY:VALUE")))?;
            meta.insert(k.to_string(), v.to_string());
        }
        Ok(ExecFilter {
            tags,
            meta,
            origin: self.origin,
            last_attempt: self.last_attempt,
            statuses,
            job: self.job,
            handler: self.handler,
            queue: self.queue,
            node: self.node,
            unique_key: self.unique_key,
            concurrency_key: self.concurrency_key,
            since,
            until,
            before: self.before,
            limit: bounded("limit", self.limit, 100, MAX_LIST)?,
            clip: None,
        })
    }
}

/// List executions, newest first, by the filters of `exec list`. Pages:
/// pass the last id as `before` for the next. Each row's `payload` and
/// `output` are cut at 4 KiB (then the beginning of their JSON text, as a
/// string, with `payload_truncated` or `output_truncated`): the
/// execution's own route gives them whole.
#[utoipa::path(get, path = "/v1/executions", operation_id = "listExecutions", tag = "executions", params(ListQuery),
    responses((status = 200, description = "The executions, newest first", body = Vec<Execution>)))]
pub(super) async fn list(State(api): ApiState, Query(q): Query<ListQuery>) -> ApiResult {
    let filter = ExecFilter {
        clip: Some(CLIP),
        ..q.filter()?
    };
    ok(api.sup.store().executions(&filter).await?)
}

/// A run to enqueue.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EnqueueBody {
    /// The handler to run.
    #[schema(value_type = Name)]
    handler: String,
    /// Its input.
    #[serde(default)]
    payload: Value,
    /// The handler's default if absent.
    mode: Option<Mode>,
    /// The queue to wait in (`default` if absent).
    #[schema(value_type = Option<Name>)]
    queue: Option<String>,
    /// Higher runs first.
    #[serde(default)]
    priority: i32,
    /// Retries after a failed attempt.
    #[serde(default)]
    #[schema(maximum = 10_000)]
    retries: u32,
    /// Wall-clock limit of each attempt (the handler's if absent).
    #[schema(minimum = 1, maximum = 31_622_400_000_u64)]
    timeout_ms: Option<u64>,
    /// While an execution holds this key (pending or running), another
    /// enqueue with it creates nothing and is answered with the holder.
    #[schema(value_type = Option<Name>)]
    unique_key: Option<String>,
    /// The key still counts this long after its holder ends (needs
    /// `unique_key`).
    #[schema(value_type = Option<contract::Duration>)]
    unique_for: Option<String>,
    /// A duplicate replaces the payload and due time of the holder that
    /// has not started (needs `unique_key`; not with `after`).
    #[serde(default)]
    replace: bool,
    /// The queue's key limit caps how many with one key run at once.
    #[schema(value_type = Option<Name>)]
    concurrency_key: Option<String>,
    /// Executions to run after.
    #[serde(default)]
    #[schema(max_items = 100)]
    after: Vec<Uuid>,
    /// What their ends must be for it to run (needs `after`).
    after_policy: Option<AfterPolicy>,
    /// Its id: an id that names an execution already is refused (409
    /// `id_taken`) and nothing is written. Lists go newest first by id, so
    /// a time-ordered UUIDv7 keeps them in order. A new UUIDv7 if absent.
    id: Option<Uuid>,
    /// Not before this time: it waits as `pending` until then (not with
    /// `delay`).
    #[schema(value_type = Option<String>, format = DateTime)]
    run_at: Option<String>,
    /// Not before this long from now (not with `run_at`).
    #[schema(value_type = Option<contract::Duration>)]
    delay: Option<String>,
    /// Its meta: string values by key, shown with it and found by
    /// (`?meta=KEY:VALUE`).
    #[schema(value_type = Option<contract::MetaObject>)]
    meta: Option<Meta>,
    /// Its tags, found by (`?tag=`).
    #[schema(value_type = Option<contract::Tags>)]
    tags: Option<Vec<String>>,
}

impl EnqueueBody {
    /// The run, or why the fields do not go together.
    pub(super) fn spec(self) -> Result<RunSpec, ApiError> {
        let b = self;
        let mut spec = RunSpec::new(b.handler, b.payload);
        spec.mode = b.mode;
        if let Some(q) = b.queue {
            spec.queue = q;
        }
        spec.priority = b.priority;
        spec.retries = b.retries;
        spec.timeout = b.timeout_ms.map(Duration::from_millis);
        spec.concurrency_key = b.concurrency_key;
        spec.id = b.id;
        spec.meta = b.meta.unwrap_or_default();
        spec.tags = b.tags.unwrap_or_default();
        spec.run_at = match (b.run_at, b.delay) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("run_at and delay do not go together"))
            }
            (Some(t), None) => Some(
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map_err(|e| ApiError::unprocessable(format!("run_at: {t:?}: {e}")))?
                    .timestamp_micros(),
            ),
            (None, Some(d)) => {
                let d = contract::duration(&d)
                    .map_err(|e| ApiError::unprocessable(format!("delay: {e}")))?;
                let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
                Some(crate::model::now_micros().saturating_add(micros))
            }
            (None, None) => None,
        };
        let keyed = b.unique_key.is_some();
        if let Some(key) = b.unique_key {
            spec = spec.unique_key(key);
        }
        // The document states these rules too (see `declare`).
        let rule = ApiError::invalid;
        if b.replace {
            if !keyed {
                return Err(rule("replace needs unique_key"));
            }
            if !b.after.is_empty() {
                return Err(rule("replace cannot be combined with after"));
            }
            spec = spec.replace();
        }
        if let Some(hold) = b.unique_for {
            if !keyed {
                return Err(rule("unique_for needs unique_key"));
            }
            let hold = contract::duration(&hold)
                .map_err(|e| ApiError::invalid(format!("unique_for: {e}")))?;
            spec = spec.unique_for(hold);
        }
        if b.after_policy.is_some() && b.after.is_empty() {
            return Err(rule("after_policy needs after"));
        }
        for id in b.after {
            spec = spec.after(id);
        }
        if let Some(policy) = b.after_policy {
            spec = spec.after_policy(policy);
        }
        Ok(spec)
    }
}

/// Enqueue a run of a handler.
#[utoipa::path(post, path = "/v1/executions", operation_id = "enqueueExecution", tag = "executions", request_body = EnqueueBody,
    params(("traceparent" = Option<String>, Header, description = "The W3C trace context of the caller's span: the run's trace continues it (one that does not parse is ignored, as the recommendation says)")),
    responses(
        (status = 201, description = "Inserted", body = Enqueued),
        (status = 200, description = "A duplicate: its unique key is held by execution `id` (`replaced` when `replace` changed it)", body = Enqueued),
        (status = 404, description = "No such handler", body = ErrorBody),
        (status = 422, description = "A parent that does not exist, or an executable handler asked to run inproc", body = ErrorBody),
    ))]
pub(super) async fn enqueue(State(api): ApiState, headers: HeaderMap, b: Bytes) -> ApiResult {
    let mut spec = body::<EnqueueBody>(&b)?.spec()?;
    spec.traceparent = traceparent(&headers);
    let e = api.sup.submit_many(vec![spec]).await?[0];
    let status = if e.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    with_status(status, e)
}

/// The request's `traceparent` header, if it parses (W3C: one that does
/// not is ignored, and the trace starts afresh).
fn traceparent(headers: &HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    crate::model::RemoteSpan::parse(v).ok()?;
    Some(v.trim().to_string())
}

/// Runs to enqueue in one transaction.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    /// The runs, each as `POST /v1/executions` takes it.
    #[schema(min_items = 1, max_items = 10_000)]
    runs: Vec<EnqueueBody>,
}

/// What a batch enqueued.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchEnqueued {
    /// Each run's execution, in the order of the request (`duplicate`
    /// when its unique key was held).
    runs: Vec<crate::model::Enqueued>,
}

/// Enqueue up to 10,000 runs in one transaction: all of them, or, if one
/// is refused, none (the error names its index).
#[utoipa::path(post, path = "/v1/executions/batch", operation_id = "enqueueExecutions", tag = "executions", request_body = BatchBody,
    params(("traceparent" = Option<String>, Header, description = "The W3C trace context of the caller's span: each run's trace continues it")),
    responses(
        (status = 201, description = "Inserted (each duplicate says so)", body = BatchEnqueued),
        (status = 404, description = "A run names no such handler", body = ErrorBody),
        (status = 409, description = "A run's id names an execution already (`id_taken`)", body = ErrorBody),
        (status = 422, description = "A run that cannot be carried out as given", body = ErrorBody),
    ))]
pub(super) async fn enqueue_batch(State(api): ApiState, headers: HeaderMap, b: Bytes) -> ApiResult {
    let batch = body::<BatchBody>(&b)?;
    let caller = traceparent(&headers);
    let mut specs = Vec::with_capacity(batch.runs.len());
    for (i, run) in batch.runs.into_iter().enumerate() {
        let mut spec = run.spec().map_err(|e| e.context(&format!("runs[{i}]")))?;
        spec.traceparent = caller.clone();
        specs.push(spec);
    }
    match api.sup.submit_many(specs.clone()).await {
        Ok(runs) => with_status(StatusCode::CREATED, BatchEnqueued { runs }),
        Err(crate::Error::IdTaken(id)) => {
            let i = specs.iter().position(|s| s.id == Some(id)).unwrap_or(0);
            Err(ApiError::from(crate::Error::IdTaken(id)).context(&format!("runs[{i}]")))
        }
        // Which run: the first that is refused on its own.
        Err(e) => match api.sup.first_refused(&specs).await {
            Some(i) => Err(ApiError::from(e).context(&format!("runs[{i}]"))),
            None => Err(e.into()),
        },
    }
}

/// An execution with its place in a graph.
#[derive(Serialize, ToSchema)]
pub(super) struct ExecutionDetail {
    #[serde(flatten)]
    execution: Execution,
    /// The executions it runs after (the last attempt of each).
    parents: Vec<Uuid>,
    /// The executions that run after it.
    children: Vec<Uuid>,
}

/// Show an execution, with its parents and children.
#[utoipa::path(get, path = "/v1/executions/{id}", operation_id = "showExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "The execution", body = ExecutionDetail),
        (status = 404, description = "No such execution", body = ErrorBody),
    ))]
pub(super) async fn show(State(api): ApiState, Path(id): Path<Uuid>) -> ApiResult {
    let store = api.sup.store();
    let Some(execution) = store.execution(id).await? else {
        return Err(ApiError::not_found(format!("no execution {id}")));
    };
    let links = store.links(id).await?;
    ok(ExecutionDetail {
        execution,
        parents: links.parents,
        children: links.children,
    })
}

/// Why a cancel is asked for.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CancelBody {
    /// Stored with the execution (`requested through the API` if absent).
    #[schema(value_type = Option<Text>)]
    reason: Option<String>,
}

impl CancelBody {
    pub(super) fn reason(self) -> String {
        self.reason
            .unwrap_or_else(|| "requested through the API".into())
    }
}

/// What a cancel did.
#[derive(Serialize, ToSchema)]
pub(super) struct Cancelled {
    /// The execution.
    id: Uuid,
    /// `cancelled`: it had not started and never will; `requested`: it is
    /// running and its node was asked to stop it.
    #[schema(value_type = String, pattern = "^(cancelled|requested)$")]
    cancel: &'static str,
}

/// Cancel an execution: one that has not started is cancelled at once, a
/// running one is stopped by its node (cooperatively, then by signal).
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", operation_id = "cancelExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id")),
    request_body(content = Option<CancelBody>),
    responses(
        (status = 200, description = "It had not started: cancelled", body = Cancelled),
        (status = 202, description = "It is running: its node was asked to stop it", body = Cancelled),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "It has already ended", body = ErrorBody),
    ))]
pub(super) async fn cancel(State(api): ApiState, Path(id): Path<Uuid>, b: Bytes) -> ApiResult {
    let reason = body::<CancelBody>(&b)?.reason();
    match api.sup.cancel(id, &reason).await? {
        CancelRequest::NotFound => Err(ApiError::not_found(format!("no execution {id}"))),
        CancelRequest::AlreadyFinished(status) => Err(ApiError::conflict(
            "finished",
            format!("execution {id} has already finished ({status})"),
        )),
        CancelRequest::CancelledPending => ok(Cancelled {
            id,
            cancel: "cancelled",
        }),
        CancelRequest::Requested => with_status(
            StatusCode::ACCEPTED,
            Cancelled {
                id,
                cancel: "requested",
            },
        ),
    }
}

/// A new attempt.
#[derive(Serialize, ToSchema)]
pub(super) struct Retried {
    /// The new attempt.
    id: Uuid,
    /// The attempt it retries.
    retries: Uuid,
}

/// Run a failed, cancelled or interrupted execution again.
#[utoipa::path(post, path = "/v1/executions/{id}/retry", operation_id = "retryExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id")),
    responses(
        (status = 201, description = "The new attempt", body = Retried),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "It is running, succeeded, or was retried already", body = ErrorBody),
    ))]
pub(super) async fn retry(State(api): ApiState, Path(id): Path<Uuid>) -> ApiResult {
    let r = api.sup.retry(id).await?;
    match (&r, r.refusal(id)) {
        (RetryRequest::Retried(new), _) => with_status(
            StatusCode::CREATED,
            Retried {
                id: *new,
                retries: id,
            },
        ),
        (RetryRequest::NotFound, Some(why)) => Err(ApiError::not_found(why)),
        (_, why) => Err(ApiError::conflict("not_retryable", why.unwrap_or_default())),
    }
}

/// Where a held or released execution stands.
#[derive(Serialize, ToSchema)]
pub(super) struct HoldState {
    /// The execution.
    id: Uuid,
    /// `held` after a hold; after a release, `pending`, or `waiting` while
    /// it still waits on parents or on a unique key's holder.
    status: Status,
}

/// Answers a hold or release of `id`.
fn held(id: Uuid, r: HoldRequest, hold: bool) -> ApiResult {
    match (r, r.refusal(id, hold)) {
        (HoldRequest::Done(status), _) => ok(HoldState { id, status }),
        (HoldRequest::NotFound, Some(why)) => Err(ApiError::not_found(why)),
        (_, why) => Err(ApiError::conflict("not_holdable", why.unwrap_or_default())),
    }
}

/// Hold a pending or waiting execution: it becomes `held` and is never
/// claimed until released. Holding a held one changes nothing.
#[utoipa::path(post, path = "/v1/executions/{id}/hold", operation_id = "holdExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "It is held", body = HoldState),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "It is running or has ended", body = ErrorBody),
    ))]
pub(super) async fn hold(State(api): ApiState, Path(id): Path<Uuid>) -> ApiResult {
    held(id, api.sup.hold(id).await?, true)
}

/// Release a held execution, back to pending (or waiting, while it still
/// waits on parents or on a unique key's holder). Releasing one that is
/// not held changes nothing.
#[utoipa::path(post, path = "/v1/executions/{id}/release", operation_id = "releaseExecution", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id")),
    responses(
        (status = 200, description = "It is released", body = HoldState),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "It is running or has ended", body = ErrorBody),
    ))]
pub(super) async fn release(State(api): ApiState, Path(id): Path<Uuid>) -> ApiResult {
    held(id, api.sup.release(id).await?, false)
}

/// A status or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum Statuses {
    /// One.
    One(Status),
    /// Any of these.
    Many(Vec<Status>),
}

/// The body of a bulk action: `exec list`'s filters, at least one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkBody {
    /// Only these statuses.
    status: Option<Statuses>,
    /// Only this job's.
    #[schema(value_type = Option<Name>)]
    job: Option<String>,
    /// Only this handler's.
    #[schema(value_type = Option<Name>)]
    handler: Option<String>,
    /// Only those in this queue.
    #[schema(value_type = Option<Name>)]
    queue: Option<String>,
    /// Only those this node claimed.
    #[schema(value_type = Option<Name>)]
    node: Option<String>,
    /// Only those with this unique key.
    #[schema(value_type = Option<Name>)]
    unique_key: Option<String>,
    /// Only those with this concurrency key.
    #[schema(value_type = Option<Name>)]
    concurrency_key: Option<String>,
    /// Only those enqueued at or after this time.
    #[schema(value_type = Option<Since>)]
    since: Option<String>,
    /// Only those enqueued before this time.
    #[schema(value_type = Option<Until>)]
    until: Option<String>,
    /// Only those with every one of these tags.
    #[schema(value_type = Option<contract::Tags>)]
    tags: Option<Vec<String>>,
    /// Only those with every one of these meta pairs.
    #[schema(value_type = Option<contract::MetaObject>)]
    meta: Option<Meta>,
    /// Only those that came to be this way.
    origin: Option<Origin>,
    /// Only the last attempt of each run.
    #[serde(default, rename = "final")]
    last_attempt: bool,
    /// Why (cancels only).
    #[schema(value_type = Option<Text>)]
    reason: Option<String>,
}

impl BulkBody {
    pub(super) fn filter(self) -> Result<(ExecFilter, Option<String>), ApiError> {
        let statuses = match self.status {
            None => Vec::new(),
            Some(Statuses::One(s)) => vec![s],
            Some(Statuses::Many(list)) => list,
        };
        let (since, until) = time_bounds(self.since, self.until)?;
        // A bulk action reads every match in pages (its limit is not used).
        let filter = ExecFilter {
            tags: self.tags.unwrap_or_default(),
            meta: self.meta.unwrap_or_default(),
            origin: self.origin,
            last_attempt: self.last_attempt,
            statuses,
            job: self.job,
            handler: self.handler,
            queue: self.queue,
            node: self.node,
            unique_key: self.unique_key,
            concurrency_key: self.concurrency_key,
            since,
            until,
            before: None,
            limit: usize::MAX,
            clip: None,
        };
        if !filter.narrows() {
            return Err(ApiError::invalid(
                "give at least one filter (status, job, handler, queue, node, unique_key, concurrency_key, since, until, tags, meta, origin)",
            ));
        }
        Ok((filter, self.reason))
    }
}

/// Cancel every execution a filter matches that has not ended.
#[utoipa::path(post, path = "/v1/executions/cancel", operation_id = "cancelMatchingExecutions", tag = "executions", request_body = BulkBody,
    responses(
        (status = 200, description = "What matched, what was cancelled, and what was asked to stop", body = crate::bulk::Bulk),
    ))]
pub(super) async fn cancel_matching(State(api): ApiState, b: Bytes) -> ApiResult {
    let (filter, reason) = body::<BulkBody>(&b)?.filter()?;
    let reason = reason.unwrap_or_else(|| "requested through the API".into());
    ok(api.sup.cancel_matching(&filter, &reason).await?)
}

/// Retry every execution a filter matches that can be retried.
#[utoipa::path(post, path = "/v1/executions/retry", operation_id = "retryMatchingExecutions", tag = "executions", request_body = BulkBody,
    responses(
        (status = 200, description = "What matched and what was retried", body = crate::bulk::Bulk),
    ))]
pub(super) async fn retry_matching(State(api): ApiState, b: Bytes) -> ApiResult {
    let (filter, reason) = body::<BulkBody>(&b)?.filter()?;
    if reason.is_some() {
        return Err(ApiError::invalid("reason is for cancels"));
    }
    ok(api.sup.retry_matching(&filter).await?)
}

/// The filters a bulk action may narrow by.
const FILTERS: [&str; 13] = [
    "status",
    "job",
    "handler",
    "queue",
    "node",
    "unique_key",
    "concurrency_key",
    "since",
    "until",
    "tags",
    "meta",
    "origin",
    "final",
];

/// Writes the rules between fields that a type cannot say into `doc`:
/// what goes with what in an enqueue, at least one filter in a bulk
/// action, and no reason in a bulk retry.
pub(super) fn declare(doc: &mut Value) {
    let present = |field: &str| json!({"required": [field], "properties": {field: {"not": {"type": "null"}}}});
    doc["components"]["schemas"]["EnqueueBody"]["allOf"] = json!([
        {"not": {"allOf": [present("run_at"), present("delay")]}},
        {"if": present("unique_for"), "then": present("unique_key")},
        {"if": present("after_policy"), "then": {"required": ["after"], "properties": {"after": {"minItems": 1}}}},
        {"if": {"required": ["replace"], "properties": {"replace": {"const": true}}},
         "then": {"allOf": [present("unique_key"), {"properties": {"after": {"maxItems": 0}}}]}},
    ]);
    let mut narrows: Vec<Value> = FILTERS.iter().map(|f| present(f)).collect();
    narrows[0]["properties"]["status"] = json!({"anyOf": [
        {"type": "string"}, {"type": "array", "minItems": 1}]});
    narrows[9]["properties"]["tags"] = json!({"type": "array", "minItems": 1});
    narrows[10]["properties"]["meta"] = json!({"type": "object", "minProperties": 1});
    narrows[12]["properties"]["final"] = json!({"const": true});
    doc["components"]["schemas"]["BulkBody"]["anyOf"] = Value::Array(narrows);
    let retry = &mut doc["paths"]["/v1/executions/retry"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    *retry = json!({"allOf": [{"$ref": "#/components/schemas/BulkBody"}],
        "properties": {"reason": {"type": "null", "description": "Reasons are for cancels"}}});
}

/// Which log lines.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct LogQuery {
    /// Only lines after this one.
    #[param(minimum = 0)]
    after_seq: Option<i64>,
    /// Only lines before this one.
    #[param(minimum = 1)]
    before_seq: Option<i64>,
    /// Only lines at this level or above.
    #[param(schema_with = crate::model::level_schema)]
    level: Option<String>,
    /// Only lines whose message holds this text (case matters).
    #[param(value_type = Option<Text>)]
    q: Option<String>,
    /// The last `limit` lines rather than the first (still in order): a
    /// log's tail, or the page before `before_seq`.
    #[serde(default)]
    from_end: bool,
    /// At most this many.
    #[param(minimum = 1, maximum = 1000, default = 1000)]
    limit: Option<usize>,
}

/// Most text and fields one answer of `/logs`, or one read of a stream,
/// carries (but one line, however long).
pub(super) const LOG_PAGE_BYTES: usize = 1024 * 1024;

/// Most rows a list route returns.
pub(super) const MAX_LIST: usize = 1000;

/// A list's rows carry at most this much of each payload and output.
pub(super) const CLIP: usize = 4096;

/// `level`, read.
pub(super) fn level(q: Option<&str>) -> Result<Option<Level>, ApiError> {
    q.map(|l| {
        l.parse::<Level>()
            .map_err(|_| ApiError::invalid(format!("unknown level {l:?}")))
    })
    .transpose()
}

/// An execution's log lines, in order: the first page after `after_seq`,
/// or with `from_end` the last before `before_seq`; filtered by level and
/// text.
#[utoipa::path(get, path = "/v1/executions/{id}/logs", operation_id = "listExecutionLogs", tag = "executions",
    params(("id" = Uuid, Path, description = "The execution's id"), LogQuery),
    responses(
        (status = 200, description = "The lines", body = Vec<LogEntry>),
        (status = 404, description = "No such execution", body = ErrorBody),
    ))]
pub(super) async fn logs(
    State(api): ApiState,
    Path(id): Path<Uuid>,
    Query(q): Query<LogQuery>,
) -> ApiResult {
    let min = level(q.level.as_deref())?;
    let limit = bounded("limit", q.limit, 1000, MAX_LIST)?;
    let store = api.sup.store();
    if store.execution(id).await?.is_none() {
        return Err(ApiError::not_found(format!("no execution {id}")));
    }
    let page = crate::store::LogPage {
        after_seq: q.after_seq.unwrap_or(0),
        before_seq: q.before_seq,
        min_level: min,
        contains: q.q.filter(|t| !t.is_empty()),
        limit,
        from_end: q.from_end,
        max_bytes: Some(LOG_PAGE_BYTES),
    };
    ok(store.log_page(id, &page).await?)
}
