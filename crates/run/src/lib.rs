//! `tailforge run`: the stages as one dependable batch job.
//!
//! ```text
//! <output>/
//!   _lock                       held while a run is active (conditional create)
//!   latest                      {"run_id": …}, written last, atomically
//!   metrics.prom                the last run's metrics, for a textfile collector
//!   runs/<run_id>/
//!     manifest.json             version, git revision, config hash, inputs, stages, metrics
//!                               (rewritten after each stage while the run is "running")
//!     report.md, report.html    headline numbers, head/tail metrics, plots
//!     metrics.prom
//!     analyze/  … _SUCCESS      one directory per stage, `_SUCCESS` last,
//!     generate/ … _SUCCESS      holding the stage's record (fingerprint, rows, bytes)
//!     train/<variant>/ … _SUCCESS
//!     evaluate/ … _SUCCESS
//!   cache/generate/<fingerprint>/  generated rows reused by later runs
//!   cache/text-embeddings/      item text embeddings reused by later runs
//! ```
//!
//! Re-running a run id skips every stage whose `_SUCCESS` holds the same
//! fingerprint (configuration and resolved inputs), so a scheduler can simply
//! retry a failed night: finished stages are not redone, the failed one
//! resumes (generate from its written shards, train from its last
//! checkpoint). Inputs of a run id are taken to be immutable; `force`
//! recomputes everything.
//!
//! Stages: analyze, generate (descriptions for the tail items), one train
//! stage per variant, and evaluate (the eval-v1 MostPop baseline, the
//! reference every trained model is compared with).
//!
//! This file is the orchestration ([`run`]: lock, stages in order, run
//! files). Each other job has its module: `manifest` (the manifest and the
//! stage records, run date and id), `lock` (`_lock`), `stage` (one stage
//! with its `_SUCCESS` record), `train_stage` (the train stages),
//! `metrics` (`metrics.prom`), `report` (`report.md`/`report.html` and their
//! charts), `headline` and `recs` (report sections), `push` (Pushgateway).
//! Modules import from each other, never from this file.

mod headline;
mod lock;
mod manifest;
mod metrics;
mod push;
mod recs;
mod report;
mod stage;
mod train_stage;

pub use manifest::{Manifest, StageRecord, git_revision, today_utc, validate_date};
pub use metrics::prometheus_text;

use std::collections::BTreeMap;
use std::time::Instant;

use tailforge_core::hash::sha256_hex;
use tailforge_core::layout::StageDirs;
use tailforge_core::records::{BaselineMetrics, StageStatus, test_ndcg_key};
use tailforge_core::schema::train_outputs;
use tailforge_core::{Error, Location, PipelineConfig, Result};

use lock::Lock;
use manifest::{now, validate_run_id};
use report::{report_html, report_markdown};
use stage::stage;

/// What to run.
pub struct RunRequest {
    pub config: PipelineConfig,
    /// The logical date, `YYYY-MM-DD`; replaces `{date}` in input locations.
    pub date: String,
    /// Defaults to the date, so a nightly retry resumes the same run.
    pub run_id: Option<String>,
    /// Recompute every stage even if it succeeded before.
    pub force: bool,
    /// A lock older than this is taken over (with a warning).
    pub stale_lock_after_s: u64,
}

