//! The llama.cpp side: one model, one context with `parallel` sequences,
//! continuous batching. Runs on a blocking thread and reports each finished
//! item through a channel.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use tailforge_core::hash::sha256_hex;
use tailforge_core::{Error, Result};

/// Core's hex helper, under the name the crate root already uses.
pub(crate) use tailforge_core::hash::hex;

use crate::config::{GenerateConfig, gpu_layers};
use crate::contract::{Answer, Reject, Validator};
use crate::dedup::NearDuplicates;
use crate::grounding::{Grounding, Source};
use crate::hash::item_seed;
use crate::progress::Live;
use crate::prompt::plain_chat;

/// One item to generate for: its key (the item id as text), its two
/// rendered chat messages, the output grammar (per item when keywords are
/// extractive) and what its answer's grounding is scored against.
pub(crate) struct WorkItem {
    pub key: String,
    pub system: String,
    pub user: String,
    pub grammar: Arc<str>,
    pub source: Source,
}

/// What the engine reports per item, in completion order.
pub(crate) enum Event {
    Accepted {
        index: usize,
        answer: Answer,
        seed: u32,
        prompt_hash: String,
        prompt_tokens: u32,
        generated_tokens: u32,
        generation_ms: u64,
        grounding: Grounding,
    },
    Rejected {
        index: usize,
        reason: Reject,
        attempts: u32,
    },
}

/// Token counts of a run (all attempts, accepted or not).
#[derive(Debug, Default, Clone)]
pub(crate) struct EngineStats {
    /// Prompt tokens decoded (the shared prefix once).
    pub prompt_tokens: u64,
    /// Tokens at the start of every prompt, decoded once and copied into each sequence.
    pub shared_prefix_tokens: u64,
    pub generated_tokens: u64,
    /// Seconds in `llama_decode`.
    pub decode_seconds: f64,
    /// Seconds in sampling (grammar included).
    pub sample_seconds: f64,
    /// Failed attempts by filter (reason), retried ones included.
    pub attempt_rejects: BTreeMap<&'static str, u64>,
}

fn model_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::config("generate", "generate.model", format!("{}: {message}", path.display()))
}

/// What to do about a model file that is not GGUF or is cut short.
const NOT_GGUF_HINT: &str =
    "point --model or generate.model at a complete .gguf file (`make setup` installs and checks the default one)";

/// Checks that `path` is a readable GGUF file and returns its SHA-256 (hex).
pub(crate) fn check_model(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (run `make setup` to download the default model)"
        } else {
            ""
        };
        model_error(path, format!("cannot open model file: {e}{hint}"))
    })?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|_| model_error(path, format!("not a GGUF model file (too short); {NOT_GGUF_HINT}")))?;
    if &magic != b"GGUF" {
        return Err(model_error(path, format!("not a GGUF model file (bad magic bytes); {NOT_GGUF_HINT}")));
    }
    let mut h = Sha256::new();
    h.update(magic);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path.display().to_string(), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The process-wide llama.cpp backend (it may be initialized only once).
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("cannot initialize llama.cpp: {e}")))
}

/// The model's tokenizer alone (a vocab-only load: cheap even for a large
/// GGUF), to cut catalog text to its token budget before prompts are rendered.
pub(crate) struct Tokenizer {
    model: LlamaModel,
}

impl Tokenizer {
    pub(crate) fn load(cfg: &GenerateConfig) -> Result<Tokenizer> {
        let params = LlamaModelParams::default().with_vocab_only(true);
        let model = LlamaModel::load_from_file(backend()?, &cfg.model, &params).map_err(|e| {
            model_error(
                &cfg.model,
                format!(
                    "llama.cpp cannot load this model's vocabulary ({e}); is the file a complete GGUF? {NOT_GGUF_HINT}"
                ),
            )
        })?;
        Ok(Tokenizer { model })
    }

    /// Tokens of `text` without special tokens.
    pub(crate) fn count(&self, text: &str) -> usize {
        self.model.vocab().tokenize(text.as_bytes(), false, false).len()
    }
}

