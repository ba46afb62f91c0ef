//! tailforge's input builders: importers that turn public datasets into the
//! events/items Parquet contract, and `demo-data`, the deterministic
//! synthetic shop used as the embedded default (like TPC-H's dbgen).

pub mod demo;
pub mod movielens;

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