/// Runs the pipeline; returns the manifest (also written to the run directory).
pub async fn run(req: &RunRequest) -> Result<Manifest> {
    validate_date(&req.date)?;
    let run_id = req.run_id.clone().unwrap_or_else(|| req.date.clone());
    validate_run_id(&run_id)?;
    let mut config = req.config.clone();
    for input in [&mut config.inputs.events, &mut config.inputs.items].into_iter().flatten() {
        *input = input.replace("{date}", &req.date);
    }
    let root = Location::parse(
        config
            .output
            .as_deref()
            .ok_or_else(|| Error::usage("no output: set output = \"…\" in the pipeline or --set output=URL"))?,
    )?
    .as_dir();
    tailforge_ingest::import_pipeline_inputs(&mut config).await?;
    let events = config.inputs.events.clone().ok_or_else(|| Error::usage("no inputs.events in the pipeline"))?;
    let items = config.inputs.items.clone().ok_or_else(|| Error::usage("no inputs.items in the pipeline"))?;
    if let (true, Some(shard)) = (config.generate.enabled, config.generate.shard) {
        return Err(Error::usage(format!(
            "generate.shard = \"{shard}\" is for the workers of a sharded generation (`tailforge generate --shard K/N`), \
             not for `tailforge run`: unset it here; the run's generate stage reuses the workers' rows from the shared cache \
             (docs/scaling.md)"
        )));
    }
    let run_dir = StageDirs::under(&root).run(&run_id).root().clone();
    let config_toml = config.to_redacted_toml();
    // The hash behind every stage's fingerprint leaves out `[storage]`:
    // retries and timeouts do not change outputs, and a rerun over a flaky
    // network may well raise them.
    let config_hash = {
        let mut outputs_config = config.clone();
        outputs_config.storage = Default::default();
        sha256_hex(outputs_config.to_toml().as_bytes())
    };

    let lock = Lock::acquire(&root, &run_id, req.stale_lock_after_s).await?;
    let mut manifest = Manifest {
        run_id: run_id.clone(),
        date: req.date.clone(),
        tailforge_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: git_revision(),
        config_hash: config_hash.clone(),
        config: config_toml,
        status: StageStatus::Running,
        started_at: now(),
        ..Default::default()
    };
    let started = Instant::now();
    let result = run_stages(req, &config, &events, &items, &run_dir, &mut manifest).await;
    manifest.finished_at = Some(now());
    manifest.status = if result.is_ok() { StageStatus::Succeeded } else { StageStatus::Failed };
    manifest.metrics.insert("run_seconds".into(), started.elapsed().as_secs_f64());
    let written = write_run_files(&root, &run_dir, &manifest, result.is_ok()).await;
    lock.release().await;
    if let Some(gateway) = &config.run.pushgateway {
        let job = config.run.pushgateway_job.as_deref().unwrap_or("tailforge");
        push::push_metrics(gateway, job, prometheus_text(&manifest, result.is_ok())).await;
    }
    result?;
    written?;
    Ok(manifest)
}

