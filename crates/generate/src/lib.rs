//! tailforge generate: a short description and keywords for each long-tail
//! item, written by a small local LLM (llama.cpp through `llama-cpp-2`).
//!
//! * The prompt comes from a template (`pipelines/prompts/describe.txt`) with
//!   the item's title and text attributes inserted as delimited, neutralized
//!   data, wrapped in the model's own chat template.
//! * Decoding is constrained by a GBNF grammar to the JSON contract
//!   `{"description": "...", "keywords": ["...", ...]}`; answers are then
//!   validated ([`contract::Validator`]); an invalid answer is retried with a
//!   new seed up to `max_retries` times, then recorded as a reject.
//! * One llama.cpp context decodes `parallel` sequences at once; finished
//!   sequences free their KV cells and the slot takes the next item.
//! * Output: `generated/part-NNNNN.parquet` every `shard_size` accepted
//!   items and `rejects/part-NNNNN.parquet`, each written atomically; a
//!   rerun skips the items already in either, so a killed run loses at most
//!   its unwritten shard and never duplicates.

pub mod config;
pub mod contract;
mod engine;
pub mod hash;
pub mod output;
pub mod prompt;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use tailforge_core::{Error, Location, Result};

pub use config::GenerateConfig;
pub use contract::{Answer, Reject};

use engine::{Event, WorkItem};
use output::{GeneratedRow, RejectRow};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateSummary {
    /// Input items considered (after `limit`).
    pub items: u64,
    /// Items skipped because an earlier run already wrote them (accepted or rejected).
    pub skipped: u64,
    /// Items accepted in this run.
    pub accepted: u64,
    /// Items rejected in this run, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Prompt tokens decoded (all attempts).
    pub prompt_tokens: u64,
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
}

impl GenerateSummary {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Loads the prompt template of `cfg` (the built-in one when unset).
pub fn load_template(cfg: &GenerateConfig) -> Result<prompt::PromptTemplate> {
    match &cfg.prompt {
        None => prompt::PromptTemplate::parse(prompt::BUILTIN_TEMPLATE, "builtin prompt"),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e))?;
            if text.len() > 64 * 1024 {
                return Err(Error::config(p.display().to_string(), "generate.prompt", "prompt template larger than 64 KiB"));
            }
            prompt::PromptTemplate::parse(&text, &p.display().to_string())
        }
    }
}