/// Turns the two messages into the model's prompt: its own chat template,
/// or [`plain_chat`] when the GGUF has none (or llama.cpp cannot apply it).
fn chat_prompt(model: &LlamaModel, template: Option<&LlamaChatTemplate>, system: &str, user: &str) -> String {
    if let Some(t) = template {
        let mut msgs = Vec::with_capacity(2);
        if !system.is_empty() {
            msgs.extend(LlamaChatMessage::new("system".into(), system.into()).ok());
        }
        if let Ok(m) = LlamaChatMessage::new("user".into(), user.into()) {
            msgs.push(m);
            if let Ok(s) = model.apply_chat_template(t, &msgs, true) {
                return s;
            }
        }
    }
    plain_chat(system, user)
}

/// A sequence being decoded.
struct Active {
    index: usize,
    attempt: u32,
    seed: u32,
    sampler: Sampler,
    /// Prompt tokens not yet decoded (all of them until the first step).
    pending: Option<Vec<LlamaToken>>,
    prompt_tokens: u32,
    prompt_hash: String,
    pos: i32,
    last: Option<LlamaToken>,
    logits_at: i32,
    in_batch: bool,
    out: Vec<u8>,
    generated: u32,
    started: Instant,
}

/// A sequence's sampler: the grammar, and the sampling chain (temperature,
/// top-p, seeded draw) kept apart so that the common case skips the grammar
/// over the whole vocabulary: draw without it, keep the token if the grammar
/// allows it, else draw again over the grammar-filtered logits (llama.cpp's
/// own `common_sampler` does the same). Deterministic for a given seed.
struct Sampler {
    grammar: LlamaSampler,
    chain: LlamaSampler,
}

impl Sampler {
    fn new(model: &LlamaModel, cfg: &GenerateConfig, seed: u32, grammar: &str) -> Result<Sampler> {
        let grammar = LlamaSampler::grammar(model, grammar, "root")
            .map_err(|e| Error::internal(format!("the output grammar does not load: {e}")))?;
        let penalties =
            LlamaSampler::penalties(model.n_vocab(), cfg.repeat_last_n as i32, cfg.repeat_penalty, 0.0, 0.0);
        let chain = if cfg.temperature <= 0.0 {
            LlamaSampler::chain_simple([penalties, LlamaSampler::greedy()])
        } else {
            LlamaSampler::chain_simple([
                penalties,
                LlamaSampler::top_k(TOP_K),
                LlamaSampler::temp(cfg.temperature),
                LlamaSampler::top_p(cfg.top_p, 1),
                LlamaSampler::dist(seed),
            ])
        };
        Ok(Sampler { grammar, chain })
    }

    fn candidates(logits: &[f32]) -> LlamaTokenDataArray {
        LlamaTokenDataArray::from_iter(
            logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
            false,
        )
    }

    /// Draws the next token from output `idx`; `None` if the grammar allows no token.
    fn sample(&mut self, logits: &[f32]) -> Option<LlamaToken> {
        let mut all = Self::candidates(logits);
        all.apply_sampler(&mut self.chain);
        let token = match all.selected_token() {
            Some(t) if self.allows(t) => t,
            _ => {
                let mut all = Self::candidates(logits);
                all.apply_sampler(&mut self.grammar);
                all.data.retain(|d| d.logit().is_finite());
                if all.data.is_empty() {
                    return None;
                }
                all.apply_sampler(&mut self.chain);
                all.selected_token()?
            }
        };
        self.grammar.accept(token);
        self.chain.accept(token);
        Some(token)
    }

    fn allows(&mut self, token: LlamaToken) -> bool {
        let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
        one.apply_sampler(&mut self.grammar);
        one.data.first().is_some_and(|d| d.logit().is_finite())
    }
}

/// Candidates kept before temperature and top-p.
const TOP_K: i32 = 40;

