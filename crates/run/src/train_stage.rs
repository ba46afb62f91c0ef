//! The train stage inside a run: one SASRec per `train.variants` entry,
//! `runs/<id>/train/<variant>/`, each a stage of its own (own `_SUCCESS`,
//! own skip), with the text-embedding cache shared by every run under the
//! output root and an optional warm start from the previous run's weights.

use std::collections::BTreeMap;

use tailforge_core::config::{Variant, WarmStartFrom};
use tailforge_core::layout::StageDirs;
use tailforge_core::records::{EpochRecord, TrainMetrics, test_ndcg_key};
use tailforge_core::schema::train_outputs;
use tailforge_core::{Error, Location, PipelineConfig, Result};
use tracing::info;

use crate::manifest::{Manifest, StageRecord};
use crate::stage::stage;
use crate::{RunRequest, read_metrics};

/// The previous successful run's train directory of `variant`, from the root's `latest` pointer.
async fn previous_run_dir(root: &Location, current_run: &str, variant: Variant) -> Result<Option<String>> {
    let latest = root.join("latest");
    if !latest.exists().await? {
        return Ok(None);
    }
    let pointer: serde_json::Value = serde_json::from_slice(&latest.get().await?)
        .map_err(|e| Error::internal(format!("{}: {e}", latest.display())))?;
    let Some(run_id) = pointer["run_id"].as_str().filter(|r| *r != current_run) else { return Ok(None) };
    Ok(Some(StageDirs::under(root).run(run_id).train(variant).url().to_string()))
}

/// Trains every variant of `train.variants` into `runs/<id>/train/<variant>/`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_train(
    req: &RunRequest,
    config: &PipelineConfig,
    run_id: &str,
    run_dir: &Location,
    analyze_dir: &Location,
    generate_dir: Option<Location>,
    fingerprint: &dyn Fn(&str) -> String,
    stages: &mut Vec<StageRecord>,
    metrics: &mut BTreeMap<String, f64>,
    models: &mut BTreeMap<String, String>,
) -> Result<()> {
    let root = crate::output_root(config)?;
    let cache = config.train.embedding_cache_under(&root)?;
    for &variant in &config.train.variants {
        let v = variant.as_str();
        let name = format!("train_{v}");
        let dir = StageDirs::under(run_dir).train(variant);
        let mut train_config = config.train.clone();
        if train_config.warm_start == WarmStartFrom::Previous {
            train_config.warm_start =
                previous_run_dir(&root, run_id, variant).await?.map(WarmStartFrom::Dir).unwrap_or_default();
            if let WarmStartFrom::Dir(from) = &train_config.warm_start {
                info!(variant = v, from = %from, "warm start from the previous run");
            }
        }
        let request = tailforge_train::TrainRequest {
            analyze_out: analyze_dir.clone(),
            generate_out: generate_dir.clone(),
            out: dir.clone(),
            config: train_config,
            variant,
            seed: config.seed,
            embedding_cache: cache.clone(),
        };
        let record = stage(&name, &fingerprint(&name), &dir, req.force, || async move {
            let m = tailforge_train::train(&request).await?;
            Ok(BTreeMap::from([
                ("epochs".to_string(), m.epochs as u64),
                ("test_cases".to_string(), m.test.full.overall.n),
            ]))
        })
        .await?;
        stages.push(record);
        let m: TrainMetrics = read_metrics(&dir).await?;
        for (group, figures) in m.test.full.groups() {
            metrics.insert(test_ndcg_key(v, group), figures.ndcg);
        }
        if let Some(text) = &m.text {
            let encoder = text.encoder.as_str();
            let sha256 = encoder.split('-').next().unwrap_or(encoder);
            models.insert(format!("text encoder: {}", config.train.encoder), sha256.to_string());
        }
        for (key, x) in [
            ("seconds_per_epoch", m.seconds_per_epoch),
            ("epochs", m.epochs as f64),
            ("best_epoch", m.best_epoch as f64),
            ("coverage@10", m.coverage),
            ("tail_share@10", m.tail_share),
        ] {
            metrics.insert(format!("{v}_{key}"), x);
        }
        // A warm start over a changed catalog: how many items kept their learned rows.
        if let Some(w) = m.warm_start_items {
            for (key, x) in [("carried", w.carried), ("new", w.new)] {
                metrics.insert(format!("{v}_warm_start_{key}_items"), x as f64);
            }
        }
    }
    Ok(())
}

/// The trained variants of a run, from their `metrics.json`, in stage order.
async fn trained(manifest: &Manifest, run_dir: &Location) -> Vec<(Variant, TrainMetrics)> {
    let mut out = Vec::new();
    for v in manifest.trained_variants() {
        if let Ok(m) = read_metrics::<TrainMetrics>(&StageDirs::under(run_dir).train(v)).await {
            out.push((v, m));
        }
    }
    out
}

/// The report's train section as Markdown: each variant's eval-v1 test table.
pub(crate) async fn markdown(manifest: &Manifest, run_dir: &Location) -> String {
    let mut s = String::new();
    for (v, _) in trained(manifest, run_dir).await {
        if let Ok(bytes) = StageDirs::under(run_dir).train(v).join(train_outputs::METRICS_MARKDOWN).get().await {
            s.push_str(&format!("\n## SASRec `{v}` under eval-v1\n\n"));
            s.push_str(&crate::report::demote_headings(&String::from_utf8_lossy(&bytes)));
        }
    }
    s
}

/// NDCG@10 (overall, head, tail, cold) of each trained variant, for the head-vs-tail chart.
pub(crate) fn ndcg_bars(manifest: &Manifest) -> Vec<(String, [f64; 4])> {
    manifest
        .trained_variants()
        .into_iter()
        .map(|v| {
            let g = |group: &str| manifest.metrics.get(&test_ndcg_key(v.as_str(), group)).copied().unwrap_or(0.0);
            (format!("SASRec {v}"), tailforge_core::schema::EVAL_GROUPS.map(g))
        })
        .collect()
}

/// The training-curve section (validation NDCG@10 and loss by epoch), as HTML.
pub(crate) async fn curves_html(manifest: &Manifest, run_dir: &Location) -> Option<String> {
    let runs = trained(manifest, run_dir).await;
    if runs.is_empty() {
        return None;
    }
    let series = |value: fn(&EpochRecord) -> Option<f64>| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .map(|(v, m)| {
                let points = m.history.iter().filter_map(|r| Some((r.epoch as f64, value(r)?))).collect();
                (v.to_string(), points)
            })
            .collect()
    };
    Some(format!(
        "<p>Validation NDCG@10 (eval-v1, full ranking) at each evaluation; the best epoch's weights are kept.</p>{}\
         <p>Training loss by epoch.</p>{}",
        crate::report::curves_svg(&series(|r| r.valid_ndcg), "valid NDCG@10"),
        crate::report::curves_svg(&series(|r| Some(r.loss)), "loss")
    ))
}
