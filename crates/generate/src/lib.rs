//! tailforge generate: a short description and keywords for each long-tail
//! item, written by a small local LLM (llama.cpp through `llama-cpp-2`).
//!
//! * The prompt comes from a template (`pipelines/prompts/describe.txt`) with
//!   the item's title, its text attributes (each cut to a token budget) and
//!   its co-interaction neighbours' titles inserted as delimited, neutralized
//!   data, wrapped in the model's own chat template.
//! * Grounding ([`grounding`]): with extractive keywords, each item's grammar
//!   allows only phrases of its own text and its neighbours' titles; every
//!   accepted row is scored by how much of it those sources support.
//! * Decoding is constrained by a GBNF grammar to the JSON contract
//!   `{"description": "...", "keywords": ["...", ...]}`; answers are then
//!   validated ([`contract::Validator`]); an invalid answer is retried with a
//!   new seed up to `max_retries` times, then recorded as a reject.
//! * One llama.cpp context decodes `parallel` sequences at once; finished
//!   sequences free their KV cells and the slot takes the next item.
//! * Quality filters ([`contract`], [`dedup`]): refusals and boilerplate,
//!   echoes of the prompt, near-duplicates of accepted descriptions; counts
//!   per filter go to `summary.json`.
//! * Output: `generated/part-NNNNN.parquet` every `shard_size` accepted
//!   items and `rejects/part-NNNNN.parquet`, each written atomically; a
//!   rerun skips the items already in either, so a killed run loses at most
//!   its unwritten shard and never duplicates.
//! * A cross-run [`cache`] keyed by a fingerprint of model, prompt template,
//!   sampling parameters and seed: a later run reuses the rows of items it
//!   saw before and generates only for new ones.
//! * Sharding across workers: with `shard = "K/N"` a worker takes the items
//!   whose stable hash of item_id is part K of N, into `<out>/shard-K-of-N/`
//!   with its own resume state; [`merge`] joins the N finished parts into
//!   one output. Workers sharing a cache fill it for each other.

pub mod cache;
pub mod config;
pub mod contract;
pub mod dedup;
mod engine;
pub mod grounding;
pub mod hash;
pub mod merge;
pub mod output;
pub mod progress;
pub mod prompt;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use tailforge_core::config::{KeywordMode, Priority};
use tailforge_core::schema::IdKind;
use tailforge_core::{Error, Location, Result};

pub use config::GenerateConfig;
pub use contract::{Answer, Reject};
pub use merge::merge;
pub use tailforge_core::records::{GenerateSummary, ProgressPoint};

use cache::Cache;
use engine::{Event, WorkItem};
use output::{GeneratedRow, RejectRow};

/// The sampling interval of [`GenerateSummary::progress`]: at most about 100 points.
pub fn progress_every(items: usize) -> usize {
    items.div_ceil(100).max(1)
}

/// Loads the prompt template of `cfg` (the built-in one when unset).
pub fn load_template(cfg: &GenerateConfig) -> Result<prompt::PromptTemplate> {
    match &cfg.prompt {
        None => prompt::PromptTemplate::parse(prompt::BUILTIN_TEMPLATE, "builtin prompt"),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p.display().to_string(), e))?;
            if text.len() > 64 * 1024 {
                return Err(Error::config(
                    p.display().to_string(),
                    "generate.prompt",
                    "prompt template larger than 64 KiB",
                ));
            }
            prompt::PromptTemplate::parse(&text, &p.display().to_string())
        }
    }
}

