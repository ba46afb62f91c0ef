//! The data contracts: Arrow schemas of what each stage reads and writes.
//!
//! Stages never depend on each other; they hand over Parquet files whose
//! schemas are declared here, and each writer checks its output against them
//! ([`check_schema`]) so a drifting query fails loudly instead of producing
//! files the next stage misreads.
//!
//! Ids keep their input kind: integer ids (MovieLens) stay `Int64` so that
//! eval-v1's "ties by item id ascending" is numeric order; string ids
//! (`"B00X..."`) are `Utf8`. Times are `Int64` Unix seconds.

use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names of the analyze outputs, each a Parquet file `<name>.parquet` under the stage directory.
pub mod outputs {
    pub const ITEM_STATS: &str = "item_stats";
    pub const TAIL_ITEMS: &str = "tail_items";
    pub const ITEM_TEXT: &str = "item_text";
    pub const SEQUENCES: &str = "sequences";
    pub const SPLIT: &str = "split";
    pub const NEIGHBORS: &str = "neighbors";
    pub const SUMMARY: &str = "summary.json";
    /// All Parquet outputs.
    pub const PARQUET: [&str; 6] = [ITEM_STATS, TAIL_ITEMS, ITEM_TEXT, SEQUENCES, SPLIT, NEIGHBORS];
}

/// Group labels used in `item_stats.group` and `item_stats.eval_group`.
pub const HEAD: &str = "head";
pub const TAIL: &str = "tail";
/// The groups every eval-v1 report has, in report order (EVAL.md §6):
/// all test cases, by the target's head/tail group, and `cold` (the target
/// has at most 5 training interactions).
pub const EVAL_GROUPS: [&str; 4] = ["overall", HEAD, TAIL, "cold"];

/// The kind of an id column, decided from the input's Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKind {
    Int64,
    Utf8,
}

impl IdKind {
    /// The id kind for an input column type, or `None` if ids cannot have that type.
    pub fn of(dt: &DataType) -> Option<IdKind> {
        match dt {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => Some(IdKind::Int64),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(IdKind::Utf8),
            DataType::Dictionary(_, v) => IdKind::of(v),
            _ => None,
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            IdKind::Int64 => DataType::Int64,
            IdKind::Utf8 => DataType::Utf8,
        }
    }
}

/// Whether a column type holds text (kept as an item attribute).
pub fn is_text(dt: &DataType) -> bool {
    matches!(dt, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        || matches!(dt, DataType::Dictionary(_, v) if is_text(v))
}

/// Normalized events, as the SQL in `sql/` sees them (table `events`).
pub fn events_schema(user: IdKind, item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("user_id", user.data_type(), false),
        Field::new("item_id", item.data_type(), false),
        Field::new("ts", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("weight", DataType::Float64, true),
    ])
}

/// `item_stats`: one row per item in the catalog or the events.
pub fn item_stats_schema(item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("interactions", DataType::Int64, false),
        Field::new("distinct_users", DataType::Int64, false),
        Field::new("first_ts", DataType::Int64, true),
        Field::new("last_ts", DataType::Int64, true),
        Field::new("train_interactions", DataType::Int64, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("cum_share", DataType::Float64, false),
        Field::new("group", DataType::Utf8, false),
        Field::new("eval_group", DataType::Utf8, true),
        Field::new("in_catalog", DataType::Boolean, false),
    ])
}

/// The fixed leading columns of `item_text` (every item with interactions);
/// every column after them is a text attribute of the catalog.
pub fn item_text_fixed_fields(item: IdKind) -> Vec<Field> {
    vec![Field::new("item_id", item.data_type(), false), Field::new("title", DataType::Utf8, true)]
}

/// `neighbors`: each tail item's co-interaction neighbours in training sequences.
pub fn neighbors_schema(item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("neighbor_id", item.data_type(), false),
        Field::new("neighbor_title", DataType::Utf8, true),
        Field::new("users", DataType::Int64, false),
        Field::new("rank", DataType::Int64, false),
    ])
}

/// The column of `tail_items` listing the neighbours' titles (last; not an attribute).
pub const NEIGHBOR_TITLES: &str = "neighbor_titles";

