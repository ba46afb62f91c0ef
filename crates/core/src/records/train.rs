//! The train stage's records: the eval-v1 report ([`EvalReport`]), a trained
//! model's `metrics.json` ([`TrainMetrics`]) and a baseline's
//! ([`BaselineMetrics`]). The train stage writes them; the run (manifest
//! metrics, report curves) and the CLI read them back through these types.
//! How the figures are computed is `tailforge_train::eval`'s business; what
//! they mean is `../shared/EVAL.md`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::{ContentPool, TrainConfig, Variant};
use crate::error::{Error, Result};

/// HR@10 and NDCG@10 over a group of cases.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupMetrics {
    /// Number of cases (evaluated users whose target is in the group).
    pub n: u64,
    #[serde(rename = "hr@10")]
    pub hr: f64,
    #[serde(rename = "ndcg@10")]
    pub ndcg: f64,
}

/// Metrics overall and per eval-v1 group of the target.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct GroupedMetrics {
    pub overall: GroupMetrics,
    pub head: GroupMetrics,
    pub tail: GroupMetrics,
    /// Targets with at most 5 training interactions (eval-v1 §3, §6).
    pub cold: GroupMetrics,
}

impl GroupedMetrics {
    /// The groups in report order, with their names.
    pub fn groups(&self) -> [(&'static str, &GroupMetrics); 4] {
        [("overall", &self.overall), ("head", &self.head), ("tail", &self.tail), ("cold", &self.cold)]
    }
}

/// The eval-v1 report of one phase. Serializes as
/// `{"full": {"overall": {"n", "hr@10", "ndcg@10"}, "head": …, "tail": …, "cold": …}, "sampled": …, "coverage@10", "tail_share@10"}`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EvalReport {
    /// Full-ranking metrics (eval-v1's primary figures).
    pub full: GroupedMetrics,
    /// Target against sampled negatives (for comparison with papers).
    pub sampled: GroupedMetrics,
    /// Share of catalog items in at least one user's full-ranking top 10.
    #[serde(rename = "coverage@10")]
    pub coverage: f64,
    /// Share of all top-10 slots taken by tail items.
    #[serde(rename = "tail_share@10")]
    pub tail_share: f64,
}

impl EvalReport {
    /// A Markdown table: one row per group, full and sampled metrics, then coverage.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| group | n | HR@10 | NDCG@10 | HR@10 (sampled) | NDCG@10 (sampled) |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|\n");
        for ((name, full), (_, sampled)) in self.full.groups().into_iter().zip(self.sampled.groups()) {
            let _ = writeln!(
                s,
                "| {name} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
                full.n, full.hr, full.ndcg, sampled.hr, sampled.ndcg
            );
        }
        let _ = writeln!(s, "\ncoverage@10: {:.4} · tail share@10: {:.4}", self.coverage, self.tail_share);
        s
    }
}

/// One line of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub seconds: f64,
    /// Validation NDCG@10 (full ranking), on the epochs that were evaluated.
    #[serde(rename = "valid_ndcg@10", skip_serializing_if = "Option::is_none")]
    pub valid_ndcg: Option<f64>,
}

/// The scoring rule's settings (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoringRule {
    pub cold_threshold: u32,
    pub cold_id_scale: f32,
    pub content_weight: f32,
    pub content_recent: usize,
    pub content_pool: ContentPool,
    /// Absent in metrics.json written before the term existed.
    #[serde(default)]
    pub cooccurrence_weight: f32,
}

impl ScoringRule {
    /// The model's own scores: no routing, no content term.
    pub const PLAIN: ScoringRule = ScoringRule {
        cold_threshold: 0,
        cold_id_scale: 1.0,
        content_weight: 0.0,
        content_recent: 5,
        content_pool: ContentPool::Max,
        cooccurrence_weight: 0.0,
    };

    /// The rule a configuration fixes (`train.cold_threshold`, `train.cold_id_scale`,
    /// `train.content_weight`, `train.content_recent`).
    pub fn from_config(cfg: &TrainConfig) -> ScoringRule {
        ScoringRule {
            cold_threshold: cfg.cold_threshold,
            cold_id_scale: cfg.cold_id_scale as f32,
            content_weight: cfg.content_weight as f32,
            content_recent: cfg.content_recent,
            content_pool: cfg.content_pool,
            cooccurrence_weight: cfg.cooccurrence_weight as f32,
        }
    }