/// The hash of everything besides the model, the seed and the item that decides an answer.
fn params_hash(cfg: &GenerateConfig, template: &prompt::PromptTemplate) -> String {
    let canonical = serde_json::json!({
        "system": template.system,
        "user": template.user,
        "grammar": contract::GRAMMAR,
        "keywords": cfg.keywords,
        "max_attribute_tokens": cfg.max_attribute_tokens,
        "truncate": cfg.truncate,
        "min_grounding": cfg.min_grounding,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "repeat": [cfg.repeat_penalty as f64, cfg.repeat_last_n as f64],
        "max_new_tokens": cfg.answer_tokens(),
        "max_retries": cfg.max_retries,
        "max_title_chars": cfg.max_title_chars,
        "n_ctx": cfg.n_ctx,
        "near_duplicate": [cfg.near_duplicate_threshold, cfg.near_duplicate_shingle as f64],
    });
    engine::hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// One item's prompt, output grammar and grounding source.
struct Prepared {
    system: String,
    user: String,
    grammar: Arc<str>,
    source: grounding::Source,
    /// Extractive keywords were asked for, but the text gave too few phrases.
    free_keywords: bool,
}

/// Renders each item's prompt (attributes cut to their token budget by the
/// model's own tokenizer) and builds its grammar and grounding source.
fn prepare(
    cfg: &GenerateConfig,
    template: &prompt::PromptTemplate,
    items: Vec<output::Item>,
) -> Result<Vec<(output::Item, Prepared)>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let tokenizer = engine::Tokenizer::load(cfg)?;
    let count = |t: &str| tokenizer.count(t);
    let free: Arc<str> = Arc::from(contract::GRAMMAR);
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let key = item.id.key();
        let title = prompt::prepare_title(&key, item.title.as_deref(), cfg.max_title_chars);
        let (attributes, values) =
            prompt::prepare_attributes(&item.attributes, cfg.max_attribute_tokens, cfg.truncate, &count);
        let fields = prompt::Fields { title, attributes, neighbors: prompt::prepare_neighbors(&item.neighbors) };
        let (system, user) = template.render(&fields);
        let source = grounding::Source::new(
            item.title
                .iter()
                .map(String::as_str)
                .chain(item.attributes.iter().map(|(_, v)| v.as_str()))
                .chain(item.neighbors.iter().map(String::as_str)),
        );
        let (grammar, free_keywords) = match cfg.keywords {
            KeywordMode::Free => (free.clone(), false),
            KeywordMode::Extractive => {
                // What the model sees, most specific first: title, attributes, neighbours.
                let texts = std::iter::once(fields.title.as_str())
                    .chain(values.iter().map(String::as_str))
                    .chain(item.neighbors.iter().map(String::as_str));
                match contract::extractive_grammar(&grounding::phrases(texts)) {
                    Some(g) => (Arc::from(g), false),
                    None => {
                        tracing::debug!(item_id = key, "too few phrases for extractive keywords; free keywords");
                        (free.clone(), true)
                    }
                }
            }
        };
        out.push((item, Prepared { system, user, grammar, source, free_keywords }));
    }
    Ok(out)
}

/// Buffers rows and writes them as shards: accepted rows every `shard_size`
/// (with the rejects so far), new rows also into the cache.
struct Writer<'a> {
    kind: IdKind,
    gen_dir: Location,
    rej_dir: Location,
    next_gen: u32,
    next_rej: u32,
    /// Accepted rows not yet written; `Some(input_hash)` for rows generated now (to be cached).
    accepted: Vec<(GeneratedRow, Option<String>)>,
    rejected: Vec<(RejectRow, Option<String>)>,
    written_gen: u64,
    written_rej: u64,
    cache: Option<&'a Cache>,
    model_sha256: &'a str,
    params_hash: &'a str,
    shard_size: usize,
}