/// For the benchmark (`make bench-generate`): with `TAILFORGE_GENERATE_TRACE=<file>`,
/// the engine writes every batch it decodes (`D <n_tokens> <seq>:<pos>:<count> …`),
/// every KV clear (`C <seq>`) and every copy of the shared prefix
/// (`K <from> <to>`), and `benches/generate/ceiling.cpp`
/// replays exactly these shapes with bare `llama_decode` calls.
struct Trace(Option<std::io::BufWriter<std::fs::File>>);

impl Trace {
    fn from_env() -> Trace {
        let file = std::env::var_os("TAILFORGE_GENERATE_TRACE").and_then(|p| match std::fs::File::create(&p) {
            Ok(f) => Some(std::io::BufWriter::new(f)),
            Err(e) => {
                tracing::warn!(path = %std::path::Path::new(&p).display(), error = %e, "cannot write the batch trace");
                None
            }
        });
        Trace(file)
    }

    fn line(&mut self, text: impl FnOnce() -> String) {
        if let Some(f) = &mut self.0 {
            use std::io::Write;
            let _ = writeln!(f, "{}", text());
        }
    }
}

/// The number of tokens every prompt starts with, when worth sharing: at
/// least [`MIN_SHARED_PREFIX`] tokens and two prompts, and always leaving each
/// prompt at least one token of its own (its last token's logits start the
/// answer). Prompts longer than `max_prompt` are rejected unread and do not count.
fn shared_prefix<'a>(prompts: impl Iterator<Item = &'a [LlamaToken]>, max_prompt: usize) -> usize {
    let mut first: Option<&[LlamaToken]> = None;
    let (mut common, mut count) = (usize::MAX, 0usize);
    for p in prompts.filter(|p| !p.is_empty() && p.len() <= max_prompt) {
        count += 1;
        let f = *first.get_or_insert(p);
        let same = f.iter().zip(p).take_while(|(a, b)| a == b).count();
        common = common.min(same).min(p.len() - 1);
    }
    if count < 2 || common < MIN_SHARED_PREFIX { 0 } else { common }
}

/// Shorter prefixes are not worth a sequence of their own.
const MIN_SHARED_PREFIX: usize = 16;

/// The prompt template up to its first placeholder: the part every item's
/// prompt shares by construction.
pub(crate) struct TemplateHead {
    pub system: String,
    pub user: String,
}

/// Loads the GGUF model with `generate.n_gpu_layers` of it on the GPU.
fn load_model(backend: &LlamaBackend, cfg: &GenerateConfig) -> Result<LlamaModel> {
    let model_params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers(cfg));
    LlamaModel::load_from_file(backend, &cfg.model, &model_params).map_err(|e| {
        model_error(
            &cfg.model,
            format!("llama.cpp cannot load this model ({e}); is the file a complete GGUF? {NOT_GGUF_HINT}"),
        )
    })
}

/// A context of `n_seq_max` sequences of `n_ctx` tokens each; a batch holds
/// up to `n_ctx` tokens (a whole prompt).
fn new_context<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    cfg: &GenerateConfig,
    n_seq_max: u32,
) -> Result<llama_cpp_2::context::LlamaContext<'m>> {
    let n_ctx_total = cfg
        .n_ctx
        .checked_mul(n_seq_max)
        .ok_or_else(|| Error::config("generate", "generate.n_ctx", "n_ctx * parallel is too large"))?;
    let threads = cfg.threads();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx_total))
        .with_n_batch(cfg.n_ctx)
        .with_n_ubatch(cfg.n_ctx.min(512))
        .with_n_seq_max(n_seq_max)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    model.new_context(backend, params).map_err(|e| {
        Error::internal(format!(
            "llama.cpp cannot create a context (n_ctx {n_ctx_total}, parallel {}): {e}",
            cfg.parallel
        ))
    })
}

