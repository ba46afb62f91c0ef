//! One stage of a run, skipped when it already succeeded: the stage's
//! `_SUCCESS` marker holds its [`StageRecord`].

use std::collections::BTreeMap;
use std::time::Instant;

use tailforge_core::records::StageStatus;
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, Result};
use tracing::info;

use crate::manifest::{StageRecord, now};

/// Runs one stage unless it already succeeded with the same fingerprint.
/// The stage's `_SUCCESS`, written last, holds its [`StageRecord`]
/// (fingerprint, rows, bytes, times), so a rerun knows what finished from the
/// stage directory alone — also after a run that died before its manifest.
pub(crate) async fn stage<F, Fut>(
    name: &str,
    fingerprint: &str,
    dir: &Location,
    force: bool,
    body: F,
) -> Result<StageRecord>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<BTreeMap<String, u64>>>,
{
    let marker = dir.join(SUCCESS_MARKER);
    if !force && marker.exists().await? {
        let done: Option<StageRecord> = serde_json::from_slice(&marker.get().await?).ok();
        if let Some(done) = done.filter(|d| d.fingerprint == fingerprint && d.name == name) {
            info!(stage = name, "skipped: succeeded before with the same configuration and inputs");
            return Ok(StageRecord { status: StageStatus::Skipped, ..done });
        }
    }
    let started_at = now();
    let started = Instant::now();
    info!(stage = name, "started");
    let rows = body().await?;
    let bytes = dir
        .list_recursive()
        .await?
        .iter()
        .filter(|m| !m.location.as_ref().ends_with(SUCCESS_MARKER))
        .map(|m| m.size)
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    let record = StageRecord {
        name: name.into(),
        status: StageStatus::Succeeded,
        fingerprint: fingerprint.into(),
        started_at,
        finished_at: now(),
        seconds,
        rows,
        bytes,
        error: None,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::internal(e.to_string()))?;
    marker.put(json).await?;
    info!(stage = name, seconds, "finished");
    Ok(record)
}