impl Writer<'_> {
    /// Writes a shard if `shard_size` accepted rows are waiting (or any rows, with `all`).
    async fn flush(&mut self, all: bool) -> Result<()> {
        if self.accepted.len() >= self.shard_size || (all && !self.accepted.is_empty()) {
            let rows: Vec<GeneratedRow> = self.accepted.iter().map(|(r, _)| r.clone()).collect();
            let batch = output::generated_batch(self.kind, &rows, self.model_sha256, self.params_hash)?;
            output::write_shard(&self.gen_dir, self.next_gen, &batch).await?;
            self.next_gen += 1;
            self.written_gen += rows.len() as u64;
            if let Some(cache) = self.cache {
                let new: Vec<(String, GeneratedRow)> =
                    self.accepted.iter().filter_map(|(r, h)| h.as_ref().map(|h| (h.clone(), r.clone()))).collect();
                if let Err(e) = cache.add(self.kind, &new, self.model_sha256, self.params_hash).await {
                    tracing::warn!(cache = cache.location().display(), error = %e, "could not add rows to the generate cache");
                }
            }
            self.accepted.clear();
            // Rejects go out with each accepted shard, so a resumed run re-tries few.
            self.write_rejects().await?;
        }
        if all {
            self.write_rejects().await?;
        }
        Ok(())
    }

    async fn write_rejects(&mut self) -> Result<()> {
        if !self.rejected.is_empty() {
            let rows: Vec<RejectRow> = self.rejected.iter().map(|(r, _)| r.clone()).collect();
            let batch = output::rejects_batch(self.kind, &rows)?;
            output::write_shard(&self.rej_dir, self.next_rej, &batch).await?;
            self.next_rej += 1;
            self.written_rej += rows.len() as u64;
            if let Some(cache) = self.cache {
                let new: Vec<(String, RejectRow)> =
                    self.rejected.iter().filter_map(|(r, h)| h.as_ref().map(|h| (h.clone(), r.clone()))).collect();
                if let Err(e) = cache.add_rejects(self.kind, &new).await {
                    tracing::warn!(cache = cache.location().display(), error = %e, "could not add rejects to the generate cache");
                }
            }
            self.rejected.clear();
        }
        Ok(())
    }
}

/// The file in an output directory naming the fingerprint its rows were generated with.
pub const FINGERPRINT_FILE: &str = "_FINGERPRINT";

/// What to do with an output directory that holds rows of another fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStale {
    /// Refuse with a usage error (ad hoc `tailforge generate`: the directory is the user's).
    Fail,
    /// Delete those rows and start over (`tailforge run`'s own stage directory).
    Replace,
}

/// Generates descriptions for the items of `input_tail_items` (analyze's
/// `tail_items.parquet`) into `out` (`generated/`, `rejects/`,
/// `summary.json`, `_SUCCESS`). Resumes a previous run into the same `out`;
/// with `cfg.use_cache` and `cfg.cache` set, reuses and fills that cache.
pub async fn generate(input_tail_items: &Location, out: &Location, cfg: &GenerateConfig) -> Result<GenerateSummary> {
    generate_with(input_tail_items, out, cfg, OnStale::Fail).await
}

/// Deletes every object below `dir`.
async fn delete_all(dir: &Location) -> Result<()> {
    let dir = dir.as_dir();
    for (name, loc) in output::parquet_files(&dir).await? {
        tracing::debug!(file = name, "deleting a stale shard");
        loc.delete_if_exists().await?;
    }
    Ok(())
}

