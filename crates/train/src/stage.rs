//! `tailforge train`: from an analyze output (and optionally a generate
//! output) to a trained, evaluated model and its serving artefacts.
//!
//! ```text
//! <out>/metrics.json      eval-v1 valid + test, training curve, timings
//! <out>/metrics.md        the same as Markdown tables
//! <out>/item_embeddings.parquet   item_id, group, vector (the scoring table)
//! <out>/recommendations.parquet   user_id, rank, item_id, score, why
//! <out>/checkpoints/      last.safetensors (+ optimizer, resumable), best.safetensors, best.json
//! <out>/_SUCCESS          written last
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::Device;
use serde::Serialize;
use tailforge_core::config::{IdInit, TrainConfig, Variant};
use tailforge_core::parquet_io::ParquetSink;
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, Result};

use crate::dataset::{Dataset, Ids, Phase};
use crate::eval::{EvalReport, top_k};
use crate::item_text::{ItemTexts, load_item_texts};
use crate::load::load_dataset;
use crate::text::{EmbeddingCache, TextEncoder};
use crate::trainer::{
    Checkpoints, EpochRecord, ModelCard, TrainInputs, Trained, evaluate_model, explain, fit, nearest_tail_items,
    safetensors_bytes, vector_scorer,
};

/// What to train and where.
pub struct TrainRequest {
    pub analyze_out: Location,
    /// The generate stage's output; its descriptions and keywords join tail items' text.
    pub generate_out: Option<Location>,
    pub out: Location,
    pub config: TrainConfig,
    pub variant: Variant,
    pub seed: u64,
    /// Text embedding cache directory.
    pub embedding_cache: Location,
}

/// Text statistics of a run.
#[derive(Debug, Clone, Serialize)]
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

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
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
    pub text: Option<TextStats>,
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

fn device(spec: &str) -> Result<Device> {
    let bad = |e: candle_core::Error| {
        Error::config("train.device", "train.device", format!("{spec}: {e} (build with `--features cuda` for GPUs)"))
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(bad),
        other => {
            let n = other.strip_prefix("cuda:").and_then(|n| n.parse().ok()).ok_or_else(|| {
                Error::config("train.device", "train.device", format!("{other}: expected cpu, cuda or cuda:N"))
            })?;
            Device::new_cuda(n).map_err(bad)
        }
    }
}

/// The text features of every item (`[n_items + 1, d]`, row 0 padding) and
/// their fingerprint, encoding only texts the cache has not seen.
async fn text_features(
    cfg: &TrainConfig,
    texts: &ItemTexts,
    cache_dir: &Location,
    dev: &Device,
) -> Result<(Vec<Vec<f32>>, String, TextStats)> {
    let start = Instant::now();
    let encoder_dir = PathBuf::from(&cfg.encoder);
    let (max_tokens, batch) = (cfg.max_text_tokens, cfg.encode_batch);
    let dev2 = dev.clone();
    let encoder = tokio::task::spawn_blocking(move || TextEncoder::load(&encoder_dir, max_tokens, &dev2))
        .await
        .map_err(|e| Error::internal(format!("encoder task: {e}")))??;
    let mut cache = EmbeddingCache::open(cache_dir, &encoder.fingerprint, encoder.dim()).await?;
    let encoder_fingerprint = encoder.fingerprint.clone();
    let all = texts.texts.clone();
    let (vectors, encoded, cached, mut cache) = tokio::task::spawn_blocking(move || {
        let (v, n, c) = cache.embed(&encoder, &all, batch)?;
        Ok::<_, Error>((v, n, c, cache))
    })
    .await
    .map_err(|e| Error::internal(format!("encoder task: {e}")))??;
    cache.save().await?;
    let dim = vectors.first().map(Vec::len).unwrap_or(0);
    let mut rows = Vec::with_capacity(vectors.len() + 1);
    rows.push(vec![0.0; dim]);
    rows.extend(vectors);
    let fingerprint = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for t in &texts.texts {
            h.update(EmbeddingCache::key("", t).as_bytes());
        }
        crate::text::hex(&h.finalize())[..16].to_string()
    };
    let stats = TextStats {
        encoder: encoder_fingerprint,
        items_with_generated_text: texts.generated_count(),
        encoded_now: encoded,
        from_cache: cached,
        encode_seconds: start.elapsed().as_secs_f64(),
    };
    tracing::info!(
        items = texts.texts.len(),
        encoded,
        from_cache = cached,
        cache_entries = cache.len(),
        seconds = stats.encode_seconds,
        "item texts embedded"
    );
    Ok((rows, fingerprint, stats))
}

