//! Metrics in the Prometheus text format: execution counts by status and
//! handler (from the database), durations as histograms (this node), queue
//! depth, running count, relay lag.

use crate::model::Status;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Histogram bucket bounds, seconds.
pub const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

/// One histogram: cumulative bucket counts, sum and count.
#[derive(Clone, Debug, Default)]
// Fields named for what they hold carry no doc of their own.
///
/// ```
/// use jobvisor::{metrics::Durations, Status};
/// let mut d = Durations::default();
/// d.observe("resize", Status::Succeeded, std::time::Duration::from_millis(30));
/// let h = &d.0[&("resize".to_string(), "succeeded")];
/// assert_eq!((h.count, h.sum), (1, 0.03));
/// ```
#[allow(missing_docs)]
pub struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`].
    pub buckets: [u64; BUCKETS.len()],
    /// Sum of observations, seconds.
    pub sum: f64,
    pub count: u64,
}

/// Execution durations per (handler, status).
///
/// ```
/// use jobvisor::{metrics::Durations, Status};
/// let mut d = Durations::default();
/// d.observe("resize", Status::Failed, std::time::Duration::from_secs(2));
/// assert_eq!(d.0.len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Durations(pub BTreeMap<(String, &'static str), Histogram>);

impl Durations {
    /// Records one finished execution.
    ///
    /// ```
    /// use jobvisor::{metrics::{Durations, BUCKETS}, Status};
    /// let mut d = Durations::default();
    /// d.observe("noop", Status::Succeeded, std::time::Duration::from_micros(50));
    /// let h = &d.0[&("noop".to_string(), "succeeded")];
    /// assert!(h.buckets.iter().all(|n| *n == 1), "cumulative: at or below every bound of {BUCKETS:?}");
    /// ```
    pub fn observe(&mut self, handler: &str, status: Status, took: Duration) {
        let secs = took.as_secs_f64();
        let h = self
            .0
            .entry((handler.to_string(), status.as_str()))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }
}

/// Escapes a label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `/metrics` reports.
///
/// ```
/// use jobvisor::metrics::{render, Snapshot};
/// let s = Snapshot {
///     executions: vec![("resize".into(), "succeeded".into(), 12)],
///     queues: vec![("default".into(), 3, 1)],
///     running: 1,
///     relay_queued: 0,
///     durations: Default::default(),
/// };
/// assert!(render(&s).contains(r#"jobvisor_executions{handler="resize",status="succeeded"} 12"#));
/// ```
pub struct Snapshot {
    /// (handler, status, count) over the database.
    pub executions: Vec<(String, String, u64)>,
    /// (queue, pending, running).
    pub queues: Vec<(String, u64, u64)>,
    /// Running on this node.
    pub running: usize,
    /// Relay messages waiting.
    pub relay_queued: usize,
    /// This node's durations.
    pub durations: Durations,
}

/// Renders the snapshot as Prometheus text.
///
/// ```
/// use jobvisor::metrics::{render, Snapshot};
/// let s = Snapshot { executions: vec![], queues: vec![], running: 0, relay_queued: 0, durations: Default::default() };
/// let text = render(&s);
/// assert!(text.contains("# TYPE jobvisor_running gauge"));
/// ```
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP jobvisor_executions Executions in the database by handler and status."
    );
    let _ = writeln!(out, "# TYPE jobvisor_executions gauge");
    for (handler, status, n) in &s.executions {
        let _ = writeln!(
            out,
            "jobvisor_executions{{handler=\"{}\",status=\"{}\"}} {n}",
            label(handler),
            label(status)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jobvisor_queue_pending Executions waiting, by queue."
    );
    let _ = writeln!(out, "# TYPE jobvisor_queue_pending gauge");
    for (q, pending, _) in &s.queues {
        let _ = writeln!(
            out,
            "jobvisor_queue_pending{{queue=\"{}\"}} {pending}",
            label(q)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jobvisor_queue_running Executions running, by queue (all nodes)."
    );
    let _ = writeln!(out, "# TYPE jobvisor_queue_running gauge");
    for (q, _, running) in &s.queues {
        let _ = writeln!(
            out,
            "jobvisor_queue_running{{queue=\"{}\"}} {running}",
            label(q)
        );
    }
    let _ = writeln!(
        out,
        "# HELP jobvisor_running Executions running on this node."
    );
    let _ = writeln!(out, "# TYPE jobvisor_running gauge");
    let _ = writeln!(out, "jobvisor_running {}", s.running);
    let _ = writeln!(
        out,
        "# HELP jobvisor_relay_queued Messages waiting to be written to the database (relay lag)."
    );
    let _ = writeln!(out, "# TYPE jobvisor_relay_queued gauge");
    let _ = writeln!(out, "jobvisor_relay_queued {}", s.relay_queued);
    let _ = writeln!(
        out,
        "# HELP jobvisor_execution_duration_seconds Durations of executions finished on this node."
    );
    let _ = writeln!(out, "# TYPE jobvisor_execution_duration_seconds histogram");
    for ((handler, status), h) in &s.durations.0 {
        let labels = format!("handler=\"{}\",status=\"{status}\"", label(handler));
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "jobvisor_execution_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "jobvisor_execution_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            out,
            "jobvisor_execution_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "jobvisor_execution_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
    out
}
