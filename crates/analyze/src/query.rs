//! Running the stage's SQL: the files compiled into the binary, parameter
//! binding, one-row results read by column name, and the mapping of engine
//! errors to tailforge's. Shared by the stage (`lib.rs`), the input
//! validation and the memory-limited sequences.

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};
use tailforge_core::{Error, Result};

/// The SQL of the stage, compiled into the binary so a deployed `tailforge`
/// needs no source tree. Each file documents its inputs, parameters and output.
pub mod sql {
    pub const VALIDATE_EVENTS: &str = include_str!("../../../sql/validate_events.sql");
    pub const VALIDATE_ITEMS: &str = include_str!("../../../sql/validate_items.sql");
    pub const INTERACTIONS: &str = include_str!("../../../sql/interactions.sql");
    pub const SEQUENCES: &str = include_str!("../../../sql/sequences.sql");
    pub const SEQUENCES_SORTED: &str = include_str!("../../../sql/sequences_sorted.sql");
    pub const SPLIT: &str = include_str!("../../../sql/split.sql");
    pub const ITEM_STATS: &str = include_str!("../../../sql/item_stats.sql");
    pub const TAIL_ITEMS: &str = include_str!("../../../sql/tail_items.sql");
    pub const NEIGHBORS: &str = include_str!("../../../sql/neighbors.sql");
    pub const ITEM_TEXT: &str = include_str!("../../../sql/item_text.sql");
    pub const SUMMARY: &str = include_str!("../../../sql/summary.sql");
}

/// A named SQL parameter (`$name` in a file) and its typed value.
pub type Param = (&'static str, ScalarValue);

/// Plans one SQL file and binds its `$name` parameters as typed values —
/// values are never spliced into the SQL text.
pub async fn run_sql(
    ctx: &SessionContext,
    file: &str,
    text: &str,
    params: &[(&str, ScalarValue)],
) -> Result<DataFrame> {
    let df = ctx.sql(text).await.map_err(|e| Error::internal(format!("sql/{file}: {e}")))?;
    if params.is_empty() {
        return Ok(df);
    }
    let map: HashMap<String, _> = params.iter().map(|(k, v)| (k.to_string(), v.clone().into())).collect();
    df.with_param_values(ParamValues::Map(map))
        .map_err(|e| Error::internal(format!("sql/{file}: binding parameters: {e}")))
}

/// Maps errors that need no locating.
pub(crate) fn classify(e: DataFusionError) -> Error {
    let msg = e.to_string();
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) || msg.contains("Resources exhausted") {
        return Error::config(
            "(config)",
            "analyze.memory_limit",
            format!(
                "the query needs more memory than the limit allows and could not spill: {msg}; raise the limit or check analyze.spill_dir / max_temp_size"
            ),
        );
    }
    Error::internal(format!("query failed: {msg}"))
}

/// One result row, read by column name.
pub(crate) struct Row {
    batch: RecordBatch,
    file: String,
}

impl Row {
    fn column(&self, name: &str) -> Result<&dyn Array> {
        self.batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| Error::internal(format!("sql/{}: no column {name}", self.file)))
    }

    pub(crate) fn i64(&self, name: &str) -> Result<i64> {
        let c = self.column(name)?;
        if c.is_null(0) {
            return Ok(0);
        }
        let c = datafusion::arrow::compute::cast(c, &DataType::Int64).map_err(|e| Error::internal(e.to_string()))?;
        Ok(c.as_primitive::<Int64Type>().value(0))
    }

    pub(crate) fn opt_i64(&self, name: &str) -> Result<Option<i64>> {
        Ok(if self.column(name)?.is_null(0) { None } else { Some(self.i64(name)?) })
    }

    pub(crate) fn f64(&self, name: &str) -> Result<f64> {
        let c = self.column(name)?;
        if c.is_null(0) {
            return Ok(0.0);
        }
        let c = datafusion::arrow::compute::cast(c, &DataType::Float64).map_err(|e| Error::internal(e.to_string()))?;
        Ok(c.as_primitive::<Float64Type>().value(0))
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>> {
        let c = self.column(name)?;
        if c.is_null(0) {
            return Ok(None);
        }
        let c = datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(|e| Error::internal(e.to_string()))?;
        Ok(Some(c.as_string::<i32>().value(0).to_string()))
    }
}

/// Collects a one-row result.
pub(crate) async fn collect_one(df: DataFrame, file: &str) -> std::result::Result<Row, DataFusionError> {
    let batches = df.collect().await?;
    let batch = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches)?;
    Ok(Row { batch, file: file.to_string() })
}
