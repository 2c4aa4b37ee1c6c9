//! Lifecycle events as a subscriber hears them.

use jobvisor::events::Event;
use std::time::Duration;
use tokio::sync::broadcast::Receiver;
use uuid::Uuid;

/// Receives events into `seen` until `until` holds for all of them, or
/// fails after a minute.
async fn receive(
    rx: &mut Receiver<Event>,
    seen: &mut Vec<Event>,
    until: impl Fn(&[Event]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !until(seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => seen.push(e),
            Ok(Err(e)) => panic!("the event channel: {e}; saw {seen:#?}"),
            Err(_) => panic!("no such event in a minute; saw {seen:#?}"),
        }
    }
}

/// Receives events into `seen` until `until` holds for a new one.
pub async fn events_until(
    rx: &mut Receiver<Event>,
    seen: &mut Vec<Event>,
    until: impl Fn(&Event) -> bool,
) {
    let before = seen.len();
    receive(rx, seen, |seen| {
        seen.len() > before && until(&seen[seen.len() - 1])
    })
    .await;
}

/// Events until `until` accepts all heard so far.
pub async fn hear_until(rx: &mut Receiver<Event>, until: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    receive(rx, &mut seen, until).await;
    seen
}

/// Whether `seen` has a `kind` event of execution `id`.
pub fn saw(seen: &[Event], id: Uuid, kind: &str) -> bool {
    seen.iter()
        .any(|e| e.execution_id == id && e.kind.name() == kind)
}

/// Execution `id`'s events as heard, its `enqueued` put first: the task
/// that inserted a run announces that, the one that claimed it (on this
/// node or another) announces its `started`, and the claim can win (see
/// `jobvisor::events`).
pub fn enqueued_first(seen: &[Event], id: Uuid) -> Vec<&Event> {
    let mut of: Vec<&Event> = seen.iter().filter(|e| e.execution_id == id).collect();
    if let Some(i) = of.iter().position(|e| e.kind.name() == "enqueued") {
        let e = of.remove(i);
        of.insert(0, e);
    }
    of
}
