//! The bounded-memory route to `sequences.parquet`.
//!
//! `sql/sequences.sql` builds each user's list in a hash aggregation: the
//! fastest plan, but its state is every event at once, and DataFusion cannot
//! spill list-valued aggregate state well (100M events under a 4 GiB limit
//! fail). With a memory limit, `sql/sequences_sorted.sql` sorts instead —
//! an external sort spills reliably — and this module cuts the sorted stream
//! into one row per user. Memory is bounded by one batch plus the longest
//! user. The output schema is taken from the planned `sequences.sql`, so both
//! routes write identical files (a test compares them).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch, UInt32Array};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::{concat_batches, partition, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use tailforge_core::parquet_io::ParquetSink;
use tailforge_core::{Error, Location, Result};

use crate::query::classify;

/// Rows gathered before complete users are cut off and written.
const CHUNK_ROWS: usize = 1 << 17;

/// Writes `sorted` (user_id, item_id, ts ordered by user, ts, item) as
/// sequences with `schema`; returns the number of users.
pub async fn write_sorted(sorted: DataFrame, schema: SchemaRef, target: &Location) -> Result<u64> {
    let mut stream = sorted.execute_stream().await.map_err(classify)?;
    let mut sink = ParquetSink::create(target, Arc::clone(&schema))?;
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0;
    let mut users = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(classify)?;
        pending_rows += batch.num_rows();
        pending.push(batch);
        if pending_rows >= CHUNK_ROWS {
            let rest = cut(&mut pending, &schema, false, &mut sink, &mut users).await?;
            pending_rows = rest;
        }
    }
    cut(&mut pending, &schema, true, &mut sink, &mut users).await?;
    sink.finish().await?;
    Ok(users)
}

/// Writes every complete user in `pending` (all users when `last`), keeps
/// the rest; returns the rows kept.
async fn cut(
    pending: &mut Vec<RecordBatch>,
    schema: &SchemaRef,
    last: bool,
    sink: &mut ParquetSink,
    users: &mut u64,
) -> Result<usize> {
    let Some(first) = pending.first() else { return Ok(0) };
    let batch = concat_batches(&first.schema(), pending.iter()).map_err(|e| Error::internal(e.to_string()))?;
    pending.clear();
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    let ranges = partition(&[Arc::clone(batch.column(0))]).map_err(|e| Error::internal(e.to_string()))?.ranges();
    // The last user may continue in the next batch unless the stream ended.
    let complete = if last { ranges.len() } else { ranges.len() - 1 };
    let end = ranges[..complete].last().map(|r| r.end).unwrap_or(0);
    if complete > 0 {
        let list = |column: usize, field: usize| -> Result<ArrayRef> {
            let DataType::List(item) = schema.field(field).data_type() else {
                return Err(Error::internal("sequences: expected a list column"));
            };
            let values = datafusion::arrow::compute::cast(&batch.column(column).slice(0, end), item.data_type())
                .map_err(|e| Error::internal(e.to_string()))?;
            let offsets = OffsetBuffer::from_lengths(ranges[..complete].iter().map(|r| r.len()));
            Ok(Arc::new(
                ListArray::try_new(Arc::clone(item), offsets, values, None)
                    .map_err(|e| Error::internal(e.to_string()))?,
            ))
        };
        let starts = UInt32Array::from_iter_values(ranges[..complete].iter().map(|r| r.start as u32));
        let user_ids = take(batch.column(0), &starts, None).map_err(|e| Error::internal(e.to_string()))?;
        let user_ids = datafusion::arrow::compute::cast(&user_ids, schema.field(0).data_type())
            .map_err(|e| Error::internal(e.to_string()))?;
        let lengths: ArrayRef =
            Arc::new(Int64Array::from_iter_values(ranges[..complete].iter().map(|r| r.len() as i64)));
        let out = RecordBatch::try_new(Arc::clone(schema), vec![user_ids, list(1, 1)?, list(2, 2)?, lengths])
            .map_err(|e| Error::internal(format!("sequences: {e}")))?;
        sink.write(&out).await?;
        *users += complete as u64;
    }
    let rest = batch.num_rows() - end;
    if rest > 0 {
        pending.push(batch.slice(end, rest));
    }
    Ok(rest)
}
