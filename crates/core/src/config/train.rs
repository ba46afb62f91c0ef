//! `[train]`: the sequential recommender (SASRec with text fusion) and its training loop.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `train.warm_start`, parsed once: written in TOML (and in `metrics.json`'s
/// config) as the same string as always — `""`, `"previous"` or a directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WarmStartFrom {
    /// `""`: random initial weights.
    #[default]
    Scratch,
    /// `"previous"`: the same variant's train output in the latest successful
    /// run of `tailforge run` (resolved by the run into [`WarmStartFrom::Dir`];
    /// `tailforge train` alone has no runs to look in and starts from scratch).
    Previous,
    /// A previous train output directory (its `checkpoints/best`).
    Dir(String),
}

impl WarmStartFrom {
    /// The TOML spelling of [`WarmStartFrom::Previous`].
    pub const PREVIOUS: &'static str = "previous";
}

impl From<String> for WarmStartFrom {
    fn from(s: String) -> Self {
        match s.as_str() {
            "" => WarmStartFrom::Scratch,
            WarmStartFrom::PREVIOUS => WarmStartFrom::Previous,
            _ => WarmStartFrom::Dir(s),
        }
    }
}

impl From<WarmStartFrom> for String {
    fn from(w: WarmStartFrom) -> String {
        match w {
            WarmStartFrom::Scratch => String::new(),
            WarmStartFrom::Previous => WarmStartFrom::PREVIOUS.to_string(),
            WarmStartFrom::Dir(dir) => dir,
        }
    }
}

/// How items are represented (the ablation axis of the train stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Plain SASRec: a learned ID embedding per item.
    Id,
    /// Frozen MiniLM text embedding of the item's text → linear projection.
    Text,
    /// ID embedding and projected text mixed by a learned per-dimension gate.
    #[default]
    Fused,
    /// LLM-ESR's dual view: an ID-view and a text-view sequence encoder, the
    /// item score the sum of both views' scores.
    Dual,
}

impl Variant {
    pub const ALL: [Variant; 4] = [Variant::Id, Variant::Text, Variant::Fused, Variant::Dual];

    /// The variant of this name (`id`, `text`, `fused`, `dual`): the name in
    /// the config, in `train/<variant>/` and in a manifest's `train_<variant>` stage.
    pub fn from_name(name: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Id => "id",
            Variant::Text => "text",
            Variant::Fused => "fused",
            Variant::Dual => "dual",
        }
    }

    /// Whether the variant needs item text embeddings.
    /// (The scoring rule's content term needs them too: see `TrainConfig::needs_text`.)
    pub fn uses_text(self) -> bool {
        !matches!(self, Variant::Id)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The training objective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// The SASRec paper's loss: binary cross-entropy on the next item against
    /// one sampled negative per position.
    #[default]
    Bce,
    /// Sampled softmax: cross-entropy of the next item against `negatives` sampled items.
    SampledSoftmax,
}

/// How the ID embeddings start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdInit {
    /// Xavier-normal random rows, as SASRec.
    #[default]
    Random,
    /// The items' text embeddings projected onto their top `hidden` principal
    /// directions, scaled to the random init's spread (LLM-ESR's init).
    TextPca,
}

/// How the content term pools the user's recent items (see `content_weight`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentPool {
    /// The highest cosine between the candidate and any recent item.
    #[default]
    Max,
    /// The cosine between the candidate and the mean of the recent items (text kNN).
    Mean,
}

