//! The training loop: batches of users, the paper's loss, Adam, validation
//! NDCG@10 (eval-v1) for model selection and early stopping, checkpoints
//! that resume a killed run exactly, and the outputs a serving system needs.
//!
//! Every random draw (initial weights, batch order, negatives, dropout,
//! substitutions) derives from the run seed and the (epoch, batch) it is
//! made in, so a run is reproducible on the CPU and a resumed run continues
//! exactly as an uninterrupted one would have.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use tailforge_core::config::{IdInit, Loss, TrainConfig, Variant};
use tailforge_core::hash::sha256_hex;
use tailforge_core::rng::{SplitMix64, mix64};
use tailforge_core::{Error, Location, Result};

use crate::dataset::{Dataset, Phase};
use crate::eval::{EvalOptions, EvalReport, Scorer, evaluate};
use crate::item_text::ItemTexts;
use crate::params::{Adam, ParamStore};
use crate::sasrec::{ITEM_EMBEDDING, SasRec, SasRecShape, SeqBatch, bce_loss, features_tensor, sampled_softmax_loss};
use crate::scoring::{RuledScorer, ScoringRule, Signals, dot};

pub use tailforge_core::records::EpochRecord;

/// Name of the byte tensor that carries [`CheckpointState`] inside `last.safetensors`.
const STATE_TENSOR: &str = "checkpoint.state";

/// What `checkpoints/last.json` records next to `last.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Identifies the data, text features and settings the weights belong to.
    pub fingerprint: String,
    pub variant: Variant,
    /// Epochs completed.
    pub epoch: usize,
    pub adam_step: u64,
    pub best_epoch: usize,
    pub best_valid_ndcg: f64,
    pub evals_since_best: usize,
    pub history: Vec<EpochRecord>,
}

impl CheckpointState {
    /// Before the first epoch.
    fn start(fingerprint: String, variant: Variant) -> CheckpointState {
        CheckpointState {
            format: 1,
            fingerprint,
            variant,
            epoch: 0,
            adam_step: 0,
            best_epoch: 0,
            best_valid_ndcg: f64::NEG_INFINITY,
            evals_since_best: 0,
            history: Vec::new(),
        }
    }
}

/// What `checkpoints/best.json` records: enough to serve or warm-start from `best.safetensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: u32,
    pub variant: Variant,
    pub epoch: usize,
    pub valid_ndcg: f64,
    pub hidden: usize,
    pub blocks: usize,
    pub heads: usize,
    pub maxlen: usize,
    /// The item vocabulary, by row (row r of the item table is item `items[r - 1]`; row 0 is padding).
    pub items: serde_json::Value,
}

/// A trained model ready to score: every parameter's value plus the model.
pub struct Trained {
    pub model: SasRec,
    pub params: ParamStore,
    pub summary: TrainOutcome,
}

#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub best_valid_ndcg: f64,
    pub seconds_per_epoch: f64,
    pub history: Vec<EpochRecord>,
    /// The epoch a resumed run continued after, if it resumed.
    pub resumed_after: Option<usize>,
    pub warm_started: bool,
}

/// Where checkpoints go and how the loop persists them (blocking wrappers
/// over the async storage layer, as the loop runs on a blocking thread).
pub struct Checkpoints {
    pub dir: Location,
    pub runtime: tokio::runtime::Handle,
}

impl Checkpoints {
    fn put(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let target = self.dir.join(name);
        self.runtime.block_on(target.put(bytes))
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let target = self.dir.join(name);
        if !self.runtime.block_on(target.exists())? {
            return Ok(None);
        }
        Ok(Some(self.runtime.block_on(target.get())?.to_vec()))
    }

    fn save_tensors(&self, name: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        self.put(name, safetensors_bytes(tensors)?)
    }

    fn load_tensors(&self, name: &str, device: &Device) -> Result<Option<HashMap<String, Tensor>>> {
        let Some(bytes) = self.get(name)? else { return Ok(None) };
        let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            Error::internal(format!("{}: not a readable safetensors checkpoint: {e}", self.dir.join(name).display()))
        })?;
        Ok(Some(tensors))
    }
}

/// Serializes tensors as safetensors (through a temporary file: candle writes to paths).
pub fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let tmp = tempfile::NamedTempFile::new().map_err(|e| Error::internal(format!("temporary checkpoint file: {e}")))?;
    candle_core::safetensors::save(tensors, tmp.path())
        .map_err(|e| Error::internal(format!("saving checkpoint: {e}")))?;
    std::fs::read(tmp.path()).map_err(|e| Error::internal(format!("reading temporary checkpoint: {e}")))
}

fn candle(context: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::internal(format!("{context}: {e}"))
}

/// A seed for one (purpose, epoch, batch) from the run seed.
fn derive(seed: u64, purpose: u64, epoch: usize, batch: usize) -> u64 {
    mix64(seed ^ mix64(purpose.wrapping_mul(0x9e37_79b9) ^ mix64((epoch as u64) << 32 | batch as u64)))
}

/// The training examples of one user: inputs and next-item targets.
struct Example<'a> {
    train: &'a [u32],
    /// The user's training items, sorted, for negative sampling.
    seen: Vec<u32>,
}