    pub fn needs_text(&self) -> bool {
        self.content_weight != 0.0
    }

    pub fn needs_cooccurrence(&self) -> bool {
        self.cooccurrence_weight != 0.0
    }
}

/// One candidate rule and its validation NDCG@10 (full ranking).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TunedRule {
    pub rule: ScoringRule,
    pub valid_ndcg: f64,
}

/// Text statistics of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextStats {
    /// The encoder's fingerprint: SHA-256 of its weights and the token limit.
    pub encoder: String,
    pub items_with_generated_text: usize,
    /// Distinct texts encoded by this run (items with identical text share one).
    pub encoded_now: usize,
    /// Items whose embedding the cache already held.
    pub from_cache: usize,
    pub encode_seconds: f64,
}

/// The scoring rule a run used (see [`crate::scoring`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoringChoice {
    pub rule: ScoringRule,
    /// Whether `rule` was chosen on validation (`train.tune_scoring`).
    pub tuned: bool,
    /// Validation NDCG@10 of the model's plain scores and of the chosen rule (when tuned).
    pub plain_valid_ndcg: Option<f64>,
    pub rule_valid_ndcg: Option<f64>,
    /// Every rule tried, with its validation NDCG@10 (when tuned).
    pub candidates: Vec<TunedRule>,
    /// The test figures of the model's plain scores (when tuned and the rule
    /// is not the plain one): what the rule added, measured on the same weights.
    pub plain_test: Option<EvalReport>,
}

/// How a warm start met this run's catalog.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct WarmStartItems {
    pub carried: usize,
    pub new: usize,
}

/// A baseline's `metrics.json` (`tailforge evaluate --out`, the run's
/// `evaluate/` stage): its eval-v1 report on both phases; written with
/// [`BaselineMetrics::to_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineMetrics {
    pub test: EvalReport,
    pub valid: EvalReport,
    /// The baseline's name, e.g. `mostpop` ([`Baseline::as_str`]).
    pub variant: String,
}

impl BaselineMetrics {
    /// The file's bytes: pretty JSON with every object's keys in sorted order,
    /// as the file has always been written (through `serde_json::Value`,
    /// whose maps sort), so that the struct's field order does not matter.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        let value = serde_json::to_value(self).map_err(|e| Error::internal(e.to_string()))?;
        serde_json::to_vec_pretty(&value).map_err(|e| Error::internal(e.to_string()))
    }

    /// `metrics.md`: the test report, then the validation report.
    pub fn to_markdown(&self) -> String {
        let variant = &self.variant;
        format!(
            "## {variant}: test (eval-v1)\n\n{}\n## {variant}: validation\n\n{}",
            self.test.to_markdown(),
            self.valid.to_markdown()
        )
    }
}

/// A trained model's `metrics.json`: written by [`train`], read back by the
/// run (manifest metrics, report curves) as this type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub variant: Variant,
    /// Epochs trained (including those before a resume).
    pub epochs: usize,
    pub best_epoch: usize,
    pub test: EvalReport,
    pub valid: EvalReport,
    #[serde(rename = "coverage@10")]
    pub coverage: f64,
    #[serde(rename = "tail_share@10")]
    pub tail_share: f64,
    pub seconds_per_epoch: f64,
    pub seconds: f64,
    pub parameters: usize,
    pub resumed_after_epoch: Option<usize>,
    pub warm_started: bool,
    /// With a warm start: items whose ID embedding came from the previous run, and items new to this run.
    pub warm_start_items: Option<WarmStartItems>,
    pub text: Option<TextStats>,
    pub scoring: ScoringChoice,
    pub history: Vec<EpochRecord>,
    pub config: TrainConfig,
}

impl TrainMetrics {
    pub fn to_markdown(&self) -> String {
        format!(
            "## {} (best epoch {} of {}, {:.2} s/epoch)\n\n### test\n\n{}\n### valid\n\n{}",
            self.variant.as_str(),
            self.best_epoch,
            self.epochs,
            self.seconds_per_epoch,
            self.test.to_markdown(),
            self.valid.to_markdown()
        )
    }
}
