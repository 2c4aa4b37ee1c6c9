//! What both backends share in reading rows: the same columns decode the
//! same way (integers are 64-bit, flags 0/1, ids UUIDs, JSON as text).

use super::StoreError;
use crate::schedule::ScheduleSpec;
use serde_json::Value;

pub(super) fn corrupt(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> StoreError {
    move |source| StoreError::Corrupt { what, source }
}

pub(super) fn parse_json(
    what: &'static str,
    text: Option<String>,
) -> Result<Option<Value>, StoreError> {
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(what)(Box::new(e))))
        .transpose()
}

/// An execution's last `$2` log lines, oldest first (both backends take
/// `$N` placeholders).
pub(super) const LAST_LOGS_SQL: &str = "SELECT seq, ts, level, stream, message, fields FROM \
     (SELECT seq, ts, level, stream, message, fields FROM logs \
      WHERE execution_id = $1 ORDER BY seq DESC LIMIT $2) AS tail ORDER BY seq";

pub(super) fn schedule_kind(spec: &ScheduleSpec) -> &'static str {
    match spec {
        ScheduleSpec::Once { .. } => "once",
        ScheduleSpec::Cron { .. } => "cron",
        ScheduleSpec::Interval { .. } => "interval",
        ScheduleSpec::Daemon => "daemon",
    }
}