async fn run_stages(
    req: &RunRequest,
    config: &PipelineConfig,
    events: &str,
    items: &str,
    run_dir: &Location,
    manifest: &mut Manifest,
) -> Result<()> {
    // What the inputs hold, not only where they are: a file that lands late
    // in the same `dt=` partition (or one rewritten in place) changes the
    // listing's paths, sizes or ETags, so a rerun recomputes every stage.
    let listing =
        tailforge_analyze::list_input_files(config, &Location::parse(events)?, &Location::parse(items)?).await?;
    let inputs_hash = sha256_hex(
        listing
            .iter()
            .map(|f| format!("{}\t{}\t{}\n", f.url, f.size, f.e_tag.as_deref().unwrap_or("")))
            .collect::<String>()
            .as_bytes(),
    );
    let fingerprint = |stage: &str| {
        sha256_hex(format!("{stage}\n{}\n{events}\n{items}\n{inputs_hash}", manifest.config_hash).as_bytes())
    };

    // analyze
    let analyze_dir = StageDirs::under(run_dir).analyze();
    let fp = fingerprint("analyze");
    let summary_loc = analyze_dir.join(tailforge_core::schema::outputs::SUMMARY);
    let out = analyze_dir.clone();
    let record = stage("analyze", &fp, &analyze_dir, req.force, || async move {
        let request = tailforge_analyze::AnalyzeRequest {
            events: Location::parse(events)?,
            items: Location::parse(items)?,
            out,
            config: config.clone(),
        };
        let s = tailforge_analyze::analyze(&request).await?;
        Ok(s.rows.clone())
    })
    .await?;
    let summary: tailforge_core::schema::AnalyzeSummary = serde_json::from_slice(&summary_loc.get().await?)
        .map_err(|e| Error::internal(format!("{}: {e}", summary_loc.display())))?;
    manifest.input_files = summary.input_files.clone();
    for (k, v) in [
        ("events", summary.events as f64),
        ("users", summary.users as f64),
        ("tail_items", summary.tail_items as f64),
        ("head_share", summary.head_share),
        ("gini", summary.gini),
    ] {
        manifest.metrics.insert(k.into(), v);
    }
    manifest.stages.push(record);
    save_progress(run_dir, manifest).await?;

    if config.generate.enabled {
        let fp = fingerprint("generate");
        let (stages, metrics) = (&mut manifest.stages, &mut manifest.metrics);
        let model_sha256 = run_generate(req, config, run_dir, &analyze_dir, &fp, stages, metrics).await?;
        manifest.models.insert(format!("generate: {}", config.generate.model.display()), model_sha256);
        save_progress(run_dir, manifest).await?;
    }

    if config.train.enabled {
        let generate_dir = config.generate.enabled.then(|| StageDirs::under(run_dir).generate());
        let run_id = manifest.run_id.clone();
        let (stages, metrics, models) = (&mut manifest.stages, &mut manifest.metrics, &mut manifest.models);
        train_stage::run_train(
            req,
            config,
            &run_id,
            run_dir,
            &analyze_dir,
            generate_dir,
            &fingerprint,
            stages,
            metrics,
            models,
        )
        .await?;
        save_progress(run_dir, manifest).await?;
    }

    // evaluate: the eval-v1 MostPop reference
    let eval_dir = StageDirs::under(run_dir).evaluate();
    let fp = fingerprint("evaluate");
    let (input, out) = (analyze_dir.clone(), eval_dir.clone());
    let record = stage("evaluate", &fp, &eval_dir, req.force, || async move {
        use tailforge_train::{Baseline, evaluate_baseline, write_baseline_metrics};
        // MostPop reads neither the encoder nor its cache; the train stages' cache all the same.
        let cache = config.train.embedding_cache_under(&output_root(config)?)?;
        let metrics = evaluate_baseline(Baseline::MostPop, &input, &config.train, &cache).await?;
        write_baseline_metrics(&out, &metrics).await?;
        Ok(BTreeMap::from([("test_cases".to_string(), metrics.test.full.overall.n)]))
    })
    .await?;
    manifest.stages.push(record);
    let metrics: BaselineMetrics = read_metrics(&eval_dir).await?;
    for (group, figures) in metrics.test.full.groups() {
        manifest.metrics.insert(test_ndcg_key("mostpop", group), figures.ndcg);
    }
    Ok(())
}

/// The pipeline's output root: where `runs/`, `latest` and the shared caches live.
pub(crate) fn output_root(config: &PipelineConfig) -> Result<Location> {
    Ok(Location::parse(config.output.as_deref().unwrap_or_default())?.as_dir())
}

/// The analyze stage's table `name` (`outputs::*`) in a run: `analyze/<name>.parquet`.
pub(crate) fn analyze_table(run_dir: &Location, name: &str) -> Location {
    StageDirs::under(run_dir).analyze().join(&format!("{name}.parquet"))
}

/// The `metrics.json` under `dir`: a baseline's ([`BaselineMetrics`], the
/// evaluate stage) or a trained model's (`TrainMetrics`, a train stage).
pub(crate) async fn read_metrics<T: serde::de::DeserializeOwned>(dir: &Location) -> Result<T> {
    let file = dir.join(train_outputs::METRICS);
    serde_json::from_slice(&file.get().await?).map_err(|e| Error::internal(format!("{}: {e}", file.display())))
}