/// Everything the loop needs besides the model.
pub struct TrainInputs<'a> {
    pub dataset: &'a Dataset,
    pub config: &'a TrainConfig,
    pub variant: Variant,
    pub seed: u64,
    /// `[n_items + 1, d]` text features for the text variants.
    pub text_features: Option<Vec<Vec<f32>>>,
    /// Nearest tail item by text, per item (for `substitute_rate`).
    pub substitutes: Option<Vec<Option<u32>>>,
    /// Identifies the text features (encoder + texts), part of the fingerprint.
    pub text_fingerprint: String,
    pub device: Device,
}

impl TrainInputs<'_> {
    /// Hash of everything that determines the weights except the stopping rule
    /// (epochs, eval_every, patience may change between a run and its resume).
    pub fn fingerprint(&self) -> String {
        let c = self.config;
        let d = self.dataset;
        let text = format!(
            "v1|{:?}|h{}|b{}|nh{}|L{}|p{}|lr{}|b2{}|wd{}|bs{}|{:?}|neg{}|sub{}|lb{}|{:?}|seed{}|items{}|users{}|train{}|{}",
            self.variant,
            c.hidden,
            c.blocks,
            c.heads,
            c.maxlen,
            c.dropout,
            c.lr,
            c.beta2,
            c.weight_decay,
            c.batch_size,
            c.loss,
            c.negatives,
            c.substitute_rate,
            c.length_buckets,
            c.id_init,
            self.seed,
            d.n_items(),
            d.n_users(),
            d.train_interactions(),
            self.text_fingerprint
        );
        sha256_hex(text.as_bytes())[..16].to_string()
    }

    fn shape(&self) -> SasRecShape {
        let c = self.config;
        SasRecShape {
            variant: self.variant,
            n_items: self.dataset.n_items(),
            hidden: c.hidden,
            blocks: c.blocks,
            heads: c.heads,
            maxlen: c.maxlen,
            dropout: c.dropout as f32,
        }
    }

    /// A fresh model (seeded initial weights).
    pub fn build_model(&self) -> Result<(SasRec, ParamStore)> {
        let mut params = ParamStore::default();
        let features = match &self.text_features {
            Some(rows) => Some(features_tensor(rows, &self.device).map_err(candle("text features"))?),
            None => None,
        };
        let model =
            SasRec::new(self.shape(), features, &mut params, self.seed, &self.device).map_err(candle("model"))?;
        if self.config.id_init == IdInit::TextPca && self.variant != Variant::Text {
            let Some(rows) = &self.text_features else {
                return Err(Error::internal("train.id_init = \"text_pca\" needs the items' text embeddings"));
            };
            let init = text_pca_embedding(rows, self.config.hidden, self.seed);
            let init = Tensor::from_vec(init, (rows.len(), self.config.hidden), &self.device)
                .map_err(candle("text PCA init"))?;
            params.overwrite(ITEM_EMBEDDING, &init).map_err(candle("text PCA init"))?;
        }
        Ok((model, params))
    }
}

/// The ID table's start for `id_init = "text_pca"`: row 0 (padding) zero,
/// row i the text embedding of item i on the texts' top principal directions,
/// scaled so the table's spread equals the random (Xavier-normal) init's —
/// the geometry of the text, at the scale the rest of the model expects.
/// Directions beyond the text's width stay zero.
fn text_pca_embedding(rows: &[Vec<f32>], hidden: usize, seed: u64) -> Vec<f32> {
    let items: Vec<&[f32]> = rows.iter().skip(1).map(Vec::as_slice).collect();
    let k = hidden.min(items.first().map_or(0, |r| r.len()));
    let projected = crate::pca::principal_projection(&items, k, mix64(seed ^ 0x7063_6131));
    let rms =
        (projected.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / (items.len() * hidden).max(1) as f64).sqrt();
    let xavier_std = (2.0 / (rows.len() + hidden) as f64).sqrt();
    let scale = if rms > 0.0 { (xavier_std / rms) as f32 } else { 0.0 };
    let mut table = vec![0f32; rows.len() * hidden];
    for (i, p) in projected.chunks(k.max(1)).enumerate() {
        let row = &mut table[(i + 1) * hidden..(i + 1) * hidden + k];
        row.iter_mut().zip(p).for_each(|(t, &x)| *t = x * scale);
    }
    table
}

/// Samples an item (dense index) the user has not interacted with in training.
fn negative(seen: &[u32], n_items: usize, rng: &mut SplitMix64) -> u32 {
    for _ in 0..64 {
        let candidate = rng.below(n_items as u64) as u32;
        if seen.binary_search(&candidate).is_err() {
            return candidate;
        }
    }
    // A user who saw nearly everything: any item will do.
    rng.below(n_items as u64) as u32
}

