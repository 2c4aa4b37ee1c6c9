//! `jobvisor job ...`

use super::args::{JobAddArgs, JobCmd};
use super::{input, output, CliError};
use crate::model::{format_micros, now_micros, Job, JobSpec};
use crate::schedule::ScheduleSpec;
use crate::store::ExecFilter;
use jobvisor_worker::builtins;

pub(crate) async fn job(db: &str, cmd: JobCmd) -> Result<(), CliError> {
    let store = crate::store::open(db).await?;
    let store = store.as_ref();
    match cmd {
        JobCmd::Add(a) => {
            let spec = spec_from_args(*a)?;
            let name = spec.name.clone();
            let builtin = |n: &str| builtins::NAMES.contains(&n);
            let first = crate::job::add(store, &builtin, spec).await?;
            match first {
                Some(t) => println!("job {name} added; first run {}", format_micros(t)),
                None => println!("job {name} added (daemon)"),
            }
            Ok(())
        }
        JobCmd::List(j) => {
            let jobs = store.jobs().await?;
            if j.json {
                return output::json(&jobs.iter().map(view).collect::<Vec<_>>());
            }
            let rows = jobs
                .iter()
                .map(|job| {
                    vec![
                        job.spec.name.clone(),
                        job.spec.handler.clone(),
                        describe(&job.spec.schedule),
                        state(job).to_string(),
                        job.next_run_at
                            .map(format_micros)
                            .unwrap_or_else(|| "-".into()),
                        job.runs.to_string(),
                    ]
                })
                .collect();
            output::table(
                &["NAME", "HANDLER", "SCHEDULE", "STATE", "NEXT RUN", "RUNS"],
                rows,
            );
            Ok(())
        }
        JobCmd::Show(n) => {
            let job = store
                .job(&n.name)
                .await?
                .ok_or_else(|| input(format!("no job named {:?}", n.name)))?;
            let stats = store.stats(Some(&n.name)).await?.into_iter().next();
            let recent = store
                .executions(&ExecFilter {
                    job: Some(n.name.clone()),
                    limit: 5,
                    ..Default::default()
                })
                .await?;
            if n.json {
                let mut v = view(&job);
                v["history"] = serde_json::to_value(&stats).expect("serializes");
                v["recent"] = serde_json::to_value(&recent).expect("serializes");
                return output::json(&v);
            }
            let s = &job.spec;
            println!("name:        {}", s.name);
            println!(
                "handler:     {} ({})",
                s.handler,
                s.mode.map_or("-".into(), |m| m.to_string())
            );
            println!("schedule:    {}", describe(&s.schedule));
            println!("state:       {}", state(&job));
            println!(
                "next run:    {}",
                job.next_run_at
                    .map(format_micros)
                    .unwrap_or_else(|| "-".into())
            );
            println!("payload:     {}", s.payload);
            println!(
                "policy:      overlap {}, misfire {}, priority {}, queue {}, retries {}, backoff {}",
                s.overlap.as_str(),
                match s.misfire {
                    crate::schedule::Misfire::RunOnce => "run-once",
                    crate::schedule::Misfire::Skip => "skip",
                },
                s.priority,
                s.queue,
                s.retries,
                crate::model::format_ms(s.backoff_ms)
            );
            if let Some(t) = s.timeout_ms {
                println!("timeout:     {}", crate::model::format_ms(t));
            }
            if let Some(m) = s.max_parallel {
                println!("max parallel: {m}");
            }
            if let Some(m) = s.max_runs {
                println!("max runs:    {m}");
            }
            if s.start_at.is_some() || s.end_at.is_some() {
                println!(
                    "window:      {} .. {}",
                    s.start_at.map(format_micros).unwrap_or_else(|| "-".into()),
                    s.end_at.map(format_micros).unwrap_or_else(|| "-".into())
                );
            }
            println!("runs:        {} (missed {})", job.runs, job.missed);
            if let Some(st) = stats {
                println!(
                    "history:     {} executions: {} succeeded, {} failed, {} cancelled",
                    st.total, st.succeeded, st.failed, st.cancelled
                );
                if let (Some(avg), Some(p95)) = (st.avg_ms, st.p95_ms) {
                    println!("duration:    avg {avg:.1} ms, p95 {p95:.1} ms");
                }
                if let Some(t) = &st.last_failure {
                    println!(
                        "last failure: {t}: {}",
                        st.last_error.as_deref().unwrap_or("-")
                    );
                }
            }
            for e in recent {
                println!(
                    "  {} {} {}",
                    e.id,
                    e.status,
                    e.started_at.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        JobCmd::Pause(n) => {
            crate::job::pause(store, &n.name).await?;
            println!("job {} paused", n.name);
            Ok(())
        }
        JobCmd::Resume(n) => {
            crate::job::resume(store, &n.name).await?;
            println!("job {} resumed", n.name);
            Ok(())
        }
        JobCmd::Remove(n) => {
            crate::job::remove(store, &n.name).await?;
            println!("job {} removed", n.name);
            Ok(())
        }
        JobCmd::Trigger(n) => {
            let id = crate::job::trigger(store, &n.name).await?;
            if n.json {
                return output::json(&serde_json::json!({ "id": id }));
            }
            println!("{id}");
            Ok(())
        }
    }
}

fn state(job: &Job) -> &'static str {
    if job.completed_at.is_some() {
        "completed"
    } else if job.spec.paused {
        "paused"
    } else {
        "active"
    }
}

fn describe(s: &ScheduleSpec) -> String {
    match s {
        ScheduleSpec::Once { at } => format!("once at {}", format_micros(*at)),
        ScheduleSpec::Cron { expr, tz } => format!("cron {expr} ({tz})"),
        ScheduleSpec::Interval { every_ms, .. } => {
            format!("every {}", crate::model::format_ms(*every_ms))
        }
        ScheduleSpec::Daemon => "daemon".into(),
    }
}

fn view(job: &Job) -> serde_json::Value {
    let mut v = serde_json::to_value(job).expect("serializes");
    v["state"] = state(job).into();
    v["next_run"] = job.next_run_at.map(format_micros).into();
    v["schedule_text"] = describe(&job.spec.schedule).into();
    v
}

pub(crate) fn spec_from_args(a: JobAddArgs) -> Result<JobSpec, CliError> {
    let payload: serde_json::Value = serde_json::from_str(&a.payload)
        .map_err(|e| input(format!("invalid --payload JSON: {e}")))?;
    let schedule = if let Some(expr) = a.cron {
        // Parse now so that the error names the field.
        crate::schedule::CronSchedule::parse(&expr, &a.tz).map_err(|e| input(e.to_string()))?;
        ScheduleSpec::Cron { expr, tz: a.tz }
    } else if let Some(every) = a.every {
        if every.is_zero() {
            return Err(input("--every must be longer than 0"));
        }
        ScheduleSpec::Interval {
            every_ms: every.as_millis().max(1) as u64,
            anchor: a.start.unwrap_or_else(now_micros),
        }
    } else if a.daemon {
        ScheduleSpec::Daemon
    } else {
        ScheduleSpec::Once {
            at: a.at.or(a.start).unwrap_or_else(now_micros),
        }
    };
    Ok(JobSpec {
        name: a.name,
        handler: a.handler,
        mode: a.mode,
        payload,
        schedule,
        priority: a.priority,
        queue: a.queue,
        retries: a.retries,
        backoff_ms: a.backoff.as_millis() as u64,
        timeout_ms: a.timeout.map(|t| t.as_millis() as u64),
        overlap: a.overlap,
        misfire: a.misfire,
        max_parallel: a.max_parallel,
        max_runs: a.max_runs,
        start_at: a.start,
        end_at: a.end,
        paused: a.paused,
    })
}
