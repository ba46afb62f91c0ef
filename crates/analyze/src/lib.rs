//! The analyze stage: item popularity, the long-tail set, per-user sequences
//! and the eval-v1 leave-one-out split, computed by DataFusion from the SQL
//! files in `sql/`.
//!
//! ```text
//! events (Parquet) ─┐                 ┌─ sequences.parquet ─ split.parquet
//!                   ├─ validate ─ interactions ─┤
//! items  (Parquet) ─┘                 └─ item_stats.parquet ─ neighbors.parquet
//!                                                 └─ tail_items.parquet, item_text.parquet
//!                                                   summary.json, _SUCCESS
//! ```
//!
//! Rust's part is plumbing: register the inputs as normalized tables, check
//! the data contract, run each SQL file with its parameters bound as values,
//! write each result atomically, and write `_SUCCESS` last.

mod inputs;
mod query;
mod sequences;
mod session;
pub mod udf;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use datafusion::common::ScalarValue;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use tailforge_core::config::PipelineConfig;
use tailforge_core::schema::{self, AnalyzeSummary, IdKind, InputFile, outputs};
use tailforge_core::storage::SUCCESS_MARKER;
use tailforge_core::{Error, Location, Result};
use tracing::{info, warn};

pub use query::{Param, run_sql, sql};
pub use session::{build_engine_session, build_session};

use query::{classify, collect_one};

/// What to analyze and where to write it.
pub struct AnalyzeRequest {
    pub events: Location,
    pub items: Location,
    /// Output directory: `<out>/item_stats.parquet`, …, `summary.json`, `_SUCCESS`.
    pub out: Location,
    pub config: PipelineConfig,
}

/// The files the analyze stage would read for these inputs, as it lists them
/// (path, size, ETag), without reading any data: what a scheduler compares to
/// tell whether a rerun has new input, such as a file that landed late in
/// the same `dt=` partition.
pub async fn list_input_files(config: &PipelineConfig, events: &Location, items: &Location) -> Result<Vec<InputFile>> {
    let ctx = session::build_session(&config.analyze)?;
    for l in [events, items] {
        session::register_store(&ctx, l);
    }
    let events_in = inputs::open_input(&ctx, "events", events).await?;
    let items_in = inputs::open_input(&ctx, "items", items).await?;
    Ok(events_in.files.into_iter().chain(items_in.files).collect())
}

/// Runs the stage end to end; returns the summary also written to `summary.json`.
pub async fn analyze(req: &AnalyzeRequest) -> Result<AnalyzeSummary> {
    let started = Instant::now();
    let mut timings = BTreeMap::new();
    let cfg = &req.config.analyze;
    let ctx = session::build_engine_session(cfg).await?;
    ctx.register_udf(udf::ListField::udf());
    for l in [&req.events, &req.items, &req.out] {
        session::register_store(&ctx, l);
    }
    let out = req.out.as_dir();
    // A reader must never take an old _SUCCESS for the outputs about to be replaced.
    out.join(SUCCESS_MARKER).delete_if_exists().await?;

    // 1. Inputs: list, check footers and columns, register normalized views.
    let step = Instant::now();
    let inputs = open_inputs(&ctx, req).await?;

    // 2. The data contract, checked before any output is written.
    let checker = validate::Checker { ctx: &ctx, cfg: &req.config };
    let events_read = checker
        .events(&inputs.events, &inputs.events_shape, inputs.item_kind)
        .await
        .map_err(|e| session::on_engine(cfg, "validate_events.sql", e))?;
    checker
        .items(&inputs.items, &inputs.items_shape, inputs.item_kind)
        .await
        .map_err(|e| session::on_engine(cfg, "validate_items.sql", e))?;
    timings.insert("validate".to_string(), secs(step));
    info!(events = events_read, seconds = secs(step), "inputs validated");

    // 3. Interactions, then each output in dependency order.
    let rows = write_outputs(&ctx, &req.config, &out, &inputs, &mut timings).await?;

    // 4. summary.json, then _SUCCESS last.
    let s = collect_one(run_sql(&ctx, "summary.sql", sql::SUMMARY, &[]).await?, "summary.sql")
        .await
        .map_err(|e| session::on_engine(cfg, "summary.sql", classify(e)))?;
    timings.insert("total".to_string(), secs(started));
    let lt = &cfg.long_tail;
    let summary = AnalyzeSummary {
        events: s.i64("events")? as u64,
        events_read,
        users: s.i64("users")? as u64,
        catalog_items: s.i64("catalog_items")? as u64,
        items_with_events: s.i64("items_with_events")? as u64,
        items_missing_from_catalog: s.i64("items_missing_from_catalog")? as u64,
        cold_items: s.i64("cold_items")? as u64,
        gini: s.f64("gini")?,
        head_items: s.i64("head_items")? as u64,
        tail_items: s.i64("tail_items")? as u64,
        head_share: s.f64("head_share")?,
        long_tail_rule: lt.rule.as_str().to_string(),
        long_tail_parameter: match lt.rule {
            tailforge_core::config::LongTailRule::TopShare => lt.share,
            tailforge_core::config::LongTailRule::Pareto => lt.pareto_share,
            tailforge_core::config::LongTailRule::MinCount => lt.min_count as f64,
            tailforge_core::config::LongTailRule::Percentile => lt.percentile,
        },
        dedup: cfg.dedup.as_str().to_string(),
        user_id_kind: inputs.events_shape.user,
        item_id_kind: inputs.item_kind,
        train_interactions: s.i64("train_interactions")? as u64,
        evaluated_users: s.i64("evaluated_users")? as u64,
        rows,
        input_files: inputs.events.files.iter().chain(inputs.items.files.iter()).cloned().collect(),
        timings,
    };
    if summary.items_missing_from_catalog > 0 {
        warn!(
            items = summary.items_missing_from_catalog,
            "events mention items the catalog lacks; they are counted but have no text for generation"
        );
    }
    let json = serde_json::to_vec_pretty(&summary).map_err(|e| Error::internal(e.to_string()))?;
    out.join(outputs::SUMMARY).put(json).await?;
    out.join(SUCCESS_MARKER).put(Vec::new()).await?;
    info!(
        events = summary.events,
        users = summary.users,
        items = summary.catalog_items,
        tail_items = summary.tail_items,
        head_share = summary.head_share,
        gini = summary.gini,
        seconds = secs(started),
        "analyze done"
    );
    Ok(summary)
}