/// Runs one epoch; returns the mean loss.
fn run_epoch(inputs: &TrainInputs, model: &SasRec, adam: &mut Adam, examples: &[Example], epoch: usize) -> Result<f64> {
    let cfg = inputs.config;
    let n_items = inputs.dataset.n_items();
    let batches = epoch_batches(examples, cfg.batch_size, cfg.length_buckets, derive(inputs.seed, 1, epoch, 0));
    let mut total = 0.0;
    for (b, chunk) in batches.iter().enumerate() {
        let mut rng = SplitMix64::new(derive(inputs.seed, 2, epoch, b));
        let mut histories: Vec<Vec<u32>> = Vec::with_capacity(chunk.len());
        let mut targets: Vec<&[u32]> = Vec::with_capacity(chunk.len());
        for &u in chunk {
            let train = examples[u].train;
            let mut input = train[..train.len() - 1].to_vec();
            if let (Some(subs), rate) = (&inputs.substitutes, cfg.substitute_rate)
                && rate > 0.0
            {
                for item in input.iter_mut() {
                    if (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 >= rate {
                        continue;
                    }
                    if let Some(s) = subs[*item as usize] {
                        *item = s;
                    }
                }
            }
            histories.push(input);
            targets.push(&train[1..]);
        }
        let refs: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let seqs = SeqBatch::from_histories(&refs, cfg.maxlen);
        let width = seqs.width;
        let mut positives = vec![0u32; seqs.batch * width];
        let mut negatives = vec![0u32; seqs.batch * width];
        for (row, (&u, target)) in chunk.iter().zip(&targets).enumerate() {
            let take = target.len().min(width);
            for (slot, &item) in target[target.len() - take..].iter().enumerate() {
                let at = row * width + width - take + slot;
                positives[at] = item + 1;
                if cfg.loss == Loss::Bce {
                    negatives[at] = negative(&examples[u].seen, n_items, &mut rng) + 1;
                }
            }
        }
        let table = model.item_table().map_err(candle("item table"))?;
        let hidden = model.forward_rows(&table, &seqs, Some(&mut rng)).map_err(candle("forward pass"))?;
        let loss = match cfg.loss {
            Loss::Bce => bce_loss(&hidden, &table, &positives, &negatives),
            Loss::SampledSoftmax => {
                let shared: Vec<u32> = (0..cfg.negatives).map(|_| rng.below(n_items as u64) as u32 + 1).collect();
                sampled_softmax_loss(&hidden, &table, &positives, &shared)
            }
        }
        .map_err(candle("loss"))?;
        let value = loss.to_scalar::<f32>().map_err(candle("loss"))? as f64;
        if !value.is_finite() {
            return Err(Error::internal(format!(
                "training diverged: loss is {value} at epoch {epoch}, batch {b}; lower train.lr"
            )));
        }
        let grads = loss.backward().map_err(candle("backward pass"))?;
        adam.step(&grads).map_err(candle("optimizer step"))?;
        total += value;
    }
    Ok(total / batches.len().max(1) as f64)
}

/// The epoch's batches of example indices.
///
/// The examples are shuffled (Fisher–Yates with the epoch's seed). With
/// `length_buckets` = 1 consecutive runs of `batch_size` are the batches, as
/// SASRec.pytorch samples them. With k > 1, each pool of k × `batch_size`
/// shuffled examples is sorted by training length before it is cut into
/// batches, and the batches are shuffled again: a batch is padded to its
/// longest sequence, so batches of similar lengths waste fewer padded
/// positions (every real position is still trained once per epoch; what
/// changes is which users share a batch — the `group_by_length` of Hugging
/// Face's trainer).
fn epoch_batches(examples: &[Example], batch_size: usize, length_buckets: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..examples.len()).collect();
    shuffle(&mut order, &mut rng);
    if length_buckets <= 1 {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut batches: Vec<Vec<usize>> = Vec::with_capacity(order.len().div_ceil(batch_size));
    for pool in order.chunks_mut(batch_size.saturating_mul(length_buckets)) {
        // Stable: equal lengths keep their shuffled order.
        pool.sort_by_key(|&e| std::cmp::Reverse(examples[e].train.len()));
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    shuffle(&mut batches, &mut rng);
    batches
}

/// Fisher–Yates.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i as u64 + 1) as usize);
    }
}

/// Item vectors (`[n_items, width]`, no padding row) and users' next-item
/// vectors for a phase: the inputs of scoring.
pub struct VectorScorer {
    /// The model's [`SasRec::table_width`].
    pub width: usize,
    pub items: Vec<f32>,
    /// Row of each user in `users`, by user index (None: not encoded).
    pub user_row: Vec<Option<usize>>,
    pub users: Vec<f32>,
}

/// Items scored against a block of users before the next tile is read: a
/// tile of 256 rows × 64 floats is 64 KiB, which stays in cache while every
/// user of the block is scored against it.
pub const ITEM_TILE: usize = 256;

impl VectorScorer {
    /// The vector of user `user`, if the model encoded it.
    pub fn user_vector(&self, user: usize) -> Option<&[f32]> {
        let row = self.user_row.get(user).copied().flatten()?;
        Some(&self.users[row * self.width..(row + 1) * self.width])
    }

    /// For each user of `users`, `f(k, item, item vector)` over every item,
    /// tile by tile: each tile of the item table is read from memory once
    /// per block of users, not once per user, which is what bounds full
    /// ranking over a large catalog.
    pub fn for_each_tile(&self, users: &[Option<&[f32]>], mut f: impl FnMut(usize, usize, &[f32], &[f32])) {
        let h = self.width;
        let n = self.items.len() / h.max(1);
        for start in (0..n).step_by(ITEM_TILE) {
            let end = (start + ITEM_TILE).min(n);
            for (k, u) in users.iter().enumerate() {
                if let Some(u) = u {
                    for i in start..end {
                        f(k, i, u, &self.items[i * h..(i + 1) * h]);
                    }
                }
            }
        }
    }
}