/// Reads a warm-start checkpoint (`<dir>/checkpoints/best.safetensors`) when
/// its shape and vocabulary match this run.
async fn warm_start_tensors(
    dir: &str,
    inputs: &TrainInputs<'_>,
) -> Result<Option<std::collections::HashMap<String, candle_core::Tensor>>> {
    if dir.is_empty() {
        return Ok(None);
    }
    let base = Location::parse(dir)?.as_dir();
    let card_loc = base.join("checkpoints/best.json");
    if !card_loc.exists().await? {
        tracing::warn!(warm_start = %card_loc.display(), "no checkpoint to warm-start from; training from scratch");
        return Ok(None);
    }
    let card: ModelCard = serde_json::from_slice(&card_loc.get().await?)
        .map_err(|e| Error::internal(format!("{}: {e}", card_loc.display())))?;
    let cfg = inputs.config;
    let same_items = card.items == ids_json(&inputs.dataset.item_ids);
    let same_shape = card.variant == inputs.variant
        && (card.hidden, card.blocks, card.heads, card.maxlen) == (cfg.hidden, cfg.blocks, cfg.heads, cfg.maxlen);
    if !(same_items && same_shape) {
        tracing::warn!(
            warm_start = %base.display(),
            same_items,
            same_shape,
            "warm-start checkpoint does not match this run's items or model; training from scratch"
        );
        return Ok(None);
    }
    let bytes = base.join("checkpoints/best.safetensors").get().await?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &inputs.device)
        .map_err(|e| Error::internal(format!("warm start {}: {e}", base.display())))?;
    tracing::info!(warm_start = %base.display(), epoch = card.epoch, "warm-starting");
    Ok(Some(tensors))
}

fn ids_json(ids: &Ids) -> serde_json::Value {
    match ids {
        Ids::Int64(v) => serde_json::json!(v),
        Ids::Utf8(v) => serde_json::json!(v),
    }
}

/// An Arrow array of the ids at `indices`.
fn ids_array(ids: &Ids, indices: &[usize]) -> ArrayRef {
    match ids {
        Ids::Int64(v) => Arc::new(Int64Array::from_iter_values(indices.iter().map(|&i| v[i]))),
        Ids::Utf8(v) => Arc::new(StringArray::from_iter_values(indices.iter().map(|&i| v[i].as_str()))),
    }
}

fn id_type(ids: &Ids) -> DataType {
    ids.kind().data_type()
}

async fn write_batch(target: &Location, batch: RecordBatch) -> Result<()> {
    let mut sink = ParquetSink::create(target, batch.schema())?;
    sink.write(&batch).await?;
    sink.finish().await?;
    Ok(())
}

/// `item_embeddings.parquet`: the model's item table, the vectors a serving
/// system scores users' vectors against.
async fn write_item_embeddings(out: &Location, dataset: &Dataset, items: &[f32], hidden: usize) -> Result<()> {
    let n = dataset.n_items();
    let element = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(element.clone(), hidden as i32, Arc::new(Float32Array::from(items.to_vec())), None)
            .map_err(|e| Error::internal(format!("item embeddings: {e}")))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", id_type(&dataset.item_ids), false),
        Field::new("eval_group", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(element, hidden as i32), false),
    ]));
    let all: Vec<usize> = (0..n).collect();
    let groups = StringArray::from_iter_values(dataset.groups.iter().map(|g| g.as_str()));
    let batch =
        RecordBatch::try_new(schema, vec![ids_array(&dataset.item_ids, &all), Arc::new(groups), Arc::new(vectors)])
            .map_err(|e| Error::internal(format!("item embeddings: {e}")))?;
    write_batch(&out.join("item_embeddings.parquet"), batch).await
}

