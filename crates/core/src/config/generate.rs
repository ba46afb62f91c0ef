//! The `[generate]` section: settings of the generate stage (llama.cpp).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Settings of `tailforge generate` and of the generate stage of `tailforge run`: llama.cpp writes
/// a description and keywords for each tail item (see `crates/generate/README.md`).
/// `tailforge generate --pipeline P` reads `<output>/analyze/tail_items.parquet` and writes
/// `<output>/generate/`; `tailforge run` reads and writes them under `runs/<run_id>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerateConfig {
    /// Whether `tailforge run` runs the generate stage.
    pub enabled: bool,
    /// GGUF model file (local path, relative to the working directory); installed and checked by
    /// `make setup`.
    pub model: PathBuf,
    /// Prompt template file with `### system` / `### user` sections and `{title}`, `{attributes}`
    /// placeholders; unset = the built-in copy of `pipelines/prompts/describe.txt`.
    ///
    /// Default: built-in
    pub prompt: Option<PathBuf>,
    /// llama.cpp CPU threads; 0 = all cores. On a machine shared with other work use fewer threads
    /// than cores: llama.cpp's threads wait for each other by spinning.
    pub n_threads: u32,
    /// Model layers offloaded to the GPU (needs a build with `--features cuda`).
    ///
    /// Default: all with `cuda`, else 0
    pub n_gpu_layers: Option<u32>,
    /// Context window of one sequence (prompt + answer), tokens; the KV cache holds
    /// `n_ctx × parallel`.
    pub n_ctx: u32,
    /// Sequences decoded together in one batch (continuous batching).
    pub parallel: u32,
    /// Most tokens of one answer; a longer one is rejected as `truncated`. Unset, it follows from
    /// the output grammar's bounds: the longest answer the grammar allows, at one token per
    /// character (877: a 400-character description and 10 keywords of 40), so a grammar-valid
    /// answer is never cut off — unless a character is split into byte tokens (some non-Latin
    /// scripts). Prompts must leave this much of `n_ctx` free.
    ///
    /// Default: the grammar's bound (877)
    pub max_new_tokens: Option<u32>,
    /// Sampling temperature; 0 or less = greedy.
    pub temperature: f32,
    /// Nucleus sampling threshold.
    pub top_p: f32,
    /// Penalty on tokens among the last `repeat_last_n` generated (llama.cpp's repeat penalty;
    /// `1.0` = off). Without it SmolLM2-135M loops ("a 12-inch wheel, a 12-inch wheel, …") until
    /// `max_new_tokens` cuts it off, on 1 in 2 Amazon items (BENCHMARKS.md).
    pub repeat_penalty: f32,
    /// Window of the repeat penalty, in tokens.
    pub repeat_last_n: u32,
    /// Decode the prompt tokens that every item's prompt starts with (the system message and the
    /// template's text before the first placeholder) once per run, and start each attempt from a
    /// copy of their KV cache (`llama_memory_seq_cp`) instead of decoding them again. The prompt
    /// tokens decoded and the shared prefix are in `summary.json` (`prompt_tokens`,
    /// `shared_prefix_tokens`). Put a custom template's item-specific part last to share more.
    pub share_prefix: bool,
    /// Generation seed; each item's sampler seed derives from (seed, item_id, attempt), so a seed
    /// gives identical rows.
    pub seed: u64,
    /// Retries with a new seed after an invalid or filtered answer, before the item goes to
    /// `rejects/`.
    pub max_retries: u32,
    /// Accepted rows per output Parquet shard; a killed run loses at most the unwritten shard.
    pub shard_size: usize,
    /// Only the first `limit` tail items, in the order `priority` gives (by default tail rank).
    /// `--set generate.limit=16` for a quick run.
    pub limit: Option<usize>,
    /// This worker's part of a sharded generation, `"K/N"` (K from 0 to N−1; `--shard K/N`, e.g. a
    /// Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`): only the items (of those `limit` keeps)
    /// whose SHA-256 of item_id, modulo N, is K, written under `<out>/shard-K-of-N/` with its own
    /// resume state. `tailforge generate --merge` joins the N parts; `tailforge run` refuses it
    /// (its generate stage reuses the workers' rows from the shared cache). See docs/scaling.md.
    pub shard: Option<Shard>,
    /// Longest title, in characters, put into a prompt; longer ones are cut with a warning.
    pub max_title_chars: usize,
    /// Token budget (the model's own tokenizer) of each catalog attribute value in the prompt; a
    /// long marketing description is cut to it by `truncate`.
    pub max_attribute_tokens: usize,
    /// How a value over its budget is cut: `sentences` keeps whole sentences from the start (the
    /// first one cut at a word if it alone is too long), `head` keeps the first words. A cut value
    /// ends in ` …`.
    pub truncate: TruncateRule,
    /// `extractive`: each item's grammar allows only keyword phrases (1–3 words) taken from its own
    /// text and its neighbours' titles, so keywords are grounded by construction; an item whose
    /// text gives fewer than 3 phrases falls back to free keywords (counted in `summary.json`
    /// `free_keyword_items`). `free`: any short string.
    pub keywords: KeywordMode,
    /// Answers whose keyword grounding (share of keywords found in the item's text or its
    /// neighbours' titles) is below this are retried, then rejected as `ungrounded`; `0` = off.
    pub min_grounding: f64,
    /// Which tail items a `limit` keeps: `rank` (most popular tail items first) or `least_text`
    /// (the items with the least catalog text besides the title first: where generated text has the
    /// most to add).
    pub priority: Priority,
    /// Word-shingle Jaccard similarity to an already accepted description (this output's, resumed
    /// and cached rows included) at or above which an answer is rejected as `near_duplicate`; 1.0
    /// rejects only identical shingle sets.
    pub near_duplicate_threshold: f64,
    /// Words per shingle for the near-duplicate filter.
    pub near_duplicate_shingle: usize,
    /// Cross-run cache of accepted rows (path or URL), one directory per fingerprint (model sha256,
    /// prompt template, sampling parameters, seed). A later run, e.g. the next night into another
    /// run directory, reuses the rows of unchanged items and generates only new ones. Without a
    /// pipeline `output` (ad hoc `--out`), no cache unless set.
    ///
    /// Default: `<output>/cache/generate`
    pub cache: Option<String>,
    /// Read and fill the cache; `false` turns it off.
    pub use_cache: bool,
    /// Seconds between progress log lines when stderr is not a terminal (on a terminal a progress
    /// bar is drawn).
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
            max_new_tokens: None,
            temperature: 0.7,
            top_p: 0.9,
            repeat_penalty: 1.15,
            repeat_last_n: 64,
            share_prefix: true,
            seed: 42,
            max_retries: 2,
            shard_size: 64,
            limit: None,
            shard: None,
            max_title_chars: 512,
            max_attribute_tokens: 128,
            truncate: TruncateRule::Sentences,
            keywords: KeywordMode::Extractive,
            min_grounding: 0.0,
            priority: Priority::Rank,
            near_duplicate_threshold: 0.8,
            near_duplicate_shingle: 3,
            cache: None,
            use_cache: true,
            progress_interval_s: 10,
        }
    }
}