impl Scorer for VectorScorer {
    fn score(&self, user: usize, history: &[u32], out: &mut [f32]) {
        self.score_block(&[(user, history)], &mut [out]);
    }

    fn score_block(&self, users: &[(usize, &[u32])], out: &mut [&mut [f32]]) {
        let vectors: Vec<Option<&[f32]>> = users.iter().map(|&(u, _)| self.user_vector(u)).collect();
        for (v, o) in vectors.iter().zip(out.iter_mut()) {
            if v.is_none() {
                o.fill(0.0);
            }
        }
        self.for_each_tile(&vectors, |k, i, u, item| out[k][i] = dot(u, item));
    }
}

/// Encodes `histories` (user index, items) with the model in inference mode.
pub fn vector_scorer(model: &SasRec, dataset: &Dataset, users: &[(usize, &[u32])]) -> Result<VectorScorer> {
    let table = model.item_table().map_err(candle("item table"))?;
    let h = model.table_width();
    let all: Vec<f32> = table.flatten_all().and_then(|t| t.to_vec1()).map_err(candle("item table"))?;
    let items = all[h..].to_vec();
    let mut user_row = vec![None; dataset.n_users()];
    let mut vectors = Vec::with_capacity(users.len() * h);
    // Encoded longest first, so each chunk pads to a width close to its own
    // sequences' (padding does not change a sequence's vector).
    let mut by_length: Vec<&(usize, &[u32])> = users.iter().collect();
    by_length.sort_by_key(|(u, hist)| (std::cmp::Reverse(hist.len().min(model.shape.maxlen)), *u));
    for (k, chunk) in by_length.chunks(256).enumerate() {
        let histories: Vec<&[u32]> = chunk.iter().map(|(_, hist)| *hist).collect();
        let seqs = SeqBatch::from_histories(&histories, model.shape.maxlen);
        let v = model.user_vectors(&table, &seqs).map_err(candle("user vectors"))?;
        vectors.extend(v.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(candle("user vectors"))?);
        for (j, (u, _)) in chunk.iter().enumerate() {
            user_row[*u] = Some(k * 256 + j);
        }
    }
    Ok(VectorScorer { width: h, items, user_row, users: vectors })
}

/// eval-v1 on `phase` for the model as it is now, plain scores. The same
/// path as the final evaluation ([`evaluate_ruled`] under
/// [`ScoringRule::PLAIN`]), so the validation figure that picks the best
/// epoch is the one metrics.json reports for it, to the last bit.
pub fn evaluate_model(model: &SasRec, dataset: &Dataset, phase: Phase) -> Result<EvalReport> {
    evaluate_ruled(model, dataset, phase, ScoringRule::PLAIN, Signals::default())
}

/// A previous run's weights to start from, its item rows mapped onto this
/// run's vocabulary: a nightly catalog always changes, and one new item must
/// not send the whole model back to random weights.
pub struct WarmStart {
    pub tensors: HashMap<String, Tensor>,
    /// For each item of this run (dense index), its dense index in the previous run, if it was there.
    pub previous_index: Vec<Option<usize>>,
}

impl WarmStart {
    /// Items of this run whose ID embedding comes from the previous run.
    pub fn carried_items(&self) -> usize {
        self.previous_index.iter().filter(|p| p.is_some()).count()
    }

    /// Sets `params` from the previous run: every parameter as it was, except
    /// the ID table, whose rows of known items are carried over while new
    /// items keep this run's initialisation (`train.id_init`).
    pub fn load_into(&self, params: &ParamStore) -> candle_core::Result<()> {
        let mut tensors = self.tensors.clone();
        if let (Some(previous), Some((_, current))) =
            (tensors.remove(ITEM_EMBEDDING), params.vars().find(|(name, _)| name.as_str() == ITEM_EMBEDDING))
        {
            let previous: Vec<Vec<f32>> = previous.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            let mut rows: Vec<Vec<f32>> = current.as_tensor().to_vec2()?;
            for (item, p) in self.previous_index.iter().enumerate() {
                // Row 0 is padding in both tables.
                if let (Some(p), Some(row)) = (p, rows.get_mut(item + 1))
                    && let Some(old) = previous.get(p + 1).filter(|old| old.len() == row.len())
                {
                    row.clone_from(old);
                }
            }
            let (n, h) = (rows.len(), rows.first().map_or(0, Vec::len));
            let table = Tensor::from_vec(rows.concat(), (n, h), current.device())?;
            tensors.insert(ITEM_EMBEDDING.to_string(), table);
        }
        params.load(&tensors)
    }
}

/// eval-v1 on `phase` for the model's scores under a scoring rule (see [`crate::scoring`]).
pub fn evaluate_ruled(
    model: &SasRec,
    dataset: &Dataset,
    phase: Phase,
    rule: ScoringRule,
    signals: Signals,
) -> Result<EvalReport> {
    let users: Vec<(usize, &[u32])> = dataset.evaluated_users().map(|u| (u, dataset.users[u].history(phase))).collect();
    let vectors = vector_scorer(model, dataset, &users)?;
    let scorer = RuledScorer::new(dataset, model.shape.variant, vectors, rule, signals);
    evaluate(dataset, &scorer, phase, &EvalOptions::default())
}