/// [`generate`], choosing what happens to rows of another fingerprint in `out`.
pub async fn generate_with(
    input_tail_items: &Location,
    out: &Location,
    cfg: &GenerateConfig,
    on_stale: OnStale,
) -> Result<GenerateSummary> {
    let started = Instant::now();
    cfg.validate("generate")?;
    let template = load_template(cfg)?;
    let model_path = cfg.model.clone();
    let model_sha256 = tokio::task::spawn_blocking(move || engine::check_model(&model_path))
        .await
        .map_err(|e| Error::internal(format!("model check task: {e}")))??;
    let params_hash = params_hash(cfg, &template);
    let fingerprint = cache::fingerprint(&model_sha256, &params_hash, cfg.seed);

    let (kind, items, out) = select_items(input_tail_items, out, cfg).await?;
    let gen_dir = out.join(output::GENERATED_DIR);
    let rej_dir = out.join(output::REJECTS_DIR);
    out.join(tailforge_core::storage::SUCCESS_MARKER).delete_if_exists().await?;
    check_fingerprint(&out, &fingerprint, on_stale).await?;
    let done_gen = output::existing_shards(&gen_dir).await?;
    let done_rej = output::existing_shards(&rej_dir).await?;
    let cache = match (cfg.use_cache, &cfg.cache) {
        (true, Some(root)) => Some(Cache::open(&Location::parse(root)?, &fingerprint).await?),
        _ => None,
    };

    let mut summary = GenerateSummary {
        items: items.len() as u64,
        shard: cfg.shard,
        model_sha256: model_sha256.clone(),
        params_hash: params_hash.clone(),
        fingerprint: fingerprint.clone(),
        cache: cache.as_ref().map(|c| c.location().display()),
        ..Default::default()
    };
    // Accepted descriptions of this output so far: the near-duplicate filter's reference.
    let mut dups = dedup::NearDuplicates::new(cfg.near_duplicate_shingle, cfg.near_duplicate_threshold);
    for d in &done_gen.descriptions {
        dups.insert(d);
    }
    let mut writer = Writer {
        kind,
        gen_dir,
        rej_dir,
        next_gen: done_gen.next,
        next_rej: done_rej.next,
        accepted: Vec::new(),
        rejected: Vec::new(),
        written_gen: 0,
        written_rej: 0,
        cache: cache.as_ref(),
        model_sha256: &model_sha256,
        params_hash: &params_hash,
        shard_size: cfg.shard_size,
    };
    let pending = not_done(items, &done_gen, &done_rej, &mut summary);
    let mut plan = plan(pending, cfg, &template, cache.as_ref(), &mut summary, &mut dups, &mut writer).await?;
    tracing::info!(
        items = summary.items,
        skipped = summary.skipped,
        reused_from_cache = summary.reused_from_cache,
        todo = plan.work.len(),
        parallel = cfg.parallel,
        "generate"
    );

    let validator = contract::Validator::new(&template.instruction_text());
    let live = Arc::new(progress::Live::default());
    let progress = progress::Progress::new(plan.work.len() as u64, cfg.progress_interval_s, live.clone());
    let (tx, rx) = mpsc::channel::<Event>(1024);
    let (engine_cfg, engine_live, work) = (cfg.clone(), live.clone(), std::mem::take(&mut plan.work));
    let head = engine::TemplateHead {
        system: template.system.clone(),
        user: template.user.split('{').next().unwrap_or_default().to_string(),
    };
    let work_len = work.len();
    let engine = tokio::task::spawn_blocking(move || {
        let mut dups = dups;
        engine::run(&engine_cfg, &work, &head, &validator, &mut dups, &engine_live, tx)
    });
    let clock = Clock { started, live: &live };
    let write_error = collect(rx, &mut plan, work_len, &mut writer, &mut summary, progress, &clock).await.err();
    let stats = engine.await.map_err(|e| Error::internal(format!("generation task: {e}")))?;
    if let Some(e) = write_error {
        return Err(e);
    }
    let stats = stats?;
    writer.flush(true).await?;

    let seconds = started.elapsed().as_secs_f64();
    summary.generated_rows = done_gen.keys.len() as u64 + writer.written_gen;
    summary.rejected_rows = done_rej.keys.len() as u64 + writer.written_rej;
    summary.filtered_attempts = stats.attempt_rejects.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    summary.prompt_tokens = stats.prompt_tokens;
    summary.shared_prefix_tokens = stats.shared_prefix_tokens;
    summary.generated_tokens = stats.generated_tokens;
    summary.seconds = seconds;
    summary.grounding = grounding::summarize(&plan.scored);
    summary.decode_seconds = stats.decode_seconds;
    summary.sample_seconds = stats.sample_seconds;
    if seconds > 0.0 {
        summary.prompt_tokens_per_s = stats.prompt_tokens as f64 / seconds;
        summary.generated_tokens_per_s = stats.generated_tokens as f64 / seconds;
    }
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::internal(format!("summary: {e}")))?;
    out.join(tailforge_core::schema::generate_outputs::SUMMARY).put(json).await?;
    out.join(tailforge_core::storage::SUCCESS_MARKER).put(Vec::<u8>::new()).await?;
    tracing::info!(
        items = summary.items,
        accepted = summary.accepted,
        reused_from_cache = summary.reused_from_cache,
        rejected = summary.rejected_total(),
        prompt_tok_s = format!("{:.1}", summary.prompt_tokens_per_s),
        generated_tok_s = format!("{:.1}", summary.generated_tokens_per_s),
        seconds = format!("{seconds:.1}"),
        keywords_grounded = format!("{:.3}", summary.grounding.keywords_grounded),
        "generate done"
    );
    Ok(summary)
}

