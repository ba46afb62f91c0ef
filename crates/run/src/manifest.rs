//! `manifest.json` (what a run did and with what) and what names a run:
//! its date, its id, the build's git revision.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tailforge_core::config::Variant;
use tailforge_core::records::StageStatus;
use tailforge_core::schema::InputFile;
use tailforge_core::{Error, Result};

/// `manifest.json`: everything needed to know what a run did and with what.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: String,
    pub date: String,
    pub tailforge_version: String,
    pub git_revision: String,
    /// sha256 of the effective configuration (TOML) with `[storage]` at its
    /// defaults: what the stage fingerprints are made of.
    pub config_hash: String,
    pub config: String,
    pub status: StageStatus,
    pub started_at: f64,
    pub finished_at: Option<f64>,
    pub input_files: Vec<InputFile>,
    /// SHA-256 of each model file the run used, e.g. the generator GGUF and
    /// the text encoder's weights.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    pub stages: Vec<StageRecord>,
    /// Headline metrics, e.g. `mostpop_test_ndcg@10_tail`.
    pub metrics: BTreeMap<String, f64>,
}

impl Manifest {
    /// The variants this run trained, in stage order (from the `train_<variant>` stages).
    pub fn trained_variants(&self) -> Vec<Variant> {
        self.stages.iter().filter_map(|s| Variant::from_name(s.name.strip_prefix("train_")?)).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    /// Succeeded, skipped (succeeded earlier with the same fingerprint) or failed.
    pub status: StageStatus,
    pub fingerprint: String,
    pub started_at: f64,
    pub finished_at: f64,
    pub seconds: f64,
    pub rows: BTreeMap<String, u64>,
    pub bytes: u64,
    pub error: Option<String>,
}

/// The git revision baked in at build time (see build.rs of the CLI), or "unknown".
pub fn git_revision() -> String {
    option_env!("TAILFORGE_GIT_REVISION").unwrap_or("unknown").to_string()
}

pub(crate) fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Today's date in UTC as `YYYY-MM-DD` (civil-from-days, H. Hinnant).
pub fn today_utc() -> String {
    let days = (now() / 86_400.0).floor() as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Checks `YYYY-MM-DD`.
pub fn validate_date(date: &str) -> Result<()> {
    let parts: Vec<&str> = date.split('-').collect();
    let ok = parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
        && (1..=12).contains(&parts[1].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&parts[2].parse::<u32>().unwrap_or(0));
    if ok { Ok(()) } else { Err(Error::usage(format!("--date {date}: expected YYYY-MM-DD"))) }
}

/// A run id is a path segment: letters, digits, `-`, `_`, `.`.
pub(crate) fn validate_run_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(Error::usage(format!("--run-id {id:?}: use letters, digits, '-', '_' and '.'"))) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_run_ids() {
        assert!(validate_date("2026-11-22").is_ok());
        assert!(validate_date("2026-13-01").is_err());
        assert!(validate_date("26-11-22").is_err());
        assert_eq!(today_utc().len(), 10);
        validate_date(&today_utc()).unwrap();
        assert!(validate_run_id("2026-11-22_retry.1").is_ok());
        assert!(validate_run_id("../etc").is_err());
        assert!(validate_run_id("").is_err());
    }
}