/// Trains until `epochs` or early stopping, resuming from `checkpoints` when
/// they hold a run with the same fingerprint; leaves the best epoch's weights
/// in the returned model.
pub fn fit(inputs: &TrainInputs, checkpoints: &Checkpoints, warm_start: Option<&WarmStart>) -> Result<Trained> {
    let cfg = inputs.config;
    let dataset = inputs.dataset;
    let (model, params) = inputs.build_model()?;
    let mut adam = Adam::new(&params, cfg.lr, cfg.beta2, cfg.weight_decay).map_err(candle("optimizer"))?;
    let fingerprint = inputs.fingerprint();

    let examples = training_examples(dataset)?;

    let (mut state, mut best, resumed_after) = match resume(checkpoints, inputs, &params, &mut adam, &fingerprint)? {
        Some((saved, best)) => {
            let after = saved.epoch;
            (saved, best, Some(after))
        }
        None => (CheckpointState::start(fingerprint.clone(), inputs.variant), None, None),
    };
    let mut warm_started = false;
    if resumed_after.is_none()
        && let Some(warm) = warm_start
    {
        warm.load_into(&params).map_err(candle("warm start"))?;
        warm_started = true;
    }

    let mut train_seconds = 0.0;
    let mut trained_epochs = 0usize;
    let stopped_early = |s: &CheckpointState| s.evals_since_best >= cfg.patience;
    while state.epoch < cfg.epochs && !stopped_early(&state) {
        let epoch = state.epoch + 1;
        let start = Instant::now();
        let loss = run_epoch(inputs, &model, &mut adam, &examples, epoch)?;
        let seconds = start.elapsed().as_secs_f64();
        train_seconds += seconds;
        trained_epochs += 1;
        let mut record = EpochRecord { epoch, loss, seconds, valid_ndcg: None };
        if epoch.is_multiple_of(cfg.eval_every) || epoch == cfg.epochs {
            let valid_start = Instant::now();
            let valid = evaluate_model(&model, dataset, Phase::Valid)?;
            let valid_seconds = valid_start.elapsed().as_secs_f64();
            let ndcg = valid.full.overall.ndcg;
            record.valid_ndcg = Some(ndcg);
            if ndcg > state.best_valid_ndcg {
                state.best_valid_ndcg = ndcg;
                state.best_epoch = epoch;
                state.evals_since_best = 0;
                let snapshot = params.snapshot().map_err(candle("snapshot"))?;
                checkpoints.save_tensors("best.safetensors", &snapshot)?;
                best = Some(snapshot);
            } else {
                state.evals_since_best += 1;
            }
            tracing::info!(
                variant = inputs.variant.as_str(),
                epoch,
                loss,
                seconds,
                valid_ndcg = ndcg,
                valid_seconds,
                best_epoch = state.best_epoch,
                "epoch"
            );
        } else {
            tracing::info!(variant = inputs.variant.as_str(), epoch, loss, seconds, "epoch");
        }
        state.epoch = epoch;
        state.adam_step = adam.step;
        state.history.push(record);
        save_last(checkpoints, &state, &params, &adam)?;
    }

    // Keep the best epoch's weights (the last, if validation never ran).
    if let Some(b) = &best {
        params.load(b).map_err(candle("restoring the best epoch"))?;
    }
    // Over every epoch of the run, including those before a resume.
    let seconds_per_epoch = if state.history.is_empty() {
        0.0
    } else {
        state.history.iter().map(|r| r.seconds).sum::<f64>() / state.history.len() as f64
    };
    tracing::debug!(epochs_now = trained_epochs, seconds_now = train_seconds, "training loop finished");
    let history = state.history.clone();
    Ok(Trained {
        model,
        params,
        summary: TrainOutcome {
            epochs_run: state.epoch,
            best_epoch: state.best_epoch,
            best_valid_ndcg: state.best_valid_ndcg,
            seconds_per_epoch,
            history,
            resumed_after,
            warm_started,
        },
    })
}

/// One training example per user with at least 2 training interactions.
fn training_examples(dataset: &Dataset) -> Result<Vec<Example<'_>>> {
    let examples: Vec<Example> = dataset
        .users
        .iter()
        .filter(|u| u.train_len >= 2)
        .map(|u| {
            let mut seen = u.train().to_vec();
            seen.sort_unstable();
            seen.dedup();
            Example { train: u.train(), seen }
        })
        .collect();
    if examples.is_empty() {
        return Err(Error::usage("no user has 2 or more training interactions: nothing to train on"));
    }
    Ok(examples)
}

/// The best epoch's weights so far, by tensor name.
type Snapshot = HashMap<String, Tensor>;

