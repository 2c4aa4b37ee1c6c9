//! `jobvisor stats [JOB]`

use super::{input, output, CliError};

pub(crate) async fn stats(db: &str, job: Option<String>, json: bool) -> Result<(), CliError> {
    let store = jobvisor::store::open_existing(db).await?;
    let stats = store.stats(job.as_deref()).await?;
    if let (Some(j), true) = (&job, stats.is_empty()) {
        if store.job(j).await?.is_none() {
            return Err(input(format!("no job or executions named {j:?}")));
        }
    }
    if json {
        return output::json(&stats);
    }
    let ms = |v: Option<f64>| v.map_or("-".into(), super::output::elapsed_ms);
    let rows = stats
        .iter()
        .map(|s| {
            vec![
                if s.job.is_empty() {
                    "(ad-hoc)".into()
                } else {
                    s.job.clone()
                },
                s.runs.to_string(),
                s.attempts.to_string(),
                s.succeeded.to_string(),
                s.failed.to_string(),
                s.cancelled.to_string(),
                s.success_rate
                    .map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
                ms(s.min_ms),
                ms(s.avg_ms),
                ms(s.p95_ms),
                ms(s.max_ms),
                s.last_success.map_or_else(|| "-".into(), |t| t.to_string()),
                match (&s.last_failure, &s.last_error) {
                    (Some(t), e) => format!("{t} {}", output::cut(e.as_deref().unwrap_or(""), 40)),
                    _ => "-".into(),
                },
            ]
        })
        .collect();
    output::table(
        &[
            "JOB",
            "RUNS",
            "ATTEMPTS",
            "OK",
            "FAILED",
            "CANCELLED",
            "SUCCESS",
            "MIN",
            "AVG",
            "P95",
            "MAX",
            "LAST SUCCESS",
            "LAST FAILURE",
        ],
        rows,
    );
    Ok(())
}
