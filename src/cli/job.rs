//! `jobvisor job ...`

use super::args::{JobAddArgs, JobCmd, JobPreviewArgs};
use super::{input, output, CliError};
use chrono_tz::Tz;
use jobvisor::job::{Definition, When};
use jobvisor::model::{format_micros, format_rfc3339, now_micros, Job, JobSpec};
use jobvisor::schedule::{Schedule, ScheduleSpec};
use jobvisor::store::ExecFilter;
use std::io::IsTerminal;

pub(crate) async fn job(db: &str, cmd: JobCmd) -> Result<(), CliError> {
    if let JobCmd::Preview(p) = cmd {
        // Needs no database: it only computes.
        return preview(p);
    }
    // Only `serve` and `migrate` create a database.
    let store = jobvisor::store::open_existing(db).await?;
    // Reads need no client (on PostgreSQL, connecting one asks whether a
    // node hears events).
    let cmd = match cmd {
        JobCmd::List(j) => return list(store.as_ref(), j).await,
        JobCmd::Show(n) => return show(store.as_ref(), n).await,
        cmd => cmd,
    };
    let client = jobvisor::Client::connect(store).await;
    let pause = matches!(cmd, JobCmd::Pause(_));
    match cmd {
        JobCmd::Add(a) => add(&client, *a).await,
        JobCmd::Pause(n) | JobCmd::Resume(n) => {
            if pause {
                client.pause_job(&n.name).await?;
            } else {
                client.resume_job(&n.name).await?;
            }
            if n.json {
                return output::json(&serde_json::json!({ "job": n.name, "paused": pause }));
            }
            println!(
                "job {} {}",
                n.name,
                if pause { "paused" } else { "resumed" }
            );
            Ok(())
        }
        JobCmd::Remove(n) => {
            client.remove_job(&n.name).await?;
            if n.json {
                return output::json(&serde_json::json!({ "job": n.name, "removed": true }));
            }
            println!("job {} removed", n.name);
            Ok(())
        }
        JobCmd::Preview(_) | JobCmd::List(_) | JobCmd::Show(_) => {
            unreachable!("handled above, without a client")
        }
        JobCmd::Trigger(n) => {
            let id = client.trigger_job(&n.name).await?;
            if n.json {
                return output::json(&serde_json::json!({ "id": id }));
            }
            println!("{id}");
            Ok(())
        }
    }
}

/// `job add`: a new job, or with `--replace` a changed one.
async fn add(client: &jobvisor::Client, a: JobAddArgs) -> Result<(), CliError> {
    let (replace, explicit_start) = (a.replace, a.start.is_some() || a.at.is_some());
    let spec = spec_from_args(a)?;
    let name = spec.name.clone();
    let schedule = spec.schedule.clone();
    let (first, done) = if replace {
        let next = match client.replace_job(spec, !explicit_start).await {
            Err(jobvisor::Error::UnknownJob(_)) => {
                return Err(input(format!(
                    "no job named {name:?} to replace (add it without --replace)"
                )))
            }
            Err(jobvisor::Error::UnknownHandler(h)) => {
                return Err(super::unknown_handler(client.store().as_ref(), &h).await)
            }
            next => next?,
        };
        (next, ("replaced", "next"))
    } else {
        match client.add_job(spec).await {
            Err(jobvisor::Error::UnknownHandler(h)) => {
                return Err(super::unknown_handler(client.store().as_ref(), &h).await)
            }
            added => (added?, ("added", "first")),
        }
    };
    match first {
        Some(t) => println!("job {name} {}; {} run {}", done.0, done.1, format_micros(t)),
        None => println!("job {name} {} (daemon)", done.0),
    }
    if let (Some(t), true) = (first, std::io::stdout().is_terminal()) {
        // Show what the schedule means before the first surprise.
        let times = Schedule::from_spec(&schedule)?.occurrences(t - 1, 3);
        print_occurrences(&times, zone_of(&schedule));
    }
    Ok(())
}