/// The items this run is asked for, in generation order (`priority`, then
/// `limit`), and the directory it writes: with `shard`, this worker's part
/// of them in its own directory under `out`.
async fn select_items(
    input: &Location,
    out: &Location,
    cfg: &GenerateConfig,
) -> Result<(IdKind, Vec<output::Item>, Location)> {
    let (kind, mut items) = output::read_items(input).await?;
    if cfg.priority == Priority::LeastText {
        // Stable: equal amounts of text keep analyze's rank order.
        items.sort_by_key(output::Item::attribute_chars);
    }
    if let Some(limit) = cfg.limit {
        items.truncate(limit);
    }
    let out = match cfg.shard {
        Some(shard) => {
            items.retain(|item| shard.holds(&item.id.key()));
            out.as_dir().join(&shard.dir_name()).as_dir()
        }
        None => out.as_dir(),
    };
    Ok((kind, items, out))
}

/// Resumes only rows generated the same way: when `out` holds rows of
/// another model, prompt, sampling or seed, fails or deletes them
/// (`on_stale`); then records `fingerprint` as the output's.
async fn check_fingerprint(out: &Location, fingerprint: &str, on_stale: OnStale) -> Result<()> {
    let fp_loc = out.join(FINGERPRINT_FILE);
    if fp_loc.exists().await? {
        let before = fp_loc.get().await?;
        let before = String::from_utf8_lossy(&before).trim().to_string();
        if before != fingerprint {
            match on_stale {
                OnStale::Fail => {
                    return Err(Error::usage(format!(
                        "{}: holds rows generated with another model, prompt template, sampling parameters or seed \
                         (fingerprint {before:.12}…, now {fingerprint:.12}…): use another output location, or delete it to start over",
                        out.display()
                    )));
                }
                OnStale::Replace => {
                    tracing::warn!(
                        out = out.display(),
                        "generation settings changed: deleting the rows of the earlier settings"
                    );
                    delete_all(&out.join(output::GENERATED_DIR)).await?;
                    delete_all(&out.join(output::REJECTS_DIR)).await?;
                }
            }
        }
    }
    fp_loc.put(fingerprint.to_string().into_bytes()).await
}

/// The items without a row in the output yet (counted as skipped), each once.
fn not_done(
    items: Vec<output::Item>,
    done_gen: &output::Existing,
    done_rej: &output::Existing,
    summary: &mut GenerateSummary,
) -> Vec<output::Item> {
    let mut seen = HashSet::new();
    let mut pending = Vec::new();
    for item in items {
        let key = item.id.key();
        if done_gen.keys.contains(&key) || done_rej.keys.contains(&key) {
            summary.skipped += 1;
            continue;
        }
        if !seen.insert(key.clone()) {
            tracing::warn!(item_id = key, "duplicate item_id in the input, generating once");
            continue;
        }
        pending.push(item);
    }
    pending
}

/// What is left for the engine once the cache has answered.
struct Plan {
    /// By engine index: the item and its prompt's input hash (the cache key).
    todo: Vec<(output::Item, String)>,
    work: Vec<WorkItem>,
    /// (keywords, grounding) of every accepted row of this run, for the summary.
    scored: Vec<(usize, grounding::Grounding)>,
}

