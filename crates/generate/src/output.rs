//! Reading `tail_items` and writing/reading the output shards.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, Int64Builder, ListBuilder, StringArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use tailforge_core::parquet_io::parquet_files;
use tailforge_core::parquet_io::{ParquetSink, read_parquet};
use tailforge_core::schema::{self, IdKind, is_text};
use tailforge_core::{DataError, Error, Location, Result};

pub const GENERATED_DIR: &str = schema::generate_outputs::GENERATED;
pub const REJECTS_DIR: &str = schema::generate_outputs::REJECTS;

/// An item id, keeping its input kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ItemId {
    Int(i64),
    Str(String),
}

impl ItemId {
    /// The id as text: the key for seeds and resume.
    pub fn key(&self) -> String {
        match self {
            ItemId::Int(i) => i.to_string(),
            ItemId::Str(s) => s.clone(),
        }
    }
}

/// One input item.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: ItemId,
    pub title: Option<String>,
    /// (column name, value) of each non-null text attribute.
    pub attributes: Vec<(String, String)>,
}

/// Columns of `tail_items` that are not attributes.
const NOT_ATTRIBUTES: [&str; 4] = ["item_id", "title", "interactions", "rank"];

fn as_strings(col: &ArrayRef, file: &str, name: &str) -> Result<StringArray> {
    let c = cast(col, &DataType::Utf8)
        .map_err(|e| Error::from(DataError::new(format!("cannot read as text: {e}")).file(file).column(name)))?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::internal(format!("{file}: column {name}: cast to Utf8 gave another type")))
}

/// Reads `tail_items` (or any table with `item_id`, optional `title` and text attributes).
pub async fn read_items(input: &Location) -> Result<(IdKind, Vec<Item>)> {
    let file = input.display();
    let batches = read_parquet(input).await?;
    let mut items = Vec::new();
    let mut kind = None;
    for batch in &batches {
        let schema = batch.schema();
        let Some(id_idx) = schema.index_of("item_id").ok() else {
            return Err(DataError::new("no item_id column")
                .file(&file)
                .hint("the input must be analyze's tail_items.parquet")
                .into());
        };
        let id_type = schema.field(id_idx).data_type();
        let k = IdKind::of(id_type).ok_or_else(|| {
            Error::from(
                DataError::new(format!("item ids of type {id_type} are not supported")).file(&file).column("item_id"),
            )
        })?;
        kind = Some(k);
        let id_col = batch.column(id_idx);
        let ints = match k {
            IdKind::Int64 => Some(
                cast(id_col, &DataType::Int64)
                    .map_err(|e| Error::from(DataError::new(format!("{e}")).file(&file).column("item_id")))?,
            ),
            IdKind::Utf8 => None,
        };
        let strs = match k {
            IdKind::Utf8 => Some(as_strings(id_col, &file, "item_id")?),
            IdKind::Int64 => None,
        };
        let title = match schema.index_of("title") {
            Ok(i) => Some(as_strings(batch.column(i), &file, "title")?),
            Err(_) => None,
        };
        let mut attrs = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if NOT_ATTRIBUTES.contains(&f.name().as_str()) || !is_text(f.data_type()) {
                continue;
            }
            attrs.push((f.name().clone(), as_strings(batch.column(i), &file, f.name())?));
        }
        let int_ids = match &ints {
            Some(a) => Some(a.as_any().downcast_ref::<Int64Array>().ok_or_else(|| Error::internal("item_id cast"))?),
            None => None,
        };
        for row in 0..batch.num_rows() {
            let null = int_ids.map(|a| a.is_null(row)).or_else(|| strs.as_ref().map(|a| a.is_null(row)));
            if null != Some(false) {
                return Err(DataError::new("null item_id")
                    .file(&file)
                    .column("item_id")
                    .row(items.len() as u64)
                    .into());
            }
            let id = match (int_ids, &strs) {
                (Some(a), _) => ItemId::Int(a.value(row)),
                (None, Some(a)) => ItemId::Str(a.value(row).to_string()),
                (None, None) => return Err(Error::internal("item_id kind")),
            };
            let title = title.as_ref().and_then(|t| (!t.is_null(row)).then(|| t.value(row).to_string()));
            let attributes = attrs
                .iter()
                .filter(|(_, a)| !a.is_null(row))
                .map(|(n, a)| (n.clone(), a.value(row).to_string()))
                .collect();
            items.push(Item { id, title, attributes });
        }
    }
    Ok((kind.unwrap_or(IdKind::Int64), items))
}

/// `generated/part-NNNNN.parquet` ([`tailforge_core::schema::generated_schema`]).
pub fn generated_schema(kind: IdKind) -> SchemaRef {
    Arc::new(schema::generated_schema(kind))
}