/// The fixed leading columns of `tail_items`; every text column after them is a
/// text attribute of the catalog (category, brand, genres, …), and the last
/// column is [`NEIGHBOR_TITLES`].
pub fn tail_items_fixed_fields(item: IdKind) -> Vec<Field> {
    vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("title", DataType::Utf8, true),
        Field::new("interactions", DataType::Int64, false),
        Field::new("rank", DataType::Int64, false),
    ]
}

/// `sequences`: one row per user, items in eval-v1 order (ts, then item id).
pub fn sequences_schema(user: IdKind, item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("user_id", user.data_type(), false),
        Field::new("item_ids", DataType::new_list(item.data_type(), true), false),
        Field::new("ts", DataType::new_list(DataType::Int64, true), false),
        Field::new("length", DataType::Int64, false),
    ])
}

/// `split`: eval-v1 leave-one-out targets per user.
pub fn split_schema(user: IdKind, item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("user_id", user.data_type(), false),
        Field::new("length", DataType::Int64, false),
        Field::new("train_length", DataType::Int64, false),
        Field::new("valid_item", item.data_type(), true),
        Field::new("valid_ts", DataType::Int64, true),
        Field::new("test_item", item.data_type(), true),
        Field::new("test_ts", DataType::Int64, true),
        Field::new("evaluated", DataType::Boolean, false),
    ])
}

/// Checks that `actual` has `expected`'s leading columns with the same names
/// and types (nullability and extra trailing columns are allowed). A
/// mismatch is a bug in a query, so it is an internal error.
pub fn check_schema(table: &str, actual: &Schema, expected: &[Field]) -> Result<()> {
    for (i, want) in expected.iter().enumerate() {
        let Some(got) = actual.fields().get(i) else {
            return Err(Error::internal(format!("{table}: missing column {} ({})", want.name(), want.data_type())));
        };
        let same_type = got.data_type() == want.data_type()
            || (is_text(got.data_type()) && is_text(want.data_type()))
            || matches!((got.data_type(), want.data_type()), (DataType::List(a), DataType::List(b)) if a.data_type() == b.data_type() || (is_text(a.data_type()) && is_text(b.data_type())));
        if got.name() != want.name() || !same_type {
            return Err(Error::internal(format!(
                "{table}: column {i} is {} ({}), expected {} ({})",
                got.name(),
                got.data_type(),
                want.name(),
                want.data_type()
            )));
        }
    }
    Ok(())
}

/// `summary.json` of the analyze stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalyzeSummary {
    /// Events after de-duplication.
    pub events: u64,
    /// Events read before de-duplication.
    pub events_read: u64,
    pub users: u64,
    /// Items in the catalog.
    pub catalog_items: u64,
    /// Distinct items in the events.
    pub items_with_events: u64,
    /// Items in the events that the catalog lacks.
    pub items_missing_from_catalog: u64,
    /// Catalog items without any event.
    pub cold_items: u64,
    /// Gini coefficient of item popularity over all items (0 = equal, 1 = one item has all).
    pub gini: f64,
    pub head_items: u64,
    pub tail_items: u64,
    /// Share of interactions held by head items.
    pub head_share: f64,
    /// The long-tail rule and its parameter.
    pub long_tail_rule: String,
    pub long_tail_parameter: f64,
    pub dedup: String,
    pub user_id_kind: IdKind,
    pub item_id_kind: IdKind,
    /// Interactions in eval-v1's training portion.
    pub train_interactions: u64,
    /// Users with at least 3 interactions (evaluated by eval-v1).
    pub evaluated_users: u64,
    /// Rows per output table.
    pub rows: std::collections::BTreeMap<String, u64>,
    /// Input files read.
    pub input_files: Vec<InputFile>,
    /// Wall seconds per step, for the log and the report (not part of the data).
    pub timings: std::collections::BTreeMap<String, f64>,
}

/// An input file with its size and ETag, for provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub url: String,
    pub size: u64,
    pub e_tag: Option<String>,
}