/// The verdict on one finished answer: the contract (an answer cut off at
/// `max_new_tokens` may still be complete JSON, else it is `forced`'s
/// reason), then near-duplicates of accepted descriptions (resumed and
/// cached ones included), then grounding in the item's own text. An
/// accepted description joins `dups`.
fn judge(
    text: &str,
    forced: Option<Reject>,
    item: &WorkItem,
    validator: &Validator,
    dups: &mut NearDuplicates,
    min_grounding: f64,
) -> std::result::Result<(Answer, Grounding), Reject> {
    let answer = match (validator.check(text), forced) {
        (Err(Reject::InvalidJson), Some(r)) => return Err(r),
        (v, _) => v?,
    };
    if let Some(similarity) = dups.check(&answer.description) {
        tracing::debug!(item_id = item.key, similarity, "near-duplicate description");
        return Err(Reject::NearDuplicate);
    }
    let grounding = item.source.score(&answer.description, &answer.keywords);
    if grounding.keywords < min_grounding {
        return Err(Reject::Ungrounded);
    }
    dups.insert(&answer.description);
    Ok((answer, grounding))
}

/// Generates for every item; blocks. Stops early (Ok) if the receiver is gone.
pub(crate) fn run(
    cfg: &GenerateConfig,
    items: &[WorkItem],
    head: &TemplateHead,
    validator: &Validator,
    dups: &mut NearDuplicates,
    live: &Live,
    tx: mpsc::Sender<Event>,
) -> Result<EngineStats> {
    if items.is_empty() {
        return Ok(EngineStats::default());
    }
    let backend = backend()?;
    let model = load_model(backend, cfg)?;
    let template = model.chat_template(None).ok();
    if template.is_none() {
        tracing::warn!(model = %cfg.model.display(), "the model has no chat template; using the plain template");
    }
    let max_prompt = cfg.n_ctx.saturating_sub(cfg.answer_tokens()) as usize;
    let prompts = tokenize_prompts(&model, template.as_ref(), items);
    // The shared prefix never reaches into item text, even where this run's
    // items happen to start alike: it stops at the template's head, so an
    // item is decoded in the same batches whichever items share its run (a
    // resumed run gives the rows an uninterrupted one would).
    let head_prompt = chat_prompt(&model, template.as_ref(), &head.system, &head.user);
    let head_tokens = model.vocab().tokenize(head_prompt.as_bytes(), true, true);
    let prefix = if cfg.share_prefix {
        let all = std::iter::once(head_tokens.as_slice()).chain(prompts.iter().map(|p| p.tokens.as_slice()));
        shared_prefix(all, max_prompt)
    } else {
        0
    };
    // The prefix lives in a sequence of its own, after the item slots.
    let n_seq_max = if prefix > 0 { cfg.parallel + 1 } else { cfg.parallel };
    let ctx = new_context(&model, backend, cfg, n_seq_max)?;
    let mut scheduler = Scheduler {
        cfg,
        items,
        model: &model,
        ctx,
        batch: LlamaBatch::new(cfg.n_ctx as usize, 1),
        prompts,
        prefix,
        max_prompt,
        queue: (0..items.len()).map(|i| (i, 0)).collect(),
        slots: (0..cfg.parallel).map(|_| None).collect(),
        segments: Vec::new(),
        trace: Trace::from_env(),
        stats: EngineStats::default(),
        live,
        tx,
    };
    if prefix > 0 {
        scheduler.decode_prefix()?;
    }
    // Each step: start queued attempts in free slots, decode one batch,
    // sample a token per sequence in it and judge the finished answers.
    loop {
        if !scheduler.refill()? {
            break;
        }
        if !scheduler.fill_batch()? {
            if scheduler.slots.iter().all(Option::is_none) && scheduler.queue.is_empty() {
                break;
            }
            return Err(Error::internal("generate: nothing to decode while sequences are pending"));
        }
        scheduler.decode()?;
        if !scheduler.sample_and_finish(validator, dups)? {
            break;
        }
    }
    Ok(scheduler.stats)
}

/// One item's prompt, tokenized once (retries reuse it), with its hash.
struct Prompt {
    tokens: Vec<LlamaToken>,
    hash: String,
}