/// Resumes from the last checkpoint of this output when it is this run's
/// (same `fingerprint`): loads weights and optimizer moments, and returns
/// the loop's state and the best epoch's weights so far. Another run's
/// checkpoint, or one without a readable state, is ignored (training starts
/// over).
fn resume(
    checkpoints: &Checkpoints,
    inputs: &TrainInputs,
    params: &ParamStore,
    adam: &mut Adam,
    fingerprint: &str,
) -> Result<Option<(CheckpointState, Option<Snapshot>)>> {
    let Some(tensors) = checkpoints.load_tensors("last.safetensors", &inputs.device)? else { return Ok(None) };
    let saved = tensors
        .get(STATE_TENSOR)
        .and_then(|t| t.to_vec1::<u8>().ok())
        .and_then(|bytes| serde_json::from_slice::<CheckpointState>(&bytes).ok());
    match saved {
        Some(saved) if saved.fingerprint == fingerprint => {
            params.load(&tensors).map_err(candle("resuming parameters"))?;
            adam.load_state(&tensors, saved.adam_step).map_err(candle("resuming optimizer state"))?;
            let best = checkpoints.load_tensors("best.safetensors", &inputs.device)?;
            tracing::info!(epoch = saved.epoch, best_epoch = saved.best_epoch, "resuming from checkpoint");
            Ok(Some((saved, best)))
        }
        Some(saved) => {
            tracing::warn!(
                checkpoint = %checkpoints.dir.display(),
                saved = %saved.fingerprint,
                current = %fingerprint,
                "checkpoint belongs to other data or settings; training from the start"
            );
            Ok(None)
        }
        None => {
            tracing::warn!(checkpoint = %checkpoints.dir.display(), "checkpoint without a readable state; training from the start");
            Ok(None)
        }
    }
}

/// Writes `last.safetensors`: weights, optimizer moments and the loop's
/// state (as a byte tensor) in one object, so a kill at any point leaves
/// either the previous epoch's checkpoint or this one, never a mix; then
/// `last.json`, a readable copy of the state for people and tools
/// (resuming reads the tensor).
fn save_last(checkpoints: &Checkpoints, state: &CheckpointState, params: &ParamStore, adam: &Adam) -> Result<()> {
    let state_json = serde_json::to_vec_pretty(state).map_err(|e| Error::internal(format!("checkpoint state: {e}")))?;
    let mut tensors = params.snapshot().map_err(candle("checkpoint"))?;
    tensors.extend(adam.state_tensors());
    let n = state_json.len();
    tensors.insert(
        STATE_TENSOR.into(),
        Tensor::from_vec(state_json.clone(), n, &Device::Cpu).map_err(candle("checkpoint"))?,
    );
    checkpoints.save_tensors("last.safetensors", &tensors)?;
    checkpoints.put("last.json", state_json)
}

/// For each item, the most text-similar tail item other than itself (cosine
/// of unit vectors), for interaction augmentation.
pub fn nearest_tail_items(dataset: &Dataset, vectors: &[Vec<f32>]) -> Vec<Option<u32>> {
    use rayon::prelude::*;
    let tail: Vec<usize> =
        (0..dataset.n_items()).filter(|&i| dataset.groups[i] == crate::dataset::Group::Tail).collect();
    (0..dataset.n_items())
        .into_par_iter()
        .map(|i| {
            let v = &vectors[i];
            tail.iter()
                .filter(|&&j| j != i)
                .map(|&j| (j, v.iter().zip(&vectors[j]).map(|(a, b)| a * b).sum::<f32>()))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(j, _)| j as u32)
        })
        .collect()
}

