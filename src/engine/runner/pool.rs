//! Pooled workers: a handler with `pool_size > 0` keeps up to that many
//! worker processes, each running executions one after another, so the
//! spawn is paid once per worker instead of once per execution.
//!
//! A worker is reused only if it announced `pooled: true` and answered with
//! a `result` without being signalled. It is recycled (stdin closed, then
//! killed after the kill grace) after `max_runs_per_worker` executions, or
//! after the execution that left its resident memory above
//! `max_rss_per_worker`. An idle worker that died is noticed when it is next
//! taken (its exit is reaped, its stdout is closed) and replaced; the
//! execution that would have gone to it runs on a fresh one, never failing
//! for it. Idle workers are retired after [`IDLE_TIMEOUT`].

use super::isolate;
use super::process::{self, Ended, ProcessPlan, Worker};
use super::{Ending, Stop, StopReason};
use crate::engine::relay::LogSink;
use crate::model::Outcome;
use crate::model::{format_bytes, now_micros};
use crate::store::{Claimed, Completion};
use jobvisor_worker::Level;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// An idle pooled worker is retired after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The pools of one supervisor, one per distinct handler setup.
#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<String, Arc<Pool>>>,
}

struct Pool {
    /// One permit per worker process the pool may have.
    slots: Arc<Semaphore>,
    idle: Mutex<Vec<Worker>>,
}

impl Pools {
    fn pool(&self, plan: &ProcessPlan) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(plan.pool_key())
            .or_insert_with(|| {
                Arc::new(Pool {
                    slots: Arc::new(Semaphore::new(plan.limits.pool_size.max(1) as usize)),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// Runs `claimed` on a pooled worker of `plan`.
    ///
    /// ```no_run
    /// # async fn demo(pools: &jobvisor::runner::pool::Pools, plan: &jobvisor::runner::process::ProcessPlan,
    /// #     claimed: &jobvisor::store::Claimed, stop: &jobvisor::runner::Stop, sink: &jobvisor::relay::LogSink) {
    /// let completion = pools.run(plan, claimed, stop, sink).await;
    /// println!("{:?}", completion.outcome);
    /// # }
    /// ```
    pub async fn run(
        &self,
        plan: &ProcessPlan,
        claimed: &Claimed,
        stop: &Stop,
        sink: &LogSink,
    ) -> Completion {
        let pool = self.pool(plan);
        // Wait for a worker slot; a stop while waiting ends the execution
        // before anything ran.
        let permit = tokio::select! {
            p = pool.slots.clone().acquire_owned() => p.expect("pool semaphores are never closed"),
            _ = stop.requested() => {
                let mut c = Completion::new(claimed.id, Outcome::Succeeded, now_micros());
                Ending::Stop(stop.reason().cloned().unwrap_or(StopReason::Shutdown))
                    .apply(&mut c, "before-start");
                return c;
            }
        };
        let attempt = process::Attempt::new(sink);
        let worker = loop {
            let next = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match next {
                Some(mut w) => {
                    if w.reusable() {
                        break w;
                    }
                    // Died while idle: dropping it kills what is left.
                    tracing::info!(handler = %plan.handler, worker = w.pid(), "pooled worker died while idle; replacing it");
                }
                None => match process::spawn_pooled(plan, claimed, &attempt).await {
                    Ok(w) => break w,
                    Err(c) => return c,
                },
            }
        };
        let limits = &plan.limits;
        match process::run_on(worker, attempt, true, limits, claimed, stop, sink).await {
            Ended::Done(c) => c,
            Ended::Answered(c, w) => {
                let recycle = if limits.max_runs_per_worker.is_some_and(|max| w.runs >= max) {
                    Some(format!("after {} executions", w.runs))
                } else {
                    limits.max_rss_per_worker.and_then(|max| {
                        isolate::rss_bytes(w.pid())
                            .filter(|rss| *rss > max)
                            .map(|rss| {
                                format!(
                                    "its resident memory {} is above the limit {}",
                                    format_bytes(rss),
                                    format_bytes(max)
                                )
                            })
                    })
                };
                match recycle {
                    Some(why) => {
                        sink.note(
                            Level::Info,
                            format!("recycling pooled worker {}: {why}", w.pid()),
                        )
                        .await;
                        let grace = Duration::from_millis(limits.kill_grace_ms);
                        tokio::spawn(async move {
                            w.retire(grace).await;
                            drop(permit);
                        });
                    }
                    None => {
                        pool.idle.lock().unwrap_or_else(|e| e.into_inner()).push(*w);
                        drop(permit);
                    }
                }
                c
            }
        }
    }

    /// Retires workers idle longer than [`IDLE_TIMEOUT`] (or all idle
    /// workers, at shutdown), and forgets empty pools.
    ///
    /// ```no_run
    /// # async fn demo(pools: &jobvisor::runner::pool::Pools) {
    /// pools.sweep(false).await; // idle workers past their time
    /// pools.sweep(true).await; // every idle worker (shutdown)
    /// # }
    /// ```
    pub async fn sweep(&self, all: bool) {
        let mut retiring = Vec::new();
        {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|_, pool| {
                let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
                let (old, keep): (Vec<Worker>, Vec<Worker>) = idle.drain(..).partition(|w| {
                    all || w.idle_since.elapsed() >= crate::idle::idle(IDLE_TIMEOUT)
                });
                *idle = keep;
                retiring.extend(old);
                !idle.is_empty() || Arc::strong_count(pool) > 1
            });
        }
        let retires: Vec<_> = retiring
            .into_iter()
            .map(|w| w.retire(Duration::from_secs(2)))
            .collect();
        futures_util::future::join_all(retires).await;
    }

    /// Pids of the idle workers (for tests and diagnostics).
    ///
    /// ```
    /// let pools = jobvisor::runner::pool::Pools::default();
    /// assert!(pools.idle_pids().is_empty());
    /// ```
    pub fn idle_pids(&self) -> Vec<i32> {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .values()
            .flat_map(|p| {
                p.idle
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(Worker::pid)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
