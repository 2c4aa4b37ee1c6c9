//! The dispatcher: claims due executions in batches up to the free
//! concurrency, and gives each its own owner task, which runs it in its
//! mode's runner and hands the completion to the relay.

use crate::model::{now_micros, HandlerKind, ProcessLimits};
use crate::relay::{LogSink, RelayMsg};
use crate::runner::process::ProcessPlan;
use crate::runner::{inproc, process, Stop, StopReason};
use crate::store::{Claimed, Completion};
use crate::supervisor::Supervisor;
use crate::Error;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

impl Supervisor {
    pub(crate) async fn dispatch(
        &self,
        shutdown: impl Future<Output = ()>,
        force: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let inner = &self.inner;
        let mut tasks = JoinSet::new();
        // Polling finds work enqueued by other processes. When a poll finds
        // due rows that cannot be claimed (a paused or full queue), polls
        // slow down to at most one a second until something changes, so a
        // held backlog is not scanned ten times a second.
        let base_poll = inner.config.poll_interval;
        let slowest_poll = base_poll.max(Duration::from_secs(1));
        let mut poll_every = base_poll;
        let mut next_poll = tokio::time::Instant::now() + poll_every;
        let mut polled = false;
        tokio::pin!(shutdown);
        let mut backlog = true;
        let mut claim_backoff = Duration::from_millis(100);
        loop {
            crate::supervisor::beat(&inner.dispatcher_beat);
            while tasks.try_join_next().is_some() {}
            let free = inner.config.concurrency.saturating_sub(tasks.len());
            if backlog && free > 0 {
                let want = free.min(inner.config.claim_batch);
                match inner.store.claim(&inner.node.id, want, now_micros()).await {
                    Ok(claimed) => {
                        if claimed.is_empty() && polled {
                            poll_every = (poll_every * 2).min(slowest_poll);
                        } else if !claimed.is_empty() {
                            poll_every = base_poll;
                        }
                        polled = false;
                        backlog = claimed.len() == want;
                        claim_backoff = Duration::from_millis(100);
                        for c in claimed {
                            tasks.spawn(self.clone().execute_guarded(c));
                        }
                        if backlog && tasks.len() < inner.config.concurrency {
                            continue;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %crate::error_chain(&e), "claim failed; retrying");
                        tokio::time::sleep(claim_backoff).await;
                        claim_backoff = (claim_backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = inner.wake.notified() => {
                    backlog = true;
                    poll_every = base_poll;
                }
                // Look before claiming: a read is cheaper than the claim's
                // write.
                _ = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + poll_every;
                    backlog = inner.store.has_due(now_micros()).await.unwrap_or(true);
                    polled = backlog;
                }
            }
        }
        // Draining: claim nothing more; let what runs finish, up to the
        // drain timeout (or until `force`); then stop the rest, recorded as
        // interrupted so that they run again.
        let drain = inner.config.drain_timeout;
        if !tasks.is_empty() && !drain.is_zero() {
            tracing::info!(running = tasks.len(), timeout = %humantime::format_duration(drain), "draining");
            let deadline = tokio::time::sleep(drain);
            tokio::pin!(deadline, force);
            loop {
                tokio::select! {
                    joined = tasks.join_next() => if joined.is_none() { break },
                    _ = &mut deadline => {
                        tracing::info!(running = tasks.len(), "drain timeout: stopping the rest");
                        break;
                    }
                    _ = &mut force => {
                        tracing::info!(running = tasks.len(), "second signal: stopping the rest now");
                        break;
                    }
                }
            }
        }
        for stop in inner.running().values() {
            stop.request(StopReason::Shutdown);
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Runs an execution; should its owner panic (a bug in the supervisor,
    /// not in the job), the execution still ends, as failed.
    async fn execute_guarded(self, claimed: Claimed) {
        use futures_util::FutureExt;
        let id = claimed.id;
        let inner = self.inner.clone();
        let outcome = std::panic::AssertUnwindSafe(self.execute(claimed))
            .catch_unwind()
            .await;
        if let Err(panic) = outcome {
            let msg = jobvisor_worker::handler::panic_message(panic.as_ref());
            tracing::error!(execution = %id, panic = %msg, "execution owner panicked");
            inner.running().remove(&id);
            let c = Completion::failed(id, true, format!("supervisor error: {msg}"));
            inner.relay.send(RelayMsg::Complete(c)).await;
        }
    }

    async fn execute(self, claimed: Claimed) {
        let inner = &self.inner;
        let stop = Arc::new(Stop::default());
        inner.running().insert(claimed.id, stop.clone());
        if claimed.cancel_requested {
            stop.request(StopReason::Cancel("requested before it started".into()));
        }
        let sink = LogSink::new(claimed.id, inner.relay.clone());
        let _ = inner.started.send(claimed.id);
        let began = std::time::Instant::now();
        let completion = match claimed.mode {
            crate::model::Mode::Inproc => match inner.registry.get(&claimed.handler) {
                Some(h) => inproc::run(h, &claimed, &stop, &sink, inner.config.inproc_grace).await,
                None => failed(
                    &claimed,
                    format!(
                        "handler {:?} is not registered in this supervisor for inproc mode",
                        claimed.handler
                    ),
                ),
            },
            crate::model::Mode::Process => match self.plan(&claimed) {
                Ok(plan) if plan.limits.pool_size > 0 => {
                    inner.pools.run(&plan, &claimed, &stop, &sink).await
                }
                Ok(plan) => process::run(&plan, &claimed, &stop, &sink).await,
                Err(e) => failed(&claimed, e),
            },
        };
        inner
            .durations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(
                &claimed.handler,
                completion.outcome.status(),
                began.elapsed(),
            );
        inner.relay.send(RelayMsg::Complete(completion)).await;
        inner.running().remove(&claimed.id);
    }

    fn plan(&self, claimed: &Claimed) -> Result<ProcessPlan, String> {
        let inner = &self.inner;
        let spec = claimed
            .handler_spec()
            .map_err(|e| format!("cannot read handler: {}", crate::error_chain(&e)))?;
        let cgroup = inner.config.cgroups;
        let shim = inner.shim.clone();
        let plan = |program: PathBuf, args, limits, self_guarding| ProcessPlan {
            shim: shim.clone(),
            handler: claimed.handler.clone(),
            program,
            args,
            limits,
            self_guarding,
            cgroup,
        };
        Ok(match spec {
            Some(h) => match h.kind {
                HandlerKind::Exec { program, args } => plan(program.into(), args, h.limits, false),
                HandlerKind::Rust => plan(inner.worker_program.clone(), Vec::new(), h.limits, true),
            },
            None if jobvisor_worker::builtins::NAMES.contains(&claimed.handler.as_str()) => plan(
                inner.worker_program.clone(),
                Vec::new(),
                ProcessLimits::default(),
                true,
            ),
            None => return Err(format!("unknown handler {:?}", claimed.handler)),
        })
    }
}

fn failed(claimed: &Claimed, error: String) -> Completion {
    Completion::failed(claimed.id, false, error)
}
