//! The `[generate]` section: settings of the generate stage (llama.cpp).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings of `tailforge generate` and of the generate stage of `tailforge run`.
/// Every field has a default, so a partial table deserializes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// Whether `tailforge run` runs the generate stage.
    pub enabled: bool,
    /// GGUF model file (a local path, relative to the working directory).
    pub model: PathBuf,
    /// Prompt template file; `None` uses the built-in copy of
    /// `pipelines/prompts/describe.txt`.
    pub prompt: Option<PathBuf>,
    /// CPU threads for llama.cpp; 0 = all available cores.
    pub n_threads: u32,
    /// Model layers offloaded to the GPU. Unset: all layers in a build with
    /// the `cuda` feature, 0 otherwise.
    pub n_gpu_layers: Option<u32>,
    /// Context window (tokens) of each sequence: prompt + generated tokens.
    /// The KV cache holds `n_ctx * parallel` tokens.
    pub n_ctx: u32,
    /// Sequences decoded together in one batch (continuous batching).
    pub parallel: u32,
    /// Most tokens generated for one item (an answer cut off here is rejected as `truncated`).
    pub max_new_tokens: u32,
    /// Sampling temperature; 0 or less samples greedily.
    pub temperature: f32,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Run seed of generation; each item's sampler is seeded from (seed, item_id, attempt).
    pub seed: u64,
    /// Retries (each with a new seed) after an invalid answer, before the item is rejected.
    pub max_retries: u32,
    /// Accepted items per output Parquet shard (also the most lost when a run is killed).
    pub shard_size: usize,
    /// Only the first `limit` input items (in input order, i.e. tail rank) are considered.
    pub limit: Option<usize>,
    /// Longest title, in characters, put into a prompt; longer ones are cut with a warning.
    pub max_title_chars: usize,
    /// A description whose word-shingle Jaccard similarity to an accepted
    /// description (of this output, resumed and cached rows included) is at or
    /// above this is rejected as `near_duplicate`; 1.0 rejects only identical
    /// shingle sets.
    pub near_duplicate_threshold: f64,
    /// Words per shingle of the near-duplicate filter.
    pub near_duplicate_shingle: usize,
    /// Cross-run cache of accepted rows (local path or URL), keyed by a
    /// fingerprint of model, prompt template and sampling parameters. Unset:
    /// `<output>/cache/generate` when the pipeline has an `output`, else none.
    pub cache: Option<String>,
    /// Whether to read and fill the cache.
    pub use_cache: bool,
    /// Seconds between progress log lines when stderr is not a terminal.
    pub progress_interval_s: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            enabled: true,
            model: PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            prompt: None,
            n_threads: 0,
            n_gpu_layers: None,
            n_ctx: 2048,
            parallel: 8,
            max_new_tokens: 160,
            temperature: 0.7,
            top_p: 0.9,
            seed: 42,
            max_retries: 2,
            shard_size: 64,
            limit: None,
            max_title_chars: 512,
            near_duplicate_threshold: 0.8,
            near_duplicate_shingle: 3,
            cache: None,
            use_cache: true,
            progress_interval_s: 10,
        }
    }
}

impl GenerateConfig {
    /// Checks ranges; errors name the `generate.*` key and `source`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(source, format!("generate.{key}"), msg));
        if self.parallel == 0 || self.parallel > 256 {
            return bad("parallel", "must be between 1 and 256");
        }
        if self.n_ctx < 128 {
            return bad("n_ctx", "must be at least 128");
        }
        if self.max_new_tokens == 0 || self.max_new_tokens >= self.n_ctx {
            return bad("max_new_tokens", "must be at least 1 and below n_ctx");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be in (0, 1]");
        }
        if !self.temperature.is_finite() {
            return bad("temperature", "must be a finite number");
        }
        if self.shard_size == 0 {
            return bad("shard_size", "must be at least 1");
        }
        if self.max_title_chars == 0 {
            return bad("max_title_chars", "must be at least 1");
        }
        if self.n_threads > 1024 {
            return bad("n_threads", "must be at most 1024 (0 = all cores)");
        }
        if !(self.near_duplicate_threshold > 0.0 && self.near_duplicate_threshold <= 1.0) {
            return bad("near_duplicate_threshold", "must be in (0, 1]");
        }
        if self.near_duplicate_shingle == 0 || self.near_duplicate_shingle > 16 {
            return bad("near_duplicate_shingle", "must be between 1 and 16");
        }
        if self.progress_interval_s == 0 {
            return bad("progress_interval_s", "must be at least 1");
        }
        if self.cache.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return bad("cache", "is empty: set a location, or use_cache = false to turn the cache off");
        }
        Ok(())
    }

    /// Threads to give llama.cpp.
    pub fn threads(&self) -> i32 {
        if self.n_threads > 0 {
            self.n_threads as i32
        } else {
            std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(1)
        }
    }

    /// The cache location: `cache` if set, else `<output>/cache/generate` for
    /// a pipeline with an output root; `None` when the cache is off.
    pub fn cache_location(&self, output_root: Option<&str>) -> Option<String> {
        if !self.use_cache {
            return None;
        }
        match (&self.cache, output_root) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(root)) => Some(format!("{}/cache/generate", root.trim_end_matches('/'))),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_key() {
        GenerateConfig::default().validate("t").unwrap();
        let c = GenerateConfig { near_duplicate_threshold: 0.0, ..Default::default() };
        assert!(c.validate("t").unwrap_err().to_string().contains("generate.near_duplicate_threshold"));
        let c = GenerateConfig { max_new_tokens: 4096, ..Default::default() };
        assert!(c.validate("p.toml").unwrap_err().to_string().contains("generate.max_new_tokens"));
    }

    #[test]
    fn cache_location_defaults_under_the_output_root() {
        let c = GenerateConfig::default();
        assert_eq!(c.cache_location(Some("s3://b/out/")).as_deref(), Some("s3://b/out/cache/generate"));
        assert_eq!(c.cache_location(None), None);
        let c = GenerateConfig { cache: Some("/tmp/c".into()), ..Default::default() };
        assert_eq!(c.cache_location(Some("out")).as_deref(), Some("/tmp/c"));
        let c = GenerateConfig { use_cache: false, ..c };
        assert_eq!(c.cache_location(Some("out")), None);
    }
}
