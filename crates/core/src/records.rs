//! The records stages and the run leave next to their data: what a stage's
//! status is, how the run's manifest names a headline metric, and what a
//! generation did (`generate/summary.json`: [`GenerateSummary`]), which the
//! generate stage writes and the run, the report and `--merge` read, and
//! what training measured ([`train`]: the eval-v1 report, `metrics.json`).
//! The manifest is typed in `tailforge_run`; all are read back through
//! their types, never as untyped JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Shard;

pub mod train;
pub use train::{
    BaselineMetrics, EpochRecord, EvalReport, GroupMetrics, GroupedMetrics, ScoringChoice, ScoringRule, TextStats,
    TrainMetrics, TunedRule, WarmStartItems,
};

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

/// What a run did (`summary.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    /// Input items considered (after `limit`, and of this worker's part with `shard`).
    pub items: u64,
    /// The part of a sharded generation this output is (`generate.shard`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Parts joined into this output by `tailforge generate --merge` (0: not a merge).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged_shards: u32,
    /// Items skipped because an earlier run into the same output already wrote them (accepted or rejected).
    pub skipped: u64,
    /// Items whose row (or reject) was taken from the cross-run cache instead of generated.
    pub reused_from_cache: u64,
    /// Items generated and accepted in this run.
    pub accepted: u64,
    /// Items generated and rejected in this run, by the reason of their last attempt
    /// (rejects reused from the cache are in `reused_from_cache`).
    pub rejected: BTreeMap<String, u64>,
    /// Failed attempts per filter (reason), retried ones included.
    pub filtered_attempts: BTreeMap<String, u64>,
    /// Rows in `generated/` and `rejects/` after this run (earlier runs' included).
    pub generated_rows: u64,
    pub rejected_rows: u64,
    /// Prompt tokens decoded (all attempts; the shared prefix once).
    pub prompt_tokens: u64,
    /// Tokens every prompt starts with, decoded once and copied into each
    /// attempt's sequence (`generate.share_prefix`; 0 = none shared).
    #[serde(default)]
    pub shared_prefix_tokens: u64,
    /// Tokens generated (all attempts).
    pub generated_tokens: u64,
    /// Prompt tokens per wall second of the run.
    pub prompt_tokens_per_s: f64,
    /// Generated tokens per wall second of the run.
    pub generated_tokens_per_s: f64,
    /// Wall seconds of the generation (model load included).
    pub seconds: f64,
    /// Seconds spent in llama.cpp's decode and in sampling (grammar included).
    pub decode_seconds: f64,
    pub sample_seconds: f64,
    /// SHA-256 of the GGUF model file.
    pub model_sha256: String,
    /// Hash of the prompt template, grammar and sampling parameters.
    pub params_hash: String,
    /// The cache fingerprint (model, params, seed).
    pub fingerprint: String,
    /// The cache directory of this fingerprint, if the cache is on.
    pub cache: Option<String>,
    /// Items generated with free keywords although `keywords = "extractive"`:
    /// their text gave fewer phrases than an answer needs keywords.
    #[serde(default)]
    pub free_keyword_items: u64,
    /// Grounding of this run's accepted rows (generated or reused from the cache).
    #[serde(default)]
    pub grounding: GroundingSummary,
    /// The generation through time: a point when decoding starts, then one
    /// every `tailforge_generate::progress_every(items)` items generated by this run (accepted or
    /// rejected), and one at the last item; reused and resumed items are not
    /// in it.
    #[serde(default)]
    pub progress: Vec<ProgressPoint>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One sample of [`GenerateSummary::progress`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProgressPoint {
    /// Seconds since the generation started (model load included).
    pub seconds: f64,
    /// Items generated so far by this run.
    pub items_done: u64,
    /// Tokens generated so far (all attempts, unfinished sequences included).
    pub generated_tokens: u64,
}

impl GenerateSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Quantiles of a share over the accepted rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub mean: f64,
    pub min: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Distribution {
    /// Of `values` (nearest-rank quantiles); all zero when empty.
    pub fn of(values: &[f64]) -> Distribution {
        if values.is_empty() {
            return Distribution::default();
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Distribution { mean: v.iter().sum::<f64>() / v.len() as f64, min: v[0], p10: q(0.1), p50: q(0.5), p90: q(0.9) }
    }
}

/// The grounding of the accepted rows of a run (`summary.json`, the report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroundingSummary {
    /// Accepted rows scored (generated now or reused from the cache).
    pub rows: u64,
    /// Share of all their keywords that are grounded (pooled over rows).
    pub keywords_grounded: f64,
    /// Share of rows whose every keyword is grounded.
    pub rows_fully_grounded: f64,
    /// Per-row keyword grounding.
    pub keyword_share: Distribution,
    /// Per-row description grounding (content words).
    pub description_share: Distribution,
}
