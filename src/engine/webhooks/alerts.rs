//! Alerts: when a job or a run needs attention. Each alert is an incident
//! that opens once (its event goes to the webhooks that hear it) and
//! closes once (`….recovered`); the store keeps the open ones, so that a
//! pass on any node, at any time, fires each only once.
//!
//! - `job.failing`: the job's last N runs failed (`--alert-after N`);
//!   recovers when a run succeeds.
//! - `job.late`: a scheduled occurrence has not started within the grace
//!   after it was due (`--alert-late DUR`), or the schedule itself is that
//!   far behind; recovers when none is.
//! - `job.silent`: no success for DUR (`--expect-every DUR`); recovers at
//!   the next success.
//! - `execution.stuck`: a run past its timeout, or whose node stopped
//!   heartbeating, that has not ended; recovers when it ends.
//!
//! A paused job is neither late nor silent: its open incidents of those
//! kinds close.

use super::outbox::delivery;
use crate::model::{format_micros, format_ms, Micros, Status, Timestamp, WebhookSpec};
use crate::store::{AlertChanges, AlertFacts, Incident, Store};
use serde_json::json;
use uuid::Uuid;

/// Runs an alert pass now; returns the incidents opened and closed.
pub(crate) async fn pass(
    store: &dyn Store,
    lease: std::time::Duration,
) -> Result<(usize, usize), crate::store::StoreError> {
    let now = crate::model::now_micros();
    let stale = now - lease.as_micros() as i64;
    let decide = move |facts: &AlertFacts, hooks: &[WebhookSpec]| decide(facts, hooks, now);
    store.alert_pass(now, stale, &decide).await
}

/// What should be open now, by (kind, subject): its message, job and queue.
struct Should {
    kind: &'static str,
    subject: String,
    message: String,
    job: Option<String>,
    queue: String,
    execution: Option<Uuid>,
}

/// The incidents to open and close given `facts` at `now`, with their
/// deliveries to `hooks`.
pub(crate) fn decide(facts: &AlertFacts, hooks: &[WebhookSpec], now: Micros) -> AlertChanges {
    // An open incident that is not among these closes: its condition
    // stopped holding, or its job or the job's alert is gone.
    let mut should: Vec<Should> = Vec::new();
    for f in &facts.jobs {
        let spec = &f.job.spec;
        let job = || Some(spec.name.clone());
        if let Some(n) = spec.alerts.after_failures {
            let failing =
                f.last_ends.len() == n as usize && f.last_ends.iter().all(|s| *s == Status::Failed);
            let recovered = f.last_ends.first() == Some(&Status::Succeeded);
            let open = is_open(facts, "job.failing", &spec.name);
            // Between the two (a cancelled run last, say): as it stands.
            if failing || (open && !recovered) {
                should.push(Should {
                    kind: "job.failing",
                    subject: spec.name.clone(),
                    message: format!("its last {n} run(s) failed"),
                    job: job(),
                    queue: spec.queue.clone(),
                    execution: None,
                });
            }
        }
        if let Some(grace) = spec.alerts.late_ms {
            let scheduled = f.job.next_run_at.filter(|_| !spec.paused);
            let due = match (f.oldest_unstarted, scheduled) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(due) = due.filter(|d| *d + grace as i64 * 1000 < now && !spec.paused) {
                should.push(Should {
                    kind: "job.late",
                    subject: spec.name.clone(),
                    message: format!(
                        "the occurrence due at {} has not started {} after",
                        format_micros(due),
                        format_ms(grace)
                    ),
                    job: job(),
                    queue: spec.queue.clone(),
                    execution: None,
                });
            }
        }
        if let Some(every) = spec.alerts.expect_every_ms {
            let since = f.last_success.unwrap_or(f.created_at);
            if since + every as i64 * 1000 < now && !spec.paused {
                let said = match f.last_success {
                    Some(t) => format!("no success since {}", format_micros(t)),
                    None => "no success since it was added".to_string(),
                };
                should.push(Should {
                    kind: "job.silent",
                    subject: spec.name.clone(),
                    message: format!("{said}: expected every {}", format_ms(every)),
                    job: job(),
                    queue: spec.queue.clone(),
                    execution: None,
                });
            }
        }
    }
    for e in &facts.stuck {
        let id = e.id.to_string();
        let over_time = e
            .timeout_ms
            .is_some_and(|t| e.started_at.is_some_and(|s| s.0 + t as i64 * 1000 < now));
        let message = if over_time {
            format!(
                "running past its timeout of {} without ending",
                format_ms(e.timeout_ms.unwrap_or_default())
            )
        } else {
            format!(
                "running on node {}, which stopped heartbeating",
                e.node.as_deref().unwrap_or("?")
            )
        };
        should.push(Should {
            kind: "execution.stuck",
            subject: id,
            message,
            job: e.job.clone(),
            queue: e.queue.clone(),
            execution: Some(e.id),
        });
    }
    let mut out = AlertChanges::default();
    for s in &should {
        if is_open(facts, s.kind, &s.subject) {
            continue;
        }
        let incident = Incident {
            kind: s.kind.to_string(),
            subject: s.subject.clone(),
            opened_at: Timestamp(now),
            message: s.message.clone(),
            job: s.job.clone(),
            queue: Some(s.queue.clone()),
        };
        tell(&mut out, hooks, &incident, s.kind, s.execution, now);
        out.open.push(incident);
    }
    for i in &facts.open {
        let still = should
            .iter()
            .any(|s| s.kind == i.kind && s.subject == i.subject);
        if still {
            continue;
        }
        let execution = (i.kind == "execution.stuck")
            .then(|| i.subject.parse().ok())
            .flatten();
        let event = format!("{}.recovered", i.kind);
        let recovered = Incident {
            message: format!("recovered: {}", i.message),
            ..i.clone()
        };
        tell(&mut out, hooks, &recovered, &event, execution, now);
        out.close.push((i.kind.clone(), i.subject.clone()));
    }
    out
}