/// `job list`.
async fn list(
    store: &dyn jobvisor::store::Reads,
    j: super::args::JobListArgs,
) -> Result<(), CliError> {
    let limit = j.limit.map_or(usize::MAX, |n| n as usize);
    let jobs = store.jobs_page(j.after.as_deref(), limit).await?;
    // Runs in the history (scheduled, triggered and chained alike);
    // the job's own `runs` counts scheduled occurrences only.
    let history: std::collections::HashMap<String, u64> = store
        .stats(None)
        .await?
        .into_iter()
        .map(|s| (s.job, s.runs))
        .collect();
    let run_count = |job: &Job| history.get(&job.spec.name).copied().unwrap_or(0);
    if j.json {
        let all: Vec<serde_json::Value> = jobs
            .iter()
            .map(|job| {
                let mut v = view(job);
                v["run_count"] = run_count(job).into();
                v
            })
            .collect();
        return output::json(&all);
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
                run_count(job).to_string(),
            ]
        })
        .collect();
    output::table(
        &["NAME", "HANDLER", "SCHEDULE", "STATE", "NEXT RUN", "RUNS"],
        rows,
    );
    Ok(())
}

/// `job show NAME`.
async fn show(store: &dyn jobvisor::store::Reads, n: super::args::JobName) -> Result<(), CliError> {
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
    if let Some(d) = &s.description {
        println!("description: {d}");
    }
    println!(
        "handler:     {} ({})",
        s.handler,
        s.mode.map_or("-".into(), |m| m.to_string())
    );
    println!("schedule:    {}", describe(&s.schedule));
    if let Some(c) = &s.condition {
        println!("condition:   {c} (runs before each occurrence; false skips it)");
    }
    println!("state:       {}", state(&job));
    for c in &s.then {
        println!("then:        {} (on {})", c.job, c.on.as_str());
    }
    println!(
        "next run:    {}",
        job.next_run_at
            .map(format_micros)
            .unwrap_or_else(|| "-".into())
    );
    println!("payload:     {}", s.payload);
    if !s.tags.is_empty() {
        println!("tags:        {}", s.tags.join(", "));
    }
    for (k, v) in &s.meta {
        println!("meta:        {k}={v}");
    }
    println!(
        "policy:      overlap {}, misfire {}, priority {}, queue {}, retries {}, backoff {}",
        s.overlap.as_str(),
        match s.misfire {
            jobvisor::schedule::Misfire::RunOnce => "run-once",
            jobvisor::schedule::Misfire::Skip => "skip",
        },
        s.priority,
        s.queue,
        s.retries,
        jobvisor::model::format_ms(s.backoff_ms)
    );
    if let Some(t) = s.timeout_ms {
        println!("timeout:     {}", jobvisor::model::format_ms(t));
    }
    if let Some(m) = s.max_parallel {
        println!("max parallel: {m}");
    }
    if let Some(m) = s.max_runs {
        println!("max runs:    {m}");
    }
    if let Some(n) = s.keep_last {
        println!("keep last:   {n} ended executions, however old");
    }
    if let Some(n) = s.alerts.after_failures {
        println!("alert:       job.failing after {n} failed runs in a row");
    }
    if let Some(ms) = s.alerts.late_ms {
        println!(
            "alert:       job.late {} after an occurrence is due",
            jobvisor::model::format_ms(ms)
        );
    }
    if let Some(ms) = s.alerts.expect_every_ms {
        println!(
            "alert:       job.silent after {} without a success",
            jobvisor::model::format_ms(ms)
        );
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
            "history:     {} runs ({} attempts): {} succeeded, {} failed, {} cancelled",
            st.runs, st.attempts, st.succeeded, st.failed, st.cancelled
        );
        if let (Some(avg), Some(p95)) = (st.avg_ms, st.p95_ms) {
            println!(
                "duration:    avg {}, p95 {}",
                output::elapsed_ms(avg),
                output::elapsed_ms(p95)
            );
        }
        if let Some(t) = &st.last_failure {
            println!(
                "last failure: {t}: {}",
                st.last_error.as_deref().unwrap_or("-")
            );
        }
    }
    let ids = super::ids::Shortener::new(recent.iter().map(|e| &e.id));
    for e in recent {
        println!(
            "  {} {} {}",
            ids.short(&e.id),
            e.status,
            e.started_at.map_or_else(|| "-".into(), |t| t.to_string())
        );
    }
    Ok(())
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
            format!("every {}", jobvisor::model::format_ms(*every_ms))
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