/// `rejects/part-NNNNN.parquet` ([`tailforge_core::schema::rejects_schema`]).
pub fn rejects_schema(kind: IdKind) -> SchemaRef {
    Arc::new(schema::rejects_schema(kind))
}

/// One accepted row.
#[derive(Debug, Clone)]
pub struct GeneratedRow {
    pub id: ItemId,
    pub description: String,
    pub keywords: Vec<String>,
    pub prompt_hash: String,
    pub seed: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub generation_ms: u64,
}

/// One rejected item.
#[derive(Debug, Clone)]
pub struct RejectRow {
    pub id: ItemId,
    pub reason: String,
    pub attempts: u32,
}

fn id_array(kind: IdKind, ids: impl Iterator<Item = ItemId>) -> ArrayRef {
    match kind {
        IdKind::Int64 => {
            let mut b = Int64Builder::new();
            for id in ids {
                match id {
                    ItemId::Int(i) => b.append_value(i),
                    ItemId::Str(s) => b.append_option(s.parse::<i64>().ok()),
                }
            }
            Arc::new(b.finish())
        }
        IdKind::Utf8 => Arc::new(StringArray::from_iter_values(ids.map(|i| i.key()))),
    }
}

pub fn generated_batch(
    kind: IdKind,
    rows: &[GeneratedRow],
    model_sha256: &str,
    params_hash: &str,
) -> Result<RecordBatch> {
    let mut kw = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for k in &r.keywords {
            kw.values().append_value(k);
        }
        kw.append(true);
    }
    let n = rows.len();
    let i64s =
        |f: &dyn Fn(&GeneratedRow) -> i64| -> ArrayRef { Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) };
    let columns: Vec<ArrayRef> = vec![
        id_array(kind, rows.iter().map(|r| r.id.clone())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.description.as_str()))),
        Arc::new(kw.finish()),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(model_sha256, n))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.prompt_hash.as_str()))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(params_hash, n))),
        i64s(&|r| i64::from(r.seed)),
        i64s(&|r| i64::from(r.prompt_tokens)),
        i64s(&|r| i64::from(r.generated_tokens)),
        i64s(&|r| r.generation_ms as i64),
    ];
    RecordBatch::try_new(generated_schema(kind), columns).map_err(|e| Error::internal(format!("generated batch: {e}")))
}

pub fn rejects_batch(kind: IdKind, rows: &[RejectRow]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        id_array(kind, rows.iter().map(|r| r.id.clone())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.reason.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| i64::from(r.attempts)))),
    ];
    RecordBatch::try_new(rejects_schema(kind), columns).map_err(|e| Error::internal(format!("rejects batch: {e}")))
}

/// Name of shard `n`.
pub fn shard_name(n: u32) -> String {
    format!("part-{n:05}.parquet")
}

/// Writes one shard atomically (visible only once complete).
pub async fn write_shard(dir: &Location, n: u32, batch: &RecordBatch) -> Result<()> {
    let loc = dir.join(&shard_name(n));
    let mut sink = ParquetSink::create(&loc, batch.schema())?;
    sink.write(batch).await?;
    sink.finish().await?;
    Ok(())
}

/// What earlier runs left in an output shard directory.
#[derive(Debug, Default)]
pub struct Existing {
    /// Item keys of all rows.
    pub keys: HashSet<String>,
    /// The `description` of each row, when the shards have one (generated/).
    pub descriptions: Vec<String>,
    /// The next shard number.
    pub next: u32,
}

/// The complete shards in `dir`: their item keys, descriptions and the next shard number.
pub async fn existing_shards(dir: &Location) -> Result<Existing> {
    let mut found = Existing::default();
    for (name, loc) in parquet_files(dir).await? {
        let Some(num) = name.strip_prefix("part-").and_then(|r| r.strip_suffix(".parquet")) else { continue };
        let Ok(num) = num.parse::<u32>() else { continue };
        found.next = found.next.max(num.saturating_add(1));
        for batch in read_parquet(&loc).await? {
            let Some(col) = batch.column_by_name("item_id") else {
                return Err(DataError::new("no item_id column")
                    .file(loc.display())
                    .hint("this is not a tailforge generate shard: delete it or the output directory")
                    .into());
            };
            let s = as_strings(col, &loc.display(), "item_id")?;
            found.keys.extend(s.iter().flatten().map(str::to_string));
            if let Some(d) = batch.column_by_name("description") {
                let d = as_strings(d, &loc.display(), "description")?;
                found.descriptions.extend(d.iter().flatten().map(str::to_string));
            }
        }
    }
    Ok(found)
}