fn is_open(facts: &AlertFacts, kind: &str, subject: &str) -> bool {
    facts
        .open
        .iter()
        .any(|i| i.kind == kind && i.subject == subject)
}

/// Adds the deliveries of alert event `event` about `incident` to the
/// webhooks that hear it (by the incident's job and queue).
fn tell(
    out: &mut AlertChanges,
    hooks: &[WebhookSpec],
    incident: &Incident,
    event: &str,
    execution: Option<Uuid>,
    now: Micros,
) {
    let job = incident.job.as_deref();
    let queue = incident.queue.as_deref().unwrap_or_default();
    for hook in hooks {
        if !hook.wants(event, job, queue) {
            continue;
        }
        let id = Uuid::now_v7();
        let body = json!({
            "delivery": id,
            "webhook": hook.name,
            "event": event,
            "at": Timestamp(now),
            "job": job,
            "execution_id": execution,
            "message": incident.message,
            "alert": {
                "kind": incident.kind,
                "subject": incident.subject,
                "opened_at": incident.opened_at,
            },
        });
        out.deliveries
            .push(delivery(id, hook, event, &incident.subject, body, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Job, JobAlerts, JobSpec};
    use crate::schedule::ScheduleSpec;
    use crate::store::JobFacts;

    fn job(name: &str, alerts: JobAlerts) -> JobFacts {
        let mut spec = JobSpec::new(name, "noop", ScheduleSpec::Daemon);
        spec.alerts = alerts;
        JobFacts {
            job: Job {
                spec,
                runs: 0,
                missed: 0,
                next_run_at: None,
                completed_at: None,
                daemon_streak: 0,
            },
            created_at: 0,
            last_ends: Vec::new(),
            oldest_unstarted: None,
            last_success: None,
        }
    }

    fn hook() -> Vec<WebhookSpec> {
        vec![WebhookSpec::new(
            "h",
            "http://127.0.0.1:9/",
            &[
                "job.failing",
                "job.failing.recovered",
                "job.silent",
                "job.late",
            ],
        )]
    }

    #[test]
    fn failing_opens_once_after_n_failures_and_recovers_on_a_success() {
        let alerts = JobAlerts {
            after_failures: Some(2),
            ..Default::default()
        };
        let mut f = job("nightly", alerts);
        f.last_ends = vec![Status::Failed];
        let mut facts = AlertFacts {
            jobs: vec![f.clone()],
            ..Default::default()
        };
        assert!(
            decide(&facts, &hook(), 10).open.is_empty(),
            "one failure of two"
        );
        facts.jobs[0].last_ends = vec![Status::Failed, Status::Failed];
        let c = decide(&facts, &hook(), 10);
        assert_eq!(c.open.len(), 1);
        assert_eq!(c.open[0].kind, "job.failing");
        assert_eq!(c.deliveries.len(), 1);
        assert_eq!(c.deliveries[0].run.payload["event"], "job.failing");
        // Open already: nothing again, however many more fail.
        facts.open = c.open.clone();
        let again = decide(&facts, &hook(), 20);
        assert!(again.open.is_empty() && again.close.is_empty() && again.deliveries.is_empty());
        // A cancelled run last: still open.
        facts.jobs[0].last_ends = vec![Status::Cancelled, Status::Failed];
        assert!(decide(&facts, &hook(), 30).close.is_empty());
        facts.jobs[0].last_ends = vec![Status::Succeeded, Status::Failed];
        let c = decide(&facts, &hook(), 40);
        assert_eq!(
            c.close,
            [("job.failing".to_string(), "nightly".to_string())]
        );
        assert_eq!(
            c.deliveries[0].run.payload["event"],
            "job.failing.recovered"
        );
    }

    #[test]
    fn silence_counts_from_the_last_success_or_the_job_s_start_and_pausing_ends_it() {
        let alerts = JobAlerts {
            expect_every_ms: Some(1_000),
            ..Default::default()
        };
        let mut facts = AlertFacts {
            jobs: vec![job("sync", alerts)],
            ..Default::default()
        };
        facts.jobs[0].created_at = 1_000_000;
        assert!(decide(&facts, &hook(), 1_500_000).open.is_empty());
        let c = decide(&facts, &hook(), 2_500_000);
        assert_eq!(c.open[0].kind, "job.silent");
        assert!(
            c.open[0].message.contains("since it was added"),
            "{}",
            c.open[0].message
        );
        facts.open = c.open;
        facts.jobs[0].job.spec.paused = true;
        let c = decide(&facts, &hook(), 3_000_000);
        assert_eq!(c.close.len(), 1, "a paused job is not silent");
    }

    #[test]
    fn an_occurrence_not_started_within_the_grace_is_late() {
        let alerts = JobAlerts {
            late_ms: Some(2_000),
            ..Default::default()
        };
        let mut facts = AlertFacts {
            jobs: vec![job("report", alerts)],
            ..Default::default()
        };
        facts.jobs[0].oldest_unstarted = Some(10_000_000);
        assert!(decide(&facts, &hook(), 11_000_000).open.is_empty());
        let c = decide(&facts, &hook(), 12_500_000);
        assert_eq!(c.open[0].kind, "job.late");
        facts.open = c.open;
        facts.jobs[0].oldest_unstarted = None;
        let c = decide(&facts, &hook(), 13_000_000);
        assert_eq!(c.close.len(), 1);
    }

    #[test]
    fn an_incident_of_a_job_whose_alert_is_gone_closes() {
        let facts = AlertFacts {
            open: vec![Incident {
                kind: "job.failing".into(),
                subject: "removed".into(),
                opened_at: Timestamp(1),
                message: "its last 2 run(s) failed".into(),
                job: Some("removed".into()),
                queue: Some("default".into()),
            }],
            ..Default::default()
        };
        let c = decide(&facts, &hook(), 5);
        assert_eq!(c.close.len(), 1);
    }
}