/// Settings of the train stage: the sequential recommender (SASRec, Kang & McAuley 2018) and its
/// training loop; see `crates/train/README.md` for the model. Defaults are the paper's MovieLens
/// settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Whether `tailforge run` runs the train stage.
    pub enabled: bool,
    /// Variants `tailforge run` trains, each evaluated under eval-v1: `id` (plain SASRec), `text`
    /// (frozen MiniLM text embedding → linear), `fused` (ID + projected text with a learned gate),
    /// `dual` (LLM-ESR's dual view: an ID-view and a text-view encoder, scores summed).
    pub variants: Vec<Variant>,
    /// Variant `tailforge train` trains when `--variant` is not given.
    pub variant: Variant,
    /// Embedding and attention width (hidden size).
    pub hidden: usize,
    /// Self-attention blocks.
    pub blocks: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    /// Most recent items of a sequence the model sees.
    pub maxlen: usize,
    /// Dropout of embeddings, attention weights and feed-forward layers.
    pub dropout: f64,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam β2 (β1 = 0.9), as SASRec.
    pub beta2: f64,
    /// L2 weight decay on all parameters (0 = plain Adam).
    pub weight_decay: f64,
    /// Users per batch.
    pub batch_size: usize,
    /// Batches are cut from pools of this many batches' worth of shuffled users, sorted by sequence
    /// length, so a batch pads less (a batch is as wide as its longest sequence). `1` = random
    /// batches, as SASRec.pytorch samples them. Every training position is still seen once per
    /// epoch; see BENCHMARKS.md for speed and quality at 4.
    pub length_buckets: usize,
    /// Most epochs (passes over the users).
    pub epochs: usize,
    /// Validation NDCG@10 (eval-v1, full ranking) every this many epochs; the best epoch's weights
    /// are kept.
    pub eval_every: usize,
    /// Early stop after this many validations without a better validation NDCG@10.
    pub patience: usize,
    /// `bce`: the paper's binary cross-entropy with one sampled negative per position.
    /// `sampled_softmax`: cross-entropy against `negatives` sampled items.
    pub loss: Loss,
    /// Negatives per position for `sampled_softmax`.
    pub negatives: usize,
    /// CPU threads; 0 = all cores. candle's element-wise kernels use a pool of their own sized by
    /// the environment variable `CANDLE_NUM_THREADS` (default: physical cores): set it too to bound
    /// training to N cores.
    pub threads: usize,
    /// `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    pub device: String,
    /// MiniLM directory (`model.safetensors`, `config.json`, `tokenizer.json`), installed by
    /// `make setup`.
    pub encoder: String,
    /// Item text is cut to this many encoder tokens (MiniLM was trained with 256; 512 is its
    /// maximum).
    pub max_text_tokens: usize,
    /// Texts per encoder forward pass.
    pub encode_batch: usize,
    /// Text embedding cache (keyed by the text's SHA-256).
    ///
    /// Default: `<output>/cache/text-embeddings`
    #[serde(deserialize_with = "super::empty_as_none")]
    pub embedding_cache: Option<String>,
    /// How the ID embeddings of `id` and `fused` start: `random` (Xavier normal, as SASRec) or
    /// `text_pca` (each item's MiniLM text embedding on the texts' top `hidden` principal
    /// directions, scaled to the random init's spread — LLM-ESR's initialisation: rare items start
    /// near the items their text resembles).
    pub id_init: IdInit,
    /// Add generated descriptions and keywords to tail items' text (`false` = catalog text only,
    /// the ablation).
    pub use_generated: bool,
    /// Interaction augmentation: fraction of training input positions replaced by the most
    /// text-similar tail item; 0 = off.
    pub substitute_rate: f64,
    /// Recommendations written per user.
    pub top_k: usize,
    /// Recent items whose keywords explain a recommendation.
    pub why_recent: usize,
    /// `""`: random initial weights. `"previous"`: the same variant's train output in the latest
    /// successful run of `tailforge run` (`tailforge train` alone has none and starts from
    /// scratch). Otherwise a previous train output directory to start from (its
    /// `checkpoints/best`), used when its variant and model shape match. Items are matched by id:
    /// known items keep their learned ID rows, new items start as `train.id_init` says, items gone
    /// are dropped; `metrics.json` → `warm_start_items` (and the run manifest's
    /// `<variant>_warm_start_{carried,new}_items`) say how many.
    pub warm_start: WarmStartFrom,
    /// After training, choose the scoring rule below (`cold_threshold`, `cold_id_scale`,
    /// `content_weight`, `content_recent`, `content_pool`, `cooccurrence_weight`) on the validation
    /// targets from a fixed grid (`crates/train/src/scoring.rs`); the choice and every candidate's
    /// validation NDCG@10 are in `metrics.json` under `scoring`. `false` = use the values as set.
    pub tune_scoring: bool,
    /// Candidates with at most this many training interactions are *routed*: their ID-view score
    /// (for `id` and `fused` the whole model score; `text` is never routed) is scaled by
    /// `cold_id_scale`.
    pub cold_threshold: u32,
    /// Scale of a routed candidate's ID-view score: 0 = its text view alone scores it, 1 = no
    /// routing.
    pub cold_id_scale: f64,
    /// Weight of the content term added to every score: the highest cosine between the candidate's
    /// text embedding and those of the user's `content_recent` latest items (a text-kNN signal that
    /// needs no interactions); 0 = off.
    pub content_weight: f64,
    /// Latest items of a user the content term compares with.
    pub content_recent: usize,
    /// How the content term pools them: `max` (the highest cosine to any of them) or `mean` (the
    /// cosine to their mean embedding, as the text-kNN baseline).
    pub content_pool: ContentPool,
    /// Weight of the co-occurrence term added to every score: the sum of the candidate's cosine
    /// co-occurrence with each of the user's `cooccurrence_recent` latest items, counted over the
    /// training sequences (EVAL.md's ItemKNN); 0 = off. Tuned with the content weight when
    /// `tune_scoring` is on.
    pub cooccurrence_weight: f64,
    /// Latest items of a user the co-occurrence term sums over.
    pub cooccurrence_recent: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            enabled: true,
            variants: vec![Variant::Id, Variant::Fused],
            variant: Variant::Fused,
            hidden: 64,
            blocks: 2,
            heads: 1,
            maxlen: 200,
            dropout: 0.2,
            lr: 1e-3,
            beta2: 0.98,
            weight_decay: 0.0,
            batch_size: 128,
            length_buckets: 1,
            epochs: 200,
            eval_every: 5,
            patience: 5,
            loss: Loss::Bce,
            negatives: 100,
            threads: 0,
            device: "cpu".into(),
            encoder: "models/all-MiniLM-L6-v2".into(),
            max_text_tokens: 256,
            encode_batch: 32,
            embedding_cache: None,
            id_init: IdInit::Random,
            use_generated: true,
            substitute_rate: 0.0,
            top_k: 10,
            why_recent: 10,
            warm_start: WarmStartFrom::Scratch,
            tune_scoring: false,
            cold_threshold: 5,
            cold_id_scale: 1.0,
            content_weight: 0.0,
            content_recent: 5,
            content_pool: ContentPool::Max,
            cooccurrence_weight: 0.0,
            cooccurrence_recent: 5,
        }
    }
}