/// How a catalog value over its token budget is cut ([`GenerateConfig::truncate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TruncateRule {
    #[default]
    Sentences,
    Head,
}

/// What the grammar allows as keywords ([`GenerateConfig::keywords`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeywordMode {
    #[default]
    Extractive,
    Free,
}

/// Which tail items a `limit` keeps ([`GenerateConfig::priority`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Rank,
    LeastText,
}

/// One worker's part of a sharded generation ([`GenerateConfig::shard`]):
/// written and read as "K/N", part `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Most workers one generation can be split across.
    pub const MAX_COUNT: u32 = 100_000;

    /// The part (0..count) an item belongs to: the first 8 bytes of the
    /// SHA-256 of its id's text, modulo `count`. Stable across runs,
    /// machines and versions, so a rerun gives every worker the same items.
    pub fn part_of(item_key: &str, count: u32) -> u32 {
        let digest = Sha256::digest(item_key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first) % u64::from(count.max(1))) as u32
    }

    /// Whether the item with id text `item_key` is this worker's.
    pub fn holds(&self, item_key: &str) -> bool {
        Shard::part_of(item_key, self.count) == self.index
    }

    /// The directory (below a generate output) this shard writes to.
    pub fn dir_name(&self) -> String {
        format!("shard-{}-of-{}", self.index, self.count)
    }

    /// The shard a `shard-K-of-N` directory name belongs to.
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (k, n) = name.strip_prefix("shard-")?.split_once("-of-")?;
        format!("{k}/{n}").parse().ok().filter(|s: &Shard| s.dir_name() == name)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Shard, String> {
        let usage = || format!("{text:?} is not a shard: write K/N, part K (0 to N-1) of N workers, e.g. 0/4");
        let (k, n) = text.trim().split_once('/').ok_or_else(usage)?;
        let index: u32 = k.trim().parse().map_err(|_| usage())?;
        let count: u32 = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || count > Shard::MAX_COUNT {
            return Err(format!("{text:?}: the worker count N must be between 1 and {}", Shard::MAX_COUNT));
        }
        if index >= count {
            return Err(format!("{text:?}: the part K counts from 0, so it must be below N = {count}"));
        }
        Ok(Shard { index, count })
    }
}

impl TryFrom<String> for Shard {
    type Error = String;

