//! The records stages and the run leave next to their data: what a stage's
//! status is, and how the run's manifest names a headline metric. The files
//! themselves are typed where they are written (`tailforge_train::TrainMetrics`
//! and `BaselineMetrics` for `metrics.json`, `tailforge_generate::GenerateSummary`
//! for `generate/summary.json`, `tailforge_run::Manifest` for `manifest.json`)
//! and read back through those types, never as untyped JSON.

use serde::{Deserialize, Serialize};

/// Where a stage, or a whole run, stands. Serialized lower-case
/// (`"running"`, `"succeeded"`, `"skipped"`, `"failed"`) in `manifest.json`
/// and each stage's `_SUCCESS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageStatus {
    /// Started, not finished (a run's manifest while its stages go on).
    #[default]
    Running,
    Succeeded,
    /// Succeeded earlier with the same fingerprint: not recomputed.
    Skipped,
    Failed,
}

impl StageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Running => "running",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Skipped => "skipped",
            StageStatus::Failed => "failed",
        }
    }
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that `{:<9}` aligns a status like a string.
        f.pad(self.as_str())
    }
}

/// The manifest's key of a model's test NDCG@10 (eval-v1, full ranking) in
/// one eval group: `<model>_test_ndcg@10_<group>`, e.g.
/// `mostpop_test_ndcg@10_tail` or `id_test_ndcg@10_overall`. The one place
/// the key is spelled; readers and writers of `Manifest::metrics` call it.
pub fn test_ndcg_key(model: &str, group: &str) -> String {
    format!("{model}_test_ndcg@10_{group}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_as_before() {
        for (s, text) in [
            (StageStatus::Running, "running"),
            (StageStatus::Succeeded, "succeeded"),
            (StageStatus::Skipped, "skipped"),
            (StageStatus::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<StageStatus>(&format!("\"{text}\"")).unwrap(), s);
            assert_eq!(format!("{s:<10}|"), format!("{text:<10}|"));
        }
        assert_eq!(test_ndcg_key("mostpop", "tail"), "mostpop_test_ndcg@10_tail");
    }
}