impl TrainConfig {
    /// Where the text embeddings are cached: `embedding_cache` if set, else
    /// `cache/text-embeddings/` under `root` — the pipeline's output root, so
    /// that `tailforge run`, `train` and `evaluate` share one cache.
    pub fn embedding_cache_under(&self, root: &crate::Location) -> Result<crate::Location> {
        match &self.embedding_cache {
            None => Ok(root.as_dir().join("cache/text-embeddings/")),
            Some(dir) => Ok(crate::Location::parse(dir)?.as_dir()),
        }
    }

    /// Checks ranges; errors name the `train.*` key and `source`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(source, format!("train.{key}"), msg));
        if self.hidden == 0 || self.hidden > 4096 {
            return bad("hidden", "must be between 1 and 4096");
        }
        if self.heads == 0 || !self.hidden.is_multiple_of(self.heads) {
            return bad("heads", "must be at least 1 and divide train.hidden");
        }
        if self.blocks == 0 || self.blocks > 64 {
            return bad("blocks", "must be between 1 and 64");
        }
        if self.maxlen < 2 || self.maxlen > 100_000 {
            return bad("maxlen", "must be between 2 and 100000");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", "must be in [0, 1)");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("lr", "must be a positive number");
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", "must be in [0, 1)");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad("weight_decay", "must be 0 or positive");
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.length_buckets == 0 || self.length_buckets > 1_000_000 {
            return bad("length_buckets", "must be at least 1 (1 = random batches)");
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1");
        }
        if self.eval_every == 0 {
            return bad("eval_every", "must be at least 1");
        }
        if self.patience == 0 {
            return bad("patience", "must be at least 1");
        }
        if self.negatives == 0 {
            return bad("negatives", "must be at least 1");
        }
        if self.threads > 1024 {
            return bad("threads", "must be at most 1024 (0 = all cores)");
        }
        if !(self.device == "cpu" || self.device == "cuda" || self.device.starts_with("cuda:")) {
            return bad("device", "must be \"cpu\", \"cuda\" or \"cuda:N\"");
        }
        if self.max_text_tokens < 8 || self.max_text_tokens > 512 {
            return bad("max_text_tokens", "must be between 8 and 512 (MiniLM's maximum)");
        }
        if self.encode_batch == 0 {
            return bad("encode_batch", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.substitute_rate) {
            return bad("substitute_rate", "must be in [0, 1]");
        }
        if self.top_k == 0 {
            return bad("top_k", "must be at least 1");
        }
        if self.variants.is_empty() {
            return bad("variants", "must name at least one of \"id\", \"text\", \"fused\", \"dual\"");
        }
        if !(self.cold_id_scale >= 0.0 && self.cold_id_scale.is_finite()) {
            return bad("cold_id_scale", "must be 0 or positive (1 = no routing)");
        }
        if !self.content_weight.is_finite() {
            return bad("content_weight", "must be a number (0 = off)");
        }
        if self.content_recent == 0 {
            return bad("content_recent", "must be at least 1");
        }
        if !self.cooccurrence_weight.is_finite() {
            return bad("cooccurrence_weight", "must be a number (0 = off)");
        }
        if self.cooccurrence_recent == 0 {
            return bad("cooccurrence_recent", "must be at least 1");
        }
        Ok(())
    }

    /// Whether training `variant` with these settings needs the items' text embeddings.
    pub fn needs_text(&self, variant: Variant) -> bool {
        variant.uses_text()
            || self.substitute_rate > 0.0
            || (self.id_init == IdInit::TextPca && variant != Variant::Text)
            || self.tune_scoring
            || self.content_weight != 0.0
    }

    /// CPU threads to use.
    pub fn threads(&self) -> usize {
        if self.threads > 0 { self.threads } else { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) }
    }
}