/// The two inputs, opened and registered as the normalized views `events`
/// and `catalog` the SQL reads.
struct Inputs {
    events: inputs::InputTable,
    items: inputs::InputTable,
    events_shape: inputs::EventsShape,
    items_shape: inputs::ItemsShape,
    /// The item id kind both views share.
    item_kind: IdKind,
}

/// Lists the inputs, checks their footers and columns, and registers the
/// normalized `events` and `catalog` views.
async fn open_inputs(ctx: &SessionContext, req: &AnalyzeRequest) -> Result<Inputs> {
    let events = inputs::open_input(ctx, "events", &req.events).await?;
    let items = inputs::open_input(ctx, "items", &req.items).await?;
    let events_shape = inputs::events_shape(&events, &req.config.inputs.events_columns, req.config.inputs.ts_unit)?;
    let items_shape = inputs::items_shape(&items, &req.config.inputs.items_columns)?;
    let item_kind = if events_shape.item == items_shape.item {
        events_shape.item
    } else {
        warn!(
            events = ?events_shape.item,
            items = ?items_shape.item,
            "item ids are integers in one input and strings in the other; comparing them as strings"
        );
        IdKind::Utf8
    };
    let events_df = events_shape.normalize(inputs::read_table(ctx, &events).await?, item_kind)?;
    let catalog_df = items_shape.normalize(inputs::read_table(ctx, &items).await?, item_kind)?;
    register(ctx, "events", events_df)?;
    register(ctx, "catalog", catalog_df)?;
    info!(
        events_files = events.files.len(),
        items_files = items.files.len(),
        engine = req.config.analyze.engine.as_str(),
        "inputs listed"
    );
    Ok(Inputs { events, items, events_shape, items_shape, item_kind })
}

