//! The webhooks' task on each node: takes the recorded changes into
//! deliveries ([`super::outbox`]) and runs the alert passes
//! ([`super::alerts`]), while there is a webhook or a job that sets an
//! alert; with neither, it only looks, every [`LOOK`], whether there is.

use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often a node looks for recorded changes while there is a webhook
/// (a read of one row of an empty table when there are none).
pub(crate) const POLL: Duration = Duration::from_millis(250);
/// How often a node looks whether there is a webhook: with none, that is
/// all it does.
const LOOK: Duration = Duration::from_secs(5);

/// Takes the recorded changes and inserts their deliveries until `stop`,
/// and every [`LOOK`] runs an alert pass (`lease`: how long a node may go
/// without a heartbeat); `wake` is called when deliveries were inserted
/// (this node's dispatcher claims them without waiting for its poll).
pub(crate) async fn run(
    store: Arc<dyn Store>,
    lease: Duration,
    wake: impl Fn() + Send + 'static,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut failing = false;
    // Whether there was a webhook, a job that sets an alert, or changes
    // left to take, at the last look; and when to look again.
    let (mut armed, mut look) = (false, tokio::time::Instant::now());
    let mut first = true;
    loop {
        let pause = match (first, armed) {
            (true, _) => Duration::ZERO,
            (false, true) => POLL,
            (false, false) => LOOK,
        };
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        if tokio::time::Instant::now() >= look {
            look = tokio::time::Instant::now() + LOOK;
            // A failed look arms it: the drain says what failed.
            armed = store.webhooks_or_changes().await.unwrap_or(true);
            if armed {
                match super::alerts::pass(store.as_ref(), lease).await {
                    Ok((0, 0)) => {}
                    Ok((opened, closed)) => {
                        tracing::info!(opened, closed, "alerts changed");
                        wake();
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::error_chain(&e), "cannot check alerts; trying again")
                    }
                }
            }
        }
        if !armed {
            continue;
        }
        match super::outbox::drain(store.as_ref()).await {
            Ok(inserted) => {
                if inserted > 0 {
                    wake();
                }
                failing = false;
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %crate::error_chain(&e), "cannot take recorded events for webhooks; trying again");
            }
            Err(_) => {}
        }
    }
}
