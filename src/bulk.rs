//! Acting on many executions at once, by the filters of `exec list`.

use crate::model::{Execution, Micros};
use crate::store::{ExecFilter, RetryRequest, Store, StoreError};
use serde::Serialize;
use uuid::Uuid;

/// What a bulk action matched and did.
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
    store: &dyn Store,
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

/// Cancels every execution `filter` matches that has not ended.
pub async fn cancel(
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

/// Retries every execution `filter` matches that can be: failed or
/// cancelled, the last attempt of its chain, its unique key free.
pub async fn retry(
    store: &dyn Store,
    filter: &ExecFilter,
    now: Micros,
) -> Result<Bulk, StoreError> {
    let found = matching(store, filter).await?;
    let mut retried = 0;
    for e in &found {
        if let RetryRequest::Retried(_) = store.retry(e.id, now).await? {
            retried += 1;
        }
    }
    Ok(Bulk {
        matched: found.len() as u64,
        retried: Some(retried),
        ..Default::default()
    })
}
