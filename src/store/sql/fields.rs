use super::*;

/// A row, decoded by column name, with errors that name the column.
pub(super) struct Fields<'a, D: Dialect> {
    pub(super) row: &'a DbRow<D>,
    pub(super) table: &'static str,
}

/// A stored value that does not decode.
pub(super) fn corrupt(
    table: &str,
    column: &str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> StoreError {
    StoreError::Corrupt {
        what: format!("{table}.{column}"),
        source: source.into(),
    }
}

impl<'a, D: Dialect> Fields<'a, D> {
    /// The columns of `row`, read from `table`.
    pub(super) fn new(row: &'a DbRow<D>, table: &'static str) -> Self {
        Fields { row, table }
    }

    pub(super) fn get<T: Col>(&self, column: &str) -> Result<T, StoreError> {
        Ok(D::get(self.row, column)?)
    }

    pub(super) fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.get(column)
    }

    pub(super) fn opt_u64(&self, column: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.get::<Option<i64>>(column)?.map(|v| v.max(0) as u64))
    }

    pub(super) fn flag(&self, column: &str) -> Result<bool, StoreError> {
        Ok(self.int(column)? != 0)
    }

    pub(super) fn parse<T: FromStr>(&self, column: &str) -> Result<T, StoreError>
    where
        T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let text: String = self.get(column)?;
        text.parse().map_err(|e| corrupt(self.table, column, e))
    }

    pub(super) fn opt_parse<T: FromStr>(&self, column: &str) -> Result<Option<T>, StoreError>
    where
        T::Err: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let text: Option<String> = self.get(column)?;
        text.map(|t| t.parse().map_err(|e| corrupt(self.table, column, e)))
            .transpose()
    }

    pub(super) fn json<T: serde::de::DeserializeOwned>(
        &self,
        column: &str,
    ) -> Result<Option<T>, StoreError> {
        let text: Option<String> = self.get(column)?;
        text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(self.table, column, e)))
            .transpose()
    }

    /// JSON column `column`; of a row read with it cut (`clipped`: it has
    /// `{column}_truncated`), a cut one is its text, as a string.
    pub(super) fn clipped_json(
        &self,
        column: &str,
        clipped: bool,
    ) -> Result<(Option<Value>, bool), StoreError> {
        if clipped && self.flag(&format!("{column}_truncated"))? {
            let text: Option<String> = self.get(column)?;
            return Ok((text.map(Value::String), true));
        }
        Ok((self.json(column)?, false))
    }

    pub(super) fn execution(&self) -> Result<Execution, StoreError> {
        self.execution_read(false)
    }

    /// An execution read with its payload and output cut
    /// (`ExecFilter::clip`).
    pub(super) fn execution_clipped(&self) -> Result<Execution, StoreError> {
        self.execution_read(true)
    }

    pub(super) fn execution_read(&self, clipped: bool) -> Result<Execution, StoreError> {
        let started_at: Option<Micros> = self.get("started_at")?;
        let finished_at: Option<Micros> = self.get("finished_at")?;
        let (payload, payload_truncated) = self.clipped_json("payload", clipped)?;
        let (output, output_truncated) = self.clipped_json("output", clipped)?;
        Ok(Execution {
            id: self.get("id")?,
            job: Some(self.get::<String>("job")?).filter(|j| !j.is_empty()),
            handler: self.get("handler")?,
            mode: self.parse("mode")?,
            status: self.parse("status")?,
            attempt: self.int("attempt")? as u32,
            max_attempts: self.int("max_attempts")? as u32,
            previous_id: self.get("previous_id")?,
            next_id: self.get("next_id")?,
            payload: payload.unwrap_or(Value::Null),
            payload_truncated,
            priority: self.int("priority")? as i32,
            queue: self.get("queue")?,
            unique_key: self.get("unique_key")?,
            concurrency_key: self.get("concurrency_key")?,
            snoozes: self.int("snoozes")?.max(0) as u32,
            origin: self.parse("origin")?,
            meta: self.json("meta")?.unwrap_or_default(),
            tags: self.json("tags")?.unwrap_or_default(),
            after_policy: self.opt_parse("after_policy")?,
            waiting_on: self.int("waiting_on")?.max(0) as u64,
            workflow_id: self.get("workflow_id")?,
            step: self.get("step")?,
            occurrence: self.get("occurrence")?,
            timeout_ms: self.opt_u64("timeout_ms")?,
            enqueued_at: Timestamp(self.get("enqueued_at")?),
            run_at: Timestamp(self.get("run_at")?),
            started_at: started_at.map(Timestamp),
            finished_at: finished_at.map(Timestamp),
            node: self.get("node")?,
            pid: self.get("pid")?,
            exit_code: self.get("exit_code")?,
            signal: self.get("signal")?,
            progress: ProgressState {
                percent: self.get("progress_percent")?,
                message: self.get("progress_message")?,
                done: self.get("progress_done")?,
                total: self.get("progress_total")?,
                data: self.json("progress_data")?,
            },
            output,
            output_truncated,
            error: self.get("error")?,
            timed_out: self.flag("timed_out")?,
            interrupted: self.flag("interrupted")?,
            cancel_requested_at: self
                .get::<Option<Micros>>("cancel_requested_at")?
                .map(Timestamp),
            cancel_reason: self.get("cancel_reason")?,
            cancel_outcome: self.get("cancel_outcome")?,
            duration_ms: match (started_at, finished_at) {
                (Some(s), Some(f)) => Some((f - s) as f64 / 1000.0),
                _ => None,
            },
        })
    }

    /// The node in columns `{prefix}id`, ... (none if `{prefix}id` is null).
    pub(super) fn node(&self, prefix: &str) -> Result<Option<NodeInfo>, StoreError> {
        let col = |c: &str| format!("{prefix}{c}");
        let Some(id) = self.get::<Option<String>>(&col("id"))? else {
            return Ok(None);
        };
        Ok(Some(NodeInfo {
            id,
            hostname: self.get(&col("hostname"))?,
            pid: self.get(&col("pid"))?,
            started_at: self.get(&col("started_at"))?,
            heartbeat_at: self.get(&col("heartbeat_at"))?,
            stopped_at: self.get(&col("stopped_at"))?,
            concurrency: self
                .get::<Option<i64>>(&col("concurrency"))?
                .map(|n| n.clamp(0, u32::MAX as i64) as u32),
        }))
    }

    pub(super) fn job(&self) -> Result<Job, StoreError> {
        Ok(Job {
            spec: JobSpec {
                name: self.get("name")?,
                handler: self.get("handler")?,
                mode: self.opt_parse("mode")?,
                payload: self.json("payload")?.unwrap_or(Value::Null),
                schedule: self
                    .json::<ScheduleSpec>("schedule")?
                    .ok_or_else(|| corrupt(self.table, "schedule", "null"))?,
                priority: self.int("priority")? as i32,
                queue: self.get("queue")?,
                retries: self.int("retries")? as u32,
                backoff_ms: self.int("backoff_ms")? as u64,
                timeout_ms: self.opt_u64("timeout_ms")?,
                overlap: self.parse("overlap")?,
                misfire: self.parse("misfire")?,
                max_parallel: self.opt_u64("max_parallel")?.map(|v| v as u32),
                max_runs: self.opt_u64("max_runs")?,
                start_at: self.get("start_at")?,
                end_at: self.get("end_at")?,
                paused: self.flag("paused")?,
                then: self.json("chain")?.unwrap_or_default(),
                concurrency_key: self.get("concurrency_key")?,
                description: self.get("description")?,
                meta: self.json("meta")?.unwrap_or_default(),
                tags: self.json("tags")?.unwrap_or_default(),
                condition: self.get("condition")?,
                condition_mode: self.opt_parse("condition_mode")?,
                keep_last: self.opt_u64("keep_last")?,
                alerts: self.json("alerts")?.unwrap_or_default(),
            },
            runs: self.int("runs")? as u64,
            missed: self.int("missed")? as u64,
            next_run_at: self.get("next_run_at")?,
            completed_at: self.get("completed_at")?,
            daemon_streak: self.int("daemon_streak")? as u32,
        })
    }

    /// A webhook's row: its spec, as JSON.
    pub(super) fn webhook(&self) -> Result<crate::model::WebhookSpec, StoreError> {
        self.json("spec")?
            .ok_or_else(|| corrupt(self.table, "spec", "null"))
    }

    pub(super) fn incident(&self) -> Result<Incident, StoreError> {
        Ok(Incident {
            kind: self.get("kind")?,
            subject: self.get("subject")?,
            opened_at: Timestamp(self.int("opened_at")?),
            message: self.get("message")?,
            job: self.get("job")?,
            queue: self.get("queue")?,
        })
    }

    pub(super) fn log(&self) -> Result<LogEntry, StoreError> {
        Ok(LogEntry {
            seq: self.get("seq")?,
            ts: Timestamp(self.get("ts")?),
            level: self.parse("level")?,
            stream: self.get("stream")?,
            message: self.get("message")?,
            fields: match self.json("fields")? {
                Some(Value::Object(m)) => Some(m),
                _ => None,
            },
        })
    }
}
