//! The input data contract, checked before any output is written.
//!
//! A single aggregate query per input counts every kind of violation (cheap:
//! one scan). Only when a count is non-zero does the checker go looking for
//! the first offending row, file by file, so the message can say
//! `file: column "ts": row 5012: …` — the location is worth a second scan on
//! the failure path, never on the happy one.

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::error::DataFusionError;
use datafusion::functions::expr_fn::octet_length;
use datafusion::functions_aggregate::expr_fn::sum;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use tailforge_core::config::PipelineConfig;
use tailforge_core::schema::IdKind;
use tailforge_core::{DataError, Error, Result};

use crate::inputs::{EventsShape, InputTable, ItemsShape};
use crate::query::{classify, collect_one, run_sql, sql};

pub struct Checker<'a> {
    pub ctx: &'a SessionContext,
    pub cfg: &'a PipelineConfig,
}

impl Checker<'_> {
    /// Checks the events; returns the number of rows read.
    pub async fn events(&self, input: &InputTable, shape: &EventsShape, item_kind: IdKind) -> Result<u64> {
        let v = &self.cfg.analyze.validation;
        let params = [("min_ts", ScalarValue::from(v.min_ts)), ("max_ts", ScalarValue::from(v.max_ts))];
        let df = run_sql(self.ctx, "validate_events.sql", sql::VALIDATE_EVENTS, &params).await?;
        let row = match collect_one(df, "validate_events.sql").await {
            Ok(row) => row,
            Err(e) => return Err(self.explain(e, input, &shape.text_columns).await),
        };
        let rows = row.i64("rows_read")?;
        if rows == 0 {
            return Err(empty(input));
        }
        let c = &self.cfg.inputs.events_columns;
        let normalize = |df: DataFrame| shape.normalize(df, item_kind);
        for (count_col, column, name) in
            [("null_user_id", "user_id", &c.user_id), ("null_item_id", "item_id", &c.item_id), ("null_ts", "ts", &c.ts)]
        {
            let n = row.i64(count_col)?;
            if n > 0 {
                let found = locate(self.ctx, input, &normalize, col(column).is_null(), column).await?;
                return Err(located(
                    found,
                    input,
                    name,
                    format!("null value ({n} null in all); every event needs a user, an item and a time"),
                )
                .hint("drop or repair the rows without a value before running tailforge")
                .into());
            }
        }
        let implausible = row.i64("implausible_ts")?;
        if implausible > 0 {
            let bad = col("ts").lt(lit(v.min_ts)).or(col("ts").gt(lit(v.max_ts)));
            let found = locate(self.ctx, input, &normalize, bad, "ts").await?;
            let value = found.as_ref().and_then(|f| f.2.clone()).unwrap_or_default();
            let max = row.opt_i64("max_ts")?.unwrap_or_default();
            let hint = if max > 100_000_000_000 {
                "the values look like milliseconds or finer: set inputs.ts_unit = \"ms\" (or \"us\", \"ns\")"
                    .to_string()
            } else {
                format!(
                    "fix the times at the source, or widen analyze.validation.min_ts / max_ts (now {} .. {})",
                    v.min_ts, v.max_ts
                )
            };
            return Err(located(found, input, &c.ts, format!(
                    "implausible event time {value} (Unix seconds after inputs.ts_unit); {implausible} events lie outside {} .. {}",
                    v.min_ts, v.max_ts
                ))
                .hint(hint)
                .into());
        }
        // Times after now are legal for the contract (inside min_ts ..
        // max_ts) but cannot be events that happened: a clock, time zone or
        // unit problem upstream. Kept, and said where.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(i64::MAX - FUTURE_TOLERANCE_S);
        let latest = row.opt_i64("max_ts")?.unwrap_or_default();
        if latest > now + FUTURE_TOLERANCE_S {
            let future = col("ts").gt(lit(now + FUTURE_TOLERANCE_S));
            let found = locate(self.ctx, input, &normalize, future, "ts").await?;
            let value = found.as_ref().and_then(|f| f.2.clone()).unwrap_or_default();
            let e = located(found, input, &c.ts, format!(
                "event time {value} is in the future (now {now}; the latest event is at {latest}); such events are kept"
            ))
            .hint(format!(
                "fix the clock, time zone or inputs.ts_unit upstream; to reject such events, set analyze.validation.max_ts (now {})",
                v.max_ts
            ));
            tracing::warn!("{e}");
        }
        Ok(rows as u64)
    }

    /// Checks the catalog: not empty, ids present and unique, text decodable.
    pub async fn items(&self, input: &InputTable, shape: &ItemsShape, item_kind: IdKind) -> Result<u64> {
        let df = run_sql(self.ctx, "validate_items.sql", sql::VALIDATE_ITEMS, &[]).await?;
        let row = match collect_one(df, "validate_items.sql").await {
            Ok(row) => row,
            Err(e) => return Err(self.explain(e, input, &shape.text_columns).await),
        };
        let rows = row.i64("rows_read")?;
        if rows == 0 {
            return Err(empty(input));
        }
        let id_col = &self.cfg.inputs.items_columns.item_id;
        let nulls = row.i64("null_item_id")?;
        if nulls > 0 {
            let normalize = |df: DataFrame| shape.normalize(df, item_kind);
            let found = locate(self.ctx, input, &normalize, col("item_id").is_null(), "item_id").await?;
            return Err(located(
                found,
                input,
                id_col,
                format!("null item id ({nulls} in all); every catalog row needs an id"),
            )
            .hint("drop or repair catalog rows without an id")
            .into());
        }
        let duplicated = row.i64("duplicated_ids")?;
        if duplicated > 0 {
            let example = row.string("first_duplicated_id")?.unwrap_or_default();
            let repeats = row.i64("max_repeats")?;
            return Err(DataError::new(format!(
                "{duplicated} item ids occur more than once (e.g. {example:?}; up to {repeats} times); the catalog needs one row per item"
            ))
            .file(input.location.display())
            .column(id_col)
            .hint("de-duplicate the catalog (keep the latest row per item) before running tailforge")
            .into());
        }
        // Decode every text column once, so bad text fails here, located.
        let catalog = self.ctx.table("catalog").await.map_err(|e| Error::internal(e.to_string()))?;
        let names: Vec<String> = catalog.schema().fields().iter().map(|f| f.name().clone()).collect();
        let decoded = catalog
            .aggregate(vec![], names.iter().map(|n| decode_all(n)).collect())
            .map_err(|e| Error::internal(e.to_string()))?;
        if let Err(e) = decoded.collect().await {
            return Err(self.explain(e, input, &shape.text_columns).await);
        }
        Ok(rows as u64)
    }

    /// Explains a failed scan: invalid UTF-8 is located to its file and
    /// column; anything else is classified as is.
    pub async fn explain(&self, e: DataFusionError, input: &InputTable, text_columns: &[String]) -> Error {
        let msg = e.to_string().to_ascii_lowercase();
        if !(msg.contains("utf8") || msg.contains("utf-8")) {
            return classify(e);
        }
        let single = single_partition(self.ctx);
        for (file, _) in &input.schemas {
            for column in text_columns {
                let Ok(df) = single.read_parquet(file.as_str(), ParquetReadOptions::default()).await else { continue };
                let Ok(df) = df.aggregate(vec![], vec![decode_all(column)]) else {
                    continue;
                };
                if df.collect().await.is_err() {
                    return DataError::new("invalid UTF-8 in a text column")
                        .file(file)
                        .column(column)
                        .hint("re-encode the text as UTF-8 (e.g. from latin-1); `tailforge import movielens` does this for MovieLens")
                        .into();
                }
            }
        }
        DataError::new(format!("invalid UTF-8 text: {e}"))
            .file(input.location.display())
            .hint("re-encode the text as UTF-8")
            .into()
    }
}