/// The hash of everything besides the model and the item that decides an answer.
fn params_hash(cfg: &GenerateConfig, template: &prompt::PromptTemplate) -> String {
    let canonical = serde_json::json!({
        "system": template.system,
        "user": template.user,
        "grammar": contract::GRAMMAR,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "max_retries": cfg.max_retries,
        "max_title_chars": cfg.max_title_chars,
        "n_ctx": cfg.n_ctx,
    });
    engine::hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// Generates descriptions for the items of `input_tail_items` (analyze's
/// `tail_items.parquet`) into `out` (`generated/`, `rejects/`,
/// `summary.json`, `_SUCCESS`). Resumes a previous run into the same `out`.
pub async fn generate(input_tail_items: &Location, out: &Location, cfg: &GenerateConfig) -> Result<GenerateSummary> {
    let started = Instant::now();
    cfg.validate()?;
    let template = load_template(cfg)?;
    let model_path = cfg.model.clone();
    let model_sha256 = tokio::task::spawn_blocking(move || engine::check_model(&model_path))
        .await
        .map_err(|e| Error::internal(format!("model check task: {e}")))??;
    let params_hash = params_hash(cfg, &template);

    let (kind, mut items) = output::read_items(input_tail_items).await?;
    if let Some(limit) = cfg.limit {
        items.truncate(limit);
    }
    let gen_dir = out.join(output::GENERATED_DIR);
    let rej_dir = out.join(output::REJECTS_DIR);
    out.join(tailforge_core::storage::SUCCESS_MARKER).delete_if_exists().await?;
    let (done_gen, mut next_gen) = output::existing_shards(&gen_dir).await?;
    let (done_rej, mut next_rej) = output::existing_shards(&rej_dir).await?;

    let mut summary = GenerateSummary {
        items: items.len() as u64,
        model_sha256: model_sha256.clone(),
        params_hash: params_hash.clone(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    let mut todo = Vec::new();
    for item in items {
        let key = item.id.key();
        if done_gen.contains(&key) || done_rej.contains(&key) {
            summary.skipped += 1;
            continue;
        }
        if !seen.insert(key.clone()) {
            tracing::warn!(item_id = key, "duplicate item_id in the input, generating once");
            continue;
        }
        todo.push(item);
    }
    let work: Vec<WorkItem> = todo
        .iter()
        .map(|it| {
            let key = it.id.key();
            let title = prompt::prepare_title(&key, it.title.as_deref(), cfg.max_title_chars);
            let attributes = prompt::prepare_attributes(&it.attributes);
            let (system, user) = template.render(&title, &attributes);
            WorkItem { key, system, user }
        })
        .collect();
    tracing::info!(items = summary.items, skipped = summary.skipped, todo = work.len(), parallel = cfg.parallel, "generate");

    let validator = contract::Validator::new(&template.instruction_text());
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let engine_cfg = cfg.clone();
    let engine = tokio::task::spawn_blocking(move || engine::run(&engine_cfg, &work, &validator, tx));

    let mut accepted: Vec<GeneratedRow> = Vec::new();
    let mut rejected: Vec<RejectRow> = Vec::new();
    let mut write_error = None;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Accepted { index, answer, seed, prompt_hash, prompt_tokens, generated_tokens, generation_ms } => {
                summary.accepted += 1;
                accepted.push(GeneratedRow {
                    id: todo[index].id.clone(),
                    description: answer.description,
                    keywords: answer.keywords,
                    prompt_hash,
                    seed,
                    prompt_tokens,
                    generated_tokens,
                    generation_ms,
                });
            }
            Event::Rejected { index, reason, attempts } => {
                *summary.rejected.entry(reason.as_str().to_string()).or_default() += 1;
                rejected.push(RejectRow { id: todo[index].id.clone(), reason: reason.as_str().to_string(), attempts });
            }
        }
        if accepted.len() >= cfg.shard_size {
            let batch = output::generated_batch(kind, &accepted, &model_sha256, &params_hash)?;
            if let Err(e) = output::write_shard(&gen_dir, next_gen, &batch).await {
                write_error = Some(e);
                break;
            }
            next_gen += 1;
            accepted.clear();
            // Rejects go out with each accepted shard, so a resumed run re-tries few.
            if !rejected.is_empty() {
                let batch = output::rejects_batch(kind, &rejected)?;
                if let Err(e) = output::write_shard(&rej_dir, next_rej, &batch).await {
                    write_error = Some(e);
                    break;
                }
                next_rej += 1;
                rejected.clear();
            }
        }
    }
    drop(rx);
    let stats = engine.await.map_err(|e| Error::internal(format!("generation task: {e}")))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let stats = stats?;
    if !accepted.is_empty() {
        output::write_shard(&gen_dir, next_gen, &output::generated_batch(kind, &accepted, &model_sha256, &params_hash)?).await?;
    }
    if !rejected.is_empty() {
        output::write_shard(&rej_dir, next_rej, &output::rejects_batch(kind, &rejected)?).await?;
    }

    let seconds = started.elapsed().as_secs_f64();
    summary.prompt_tokens = stats.prompt_tokens;
    summary.generated_tokens = stats.generated_tokens;
    summary.seconds = seconds;
    summary.decode_seconds = stats.decode_seconds;
    summary.sample_seconds = stats.sample_seconds;
    if seconds > 0.0 {
        summary.prompt_tokens_per_s = stats.prompt_tokens as f64 / seconds;
        summary.generated_tokens_per_s = stats.generated_tokens as f64 / seconds;
    }
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::internal(format!("summary: {e}")))?;
    out.join("summary.json").put(json).await?;
    out.join(tailforge_core::storage::SUCCESS_MARKER).put(Vec::<u8>::new()).await?;
    tracing::info!(
        accepted = summary.accepted,
        rejected = summary.rejected_total(),
        generated_tok_s = format!("{:.1}", summary.generated_tokens_per_s),
        seconds = format!("{seconds:.1}"),
        "generate done"
    );
    Ok(summary)
}
