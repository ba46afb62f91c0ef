//! tailforge's input builders: importers that turn public datasets into the
//! events/items Parquet contract, and `demo-data`, the deterministic
//! synthetic shop used as the embedded default (like TPC-H's dbgen).

pub mod demo;
pub mod movielens;

use tailforge_core::config::PipelineConfig;
use tailforge_core::{Error, Location, Result};

/// Imports a pipeline's `inputs.movielens` directory, if it names one, into
/// `<output>/import/movielens/` and points `inputs.events` and `inputs.items`
/// there, so that a pipeline over MovieLens stands alone (no separate
/// `tailforge import` step). Importing is deterministic and overwrites the
/// same files, so every run simply imports again.
pub async fn import_pipeline_inputs(config: &mut PipelineConfig) -> Result<Option<movielens::ImportSummary>> {
    let Some(src) = config.inputs.movielens.clone() else { return Ok(None) };
    let root = config.output.as_deref().ok_or_else(|| {
        Error::usage("inputs.movielens needs an output root to import into: set output = \"…\" in the pipeline")
    })?;
    let into = Location::parse(root)?.as_dir().join("import/movielens/");
    let summary = movielens::import(std::path::Path::new(&src), &into).await?;
    tracing::info!(src, events = summary.events, items = summary.items, into = into.display(), "imported MovieLens");
    config.inputs.events = Some(summary.events_url.clone());
    config.inputs.items = Some(summary.items_url.clone());
    config.inputs.movielens = None;
    Ok(Some(summary))
}

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The events every importer and generator writes: integer ids, Unix-second
/// times, and an event type and weight on every row.
pub(crate) fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("weight", DataType::Float64, false),
    ]))
}
