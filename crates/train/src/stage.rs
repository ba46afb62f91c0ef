//! `tailforge train`: from an analyze output (and optionally a generate
//! output) to a trained, evaluated model and its serving artefacts.
//!
//! ```text
//! <out>/metrics.json      eval-v1 valid + test, training curve, timings
//! <out>/metrics.md        the same as Markdown tables
//! <out>/item_embeddings.parquet   item_id, eval_group, vector (the scoring table; core::schema)
//! <out>/recommendations.parquet   user_id, rank, item_id, score, why (core::schema)
//! <out>/checkpoints/      last.safetensors (+ optimizer, resumable), best.safetensors, best.json
//! <out>/_SUCCESS          written last
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use candle_core::Device;
use tailforge_core::config::{IdInit, TrainConfig, Variant, WarmStartFrom};
use tailforge_core::parquet_io::ParquetSink;
use tailforge_core::schema::{item_embeddings_schema, recommendations_schema, train_outputs};
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, Result};

use crate::dataset::{Dataset, Ids, Phase};
use crate::eval::top_k;
use crate::item_text::{ItemTexts, load_item_texts};
use crate::load::load_dataset;
use crate::scoring::{RuledScorer, ScoringRule, Signals, UnitText};
use crate::text::{EmbeddingCache, TextEncoder};
use crate::trainer::{
    Checkpoints, ModelCard, TrainInputs, Trained, WarmStart, evaluate_ruled, explain, fit, nearest_tail_items,
    safetensors_bytes, vector_scorer,
};

pub use tailforge_core::records::{BaselineMetrics, ScoringChoice, TextStats, TrainMetrics, WarmStartItems};

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
        tailforge_core::hash::hex(&h.finalize())[..16].to_string()
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

/// A reference model, evaluated by `tailforge evaluate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// [`crate::baselines::MostPop`]: eval-v1's check.
    MostPop,
    /// [`crate::baselines::ItemKnn`] over the last 5 items.
    ItemKnn,
    /// [`crate::baselines::TextKnn`] over the last 5 items, on the train stage's item text and encoder.
    TextKnn,
    /// [`crate::baselines::KnnBlend`] of the two: EVAL.md's strongest tail peer.
    KnnBlend,
}

impl Baseline {
    pub fn as_str(self) -> &'static str {
        match self {
            Baseline::MostPop => "mostpop",
            Baseline::ItemKnn => "item_knn",
            Baseline::TextKnn => "text_knn",
            Baseline::KnnBlend => "knn_blend",
        }
    }
}

/// eval-v1 (validation and test) of a baseline on an analyze output. The
/// text kNN encodes the catalog text with `cfg`'s encoder, through
/// `embedding_cache`.
pub async fn evaluate_baseline(
    baseline: Baseline,
    analyze_out: &Location,
    cfg: &TrainConfig,
    embedding_cache: &Location,
) -> Result<BaselineMetrics> {
    use crate::baselines::{ItemKnn, KnnBlend, MostPop, TextKnn};
    use crate::eval::{EvalOptions, Scorer, evaluate};
    let dataset = load_dataset(analyze_out).await?;
    let text_knn = || async {
        let texts = load_item_texts(&dataset, analyze_out, None).await?;
        let (features, _, _) = text_features(cfg, &texts, embedding_cache, &Device::Cpu).await?;
        Ok::<_, Error>(TextKnn::new(&features, 5))
    };
    let scorer: Box<dyn Scorer> = match baseline {
        Baseline::MostPop => Box::new(MostPop::new(&dataset)),
        Baseline::ItemKnn => Box::new(ItemKnn::new(&dataset, 5)),
        Baseline::TextKnn => Box::new(text_knn().await?),
        Baseline::KnnBlend => Box::new(KnnBlend {
            item_knn: ItemKnn::new(&dataset, 5),
            text_knn: text_knn().await?,
            text_weight: KnnBlend::TEXT_WEIGHT,
        }),
    };
    let options = EvalOptions::default();
    tokio::task::block_in_place(|| {
        let valid = evaluate(&dataset, scorer.as_ref(), Phase::Valid, &options)?;
        let test = evaluate(&dataset, scorer.as_ref(), Phase::Test, &options)?;
        Ok(BaselineMetrics { test, valid, variant: baseline.as_str().to_string() })
    })
}

/// Writes a baseline's `metrics.json` and `metrics.md` under `out`.
pub async fn write_baseline_metrics(out: &Location, metrics: &BaselineMetrics) -> Result<()> {
    out.join(train_outputs::METRICS).put(metrics.to_json()?).await?;
    out.join(train_outputs::METRICS_MARKDOWN).put(metrics.to_markdown().into_bytes()).await
}

