//! Settings of the generate stage.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use tailforge_core::{Error, Result};

/// Settings of `tailforge generate`. Every field has a default, so a partial
/// TOML/JSON table deserializes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// GGUF model file (a local path).
    pub model: PathBuf,
    /// Prompt template file; `None` uses the built-in copy of
    /// `pipelines/prompts/describe.txt`.
    pub prompt: Option<PathBuf>,
    /// CPU threads for llama.cpp; 0 = all available cores.
    pub n_threads: u32,
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
    /// Run seed; each item's sampler is seeded from (seed, item_id, attempt).
    pub seed: u64,
    /// Retries (each with a new seed) after an invalid answer, before the item is rejected.
    pub max_retries: u32,
    /// Accepted items per output Parquet shard (also the most lost when a run is killed).
    pub shard_size: usize,
    /// Only the first `limit` input items (in input order) are considered.
    pub limit: Option<usize>,
    /// Longest title, in characters, put into a prompt; longer ones are cut with a warning.
    pub max_title_chars: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            model: PathBuf::from("models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            prompt: None,
            n_threads: 0,
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
        }
    }
}

impl GenerateConfig {
    /// Checks ranges; errors name the `generate.*` key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config("generate", format!("generate.{key}"), msg));
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
}