/// Renders the prompts of `pending`, takes the cache's rows and rejects for
/// the prompts it has seen (written at once), and leaves the rest as work.
async fn plan(
    pending: Vec<output::Item>,
    cfg: &GenerateConfig,
    template: &prompt::PromptTemplate,
    cache: Option<&Cache>,
    summary: &mut GenerateSummary,
    dups: &mut dedup::NearDuplicates,
    writer: &mut Writer<'_>,
) -> Result<Plan> {
    let prepared = {
        let (cfg, template) = (cfg.clone(), template.clone());
        tokio::task::spawn_blocking(move || prepare(&cfg, &template, pending))
            .await
            .map_err(|e| Error::internal(format!("prompt task: {e}")))??
    };
    let mut plan = Plan { todo: Vec::new(), work: Vec::new(), scored: Vec::new() };
    for (item, p) in prepared {
        let key = item.id.key();
        summary.free_keyword_items += u64::from(p.free_keywords);
        let (system, user) = (p.system, p.user);
        let input_hash = cache::input_hash(&system, &user);
        if let Some(row) = cache.and_then(|c| c.get(&key, &input_hash)) {
            summary.reused_from_cache += 1;
            plan.scored.push((row.keywords.len(), row.grounding));
            dups.insert(&row.description);
            writer.accepted.push((GeneratedRow { id: item.id.clone(), ..row.clone() }, None));
            writer.flush(false).await?;
            continue;
        }
        if let Some((reason, attempts)) = cache.and_then(|c| c.get_reject(&key, &input_hash)) {
            summary.reused_from_cache += 1;
            let row = RejectRow { id: item.id.clone(), reason: reason.to_string(), attempts };
            writer.rejected.push((row, None));
            continue;
        }
        plan.todo.push((item, input_hash));
        plan.work.push(WorkItem { key, system, user, grammar: p.grammar, source: p.source });
    }
    Ok(plan)
}

/// When the generation started and its live token count: what a
/// [`ProgressPoint`] samples.
struct Clock<'a> {
    started: Instant,
    live: &'a progress::Live,
}

impl Clock<'_> {
    fn sample(&self, items_done: usize) -> ProgressPoint {
        ProgressPoint {
            seconds: self.started.elapsed().as_secs_f64(),
            items_done: items_done as u64,
            generated_tokens: self.live.generated_tokens.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Takes the engine's verdicts as they come: rows to the writer (which
/// writes a shard when one is full), counts and progress points to the
/// summary, the progress line on its timer. Stops at the first write error
/// (dropping the receiver stops the engine).
async fn collect(
    mut rx: mpsc::Receiver<Event>,
    plan: &mut Plan,
    total: usize,
    writer: &mut Writer<'_>,
    summary: &mut GenerateSummary,
    mut progress: progress::Progress,
    clock: &Clock<'_>,
) -> Result<()> {
    let every = progress_every(total);
    let mut items_done = 0usize;
    summary.progress.push(clock.sample(0));
    let mut ticker = tokio::time::interval(progress.tick_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = ticker.tick() => {
                progress.tick();
                continue;
            }
        };
        let Some(ev) = ev else { break Ok(()) };
        match ev {
            Event::Accepted {
                index,
                answer,
                seed,
                prompt_hash,
                prompt_tokens,
                generated_tokens,
                generation_ms,
                grounding,
            } => {
                summary.accepted += 1;
                plan.scored.push((answer.keywords.len(), grounding));
                progress.item(true);
                let (item, input_hash) = &plan.todo[index];
                let row = GeneratedRow {
                    id: item.id.clone(),
                    description: answer.description,
                    keywords: answer.keywords,
                    prompt_hash,
                    seed,
                    prompt_tokens,
                    generated_tokens,
                    generation_ms,
                    grounding,
                };
                writer.accepted.push((row, Some(input_hash.clone())));
            }
            Event::Rejected { index, reason, attempts } => {
                progress.item(false);
                *summary.rejected.entry(reason.as_str().to_string()).or_default() += 1;
                let (item, input_hash) = &plan.todo[index];
                let row = RejectRow { id: item.id.clone(), reason: reason.as_str().to_string(), attempts };
                writer.rejected.push((row, Some(input_hash.clone())));
            }
        }
        items_done += 1;
        if items_done.is_multiple_of(every) || items_done == total {
            summary.progress.push(clock.sample(items_done));
        }
        if let Err(e) = writer.flush(false).await {
            break Err(e);
        }
    };
    drop(rx);
    progress.finish();
    result
}