/// Events this many seconds after now are reported as in the future.
const FUTURE_TOLERANCE_S: i64 = 86_400;

/// An aggregate that must decode every value of a column. (`count(col)` is
/// not enough: on a non-nullable column the optimizer turns it into
/// `count(*)`, and `max` can be answered from Parquet statistics.)
fn decode_all(column: &str) -> Expr {
    let c = Expr::Column(datafusion::common::Column::from_name(column));
    let as_text = datafusion::logical_expr::cast(c, datafusion::arrow::datatypes::DataType::Utf8);
    sum(octet_length(as_text))
}

fn empty(input: &InputTable) -> Error {
    DataError::new(format!("the {} input has no rows", input.role))
        .file(input.location.display())
        .hint("check that the upstream export ran and wrote data for this date")
        .into()
}

/// A session reading one partition, so `row_number()` follows file order.
fn single_partition(ctx: &SessionContext) -> SessionContext {
    SessionContext::new_with_config_rt(SessionConfig::new().with_target_partitions(1), ctx.runtime_env())
}

/// (file, 1-based row, offending value) of the first row matching `bad`.
type Found = Option<(String, u64, Option<String>)>;

/// Scans the input file by file for the first row where `bad` holds.
async fn locate(
    ctx: &SessionContext,
    input: &InputTable,
    normalize: &dyn Fn(DataFrame) -> Result<DataFrame>,
    bad: Expr,
    value_column: &str,
) -> Result<Found> {
    let single = single_partition(ctx);
    for (file, _) in &input.schemas {
        let df = single
            .read_parquet(file.as_str(), ParquetReadOptions::default())
            .await
            .map_err(|e| Error::storage(file.clone(), e))?;
        let df = normalize(df)?
            .window(vec![row_number().alias("__row")])
            .and_then(|df| df.filter(bad.clone()))
            .and_then(|df| {
                df.select(vec![
                    col("__row"),
                    datafusion::logical_expr::cast(col(value_column), datafusion::arrow::datatypes::DataType::Utf8)
                        .alias("__value"),
                ])
            })
            .and_then(|df| df.limit(0, Some(1)))
            .map_err(|e| Error::internal(format!("locating a bad row: {e}")))?;
        let batches = df.collect().await.map_err(|e| Error::storage(file.clone(), e))?;
        if let Some(b) = batches.iter().find(|b| b.num_rows() > 0) {
            let row = b.column(0).as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>().map(|a| a.value(0));
            let row =
                row.or_else(|| b.column(0).as_primitive_opt::<Int64Type>().map(|a| a.value(0) as u64)).unwrap_or(0);
            let value = b.column(1).as_string_opt::<i32>().filter(|a| !a.is_null(0)).map(|a| a.value(0).to_string());
            return Ok(Some((file.clone(), row, value)));
        }
    }
    Ok(None)
}

/// A data error at the found location (or naming the input as a whole).
fn located(found: Found, input: &InputTable, column: &str, message: String) -> DataError {
    let e = DataError::new(message).column(column);
    match found {
        Some((file, row, _)) => e.file(file).row(row),
        None => e.file(input.location.display()),
    }
}