fn tokenize_prompts(model: &LlamaModel, template: Option<&LlamaChatTemplate>, items: &[WorkItem]) -> Vec<Prompt> {
    items
        .iter()
        .map(|item| {
            let text = chat_prompt(model, template, &item.system, &item.user);
            Prompt { tokens: model.vocab().tokenize(text.as_bytes(), true, true), hash: sha256_hex(text.as_bytes()) }
        })
        .collect()
}

/// Continuous batching over `parallel` slots: each slot holds one attempt's
/// sequence (KV-cache sequence id = slot index); the shared prefix lives in
/// sequence `parallel`. Attempts wait in `queue` as (item index, attempt).
struct Scheduler<'a, 'm> {
    cfg: &'a GenerateConfig,
    items: &'a [WorkItem],
    model: &'m LlamaModel,
    ctx: llama_cpp_2::context::LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    prompts: Vec<Prompt>,
    /// Tokens every prompt starts with, decoded once (0: not shared).
    prefix: usize,
    max_prompt: usize,
    queue: VecDeque<(usize, u32)>,
    slots: Vec<Option<Active>>,
    /// The batch's (slot, first position, tokens), for the trace.
    segments: Vec<(usize, i32, usize)>,
    trace: Trace,
    stats: EngineStats,
    live: &'a Live,
    tx: mpsc::Sender<Event>,
}

impl Scheduler<'_, '_> {
    fn prefix_seq(&self) -> i32 {
        self.cfg.parallel as i32
    }

    /// Reports an item's outcome; false once the receiver is gone.
    fn send(&self, event: Event) -> bool {
        self.tx.blocking_send(event).is_ok()
    }

    /// Decodes the shared prompt prefix once, into its own sequence, from
    /// which each attempt's sequence starts (a KV-cache copy).
    fn decode_prefix(&mut self) -> Result<()> {
        let (prefix, seq) = (self.prefix, self.prefix_seq());
        self.trace.line(|| format!("D {prefix} {seq}:0:{prefix}"));
        for (i, t) in self.prompts[0].tokens[..prefix].iter().enumerate() {
            self.batch.add(*t, i as i32, &[seq], false).map_err(|e| Error::internal(format!("batch: {e}")))?;
        }
        let t = Instant::now();
        self.ctx.decode(&mut self.batch).map_err(|e| Error::internal(format!("llama.cpp decode failed: {e}")))?;
        self.stats.decode_seconds += t.elapsed().as_secs_f64();
        self.stats.prompt_tokens += prefix as u64;
        self.stats.shared_prefix_tokens = prefix as u64;
        self.live.prompt_tokens.fetch_add(prefix as u64, Ordering::Relaxed);
        tracing::debug!(tokens = prefix, "shared prompt prefix decoded");
        Ok(())
    }

    /// Starts queued attempts in free slots (a prompt too long for the
    /// context is rejected unread). False once the receiver is gone.
    fn refill(&mut self) -> Result<bool> {
        for s in 0..self.slots.len() {
            while self.slots[s].is_none() {
                let Some((index, attempt)) = self.queue.pop_front() else { return Ok(true) };
                let len = self.prompts[index].tokens.len();
                if len == 0 || len > self.max_prompt {
                    tracing::warn!(
                        item_id = self.items[index].key,
                        tokens = len,
                        max_prompt = self.max_prompt,
                        "prompt too long, item rejected"
                    );
                    *self.stats.attempt_rejects.entry(Reject::PromptTooLong.as_str()).or_default() += 1;
                    if !self.send(Event::Rejected { index, reason: Reject::PromptTooLong, attempts: attempt + 1 }) {
                        return Ok(false);
                    }
                    continue;
                }
                self.slots[s] = Some(self.start(s, index, attempt)?);
            }
        }
        Ok(true)
    }