fn preview(p: JobPreviewArgs) -> Result<(), CliError> {
    let when = When {
        tz: p.cron.is_some().then_some(p.tz),
        cron: p.cron,
        every: p.every,
        start: p.start,
        at: p.at,
        daemon: false,
    };
    let times = when
        .occurrences(p.from, p.count as usize)
        .map_err(|e| input(e.to_string()))?;
    if p.json {
        let utc: Vec<String> = times.iter().map(|t| format_rfc3339(*t)).collect();
        return output::json(&utc);
    }
    if times.is_empty() {
        println!("no occurrence after {}", format_rfc3339(p.from));
        return Ok(());
    }
    let zone = when.tz.as_deref().and_then(|tz| tz.parse().ok());
    print_occurrences(&times, zone.unwrap_or(Tz::UTC));
    Ok(())
}

fn zone_of(spec: &ScheduleSpec) -> Tz {
    match spec {
        ScheduleSpec::Cron { tz, .. } => tz.parse().unwrap_or(Tz::UTC),
        _ => Tz::UTC,
    }
}

/// A table of occurrences in UTC and in `tz`, as `systemd-analyze
/// calendar` shows them.
fn print_occurrences(times: &[i64], tz: Tz) {
    let rows = times
        .iter()
        .filter_map(|t| chrono::DateTime::<chrono::Utc>::from_timestamp_micros(*t))
        .map(|utc| {
            vec![
                utc.format("%a %Y-%m-%d %H:%M:%S UTC").to_string(),
                utc.with_timezone(&tz)
                    .format("%a %Y-%m-%d %H:%M:%S %Z")
                    .to_string(),
            ]
        })
        .collect();
    output::table(&["UTC", &format!("LOCAL ({tz})")], rows);
}

pub(crate) fn spec_from_args(a: JobAddArgs) -> Result<JobSpec, CliError> {
    let payload: serde_json::Value = serde_json::from_str(&a.payload)
        .map_err(|e| input(format!("invalid --payload JSON: {e}")))?;
    let d = Definition {
        when: When {
            tz: a.cron.is_some().then_some(a.tz),
            cron: a.cron,
            every: a.every,
            start: a.start,
            at: a.at,
            daemon: a.daemon,
        },
        payload,
        mode: a.mode,
        priority: a.priority,
        queue: a.queue,
        retries: a.retries,
        backoff: a.backoff,
        timeout: a.timeout,
        overlap: a.overlap,
        misfire: a.misfire,
        max_parallel: a.max_parallel,
        concurrency_key: a.concurrency_key,
        max_runs: a.max_runs,
        end: a.end,
        paused: a.paused,
        then: a.then,
        then_on: a.then_on,
        description: a.description,
        condition: a.condition,
        keep_last: a.keep_last,
        alerts: jobvisor::model::JobAlerts {
            after_failures: a.alert_after,
            late_ms: a
                .alert_late
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            expect_every_ms: a
                .expect_every
                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
        },
        meta: a.labels.meta(),
        tags: a.labels.tag,
        ..Definition::new(a.name, a.handler)
    };
    d.spec(now_micros()).map_err(|e| input(e.to_string()))
}