/// Runs `interactions.sql`, then writes each output in dependency order;
/// returns the rows of each. Outputs are read back from their files by the
/// queries after them, not recomputed.
async fn write_outputs(
    ctx: &SessionContext,
    config: &PipelineConfig,
    out: &Location,
    inputs: &Inputs,
    timings: &mut BTreeMap<String, f64>,
) -> Result<BTreeMap<String, u64>> {
    let cfg = &config.analyze;
    let dedup = cfg.dedup.as_str();
    let interactions =
        run_sql(ctx, "interactions.sql", sql::INTERACTIONS, &[("dedup", ScalarValue::from(dedup))]).await?;
    register(ctx, "interactions", interactions)?;

    let lt = &cfg.long_tail;
    let item_stats_params = [
        ("rule", ScalarValue::from(lt.rule.as_str())),
        ("share", ScalarValue::from(lt.share)),
        ("pareto_share", ScalarValue::from(lt.pareto_share)),
        ("min_count", ScalarValue::from(lt.min_count as i64)),
        ("percentile", ScalarValue::from(lt.percentile)),
    ];
    let neighbors_params = [("k", ScalarValue::from(cfg.neighbors as i64))];
    let steps: [(&str, &str, &[Param]); 6] = [
        (outputs::SEQUENCES, sql::SEQUENCES, &[]),
        (outputs::SPLIT, sql::SPLIT, &[]),
        (outputs::ITEM_STATS, sql::ITEM_STATS, &item_stats_params),
        (outputs::NEIGHBORS, sql::NEIGHBORS, &neighbors_params),
        (outputs::TAIL_ITEMS, sql::TAIL_ITEMS, &[]),
        (outputs::ITEM_TEXT, sql::ITEM_TEXT, &[]),
    ];
    let mut rows = BTreeMap::new();
    let memory_limited = cfg.memory_limit.bytes() > 0;
    for (name, text, params) in steps {
        let step = Instant::now();
        let df = run_sql(ctx, &format!("{name}.sql"), text, params).await?;
        check_output(name, &df, inputs.events_shape.user, inputs.item_kind)?;
        let target = out.join(&format!("{name}.parquet"));
        let n = if name == outputs::SEQUENCES && memory_limited {
            let sorted = run_sql(ctx, "sequences_sorted.sql", sql::SEQUENCES_SORTED, &[]).await?;
            sequences::write_sorted(sorted, Arc::new(df.schema().as_arrow().clone()), &target)
                .await
                .map_err(|e| session::on_engine(cfg, "sequences_sorted.sql", e))?
        } else {
            write_parquet(df, &target).await.map_err(|e| session::on_engine(cfg, &format!("{name}.sql"), e))?
        };
        ctx.register_parquet(name, target.url().as_str(), ParquetReadOptions::default())
            .await
            .map_err(|e| Error::storage(target.display(), e))?;
        rows.insert(name.to_string(), n);
        timings.insert(name.to_string(), secs(step));
        info!(output = name, rows = n, seconds = secs(step), "written");
    }
    Ok(rows)
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn register(ctx: &SessionContext, name: &str, df: DataFrame) -> Result<()> {
    ctx.register_table(name, df.into_view()).map_err(|e| Error::internal(format!("registering {name}: {e}")))?;
    Ok(())
}

fn check_output(name: &str, df: &DataFrame, user: IdKind, item: IdKind) -> Result<()> {
    let actual = df.schema().as_arrow();
    let expected: Vec<_> = match name {
        outputs::ITEM_STATS => schema::item_stats_schema(item).fields().iter().map(|f| f.as_ref().clone()).collect(),
        outputs::TAIL_ITEMS => schema::tail_items_fixed_fields(item),
        outputs::ITEM_TEXT => schema::item_text_fixed_fields(item),
        outputs::NEIGHBORS => schema::neighbors_schema(item).fields().iter().map(|f| f.as_ref().clone()).collect(),
        outputs::SEQUENCES => {
            schema::sequences_schema(user, item).fields().iter().map(|f| f.as_ref().clone()).collect()
        }
        outputs::SPLIT => schema::split_schema(user, item).fields().iter().map(|f| f.as_ref().clone()).collect(),
        other => return Err(Error::internal(format!("no schema for output {other}"))),
    };
    schema::check_schema(name, actual, &expected)
}

/// Writes a DataFrame as one Parquet object; the upload completes (and the
/// object becomes visible) only once every row is written.
async fn write_parquet(df: DataFrame, target: &Location) -> Result<u64> {
    let mut options = TableParquetOptions::default();
    options.global.compression = Some("zstd(1)".to_string());
    let batches = df
        .write_parquet(target.url().as_str(), DataFrameWriteOptions::new().with_single_file_output(true), Some(options))
        .await
        .map_err(|e| match e.find_root() {
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => Error::storage(
                target.display(),
                format!("cannot write: {e}; check that the output location is writable (permissions, free space, a read-only file system)"),
            ),
            _ => classify(e),
        })?;
    Ok(tailforge_core::parquet_io::rows_written(&batches))
}
