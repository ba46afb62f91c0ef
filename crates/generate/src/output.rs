//! Reading `tail_items` and writing/reading the output shards.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, Int64Builder, ListBuilder, StringArray, StringBuilder,
};
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
    /// Titles of the item's co-interaction neighbours, most shared first.
    pub neighbors: Vec<String>,
}

impl Item {
    /// Characters of catalog text besides the title (which nearly every item
    /// has): the order of `priority = "least_text"`.
    pub fn attribute_chars(&self) -> usize {
        self.attributes.iter().map(|(_, v)| v.trim().len()).sum()
    }
}

/// Columns of `tail_items` that are not attributes.
const NOT_ATTRIBUTES: [&str; 5] = ["item_id", "title", "interactions", "rank", schema::NEIGHBOR_TITLES];

/// The neighbour titles of each row (empty lists when the column is absent: an older `tail_items`).
fn neighbor_titles(batch: &RecordBatch, file: &str) -> Result<Vec<Vec<String>>> {
    let Some(col) = batch.column_by_name(schema::NEIGHBOR_TITLES) else {
        return Ok(vec![Vec::new(); batch.num_rows()]);
    };
    let bad = || Error::from(DataError::new("not a list of strings").file(file).column(schema::NEIGHBOR_TITLES));
    let list = col.as_list_opt::<i32>().ok_or_else(bad)?;
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        if list.is_null(row) {
            out.push(Vec::new());
            continue;
        }
        let values = cast(&list.value(row), &DataType::Utf8).map_err(|_| bad())?;
        let values = values.as_string_opt::<i32>().ok_or_else(bad)?;
        out.push(values.iter().flatten().map(str::to_string).collect());
    }
    Ok(out)
}

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
        let mut neighbors = neighbor_titles(batch, &file)?.into_iter();
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
            let neighbors = neighbors.next().unwrap_or_default();
            items.push(Item { id, title, attributes, neighbors });
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
    /// Share of keywords, and of description content words, found in the item's own text or its neighbours' titles.
    pub grounding: crate::grounding::Grounding,
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
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.grounding.keywords))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.grounding.description))),
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

/// An accepted row as the run report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub item_id: String,
    /// 1-based position among the tail items by popularity (1 = the most
    /// popular tail item), from `tail_items`' order; None if it is not there.
    pub tail_rank: Option<u64>,
    pub title: String,
    /// The item's catalog attributes ("name: value; …"), cut to [`CATALOG_TEXT_CHARS`].
    pub catalog_text: String,
    pub description: String,
    pub keywords: Vec<String>,
    pub keyword_grounding: f64,
    pub description_grounding: f64,
}

/// Characters of catalog text an [`Example`] keeps.
pub const CATALOG_TEXT_CHARS: usize = 160;

/// `text` cut to at most `max` characters, at a word boundary when there is
/// one in the last third, with "…" when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    let cut = match cut.rfind(char::is_whitespace) {
        Some(i) if i >= cut.len() * 2 / 3 => cut[..i].trim_end().to_string(),
        _ => cut,
    };
    format!("{cut}…")
}

/// `n` indices spread evenly over `0..len`, first and last included (all when `len <= n`).
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    if n <= 1 {
        return (0..n).collect();
    }
    (0..n).map(|k| k * (len - 1) / (n - 1)).collect()
}

