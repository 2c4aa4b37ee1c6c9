//! Acting on many executions at once, by the filters of `exec list`.

use crate::model::{Execution, Micros};
use crate::store::{ExecFilter, Reads, RetryRequest, Store, StoreError};
use serde::Serialize;
use uuid::Uuid;

/// What a bulk action matched and did.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let db = dir.path().join("jobs.db").to_str().unwrap().to_string();
/// # let sup = jobvisor::Supervisor::builder().database(&db).build().await?;
/// # let store = sup.store().as_ref();
/// use jobvisor::store::ExecFilter;
/// sup.enqueue(jobvisor::RunSpec::new("noop", serde_json::Value::Null)).await?;
/// let all = ExecFilter { handler: Some("noop".into()), ..Default::default() };
/// let done: jobvisor::bulk::Bulk = sup.cancel_matching(&all, "enough").await?;
/// assert_eq!(serde_json::to_value(&done)?, serde_json::json!({"matched": 1, "cancelled": 1, "requested": 0}));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Bulk {
    /// Executions the filter matched.
    pub matched: u64,
    /// Not started, now cancelled (cancel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<u64>,
    /// Running, asked to stop (cancel).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// Retried (retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retried: Option<u64>,
}

/// Every execution `filter` matches, newest first, read in pages (its
/// `limit` and `before` are ignored).
pub async fn matching(
    store: &dyn Reads,
    filter: &ExecFilter,
) -> Result<Vec<Execution>, StoreError> {
    const PAGE: usize = 10_000;
    let mut all = Vec::new();
    let mut page = ExecFilter {
        limit: PAGE,
        before: None,
        ..filter.clone()
    };
    loop {
        let got = store.executions(&page).await?;
        let last = got.last().map(|e| e.id);
        let full = got.len() == PAGE;
        all.extend(got);
        match last {
            Some(id) if full => page.before = Some(id),
            _ => return Ok(all),
        }
    }
}

/// What a bulk action would do, acting on nothing: how many executions
/// the filter matches, and those it would act on, with what it would do to
/// each in the counts of [`Bulk`] (a dry run says exactly this).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    /// What the action would answer.
    #[serde(flatten)]
    pub bulk: Bulk,
    /// The executions it would act on, newest first.
    pub executions: Vec<Execution>,
}

/// What cancelling by `filter` would do: the matches that have not ended,
/// those not started cancelled, the running ones asked to stop.
pub async fn plan_cancel(store: &dyn Reads, filter: &ExecFilter) -> Result<Plan, StoreError> {
    let found = matching(store, filter).await?;
    let matched = found.len() as u64;
    let open: Vec<Execution> = found
        .into_iter()
        .filter(|e| !e.status.is_terminal())
        .collect();
    let running = open
        .iter()
        .filter(|e| e.status == crate::model::Status::Running)
        .count() as u64;
    Ok(Plan {
        bulk: Bulk {
            matched,
            cancelled: Some(open.len() as u64 - running),
            requested: Some(running),
            retried: None,
        },
        executions: open,
    })
}

/// What retrying by `filter` would do: the matches that failed or were
/// cancelled, are the last attempt of their chain, and whose unique key no
/// other execution holds (what a retry takes).
pub async fn plan_retry(store: &dyn Reads, filter: &ExecFilter) -> Result<Plan, StoreError> {
    use crate::model::Status;
    let found = matching(store, filter).await?;
    let matched = found.len() as u64;
    let mut would = Vec::new();
    for e in found {
        if !matches!(e.status, Status::Failed | Status::Cancelled) || e.next_id.is_some() {
            continue;
        }
        if let Some(key) = &e.unique_key {
            let holders = ExecFilter {
                unique_key: Some(key.clone()),
                statuses: vec![
                    Status::Waiting,
                    Status::Pending,
                    Status::Held,
                    Status::Running,
                ],
                limit: 1,
                ..Default::default()
            };
            if !store.executions(&holders).await?.is_empty() {
                continue;
            }
        }
        would.push(e);
    }
    Ok(Plan {
        bulk: Bulk {
            matched,
            retried: Some(would.len() as u64),
            ..Default::default()
        },
        executions: would,
    })
}

/// Cancels every execution `filter` matches that has not ended.
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn cancel(
    store: &dyn Store,
    filter: &ExecFilter,
    reason: &str,
    now: Micros,
) -> Result<Bulk, StoreError> {
    let found = matching(store, filter).await?;
    let open: Vec<Uuid> = found
        .iter()
        .filter(|e| !e.status.is_terminal())
        .map(|e| e.id)
        .collect();
    let done = store.cancel_many(&open, reason, now).await?;
    Ok(Bulk {
        matched: found.len() as u64,
        cancelled: Some(done.cancelled),
        requested: Some(done.requested),
        retried: None,
    })
}

/// Retries every execution `filter` matches that can be (failed or
/// cancelled, the last attempt of its chain, its unique key free), calling
/// `retried` with each execution retried and its new attempt's id as that
/// retry commits.
#[doc(hidden)]
#[cfg_attr(feature = "testing", visibility::make(pub))]
pub(crate) async fn retry_each(
    store: &dyn Store,
    filter: &ExecFilter,
    now: Micros,
    mut retried: impl FnMut(&Execution, Uuid),
) -> Result<Bulk, StoreError> {
    let found = matching(store, filter).await?;
    let mut n = 0;
    for e in &found {
        if let RetryRequest::Retried(again) = store.retry(e.id, now).await? {
            retried(e, again);
            n += 1;
        }
    }
    Ok(Bulk {
        matched: found.len() as u64,
        retried: Some(n),
        ..Default::default()
    })
}