/// Names of the generate outputs under the stage directory.
pub mod generate_outputs {
    /// Directory of `part-NNNNN.parquet` shards of accepted rows ([`super::generated_schema`]).
    pub const GENERATED: &str = "generated";
    /// Directory of `part-NNNNN.parquet` shards of rejected items ([`super::rejects_schema`]).
    pub const REJECTS: &str = "rejects";
    pub const SUMMARY: &str = "summary.json";
}

/// `generate/generated/part-NNNNN.parquet`: one row per accepted item.
///
/// * `item_id`: as in the input (`Int64` or `Utf8`)
/// * `description`, `keywords`: the validated answer (keywords trimmed, lower-cased, de-duplicated)
/// * `model_sha256`: SHA-256 of the GGUF file
/// * `prompt_hash`: SHA-256 of the item's full prompt text (chat template applied)
/// * `params_hash`: SHA-256 of prompt template, grammar and sampling parameters
/// * `seed`: the sampler seed of the accepted attempt
/// * `prompt_tokens`, `generated_tokens`, `generation_ms`: cost of the accepted attempt
///   (`generation_ms` is wall time while sharing the batch with other sequences)
/// * `keyword_grounding`, `description_grounding`: the share of keywords (all
///   their content words) and of description content words found in the
///   item's own catalog text or its neighbours' titles (0 to 1)
pub fn generated_schema(item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("description", DataType::Utf8, false),
        Field::new("keywords", DataType::new_list(DataType::Utf8, true), false),
        Field::new("model_sha256", DataType::Utf8, false),
        Field::new("prompt_hash", DataType::Utf8, false),
        Field::new("params_hash", DataType::Utf8, false),
        Field::new("seed", DataType::Int64, false),
        Field::new("prompt_tokens", DataType::Int64, false),
        Field::new("generated_tokens", DataType::Int64, false),
        Field::new("generation_ms", DataType::Int64, false),
        Field::new("keyword_grounding", DataType::Float64, false),
        Field::new("description_grounding", DataType::Float64, false),
    ])
}

/// `generate/rejects/part-NNNNN.parquet`: items without a valid answer after
/// all attempts; `reason` names the filter of the last attempt
/// (`invalid_json`, `truncated`, `near_duplicate`, …).
pub fn rejects_schema(item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("attempts", DataType::Int64, false),
    ])
}

/// Names of the train outputs under a variant's directory (`<train out>/`,
/// under `tailforge run`: `train/<variant>/`).
pub mod train_outputs {
    /// The eval-v1 report, curve and settings (`records::TrainMetrics`).
    pub const METRICS: &str = "metrics.json";
    pub const METRICS_MARKDOWN: &str = "metrics.md";
    /// The model's item table ([`super::item_embeddings_schema`]).
    pub const ITEM_EMBEDDINGS: &str = "item_embeddings.parquet";
    /// Every user's next items ([`super::recommendations_schema`]).
    pub const RECOMMENDATIONS: &str = "recommendations.parquet";
}

/// `train/<variant>/item_embeddings.parquet`: the trained model's item
/// table, the vectors a serving system scores a user's vector against.
///
/// * `item_id`: as in the input, one row per catalog item with interactions
/// * `eval_group`: the item's eval-v1 group (`head` / `tail`)
/// * `vector`: `dim` floats (the model's hidden size)
pub fn item_embeddings_schema(item: IdKind, dim: usize) -> Schema {
    let element = Field::new("item", DataType::Float32, false);
    Schema::new(vec![
        Field::new("item_id", item.data_type(), false),
        Field::new("eval_group", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(std::sync::Arc::new(element), dim as i32), false),
    ])
}

/// `train/<variant>/recommendations.parquet`: each user's top-K next items
/// after their whole history (items already seen excluded).
///
/// * `rank`: 1 = best
/// * `score`: the model's score under the run's scoring rule
/// * `why`: a short explanation in words (which recent item it resembles)
pub fn recommendations_schema(user: IdKind, item: IdKind) -> Schema {
    Schema::new(vec![
        Field::new("user_id", user.data_type(), false),
        Field::new("rank", DataType::Int64, false),
        Field::new("item_id", item.data_type(), false),
        Field::new("score", DataType::Float32, false),
        Field::new("why", DataType::Utf8, false),
    ])
}