    /// A new attempt in slot `s`: its sequence starts as a copy of the
    /// shared prefix (or empty), its sampler is seeded by item and attempt.
    fn start(&mut self, s: usize, index: usize, attempt: u32) -> Result<Active> {
        let seq = self.prefix_seq();
        if self.prefix > 0 {
            // Replaces whatever the slot held: llama.cpp copies the prefix
            // sequence's cells (a buffer copy across streams).
            self.ctx
                .copy_kv_cache_seq(seq, s as i32, None, None)
                .map_err(|e| Error::internal(format!("KV cache: {e}")))?;
            self.trace.line(|| format!("K {seq} {s}"));
        } else {
            self.ctx
                .clear_kv_cache_seq(Some(s as u32), None, None)
                .map_err(|e| Error::internal(format!("KV cache: {e}")))?;
        }
        let seed = item_seed(self.cfg.seed, &self.items[index].key, attempt);
        let prompt = &self.prompts[index];
        Ok(Active {
            index,
            attempt,
            seed,
            sampler: Sampler::new(self.model, self.cfg, seed, &self.items[index].grammar)?,
            prompt_tokens: prompt.tokens.len() as u32,
            pending: Some(prompt.tokens[self.prefix..].to_vec()),
            prompt_hash: prompt.hash.clone(),
            pos: self.prefix as i32,
            last: None,
            logits_at: -1,
            in_batch: false,
            out: Vec::new(),
            generated: 0,
            started: Instant::now(),
        })
    }

    /// One batch: a token for each generating sequence, then the whole
    /// pending prompts that fit. False if there is nothing to decode.
    fn fill_batch(&mut self) -> Result<bool> {
        self.batch.clear();
        self.segments.clear();
        let batch_error = |e| Error::internal(format!("batch: {e}"));
        for (s, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            a.in_batch = false;
            if let (None, Some(tok)) = (&a.pending, a.last) {
                self.batch.add(tok, a.pos, &[s as i32], true).map_err(batch_error)?;
                self.segments.push((s, a.pos, 1));
                a.logits_at = self.batch.n_tokens() - 1;
                a.pos += 1;
                a.in_batch = true;
            }
        }
        for (s, slot) in self.slots.iter_mut().enumerate() {
            let Some(a) = slot else { continue };
            let Some(tokens) = &a.pending else { continue };
            if self.batch.n_tokens() as usize + tokens.len() > self.cfg.n_ctx as usize {
                continue;
            }
            let last = tokens.len() - 1;
            for (i, t) in tokens.iter().enumerate() {
                self.batch.add(*t, a.pos + i as i32, &[s as i32], i == last).map_err(batch_error)?;
            }
            self.stats.prompt_tokens += tokens.len() as u64;
            self.segments.push((s, a.pos, tokens.len()));
            self.live.prompt_tokens.fetch_add(tokens.len() as u64, Ordering::Relaxed);
            a.pos += tokens.len() as i32;
            a.logits_at = self.batch.n_tokens() - 1;
            a.pending = None;
            a.in_batch = true;
        }
        Ok(self.batch.n_tokens() > 0)
    }

    fn decode(&mut self) -> Result<()> {
        let segments = &self.segments;
        self.trace.line(|| {
            let segs: Vec<String> = segments.iter().map(|(s, p, c)| format!("{s}:{p}:{c}")).collect();
            format!("D {} {}", self.batch.n_tokens(), segs.join(" "))
        });
        let t = Instant::now();
        self.ctx.decode(&mut self.batch).map_err(|e| Error::internal(format!("llama.cpp decode failed: {e}")))?;
        self.stats.decode_seconds += t.elapsed().as_secs_f64();
        Ok(())
    }