/// The generate stage: `analyze/tail_items.parquet` → `generate/`, with the
/// cache under `<output>/cache/generate` (or `generate.cache`). A retry after
/// a crash resumes from the shards written; a changed configuration starts
/// the stage directory over (the cache still serves unchanged items).
/// Returns the SHA-256 of the model file.
#[allow(clippy::too_many_arguments)]
async fn run_generate(
    req: &RunRequest,
    config: &PipelineConfig,
    run_dir: &Location,
    analyze_dir: &Location,
    fp: &str,
    stages: &mut Vec<StageRecord>,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<String> {
    let gen_dir = StageDirs::under(run_dir).generate();
    let input = analyze_dir.join(&format!("{}.parquet", tailforge_core::schema::outputs::TAIL_ITEMS));
    let mut cfg = config.generate.clone();
    cfg.cache = cfg.cache_location(config.output.as_deref());
    let out = gen_dir.clone();
    let record = stage("generate", fp, &gen_dir, req.force, || async move {
        let s = tailforge_generate::generate_with(&input, &out, &cfg, tailforge_generate::OnStale::Replace).await?;
        Ok(BTreeMap::from([("generated".to_string(), s.generated_rows), ("rejects".to_string(), s.rejected_rows)]))
    })
    .await?;
    stages.push(record);
    let loc = gen_dir.join(tailforge_core::schema::generate_outputs::SUMMARY);
    let s: tailforge_generate::GenerateSummary =
        serde_json::from_slice(&loc.get().await?).map_err(|e| Error::internal(format!("{}: {e}", loc.display())))?;
    for (k, v) in [
        ("generate_items", s.items as f64),
        ("generate_generated_rows", s.generated_rows as f64),
        ("generate_rejected_rows", s.rejected_rows as f64),
        ("generate_new_items", s.accepted as f64),
        ("generate_reused_from_cache", s.reused_from_cache as f64),
        ("generate_generated_tokens", s.generated_tokens as f64),
        ("generate_generated_tok_s", s.generated_tokens_per_s),
        ("generate_prompt_tok_s", s.prompt_tokens_per_s),
        ("generate_seconds", s.seconds),
        ("generate_grounded_rows", s.grounding.rows as f64),
        ("generate_keywords_grounded", s.grounding.keywords_grounded),
        ("generate_description_grounding_p50", s.grounding.description_share.p50),
    ] {
        metrics.insert(k.into(), v);
    }
    Ok(s.model_sha256)
}

/// Writes the manifest as it stands (status "running") after each stage, so
/// that whoever watches the run directory sees its progress.
async fn save_progress(run_dir: &Location, manifest: &Manifest) -> Result<()> {
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| Error::internal(e.to_string()))?;
    run_dir.join("manifest.json").put(json).await
}

/// manifest.json, report.md and metrics.prom in the run directory; on
/// success also the root's metrics.prom and, last, `latest`.
async fn write_run_files(root: &Location, run_dir: &Location, manifest: &Manifest, ok: bool) -> Result<()> {
    save_progress(run_dir, manifest).await?;
    let prom = prometheus_text(manifest, ok);
    run_dir.join("metrics.prom").put(prom.clone().into_bytes()).await?;
    if ok {
        // Read before `latest` moves to this run.
        let previous = headline::previous_manifest(root).await;
        let headline = headline::Headline::new(manifest, previous.as_ref());
        run_dir.join("report.md").put(report_markdown(manifest, run_dir, headline.as_ref()).await.into_bytes()).await?;
        run_dir.join("report.html").put(report_html(manifest, run_dir, headline.as_ref()).await?.into_bytes()).await?;
        root.join("metrics.prom").put(prom.into_bytes()).await?;
        let latest = serde_json::json!({ "run_id": manifest.run_id, "manifest": format!("runs/{}/manifest.json", manifest.run_id), "finished_at": manifest.finished_at });
        root.join("latest")
            .put(serde_json::to_vec_pretty(&latest).map_err(|e| Error::internal(e.to_string()))?)
            .await?;
    }
    Ok(())
}