/// `n` accepted rows of the generate output `out`, spread evenly over the
/// tail by popularity (the order of `tail_items`: the most popular generated
/// tail item, the least popular, and evenly spaced ones between), with the
/// titles and catalog text from `tail_items`. Deterministic for an output.
pub async fn examples(out: &Location, tail_items: &Location, n: usize) -> Result<Vec<Example>> {
    let (_, items) = read_items(tail_items).await?;
    let info: std::collections::HashMap<String, (usize, String, String)> = items
        .into_iter()
        .enumerate()
        .map(|(pos, i)| {
            let text = i.attributes.iter().map(|(k, v)| format!("{k}: {}", v.trim())).collect::<Vec<_>>().join("; ");
            (i.id.key(), (pos, i.title.unwrap_or_default(), shorten(&text, CATALOG_TEXT_CHARS)))
        })
        .collect();
    let mut found = Vec::new();
    for (_, loc) in parquet_files(&out.as_dir().join(GENERATED_DIR)).await? {
        for batch in read_parquet(&loc).await? {
            let file = loc.display();
            let column = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    Error::from(DataError::new(format!("no {name} column")).file(&file).hint("not a generate shard"))
                })
            };
            let ids = as_strings(column("item_id")?, &file, "item_id")?;
            let desc = as_strings(column("description")?, &file, "description")?;
            let kws = batch.column_by_name("keywords").and_then(|c| c.as_list_opt::<i32>().cloned());
            let f64s = |name: &str| {
                batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            };
            let (kg, dg) = (f64s("keyword_grounding"), f64s("description_grounding"));
            for r in 0..batch.num_rows() {
                if ids.is_null(r) {
                    continue;
                }
                let keywords = match &kws {
                    Some(l) if !l.is_null(r) => {
                        let v = cast(&l.value(r), &DataType::Utf8).map_err(|e| Error::internal(e.to_string()))?;
                        v.as_string::<i32>().iter().flatten().map(str::to_string).collect()
                    }
                    _ => Vec::new(),
                };
                let id = ids.value(r).to_string();
                let (pos, title, catalog_text) = match info.get(&id) {
                    Some((pos, title, text)) => (Some(*pos), title.clone(), text.clone()),
                    None => (None, String::new(), String::new()),
                };
                let value =
                    |a: &Option<Float64Array>| a.as_ref().filter(|a| !a.is_null(r)).map_or(f64::NAN, |a| a.value(r));
                found.push(Example {
                    tail_rank: pos.map(|p| p as u64 + 1),
                    title,
                    catalog_text,
                    item_id: id,
                    description: if desc.is_null(r) { String::new() } else { desc.value(r).to_string() },
                    keywords,
                    keyword_grounding: value(&kg),
                    description_grounding: value(&dg),
                });
            }
        }
    }
    // By popularity; rows of items no longer in tail_items last, by id.
    found.sort_by(|a, b| {
        (a.tail_rank.is_none(), a.tail_rank, &a.item_id).cmp(&(b.tail_rank.is_none(), b.tail_rank, &b.item_id))
    });
    let picked = spread(found.len(), n);
    Ok(found.into_iter().enumerate().filter(|(i, _)| picked.contains(i)).map(|(_, e)| e).collect())
}