    /// Samples one token for each sequence in the batch; an answer is
    /// finished at end of generation, when the grammar allows no token
    /// (invalid) or at `max_new_tokens` (truncated). False once the
    /// receiver is gone.
    fn sample_and_finish(&mut self, validator: &Validator, dups: &mut NearDuplicates) -> Result<bool> {
        for s in 0..self.slots.len() {
            let Some(forced) = self.sample(s) else { continue };
            let Some(a) = self.slots[s].take() else { continue };
            self.ctx
                .clear_kv_cache_seq(Some(s as u32), None, None)
                .map_err(|e| Error::internal(format!("KV cache: {e}")))?;
            self.trace.line(|| format!("C {s}"));
            if let Some(event) = self.finish(a, forced, validator, dups)
                && !self.send(event)
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Samples slot `s`'s next token if it was in the batch. `Some(forced)`
    /// when its answer is finished, `forced` being the reason it was cut
    /// short (if it was).
    fn sample(&mut self, s: usize) -> Option<Option<Reject>> {
        let a = self.slots[s].as_mut().filter(|a| a.in_batch)?;
        let t = Instant::now();
        let tok = a.sampler.sample(self.ctx.get_logits_ith(a.logits_at));
        self.stats.sample_seconds += t.elapsed().as_secs_f64();
        let vocab = self.model.vocab();
        match tok {
            None => Some(Some(Reject::InvalidJson)),
            Some(tok) if vocab.is_eog(tok) => Some(None),
            Some(tok) => {
                vocab.token_to_piece_into(tok, &mut a.out, false, None);
                a.generated += 1;
                self.stats.generated_tokens += 1;
                self.live.generated_tokens.fetch_add(1, Ordering::Relaxed);
                a.last = Some(tok);
                (a.generated >= self.cfg.answer_tokens()).then_some(Some(Reject::Truncated))
            }
        }
    }

    /// Judges a finished attempt: the event to report, or `None` when it
    /// is queued again as a retry (first in line, so an item's retries do
    /// not wait behind the whole queue).
    fn finish(
        &mut self,
        a: Active,
        forced: Option<Reject>,
        validator: &Validator,
        dups: &mut NearDuplicates,
    ) -> Option<Event> {
        let text = String::from_utf8_lossy(&a.out);
        match judge(&text, forced, &self.items[a.index], validator, dups, self.cfg.min_grounding) {
            Ok((answer, grounding)) => Some(Event::Accepted {
                index: a.index,
                answer,
                seed: a.seed,
                prompt_hash: a.prompt_hash,
                prompt_tokens: a.prompt_tokens,
                generated_tokens: a.generated,
                generation_ms: a.started.elapsed().as_millis() as u64,
                grounding,
            }),
            Err(reason) => {
                *self.stats.attempt_rejects.entry(reason.as_str()).or_default() += 1;
                tracing::debug!(item_id = self.items[a.index].key, attempt = a.attempt, reason = reason.as_str(), output = %text, "answer rejected");
                if a.attempt < self.cfg.max_retries {
                    self.queue.push_front((a.index, a.attempt + 1));
                    return None;
                }
                Some(Event::Rejected { index: a.index, reason, attempts: a.attempt + 1 })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: impl IntoIterator<Item = i32>) -> Vec<LlamaToken> {
        ids.into_iter().map(LlamaToken).collect()
    }

    #[test]
    fn the_shared_prefix_is_the_common_start_leaving_each_prompt_a_token() {
        let (a, b) = (tokens((1..=20).chain([30])), tokens((1..=20).chain([31, 32])));
        assert_eq!(shared_prefix([a.as_slice(), b.as_slice()].into_iter(), 100), 20);
        // A prompt that is all prefix keeps its last token to decode.
        let whole = tokens(1..=20);
        assert_eq!(shared_prefix([a.as_slice(), whole.as_slice()].into_iter(), 100), 19);
        // One prompt, or a start shorter than MIN_SHARED_PREFIX: nothing shared.
        assert_eq!(shared_prefix([a.as_slice()].into_iter(), 100), 0);
        let short = tokens((1..=10).chain([99; 20]));
        assert_eq!(shared_prefix([a.as_slice(), short.as_slice()].into_iter(), 100), 0);
        // Prompts too long to be generated (rejected unread) and empty ones do not count.
        let long = tokens((1..=5).chain(0..200));
        let empty = tokens([]);
        let prompts = [a.as_slice(), long.as_slice(), b.as_slice(), empty.as_slice()];
        assert_eq!(shared_prefix(prompts.into_iter(), 100), 20);
    }
}