/// One recommended item: dense index, score, explanation.
type Recommendation = (u32, f32, String);

/// `recommendations.parquet`'s rows: each user's top-K next items after
/// their whole history (seen items excluded), with scores and a short explanation.
fn recommendations(trained: &Trained, dataset: &Dataset, texts: &ItemTexts, cfg: &TrainConfig) -> Result<RecordBatch> {
    let users: Vec<(usize, &[u32])> = (0..dataset.n_users()).map(|u| (u, dataset.users[u].items.as_slice())).collect();
    let scorer = vector_scorer(&trained.model, dataset, &users)?;
    let rows: Vec<(usize, Vec<Recommendation>)> = {
        use crate::eval::Scorer;
        use rayon::prelude::*;
        users
            .par_iter()
            .map(|&(u, history)| {
                let n = dataset.n_items();
                let mut scores = vec![0.0f32; n];
                scorer.score(u, history, &mut scores);
                let mut excluded = vec![false; n];
                history.iter().for_each(|&i| excluded[i as usize] = true);
                let recent = &history[history.len().saturating_sub(cfg.why_recent)..];
                let top = top_k(&scores, &excluded, cfg.top_k);
                (u, top.into_iter().map(|i| (i, scores[i as usize], explain(texts, recent, i))).collect())
            })
            .collect()
    };
    let mut user_idx = Vec::new();
    let mut item_idx = Vec::new();
    let mut ranks = Vec::new();
    let mut scores = Vec::new();
    let mut whys = Vec::new();
    for (u, recs) in rows {
        for (rank, (item, score, why)) in recs.into_iter().enumerate() {
            user_idx.push(u);
            item_idx.push(item as usize);
            ranks.push(rank as i64 + 1);
            scores.push(score);
            whys.push(why);
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", id_type(&dataset.user_ids), false),
        Field::new("rank", DataType::Int64, false),
        Field::new("item_id", id_type(&dataset.item_ids), false),
        Field::new("score", DataType::Float32, false),
        Field::new("why", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            ids_array(&dataset.user_ids, &user_idx),
            Arc::new(Int64Array::from(ranks)),
            ids_array(&dataset.item_ids, &item_idx),
            Arc::new(Float32Array::from(scores)),
            Arc::new(StringArray::from(whys)),
        ],
    )
    .map_err(|e| Error::internal(format!("recommendations: {e}")))
}

/// Trains, evaluates and writes one variant. See the module docs for the layout.
pub async fn train(req: &TrainRequest) -> Result<TrainMetrics> {
    let start = Instant::now();
    let cfg = &req.config;
    let out = req.out.as_dir();
    // A previous success marker no longer describes what is about to be written.
    out.join(SUCCESS_MARKER).delete_if_exists().await?;
    let dev = device(&cfg.device)?;
    let dataset = load_dataset(&req.analyze_out).await?;
    let generate_out = if cfg.use_generated { req.generate_out.as_ref() } else { None };
    let texts = load_item_texts(&dataset, &req.analyze_out, generate_out).await?;

    let text_init = cfg.id_init == IdInit::TextPca && req.variant != Variant::Text;
    let (features, text_fingerprint, text_stats) = if req.variant.uses_text() || cfg.substitute_rate > 0.0 || text_init
    {
        let (rows, fp, stats) = text_features(cfg, &texts, &req.embedding_cache, &dev).await?;
        (Some(rows), fp, Some(stats))
    } else {
        (None, String::new(), None)
    };
    let substitutes = match (&features, cfg.substitute_rate > 0.0) {
        (Some(rows), true) => Some(nearest_tail_items(&dataset, &rows[1..])),
        _ => None,
    };
    let inputs = TrainInputs {
        dataset: &dataset,
        config: cfg,
        variant: req.variant,
        seed: req.seed,
        text_features: if req.variant.uses_text() || text_init { features } else { None },
        substitutes,
        text_fingerprint,
        device: dev.clone(),
    };
    let warm = warm_start_tensors(&cfg.warm_start, &inputs).await?;
    let checkpoints = Checkpoints { dir: out.join("checkpoints/"), runtime: tokio::runtime::Handle::current() };

    // The loop is CPU-bound: it runs on this (blocking) thread inside its own
    // rayon pool, which candle's matrix products and the evaluator use.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads())
        .build()
        .map_err(|e| Error::internal(format!("thread pool: {e}")))?;
    // candle's element-wise CPU kernels run on a pool of their own, sized
    // once per process by CANDLE_NUM_THREADS (default: physical cores), not
    // by this pool: say so when the two differ.
    let elementwise_threads = candle_core::utils::barrier_pool().n_workers() + 1;
    if dev.is_cpu() && elementwise_threads != cfg.threads() {
        tracing::info!(
            "candle's element-wise kernels use {elementwise_threads} threads; set CANDLE_NUM_THREADS={} to match train.threads",
            cfg.threads()
        );
    }
    tracing::info!(
        variant = req.variant.as_str(),
        users = dataset.n_users(),
        items = dataset.n_items(),
        threads = cfg.threads(),
        device = %cfg.device,
        "training"
    );
    let (trained, valid, test, recs) = tokio::task::block_in_place(|| {
        pool.install(|| -> Result<_> {
            let trained = fit(&inputs, &checkpoints, warm.as_ref())?;
            let valid = evaluate_model(&trained.model, &dataset, Phase::Valid)?;
            let test = evaluate_model(&trained.model, &dataset, Phase::Test)?;
            let recs = recommendations(&trained, &dataset, &texts, cfg)?;
            Ok((trained, valid, test, recs))
        })
    })?;

    // Serving artefacts.
    let table = trained.model.item_table().map_err(|e| Error::internal(format!("item table: {e}")))?;
    let h = cfg.hidden;
    let all: Vec<f32> = table.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| Error::internal(format!("{e}")))?;
    write_item_embeddings(&out, &dataset, &all[h..], h).await?;
    let n_recs = recs.num_rows();
    write_batch(&out.join("recommendations.parquet"), recs).await?;
    let best = trained.params.snapshot().map_err(|e| Error::internal(format!("{e}")))?;
    out.join("checkpoints/best.safetensors").put(safetensors_bytes(&best)?).await?;
    let card = ModelCard {
        format: 1,
        variant: req.variant,
        epoch: trained.summary.best_epoch,
        valid_ndcg: valid.full.overall.ndcg,
        hidden: cfg.hidden,
        blocks: cfg.blocks,
        heads: cfg.heads,
        maxlen: cfg.maxlen,
        items: ids_json(&dataset.item_ids),
    };
    out.join("checkpoints/best.json")
        .put(serde_json::to_vec(&card).map_err(|e| Error::internal(format!("model card: {e}")))?)
        .await?;

    let s = &trained.summary;
    let metrics = TrainMetrics {
        variant: req.variant,
        epochs: s.epochs_run,
        best_epoch: s.best_epoch,
        coverage: test.coverage,
        tail_share: test.tail_share,
        test,
        valid,
        seconds_per_epoch: s.seconds_per_epoch,
        seconds: start.elapsed().as_secs_f64(),
        parameters: trained.params.count(),
        resumed_after_epoch: s.resumed_after,
        warm_started: s.warm_started,
        text: text_stats,
        history: s.history.clone(),
        config: cfg.clone(),
    };
    let json = serde_json::to_vec_pretty(&metrics).map_err(|e| Error::internal(format!("metrics: {e}")))?;
    out.join("metrics.json").put(json).await?;
    out.join("metrics.md").put(metrics.to_markdown().into_bytes()).await?;
    out.join(SUCCESS_MARKER).put(Vec::new()).await?;
    tracing::info!(
        variant = req.variant.as_str(),
        best_epoch = s.best_epoch,
        test_ndcg = metrics.test.full.overall.ndcg,
        tail_ndcg = metrics.test.full.tail.ndcg,
        recommendations = n_recs,
        seconds = metrics.seconds,
        "trained"
    );
    Ok(metrics)
}