/// Rows of `rejects/` by reason (earlier runs' included), e.g. `{"refusal": 3}`.
pub async fn reject_reasons(out: &Location) -> Result<std::collections::BTreeMap<String, u64>> {
    let mut counts = std::collections::BTreeMap::new();
    for (_, loc) in parquet_files(&out.as_dir().join(REJECTS_DIR)).await? {
        for batch in read_parquet(&loc).await? {
            let file = loc.display();
            let col = batch.column_by_name("reason").ok_or_else(|| {
                Error::from(DataError::new("no reason column").file(&file).hint("not a generate rejects shard"))
            })?;
            for reason in as_strings(col, &file, "reason")?.iter() {
                *counts.entry(reason.unwrap_or("unknown").to_string()).or_default() += 1;
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod report_tests {
    use super::*;

    #[test]
    fn examples_are_spread_over_the_tail_and_text_is_shortened() {
        assert_eq!(spread(100, 10), [0, 11, 22, 33, 44, 55, 66, 77, 88, 99]);
        assert_eq!(spread(4, 10), [0, 1, 2, 3]);
        assert_eq!(spread(11, 10).len(), 10);
        assert_eq!(spread(5, 1), [0]);
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("a rather long catalog text about lab glassware", 20), "a rather long…");
        assert_eq!(shorten("ééééééééééééé", 5), "éééé…", "cut at a character, not a byte");
    }

    /// 25 tail items (by popularity), 24 of them generated across two shards
    /// in another order, plus a row of an item no longer in tail_items.
    #[tokio::test(flavor = "multi_thread")]
    async fn examples_follow_tail_popularity_not_shard_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = Location::parse(dir.path().to_str().unwrap()).unwrap().as_dir();
        let n = 25i64;
        let tail = RecordBatch::try_from_iter(vec![
            ("item_id", Arc::new(Int64Array::from_iter_values(1..=n)) as ArrayRef),
            ("title", Arc::new(StringArray::from_iter_values((1..=n).map(|i| format!("Item <{i}>"))))),
            ("interactions", Arc::new(Int64Array::from_iter_values((1..=n).map(|i| 100 - i)))),
            ("rank", Arc::new(Int64Array::from_iter_values((1..=n).map(|i| 40 + i)))),
            (
                "category",
                Arc::new(StringArray::from_iter_values((1..=n).map(|i| format!("cat {i} {}", "x".repeat(300))))),
            ),
        ])
        .unwrap();
        write_shard(&root.join("analyze/"), 0, &tail).await.unwrap();
        let row = |id: i64| GeneratedRow {
            id: ItemId::Int(id),
            description: format!("description {id}"),
            keywords: vec![format!("k{id}")],
            prompt_hash: String::new(),
            seed: 0,
            prompt_tokens: 1,
            generated_tokens: 1,
            generation_ms: 1,
            grounding: crate::grounding::Grounding { keywords: 1.0, description: 0.5 },
        };
        // Item 2 was not generated; 999 is not a tail item any more.
        let mut ids: Vec<i64> = (1..=n).filter(|i| *i != 2).rev().collect();
        ids.push(999);
        let gen_dir = root.join("generate/").join(GENERATED_DIR);
        for (k, part) in ids.chunks(13).enumerate() {
            let rows: Vec<GeneratedRow> = part.iter().map(|i| row(*i)).collect();
            write_shard(&gen_dir, k as u32, &generated_batch(IdKind::Int64, &rows, "m", "p").unwrap()).await.unwrap();
        }
        let tail_items = root.join("analyze/").join(&shard_name(0));
        let found = examples(&root.join("generate/"), &tail_items, 10).await.unwrap();
        let picked: Vec<&str> = found.iter().map(|e| e.item_id.as_str()).collect();
        // 25 rows sorted by tail position (1, 3, 4, …, 25, then 999); spread(25, 10)
        // picks indices 0, 2, 5, 8, 10, 13, 16, 18, 21, 24 of them.
        assert_eq!(picked, ["1", "4", "7", "10", "12", "15", "18", "20", "23", "999"]);
        assert_eq!(found[0].tail_rank, Some(1));
        assert_eq!(found[1].tail_rank, Some(4));
        assert_eq!(found[9].tail_rank, None);
        assert_eq!(found[0].title, "Item <1>");
        assert!(found[0].catalog_text.starts_with("category: cat 1 ") && found[0].catalog_text.ends_with('…'));
        assert!(found[0].catalog_text.chars().count() <= CATALOG_TEXT_CHARS);
        assert_eq!((found[0].keywords.clone(), found[0].keyword_grounding), (vec!["k1".to_string()], 1.0));
        assert!(reject_reasons(&root.join("generate/")).await.unwrap().is_empty(), "no rejects/");
        let rejects = rejects_batch(
            IdKind::Int64,
            &[
                RejectRow { id: ItemId::Int(2), reason: "refusal".into(), attempts: 3 },
                RejectRow { id: ItemId::Int(7), reason: "refusal".into(), attempts: 3 },
                RejectRow { id: ItemId::Int(8), reason: "truncated".into(), attempts: 3 },
            ],
        )
        .unwrap();
        write_shard(&root.join("generate/").join(REJECTS_DIR), 0, &rejects).await.unwrap();
        let counts = reject_reasons(&root.join("generate/")).await.unwrap();
        assert_eq!(counts.into_iter().collect::<Vec<_>>(), [("refusal".to_string(), 2), ("truncated".to_string(), 1)]);
    }
}