/// Item texts' view for explanations: keywords shared with the user's recent items.
pub fn explain(texts: &ItemTexts, recent: &[u32], item: u32) -> String {
    let keywords = &texts.keywords[item as usize];
    // The most recent item sharing the most keywords.
    let mut best: Option<(usize, u32, Vec<&str>)> = None;
    for &r in recent.iter().rev() {
        let shared: Vec<&str> = keywords
            .iter()
            .filter(|k| texts.keywords[r as usize].binary_search(k).is_ok())
            .map(String::as_str)
            .collect();
        if !shared.is_empty() && best.as_ref().is_none_or(|(n, _, _)| shared.len() > *n) {
            best = Some((shared.len(), r, shared));
        }
    }
    match best {
        Some((_, r, shared)) => {
            let shown: Vec<&str> = shared.into_iter().take(3).collect();
            format!("shares {} with {}", shown.join(", "), texts.titles[r as usize])
        }
        None => "follows your recent sequence (no shared keywords)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Ids;

    /// 60 users walking a ring of 30 items: after item i comes item i+1, so
    /// the next item is fully predictable from the last one.
    fn ring() -> Dataset {
        let n = 30u32;
        let sequences: Vec<Vec<u32>> = (0..60u32).map(|u| (0..12).map(|k| (u * 7 + k) % n).collect()).collect();
        Dataset::from_sequences(Ids::Int64((0..n as i64).collect()), Ids::Int64((0..60).collect()), sequences).unwrap()
    }

    fn config() -> TrainConfig {
        TrainConfig {
            hidden: 16,
            blocks: 1,
            heads: 1,
            maxlen: 16,
            dropout: 0.1,
            batch_size: 16,
            lr: 5e-3,
            ..TrainConfig::default()
        }
    }

    fn inputs<'a>(dataset: &'a Dataset, config: &'a TrainConfig) -> TrainInputs<'a> {
        TrainInputs {
            dataset,
            config,
            variant: Variant::Id,
            seed: 7,
            text_features: None,
            substitutes: None,
            text_fingerprint: String::new(),
            device: Device::Cpu,
        }
    }

    #[test]
    fn loss_decreases_and_the_ring_is_learned() {
        let dataset = ring();
        let config = config();
        let inputs = inputs(&dataset, &config);
        let (model, params) = inputs.build_model().unwrap();
        let mut adam = Adam::new(&params, config.lr, config.beta2, 0.0).unwrap();
        let examples: Vec<Example> = dataset
            .users
            .iter()
            .map(|u| Example {
                train: u.train(),
                seen: {
                    let mut s = u.train().to_vec();
                    s.sort();
                    s.dedup();
                    s
                },
            })
            .collect();
        let first = run_epoch(&inputs, &model, &mut adam, &examples, 1).unwrap();
        let mut last = first;
        for epoch in 2..=60 {
            last = run_epoch(&inputs, &model, &mut adam, &examples, epoch).unwrap();
        }
        assert!(last < 0.5 * first, "loss {first} → {last}");
        // The validation target is the successor of the last training item: a model that learned the ring ranks it first.
        let report = evaluate_model(&model, &dataset, Phase::Valid).unwrap();
        assert!(report.full.overall.hr > 0.9, "HR@10 {}", report.full.overall.hr);
    }

    #[test]
    fn dual_learns_the_ring_and_keeps_its_views_apart() {
        let dataset = ring();
        let config = config();
        let mut rng = SplitMix64::new(11);
        let features: Vec<Vec<f32>> = (0..=dataset.n_items())
            .map(|i| {
                if i == 0 {
                    vec![0.0; 12]
                } else {
                    (0..12).map(|_| crate::params::standard_normal(&mut rng) as f32).collect()
                }
            })
            .collect();
        let inputs =
            TrainInputs { variant: Variant::Dual, text_features: Some(features.clone()), ..inputs(&dataset, &config) };
        let (model, params) = inputs.build_model().unwrap();
        assert_eq!(model.table_width(), 2 * config.hidden);
        let mut adam = Adam::new(&params, config.lr, config.beta2, 0.0).unwrap();
        let examples: Vec<Example> =
            dataset.users.iter().map(|u| Example { train: u.train(), seen: u.train().to_vec() }).collect();
        for epoch in 1..=60 {
            run_epoch(&inputs, &model, &mut adam, &examples, epoch).unwrap();
        }
        let report = evaluate_model(&model, &dataset, Phase::Valid).unwrap();
        assert!(report.full.overall.hr > 0.9, "HR@10 {}", report.full.overall.hr);

        // Another text for item 5 moves only the text half of the item table
        // and of the user vectors (the ID encoder never reads text).
        let mut other = features;
        other[6].iter_mut().for_each(|x| *x = -*x);
        let changed = TrainInputs { text_features: Some(other), ..inputs };
        let (model2, params2) = changed.build_model().unwrap();
        params2.load(&params.snapshot().unwrap()).unwrap();
        let users: Vec<(usize, &[u32])> = (0..dataset.n_users()).map(|u| (u, dataset.users[u].train())).collect();
        let (a, b) =
            (vector_scorer(&model, &dataset, &users).unwrap(), vector_scorer(&model2, &dataset, &users).unwrap());
        let h = config.hidden;
        let halves = |v: &[f32], first: bool| -> Vec<f32> {
            v.chunks(2 * h).flat_map(|row| if first { row[..h].to_vec() } else { row[h..].to_vec() }).collect()
        };
        assert_eq!(halves(&a.items, true), halves(&b.items, true));
        assert_eq!(halves(&a.users, true), halves(&b.users, true));
        assert_ne!(halves(&a.items, false), halves(&b.items, false));
        assert_ne!(halves(&a.users, false), halves(&b.users, false), "users whose sequences hold item 5");
    }

    #[test]
    fn a_warm_start_carries_known_items_rows_and_keeps_new_items_init() {
        let dataset = ring();
        let config = config();
        let inputs = inputs(&dataset, &config);
        let (_, previous) = inputs.build_model().unwrap();
        let mut tensors = previous.snapshot().unwrap();
        // The previous run's table: row r holds r everywhere (rows 1..=30 are its items 0..30).
        let h = config.hidden;
        let rows: Vec<f32> = (0..=30).flat_map(|r| vec![r as f32; h]).collect();
        tensors.insert(ITEM_EMBEDDING.into(), Tensor::from_vec(rows, (31, h), &Device::Cpu).unwrap());
        // This run's item 0 was the previous item 5; item 1 is new; the rest as before.
        let mut previous_index: Vec<Option<usize>> = (0..30).map(Some).collect();
        previous_index[0] = Some(5);
        previous_index[1] = None;
        let warm = WarmStart { tensors, previous_index };
        assert_eq!(warm.carried_items(), 29);
        let (_, fresh) = inputs.build_model().unwrap();
        let init = fresh.snapshot().unwrap()[ITEM_EMBEDDING].to_vec2::<f32>().unwrap();
        warm.load_into(&fresh).unwrap();
        let table = fresh.snapshot().unwrap()[ITEM_EMBEDDING].to_vec2::<f32>().unwrap();
        assert_eq!(table[1], vec![6.0; h], "item 0 carries the previous item 5's row (row 6)");
        assert_eq!(table[2], init[2], "the new item keeps this run's initialisation");
        assert_eq!(table[3], vec![3.0; h]);
        assert_eq!(table[0], init[0], "padding stays");
    }

    #[test]
    fn a_checkpoint_round_trip_gives_identical_scores() {
        let dataset = ring();
        let config = config();
        let inputs = inputs(&dataset, &config);
        let (model, params) = inputs.build_model().unwrap();
        let mut adam = Adam::new(&params, config.lr, config.beta2, 0.0).unwrap();
        let examples: Vec<Example> =
            dataset.users.iter().map(|u| Example { train: u.train(), seen: u.train().to_vec() }).collect();
        for epoch in 1..=3 {
            run_epoch(&inputs, &model, &mut adam, &examples, epoch).unwrap();
        }
        let bytes = safetensors_bytes(&params.snapshot().unwrap()).unwrap();
        let (fresh, fresh_params) = inputs.build_model().unwrap();
        let before = evaluate_model(&fresh, &dataset, Phase::Test).unwrap();
        fresh_params.load(&candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap()).unwrap();
        let users: Vec<(usize, &[u32])> = (0..dataset.n_users()).map(|u| (u, dataset.users[u].train())).collect();
        let a = vector_scorer(&model, &dataset, &users).unwrap();
        let b = vector_scorer(&fresh, &dataset, &users).unwrap();
        assert_eq!(a.items, b.items);
        assert_eq!(a.users, b.users);
        let after = evaluate_model(&fresh, &dataset, Phase::Test).unwrap();
        assert_eq!(after, evaluate_model(&model, &dataset, Phase::Test).unwrap());
        assert_ne!(before, after, "loading changed nothing: the test would pass vacuously");
    }

    /// Positions a batch computes: every row padded to the batch's longest.
    fn padded_positions(examples: &[Example], batches: &[Vec<usize>]) -> usize {
        batches.iter().map(|b| b.len() * b.iter().map(|&e| examples[e].train.len()).max().unwrap_or(0)).sum()
    }

    #[test]
    fn length_buckets_keep_every_example_once_and_pad_less() {
        // 1000 users with lengths 2..=201 in a scrambled order.
        let histories: Vec<Vec<u32>> = (0..1000u32).map(|u| vec![1; 2 + (u * 37 % 200) as usize]).collect();
        let examples: Vec<Example> = histories.iter().map(|h| Example { train: h, seen: vec![1] }).collect();
        let plain = epoch_batches(&examples, 128, 1, 9);
        // length_buckets = 1 is a shuffle cut into consecutive batches.
        let mut order: Vec<usize> = (0..1000).collect();
        shuffle(&mut order, &mut SplitMix64::new(9));
        assert_eq!(plain, order.chunks(128).map(<[usize]>::to_vec).collect::<Vec<_>>());
        for k in [2, 4, 8, 100] {
            let bucketed = epoch_batches(&examples, 128, k, 9);
            let mut all: Vec<usize> = bucketed.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>(), "k = {k}: every example exactly once");
            assert!(bucketed.iter().all(|b| !b.is_empty() && b.len() <= 128));
            assert_eq!(bucketed, epoch_batches(&examples, 128, k, 9), "deterministic for a seed");
            assert_ne!(bucketed, epoch_batches(&examples, 128, k, 10), "the seed moves the batches");
            let (p, b) = (padded_positions(&examples, &plain), padded_positions(&examples, &bucketed));
            // Sorted pools of k batches: the i-th batch of a pool pads to about (k - i) / k of the longest.
            let bound = if k == 2 { p * 4 / 5 } else { p * 2 / 3 };
            assert!(b < bound, "k = {k}: {b} padded positions vs {p} for random batches");
        }
    }

    #[test]
    fn text_pca_init_keeps_padding_zero_and_the_random_init_spread() {
        // Row 0 is padding; items 1..=40 have 6-d "text" on two planted
        // directions, items 3 and 4 with the same text.
        let mut rng = SplitMix64::new(5);
        let mut rows = vec![vec![0f32; 6]];
        for _ in 1..=40 {
            let (a, b) =
                (crate::params::standard_normal(&mut rng) as f32, crate::params::standard_normal(&mut rng) as f32);
            rows.push(vec![a, b, a - b, 0.5, 0.0, 0.1 * a]);
        }
        rows[4] = rows[3].clone();
        // hidden 8 > text width 6: the last two columns stay zero.
        let hidden = 8;
        let table = text_pca_embedding(&rows, hidden, 3);
        assert_eq!(table.len(), rows.len() * hidden);
        assert!(table[..hidden].iter().all(|&x| x == 0.0), "padding row is zero");
        assert!((1..rows.len()).all(|i| table[i * hidden + 6..(i + 1) * hidden].iter().all(|&x| x == 0.0)));
        assert_eq!(table[3 * hidden..4 * hidden], table[4 * hidden..5 * hidden], "same text, same start");
        assert_ne!(table[3 * hidden..4 * hidden], table[5 * hidden..6 * hidden]);
        let items = &table[hidden..];
        let rms = (items.iter().map(|&x| x as f64 * x as f64).sum::<f64>() / items.len() as f64).sqrt();
        let xavier = (2.0 / (rows.len() + hidden) as f64).sqrt();
        assert!((rms - xavier).abs() < 1e-4 * xavier, "spread {rms} vs Xavier-normal {xavier}");
    }

    #[test]
    fn explanations_name_shared_keywords_and_the_item() {
        let texts = ItemTexts {
            titles: vec!["Alien".into(), "Heat".into(), "Aliens".into()],
            texts: vec![String::new(); 3],
            keywords: vec![
                vec!["horror".into(), "space".into()],
                vec!["crime".into()],
                vec!["action".into(), "space".into()],
            ],
            generated: vec![false; 3],
        };
        assert_eq!(explain(&texts, &[0, 1], 2), "shares space with Alien");
        assert_eq!(explain(&texts, &[1], 2), "follows your recent sequence (no shared keywords)");
    }
}