    fn try_from(text: String) -> std::result::Result<Shard, String> {
        text.parse()
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The longest answer the output grammar allows, in characters (`crates/generate/src/contract.rs`
/// checks it against the grammar): the default `max_new_tokens`, at one token per character.
pub const GRAMMAR_ANSWER_TOKENS: u32 = 877;

impl GenerateConfig {
    /// Most tokens of one answer: `max_new_tokens`, else the grammar's bound.
    pub fn answer_tokens(&self) -> u32 {
        self.max_new_tokens.unwrap_or(GRAMMAR_ANSWER_TOKENS)
    }

    /// Checks ranges; errors name the `generate.*` key and `source`.
    pub fn validate(&self, source: &str) -> Result<()> {
        let bad = |key: &str, msg: &str| Err(Error::config(source, format!("generate.{key}"), msg));
        if self.parallel == 0 || self.parallel > 256 {
            return bad("parallel", "must be between 1 and 256");
        }
        if self.n_ctx < 128 {
            return bad("n_ctx", "must be at least 128");
        }
        if self.max_new_tokens == Some(0) || self.answer_tokens() >= self.n_ctx {
            return bad(
                "max_new_tokens",
                &format!(
                    "must be at least 1 and below n_ctx (unset, it is the output grammar's bound of \
                     {GRAMMAR_ANSWER_TOKENS} tokens: raise n_ctx or set it lower)"
                ),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "must be in (0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && (1.0..=2.0).contains(&self.repeat_penalty)) {
            return bad("repeat_penalty", "must be between 1.0 (off) and 2.0");
        }
        if self.repeat_last_n > 4096 {
            return bad("repeat_last_n", "must be at most 4096");
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
        if !(8..=4096).contains(&self.max_attribute_tokens) {
            return bad("max_attribute_tokens", "must be between 8 and 4096");
        }
        if !(0.0..=1.0).contains(&self.min_grounding) {
            return bad("min_grounding", "must be in [0, 1] (0 = off)");
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
        // `--seed` and `--limit` bypass TOML, whose integers are signed 64-bit:
        // a larger value would print as a config (`--print-config`, the run
        // manifest) that does not parse back.
        if self.seed > i64::MAX as u64 {
            return bad("seed", "must be at most 9223372036854775807 (a TOML integer)");
        }
        if self.limit.is_some_and(|l| l as u64 > i64::MAX as u64) {
            return bad("limit", "must be at most 9223372036854775807 (a TOML integer)");
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
        let c = GenerateConfig { max_new_tokens: Some(4096), ..Default::default() };
        assert!(c.validate("p.toml").unwrap_err().to_string().contains("generate.max_new_tokens"));
    }

    /// Regression (prop_config::print_config_round_trips): `tailforge generate
    /// --seed 9223372036854775808 --print-config` printed `seed = 9223372036854775808`,
    /// which TOML cannot parse back.
    #[test]
    fn seed_and_limit_beyond_toml_integers_are_rejected() {
        let c = GenerateConfig { seed: i64::MAX as u64 + 1, ..Default::default() };
        assert!(c.validate("command line").unwrap_err().to_string().contains("generate.seed"));
        let c = GenerateConfig { seed: i64::MAX as u64, limit: Some(i64::MAX as usize), ..Default::default() };
        c.validate("command line").unwrap();
        let c = GenerateConfig { limit: Some(usize::MAX), ..Default::default() };
        assert!(c.validate("command line").unwrap_err().to_string().contains("generate.limit"));
    }

    #[test]
    fn shards_parse_partition_every_item_once_and_round_trip() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!((s.index, s.count), (2, 3));
        assert_eq!(s.to_string(), "2/3");
        assert_eq!(Shard::from_dir_name(&s.dir_name()), Some(s));
        for bad in ["3/3", "1/0", "x/2", "1", "-1/2", "1/100001"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad} parsed");
        }
        assert_eq!(Shard::from_dir_name("shard-03-of-4"), None, "not the name a shard writes");
        // Every item lands in exactly one of N parts, and the parts are not lopsided.
        let shards: Vec<Shard> = (0..4).map(|k| Shard { index: k, count: 4 }).collect();
        let mut sizes = [0usize; 4];
        for id in 0..4000 {
            let key = id.to_string();
            let holders: Vec<&Shard> = shards.iter().filter(|s| s.holds(&key)).collect();
            assert_eq!(holders.len(), 1, "item {key}");
            sizes[holders[0].index as usize] += 1;
        }
        assert!(sizes.iter().all(|&n| (850..1150).contains(&n)), "{sizes:?}");
        // The part is a fixed function of the id: SHA-256("7") starts 7902699be42c8a8e.
        assert_eq!(Shard::part_of("7", 1000), (0x7902699be42c8a8e_u64 % 1000) as u32);
        // In TOML, "K/N" strings.
        let c: GenerateConfig = toml::from_str("shard = \"1/4\"").unwrap();
        assert_eq!(c.shard, Some(Shard { index: 1, count: 4 }));
        assert!(toml::from_str::<GenerateConfig>("shard = \"4/4\"").unwrap_err().to_string().contains("below N"));
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
