//! Inproc mode: the handler runs as a future inside the supervisor.
//!
//! A panic is caught and fails the execution, not the supervisor. A stop
//! cancels the handler's token; a handler that does not return within the
//! grace period (its stored handler's cancel grace, else the supervisor's)
//! is dropped (aborted) at its next await point.

use super::transaction::TxSlot;
use super::{Ending, Stop};
use crate::engine::relay::LogSink;
use crate::model::Outcome;
use crate::model::{now_micros, stream};
use crate::store::{Claimed, Completion, Store};
use futures_util::FutureExt;
use jobvisor_worker::handler::{panic_message, ErrorKind, ExecutionInfo, HandlerError};
use jobvisor_worker::protocol::WorkerMessage;
use jobvisor_worker::{Context, Handler, Level};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Runs one execution of `handler` to its end. With the completion comes
/// the transaction the handler opened (see [`super::transaction`]) when it
/// succeeded, to commit with its success; a failed run's is rolled back
/// here.
pub(crate) async fn run(
    handler: Arc<dyn Handler>,
    claimed: &Claimed,
    stop: &Stop,
    sink: &LogSink,
    default_grace: Duration,
    store: &Arc<dyn Store>,
) -> (Completion, Option<Box<dyn std::any::Any + Send>>) {
    // Read only when a stop begins: most executions never need it.
    let grace = || match claimed.handler_spec() {
        Ok(Some(spec)) => Duration::from_millis(spec.limits.cancel_grace_ms),
        _ => default_grace,
    };
    let (tx, mut rx) = mpsc::channel::<WorkerMessage>(256);
    let token = CancellationToken::new();
    let ctx = Context::new(
        ExecutionInfo {
            execution_id: claimed.id.to_string(),
            job: claimed.job.clone(),
            handler: claimed.handler.clone(),
            attempt: claimed.attempt,
            inputs: claimed.inputs.clone(),
            snoozes: claimed.snoozes,
            meta: claimed.meta.clone(),
            tags: claimed.tags.clone(),
        },
        token.clone(),
        tx,
    );
    let slot = TxSlot::new(store.clone());
    let ctx = ctx.with_extension(slot.clone());
    let mut work = AssertUnwindSafe(handler.call(ctx, claimed.payload.clone())).catch_unwind();
    let deadline = claimed
        .timeout_ms
        .map(|ms| Instant::now() + Duration::from_millis(ms));
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let mut ending: Option<Ending> = None;
    let mut abort_at: Option<Instant> = None;

    let outcome = loop {
        tokio::select! {
            biased;
            r = &mut work => break Some(r),
            Some(msg) = rx.recv() => forward(sink, msg).await,
            _ = stop.requested(), if ending.is_none() => {
                ending = Some(Ending::Stop(stop.reason().cloned().unwrap_or(super::StopReason::Shutdown)));
                token.cancel();
                abort_at = Some(Instant::now() + grace());
            }
            _ = sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && ending.is_none() => {
                ending = Some(Ending::Timeout(claimed.timeout_ms.unwrap_or(0)));
                token.cancel();
                abort_at = Some(Instant::now() + grace());
            }
            _ = sleep_until(abort_at.unwrap_or(far)), if abort_at.is_some() => break None,
        }
    };
    drop(work);
    while let Ok(msg) = rx.try_recv() {
        forward(sink, msg).await;
    }

    let mut c = Completion::new(claimed.id, Outcome::Succeeded, now_micros());
    match outcome {
        None => {
            let ending = ending.expect("abort only follows an ending");
            sink.note(
                Level::Warn,
                format!(
                    "handler did not stop within {}; aborted",
                    crate::model::format_ms(grace().as_millis() as u64)
                ),
            )
            .await;
            ending.apply(&mut c, "abort");
        }
        Some(Err(panic)) => {
            let msg = panic_message(panic.as_ref());
            sink.note(Level::Panic, format!("handler panicked: {msg}"))
                .await;
            c.outcome = Outcome::Failed { retryable: true };
            c.error = Some(format!("panicked: {msg}"));
        }
        Some(Ok(result)) => match (&ending, result) {
            // A timeout fails the execution even if the handler then
            // returned within the grace period.
            (Some(e @ Ending::Timeout(_)), _) => e.apply(&mut c, "cooperative"),
            (_, Ok(output)) => c.output = Some(output),
            (Some(e), Err(err)) if err.kind == ErrorKind::Cancelled => {
                e.apply(&mut c, "cooperative")
            }
            (
                ending,
                Err(HandlerError {
                    kind: ErrorKind::Snooze(delay),
                    message,
                }),
            ) => match ending {
                // A snooze while a stop is under way is not honoured.
                Some(e) => e.apply(&mut c, "cooperative"),
                None => {
                    let delay_ms = delay.as_millis().min(u64::MAX as u128) as u64;
                    c.outcome = Outcome::Snoozed { delay_ms };
                    c.error = Some(super::escalation::snoozed(delay_ms, Some(message)));
                }
            },
            (None, Err(err)) if err.kind == ErrorKind::Cancelled => {
                c.outcome = Outcome::Cancelled { how: None };
                c.error = Some(err.message);
            }
            (_, Err(err)) => {
                c.outcome = Outcome::Failed {
                    retryable: err.kind == ErrorKind::Retryable,
                };
                c.error = Some(err.message);
            }
        },
    }
    c.finished_at = now_micros();
    let tx = match slot.take() {
        Ok(tx) => tx,
        Err(()) => {
            if c.outcome == Outcome::Succeeded {
                c.outcome = Outcome::Failed { retryable: true };
                c.output = None;
                c.error = Some(
                    "the handler returned while a task of its own still held its transaction"
                        .into(),
                );
            }
            None
        }
    };
    // Dropped (rolled back) unless the run succeeded.
    let tx = tx.filter(|_| c.outcome == Outcome::Succeeded);
    (c, tx)
}

async fn forward(sink: &LogSink, msg: WorkerMessage) {
    match msg {
        WorkerMessage::Progress(p) => sink.progress(p).await,
        WorkerMessage::Log(l) => sink.log(l.level, stream::LOG, l.message, l.fields).await,
        // Liveness is implicit in-process; hello and result are not sent by a
        // Context.
        WorkerMessage::Heartbeat
        | WorkerMessage::Hello(_)
        | WorkerMessage::Result(_)
        | WorkerMessage::Snooze(_) => {}
    }
}