/// Reads a warm-start checkpoint (`<dir>/checkpoints/best.safetensors`) when
/// its model has this run's shape, with its items mapped onto this run's by
/// id: known items keep their learned rows, new ones start as configured.
async fn warm_start_tensors(from: &WarmStartFrom, inputs: &TrainInputs<'_>) -> Result<Option<WarmStart>> {
    let dir = match from {
        WarmStartFrom::Scratch => return Ok(None),
        WarmStartFrom::Previous => {
            tracing::warn!(
                "train.warm_start = \"previous\" names the latest run of `tailforge run`; \
                 without a run there is none: training from scratch"
            );
            return Ok(None);
        }
        WarmStartFrom::Dir(dir) => dir,
    };
    let base = Location::parse(dir)?.as_dir();
    let card_loc = base.join("checkpoints/best.json");
    if !card_loc.exists().await? {
        tracing::warn!(warm_start = %card_loc.display(), "no checkpoint to warm-start from; training from scratch");
        return Ok(None);
    }
    let card: ModelCard = serde_json::from_slice(&card_loc.get().await?)
        .map_err(|e| Error::internal(format!("{}: {e}", card_loc.display())))?;
    let cfg = inputs.config;
    let same_shape = card.variant == inputs.variant
        && (card.hidden, card.blocks, card.heads, card.maxlen) == (cfg.hidden, cfg.blocks, cfg.heads, cfg.maxlen);
    if !same_shape {
        tracing::warn!(
            warm_start = %base.display(),
            "warm-start checkpoint is another variant or model shape; training from scratch"
        );
        return Ok(None);
    }
    let previous_index = previous_indices(&card.items, &inputs.dataset.item_ids);
    let bytes = base.join("checkpoints/best.safetensors").get().await?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &inputs.device)
        .map_err(|e| Error::internal(format!("warm start {}: {e}", base.display())))?;
    let warm = WarmStart { tensors, previous_index };
    tracing::info!(
        warm_start = %base.display(),
        epoch = card.epoch,
        carried_items = warm.carried_items(),
        new_items = inputs.dataset.n_items() - warm.carried_items(),
        "warm-starting"
    );
    Ok(Some(warm))
}

/// Runs `step`, then logs `what` with the seconds it took.
fn timed<T>(what: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let value = step()?;
    tracing::info!(seconds = start.elapsed().as_secs_f64(), "{what}");
    Ok(value)
}

/// For each item of `ids`, its index in a model card's item list (`items`,
/// a JSON array of the previous run's ids by dense index), if it is there.
fn previous_indices(items: &serde_json::Value, ids: &Ids) -> Vec<Option<usize>> {
    let previous = items.as_array().map(Vec::as_slice).unwrap_or_default();
    match ids {
        Ids::Int64(v) => {
            let index: std::collections::HashMap<i64, usize> =
                previous.iter().enumerate().filter_map(|(k, x)| x.as_i64().map(|x| (x, k))).collect();
            v.iter().map(|id| index.get(id).copied()).collect()
        }
        Ids::Utf8(v) => {
            let index: std::collections::HashMap<&str, usize> =
                previous.iter().enumerate().filter_map(|(k, x)| x.as_str().map(|x| (x, k))).collect();
            v.iter().map(|id| index.get(id.as_str()).copied()).collect()
        }
    }
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
    let schema = Arc::new(item_embeddings_schema(dataset.item_ids.kind(), hidden));
    let element = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors =
        FixedSizeListArray::try_new(element, hidden as i32, Arc::new(Float32Array::from(items.to_vec())), None)
            .map_err(|e| Error::internal(format!("item embeddings: {e}")))?;
    let all: Vec<usize> = (0..n).collect();
    let groups = StringArray::from_iter_values(dataset.groups.iter().map(|g| g.as_str()));
    let batch =
        RecordBatch::try_new(schema, vec![ids_array(&dataset.item_ids, &all), Arc::new(groups), Arc::new(vectors)])
            .map_err(|e| Error::internal(format!("item embeddings: {e}")))?;
    write_batch(&out.join(train_outputs::ITEM_EMBEDDINGS), batch).await
}

/// One recommended item: dense index, score, explanation.
type Recommendation = (u32, f32, String);

