//! From recorded changes to deliveries. The database records a change of
//! an execution where some webhook may hear it, in the transaction that
//! makes it (a trigger on `executions`); a node takes the changes, oldest
//! first, and inserts a delivery for each webhook that hears each one, and
//! deletes the changes, in one transaction. A crash at any point loses no
//! event and delivers none twice: either the changes are still there, or
//! their deliveries are.

use super::body;
use crate::model::{
    Execution, Meta, Micros, Mode, NewExecution, Origin, RetryPolicy, Status, WebhookSpec,
    WEBHOOK_HANDLER, WEBHOOK_QUEUE,
};
use crate::store::{Change, Delivery, Store};
use serde_json::json;
use uuid::Uuid;

/// Changes taken in one transaction.
const BATCH: usize = 500;
/// A delivery's attempts: backed off from a second up to an hour, about
/// twelve hours in all before it gives up.
pub(crate) const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 20,
    backoff_base_ms: 1_000,
    backoff_cap_ms: 3_600_000,
};
/// An attempt's budget (the request's own timeout is shorter).
const TIMEOUT_MS: u64 = 60_000;

/// Takes every recorded change now; returns the deliveries inserted.
pub(crate) async fn drain(store: &dyn Store) -> Result<usize, crate::store::StoreError> {
    let mut inserted = 0;
    if !store.changes_waiting().await? {
        return Ok(0);
    }
    loop {
        let now = crate::model::now_micros();
        let deliver =
            move |changes: &[Change], hooks: &[WebhookSpec]| deliveries(changes, hooks, now);
        let t0 = std::time::Instant::now();
        let (taken, runs) = store.deliver_changes(BATCH, now, &deliver).await?;
        tracing::debug!(
            changes = taken,
            deliveries = runs.len(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "took recorded changes for webhooks"
        );
        inserted += runs.len();
        if taken < BATCH {
            return Ok(inserted);
        }
    }
}

/// The lifecycle event a change of `e` to `status` is, if any.
pub(crate) fn event_of(status: Status, e: &Execution) -> Option<&'static str> {
    Some(match status {
        // A retry's or a snooze's next run is told by its predecessor's
        // end (`retrying`, `snoozed`).
        Status::Pending | Status::Waiting | Status::Held => match e.origin {
            Origin::Retry | Origin::Snooze => return None,
            _ => "enqueued",
        },
        Status::Running => "started",
        Status::Succeeded => "succeeded",
        // Tried again: at once by its node (the retry is inserted with the
        // end), or by hand since (`exec retry`, rare within the moment it
        // takes to read the change).
        Status::Failed | Status::Cancelled if e.next_id.is_some() => "retrying",
        Status::Failed => "failed",
        Status::Cancelled => "cancelled",
        Status::Snoozed => "snoozed",
        Status::Skipped => "skipped",
    })
}

/// The deliveries of `changes` to the webhooks that hear them, in order.
pub(crate) fn deliveries(changes: &[Change], hooks: &[WebhookSpec], now: Micros) -> Vec<Delivery> {
    let mut out = Vec::new();
    for c in changes {
        let Some(e) = &c.execution else { continue };
        let Some(event) = event_of(c.status, e) else {
            continue;
        };
        let at = match c.status {
            Status::Pending | Status::Waiting | Status::Held => e.enqueued_at.0,
            Status::Running => e.started_at.map_or(now, |t| t.0),
            _ => e.finished_at.map_or(now, |t| t.0),
        };
        for hook in hooks
            .iter()
            .filter(|h| h.wants(event, e.job.as_deref(), &e.queue))
        {
            let id = Uuid::now_v7();
            let body = body::execution_event(event, e, &hook.name, id, at);
            out.push(delivery(
                id,
                hook,
                event,
                &c.execution_id.to_string(),
                body,
                now,
            ));
        }
    }
    out
}

/// A delivery of `body` (event `event` about `subject`) to `hook`, as run
/// `id` (the delivery's id, the same on every attempt).
pub(crate) fn delivery(
    id: Uuid,
    hook: &WebhookSpec,
    event: &str,
    subject: &str,
    body: serde_json::Value,
    now: Micros,
) -> Delivery {
    let mut meta = Meta::new();
    meta.insert("webhook".into(), hook.name.clone());
    meta.insert("event".into(), event.to_string());
    meta.insert("subject".into(), subject.to_string());
    let run = NewExecution {
        id,
        job: None,
        handler: WEBHOOK_HANDLER.to_string(),
        mode: Mode::Inproc,
        payload: json!({
            "webhook": hook.name,
            "event": event,
            "delivery": id,
            "body": body,
        }),
        retry: RETRY,
        timeout_ms: Some(TIMEOUT_MS),
        priority: 0,
        run_at: now,
        attempt: 1,
        previous_id: None,
        queue: WEBHOOK_QUEUE.to_string(),
        occurrence: None,
        unique: None,
        concurrency_key: None,
        after: Vec::new(),
        after_policy: Default::default(),
        step: None,
        origin: Origin::Event,
        meta,
        tags: Vec::new(),
        trace: None,
    };
    Delivery {
        run,
        webhook: hook.name.clone(),
        subject: subject.to_string(),
    }
}
