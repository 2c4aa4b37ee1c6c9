//! The timeline's per-minute counts of ends, added up in a transaction
//! and written with it.

use super::*;

/// Executions that ended in one transaction, per minute, handler and
/// status: the rows the timeline gains, written by [`EndTally::write`] last,
/// just before the commit, in key order (so that two transactions adding to
/// the same rows take their locks in one order and never deadlock).
/// Also the executions it cancelled before they started, told to the
/// store's [`UnstartedSink`]s after the commit.
#[derive(Default)]
pub(super) struct EndTally {
    pub(super) minutes: BTreeMap<(i64, String, Status), MinuteStats>,
    pub(super) unstarted: Vec<UnstartedCancel>,
}

/// What ended in one minute, of one handler, with one status.
#[derive(Default, Clone, Copy)]
pub(super) struct MinuteStats {
    pub(super) n: i64,
    /// How many of them had started, and their durations (µs).
    pub(super) timed: i64,
    pub(super) sum_us: i64,
    pub(super) max_us: i64,
}

impl EndTally {
    /// One execution of `handler` that ended at `finished` with `status`.
    pub(super) fn add(
        &mut self,
        handler: String,
        status: Status,
        started: Option<Micros>,
        finished: Micros,
    ) {
        let m = self
            .minutes
            .entry((finished.div_euclid(MINUTE_US), handler, status))
            .or_default();
        m.n += 1;
        if let Some(started) = started {
            let us = finished.saturating_sub(started).max(0);
            m.timed += 1;
            m.sum_us = m.sum_us.saturating_add(us);
            m.max_us = m.max_us.max(us);
        }
    }

    /// Adds them to the timeline, in this store's `shard` of its rows.
    pub(super) async fn write<D: Dialect>(
        self,
        conn: &mut Conn<D>,
        shard: i64,
    ) -> Result<(), StoreError> {
        let rows: Vec<_> = self.minutes.into_iter().collect();
        for chunk in rows.chunks(rows_per_statement(8)) {
            let mut q = Sql::<D>::new(
                "INSERT INTO timeline (minute, handler, status, shard, n, timed, sum_us, max_us) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                   v.column7, v.column8 FROM (",
            );
            q.values(chunk, |t, ((minute, handler, status), m)| {
                t.bind(*minute)
                    .bind(handler.as_str())
                    .bind(status.as_str())
                    .bind(shard)
                    .bind(m.n)
                    .bind(m.timed)
                    .bind(m.sum_us)
                    .bind(m.max_us);
            });
            // `WHERE true`: SQLite would read `ON` as a join's otherwise.
            q.push(") AS v WHERE true")
                .push(&D::upsert("minute, handler, status, shard"))
                .push(&format!(
                    "n = timeline.n + {}, timed = timeline.timed + {}, \
                     sum_us = timeline.sum_us + {}, max_us = {}(timeline.max_us, {})",
                    D::excluded("n"),
                    D::excluded("timed"),
                    D::excluded("sum_us"),
                    D::GREATEST,
                    D::excluded("max_us")
                ));
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// A minute, µs.
pub(super) const MINUTE_US: i64 = 60_000_000;

/// Shards of the timeline's rows.
pub(super) const SHARDS: i64 = 64;

/// A shard for a new store: distinct for stores of one process, and spread
/// by process id across nodes (a clash only shares rows, and their locks).
pub(super) fn next_shard() -> i64 {
    static NEXT: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    (i64::from(std::process::id()).wrapping_mul(7) + n).rem_euclid(SHARDS)
}