/// `recommendations.parquet`'s rows: each user's top-K next items after
/// their whole history (seen items excluded), with scores and a short explanation.
fn recommendations(
    trained: &Trained,
    dataset: &Dataset,
    texts: &ItemTexts,
    cfg: &TrainConfig,
    rule: ScoringRule,
    signals: Signals,
) -> Result<RecordBatch> {
    let users: Vec<(usize, &[u32])> = (0..dataset.n_users()).map(|u| (u, dataset.users[u].items.as_slice())).collect();
    let vectors = vector_scorer(&trained.model, dataset, &users)?;
    let scorer = RuledScorer::new(dataset, trained.model.shape.variant, vectors, rule, signals);
    // Users in blocks, so a large item table is streamed once per block
    // (`Scorer::score_block`), not once per user.
    let rows: Vec<(usize, Vec<Recommendation>)> = {
        use crate::eval::{Scorer, USER_BLOCK};
        use rayon::prelude::*;
        let n = dataset.n_items();
        users
            .par_chunks(USER_BLOCK)
            .flat_map_iter(|block| {
                let mut scores = vec![vec![0.0f32; n]; block.len()];
                let mut out: Vec<&mut [f32]> = scores.iter_mut().map(Vec::as_mut_slice).collect();
                scorer.score_block(block, &mut out);
                let mut excluded = vec![false; n];
                let rows: Vec<(usize, Vec<Recommendation>)> = block
                    .iter()
                    .zip(&scores)
                    .map(|(&(u, history), scores)| {
                        history.iter().for_each(|&i| excluded[i as usize] = true);
                        let recent = &history[history.len().saturating_sub(cfg.why_recent)..];
                        let top = top_k(scores, &excluded, cfg.top_k);
                        history.iter().for_each(|&i| excluded[i as usize] = false);
                        (u, top.into_iter().map(|i| (i, scores[i as usize], explain(texts, recent, i))).collect())
                    })
                    .collect();
                rows
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
    let schema = Arc::new(recommendations_schema(dataset.user_ids.kind(), dataset.item_ids.kind()));
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

/// The scoring rule: the configured one, or the best on validation when
/// `train.tune_scoring` is set (logged with the plain model's figure).
fn choose_scoring(trained: &Trained, dataset: &Dataset, cfg: &TrainConfig, signals: Signals) -> Result<ScoringChoice> {
    let configured = ScoringRule::from_config(cfg);
    if !cfg.tune_scoring {
        if configured.needs_text() && signals.text.is_none() {
            return Err(Error::internal("train.content_weight needs the items' text embeddings"));
        }
        return Ok(ScoringChoice {
            rule: configured,
            tuned: false,
            plain_valid_ndcg: None,
            rule_valid_ndcg: None,
            candidates: Vec::new(),
            plain_test: None,
        });
    }
    let start = Instant::now();
    let variant = trained.model.shape.variant;
    let users: Vec<(usize, &[u32])> =
        dataset.evaluated_users().map(|u| (u, dataset.users[u].history(Phase::Valid))).collect();
    let vectors = vector_scorer(&trained.model, dataset, &users)?;
    let base = RuledScorer::new(dataset, variant, vectors, ScoringRule::PLAIN, signals);
    let has_text = signals.text.is_some();
    let mut candidates = crate::scoring::tune(dataset, &base, &crate::scoring::grid(variant, has_text));
    let no_rule = || Error::internal("no scoring rule to choose from");
    let mut best = crate::scoring::best(&candidates).ok_or_else(no_rule)?;
    if signals.cooccurrence.is_some() {
        candidates.extend(crate::scoring::tune(dataset, &base, &crate::scoring::refine(best.rule, has_text)));
        best = crate::scoring::best(&candidates).ok_or_else(no_rule)?;
    }
    let plain = candidates.first().map(|c| c.valid_ndcg);
    tracing::info!(
        variant = variant.as_str(),
        rules = candidates.len(),
        plain_valid_ndcg = plain,
        valid_ndcg = best.valid_ndcg,
        cold_threshold = best.rule.cold_threshold,
        cold_id_scale = best.rule.cold_id_scale,
        content_weight = best.rule.content_weight,
        cooccurrence_weight = best.rule.cooccurrence_weight,
        seconds = start.elapsed().as_secs_f64(),
        "scoring rule chosen on validation"
    );
    Ok(ScoringChoice {
        rule: best.rule,
        tuned: true,
        plain_valid_ndcg: plain,
        rule_valid_ndcg: Some(best.valid_ndcg),
        candidates,
        plain_test: None,
    })
}

/// The pool the training loop runs in (on the calling, blocking thread):
/// candle's matrix products and the evaluator use it.
fn training_pool(cfg: &TrainConfig, dev: &Device) -> Result<rayon::ThreadPool> {
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
    Ok(pool)
}

/// What a serving system reads: the item table, every user's
/// recommendations, and the best epoch's weights with their model card.
async fn write_serving_artefacts(
    out: &Location,
    trained: &Trained,
    dataset: &Dataset,
    recs: RecordBatch,
    card: &ModelCard,
) -> Result<()> {
    let table = trained.model.item_table().map_err(|e| Error::internal(format!("item table: {e}")))?;
    let h = trained.model.table_width();
    let all: Vec<f32> = table.flatten_all().and_then(|t| t.to_vec1()).map_err(|e| Error::internal(format!("{e}")))?;
    write_item_embeddings(out, dataset, &all[h..], h).await?;
    write_batch(&out.join(train_outputs::RECOMMENDATIONS), recs).await?;
    let best = trained.params.snapshot().map_err(|e| Error::internal(format!("{e}")))?;
    out.join("checkpoints/best.safetensors").put(safetensors_bytes(&best)?).await?;
    out.join("checkpoints/best.json")
        .put(serde_json::to_vec(card).map_err(|e| Error::internal(format!("model card: {e}")))?)
        .await
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
    let (features, text_fingerprint, text_stats) = if cfg.needs_text(req.variant) {
        let (rows, fp, stats) = text_features(cfg, &texts, &req.embedding_cache, &dev).await?;
        (Some(rows), fp, Some(stats))
    } else {
        (None, String::new(), None)
    };
    let substitutes = match (&features, cfg.substitute_rate > 0.0) {
        (Some(rows), true) => Some(nearest_tail_items(&dataset, &rows[1..])),
        _ => None,
    };
    let unit_text = features.as_deref().map(UnitText::from_features);
    let cooccurrence = (cfg.tune_scoring || cfg.cooccurrence_weight != 0.0)
        .then(|| crate::baselines::ItemKnn::new(&dataset, cfg.cooccurrence_recent));
    let signals = Signals { text: unit_text.as_ref(), cooccurrence: cooccurrence.as_ref() };
    // The weights depend on the text only when training reads it; the
    // scoring rule's content term does not, so turning on
    // `train.tune_scoring` keeps a finished run's checkpoints.
    let trains_on_text = req.variant.uses_text() || text_init || cfg.substitute_rate > 0.0;
    let inputs = TrainInputs {
        dataset: &dataset,
        config: cfg,
        variant: req.variant,
        seed: req.seed,
        text_features: if req.variant.uses_text() || text_init { features } else { None },
        substitutes,
        text_fingerprint: if trains_on_text { text_fingerprint } else { String::new() },
        device: dev.clone(),
    };
    let warm = warm_start_tensors(&cfg.warm_start, &inputs).await?;
    let checkpoints = Checkpoints { dir: out.join("checkpoints/"), runtime: tokio::runtime::Handle::current() };

    let pool = training_pool(cfg, &dev)?;
    tracing::info!(
        variant = req.variant.as_str(),
        users = dataset.n_users(),
        items = dataset.n_items(),
        threads = cfg.threads(),
        device = %cfg.device,
        "training"
    );
    let (trained, valid, test, recs, scoring) = tokio::task::block_in_place(|| {
        pool.install(|| -> Result<_> {
            let trained = fit(&inputs, &checkpoints, warm.as_ref())?;
            let mut scoring = choose_scoring(&trained, &dataset, cfg, signals)?;
            if scoring.tuned && scoring.rule != ScoringRule::PLAIN {
                let plain = evaluate_ruled(&trained.model, &dataset, Phase::Test, ScoringRule::PLAIN, signals)?;
                scoring.plain_test = Some(plain);
            }
            // Each of these ranks the whole catalog once per user: on a large
            // catalog they are most of a run's time, so each is logged with its seconds.
            let valid = timed("validation evaluated", || {
                evaluate_ruled(&trained.model, &dataset, Phase::Valid, scoring.rule, signals)
            })?;
            let test = timed("test evaluated", || {
                evaluate_ruled(&trained.model, &dataset, Phase::Test, scoring.rule, signals)
            })?;
            let recs = timed("recommendations ranked", || {
                recommendations(&trained, &dataset, &texts, cfg, scoring.rule, signals)
            })?;
            Ok((trained, valid, test, recs, scoring))
        })
    })?;

    let n_recs = recs.num_rows();
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
    write_serving_artefacts(&out, &trained, &dataset, recs, &card).await?;

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
        warm_start_items: warm
            .as_ref()
            .filter(|_| s.warm_started)
            .map(|w| WarmStartItems { carried: w.carried_items(), new: dataset.n_items() - w.carried_items() }),
        text: text_stats,
        scoring,
        history: s.history.clone(),
        config: cfg.clone(),
    };
    let json = serde_json::to_vec_pretty(&metrics).map_err(|e| Error::internal(format!("metrics: {e}")))?;
    out.join(train_outputs::METRICS).put(json).await?;
    out.join(train_outputs::METRICS_MARKDOWN).put(metrics.to_markdown().into_bytes()).await?;
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