/// Defines `execution_from_row`, `node_from_row` and `job_from_row` for a
/// backend's row type.
macro_rules! decoders {
    ($row:ty) => {
        fn execution_from_row(row: &$row) -> Result<Execution, StoreError> {
            let mode: String = row.try_get("mode")?;
            let status: String = row.try_get("status")?;
            let enqueued_at: Micros = row.try_get("enqueued_at")?;
            let started_at: Option<Micros> = row.try_get("started_at")?;
            let finished_at: Option<Micros> = row.try_get("finished_at")?;
            let payload: String = row.try_get("payload")?;
            Ok(Execution {
                id: row.try_get("id")?,
                job: row.try_get("job")?,
                handler: row.try_get("handler")?,
                mode: Mode::from_str(&mode).map_err(|e| corrupt("executions.mode")(e.into()))?,
                status: Status::from_str(&status)
                    .map_err(|e| corrupt("executions.status")(e.into()))?,
                attempt: row.try_get::<i64, _>("attempt")? as u32,
                max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
                previous_id: row.try_get("previous_id")?,
                next_id: row.try_get("next_id")?,
                payload: parse_json("executions.payload", Some(payload))?.unwrap_or(Value::Null),
                priority: row.try_get::<i64, _>("priority")? as i32,
                queue: row.try_get("queue")?,
                occurrence: row.try_get("occurrence")?,
                timeout_ms: row
                    .try_get::<Option<i64>, _>("timeout_ms")?
                    .map(|t| t as u64),
                enqueued_at: format_micros(enqueued_at),
                run_at: format_micros(row.try_get("run_at")?),
                started_at: started_at.map(format_micros),
                finished_at: finished_at.map(format_micros),
                node: row.try_get("node")?,
                pid: row.try_get("pid")?,
                exit_code: row.try_get("exit_code")?,
                signal: row.try_get("signal")?,
                progress: ProgressState {
                    percent: row.try_get("progress_percent")?,
                    message: row.try_get("progress_message")?,
                    done: row.try_get("progress_done")?,
                    total: row.try_get("progress_total")?,
                },
                output: parse_json("executions.output", row.try_get("output")?)?,
                error: row.try_get("error")?,
                timed_out: row.try_get::<i64, _>("timed_out")? != 0,
                interrupted: row.try_get::<i64, _>("interrupted")? != 0,
                cancel_requested_at: row
                    .try_get::<Option<Micros>, _>("cancel_requested_at")?
                    .map(format_micros),
                cancel_reason: row.try_get("cancel_reason")?,
                cancel_outcome: row.try_get("cancel_outcome")?,
                duration_ms: match (started_at, finished_at) {
                    (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                    _ => None,
                },
            })
        }

        fn node_from_row(row: &$row, prefix: &str) -> Result<Option<NodeInfo>, StoreError> {
            let col = |c: &str| format!("{prefix}{c}");
            let id: Option<String> = row.try_get(col("id").as_str())?;
            let Some(id) = id else { return Ok(None) };
            Ok(Some(NodeInfo {
                id,
                hostname: row.try_get(col("hostname").as_str())?,
                pid: row.try_get(col("pid").as_str())?,
                started_at: row.try_get(col("started_at").as_str())?,
                heartbeat_at: row.try_get(col("heartbeat_at").as_str())?,
                stopped_at: row.try_get(col("stopped_at").as_str())?,
            }))
        }

        fn job_from_row(row: &$row) -> Result<Job, StoreError> {
            let schedule: String = row.try_get("schedule")?;
            let mode: Option<String> = row.try_get("mode")?;
            let payload: String = row.try_get("payload")?;
            let overlap: String = row.try_get("overlap")?;
            let misfire: String = row.try_get("misfire")?;
            let opt_u64 = |c: &str| -> Result<Option<u64>, StoreError> {
                Ok(row.try_get::<Option<i64>, _>(c)?.map(|v| v.max(0) as u64))
            };
            Ok(Job {
                spec: JobSpec {
                    name: row.try_get("name")?,
                    handler: row.try_get("handler")?,
                    mode: mode
                        .map(|m| Mode::from_str(&m).map_err(|e| corrupt("jobs.mode")(e.into())))
                        .transpose()?,
                    payload: parse_json("jobs.payload", Some(payload))?.unwrap_or(Value::Null),
                    schedule: serde_json::from_str(&schedule)
                        .map_err(|e| corrupt("jobs.schedule")(Box::new(e)))?,
                    priority: row.try_get::<i64, _>("priority")? as i32,
                    queue: row.try_get("queue")?,
                    retries: row.try_get::<i64, _>("retries")? as u32,
                    backoff_ms: row.try_get::<i64, _>("backoff_ms")? as u64,
                    timeout_ms: opt_u64("timeout_ms")?,
                    overlap: Overlap::from_str(&overlap)
                        .map_err(|e| corrupt("jobs.overlap")(e.into()))?,
                    misfire: Misfire::from_str(&misfire)
                        .map_err(|e| corrupt("jobs.misfire")(e.into()))?,
                    max_parallel: opt_u64("max_parallel")?.map(|v| v as u32),
                    max_runs: opt_u64("max_runs")?,
                    start_at: row.try_get("start_at")?,
                    end_at: row.try_get("end_at")?,
                    paused: row.try_get::<i64, _>("paused")? != 0,
                },
                runs: row.try_get::<i64, _>("runs")? as u64,
                missed: row.try_get::<i64, _>("missed")? as u64,
                next_run_at: row.try_get("next_run_at")?,
                completed_at: row.try_get("completed_at")?,
                daemon_streak: row.try_get::<i64, _>("daemon_streak")? as u32,
            })
        }

        fn log_from_row(row: &$row) -> Result<LogEntry, StoreError> {
            let level: String = row.try_get("level")?;
            let fields = parse_json("logs.fields", row.try_get("fields")?)?;
            Ok(LogEntry {
                seq: row.try_get("seq")?,
                ts: format_micros(row.try_get("ts")?),
                level: level
                    .parse()
                    .map_err(|e: jobvisor_worker::protocol::UnknownLevel| {
                        corrupt("logs.level")(Box::new(e))
                    })?,
                stream: row.try_get("stream")?,
                message: row.try_get("message")?,
                fields: match fields {
                    Some(Value::Object(m)) => Some(m),
                    _ => None,
                },
            })
        }
    };
}
pub(super) use decoders;
