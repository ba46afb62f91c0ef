//! The cross-run cache: accepted rows kept per generation fingerprint, so
//! that a later run (the next night, another output directory) reuses the
//! answers for items it saw before and spends tokens only on new items.
//!
//! ```text
//! <cache>/<fingerprint>/generated/part-<unix_ms>-<pid>-<n>.parquet   accepted rows + input_hash
//! <cache>/<fingerprint>/rejects/part-<unix_ms>-<pid>-<n>.parquet     rejected items + input_hash
//! ```
//!
//! Rejects are cached too: with the same fingerprint an item's attempts use
//! the same seeds, so a retry would spend the tokens to reach the same verdict.
//!
//! The fingerprint is the SHA-256 of the model file's SHA-256, the hash of
//! prompt template, grammar and sampling parameters, and the seed: with all
//! three equal a run would produce the same rows. Each row also carries the
//! hash of the item's rendered prompt messages (`input_hash`), so an item
//! whose title or attributes changed is generated again. Shards are only ever
//! added (atomically, under names no other process uses), so concurrent runs
//! sharing a cache never clobber each other; a row cached twice is read once.
//! An unreadable shard is skipped with a warning: the cache only saves work.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, ListArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use tailforge_core::hash::sha256_hex;
use tailforge_core::parquet_io::read_parquet;
use tailforge_core::schema::IdKind;
use tailforge_core::{Error, Location, Result};

use crate::output::{self, GeneratedRow, ItemId, RejectRow};

/// The fingerprint of a generation: model, prompt template + sampling parameters, seed.
pub fn fingerprint(model_sha256: &str, params_hash: &str, seed: u64) -> String {
    sha256_hex(format!("tailforge-generate-v1\n{model_sha256}\n{params_hash}\n{seed}").as_bytes())
}

/// The hash of an item's rendered prompt messages.
pub fn input_hash(system: &str, user: &str) -> String {
    sha256_hex(format!("{system}\u{0}{user}").as_bytes())
}

/// One fingerprint's directory of the cache.
pub struct Cache {
    dir: Location,
    /// item key → (input hash, row).
    rows: HashMap<String, (String, GeneratedRow)>,
    /// item key → (input hash, reason, attempts).
    rejects: HashMap<String, (String, String, u32)>,
}

fn rejects_of(batch: &RecordBatch) -> Option<Vec<(String, String, String, u32)>> {
    let ids = strings(batch, "item_id")?;
    let reason = strings(batch, "reason")?;
    let input = strings(batch, "input_hash")?;
    let attempts = column::<Int64Array>(batch, "attempts")?;
    (0..batch.num_rows())
        .map(|r| {
            if ids.is_null(r) || reason.is_null(r) || input.is_null(r) {
                return None;
            }
            let a = u32::try_from(attempts.value(r)).ok()?;
            Some((ids.value(r).to_string(), input.value(r).to_string(), reason.value(r).to_string(), a))
        })
        .collect()
}

/// Reads every shard of `dir`, skipping (with a warning) those `parse` cannot read.
async fn read_shards<T>(dir: &Location, parse: impl Fn(&RecordBatch) -> Option<Vec<T>>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for (_, loc) in output::parquet_files(dir).await? {
        let batches = match read_parquet(&loc).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(file = loc.display(), error = %e, "skipping an unreadable cache shard");
                continue;
            }
        };
        for b in &batches {
            match parse(b) {
                Some(rows) => out.extend(rows),
                None => tracing::warn!(file = loc.display(), "skipping a cache shard with unexpected columns"),
            }
        }
    }
    Ok(out)
}

/// Writes `batch` plus an `input_hash` column as a new shard in `dir`.
async fn add_shard(dir: &Location, batch: RecordBatch, input_hashes: &[&str]) -> Result<()> {
    static SHARD: AtomicU32 = AtomicU32::new(0);
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("input_hash", DataType::Utf8, false));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(input_hashes.iter().copied())));
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::internal(format!("cache batch: {e}")))?;
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let name = format!("part-{ms}-{}-{}.parquet", std::process::id(), SHARD.fetch_add(1, Ordering::Relaxed));
    let loc = dir.join(&name);
    let mut sink = tailforge_core::parquet_io::ParquetSink::create(&loc, batch.schema())?;
    sink.write(&batch).await?;
    sink.finish().await?;
    Ok(())
}

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Option<&'a T> {
    b.column_by_name(name)?.as_any().downcast_ref::<T>()
}

fn strings(b: &RecordBatch, name: &str) -> Option<StringArray> {
    let c = cast(b.column_by_name(name)?, &DataType::Utf8).ok()?;
    c.as_any().downcast_ref::<StringArray>().cloned()
}

fn rows_of(batch: &RecordBatch) -> Option<Vec<(String, GeneratedRow)>> {
    let ids = strings(batch, "item_id")?;
    let int_ids = matches!(batch.schema().field_with_name("item_id").ok()?.data_type(), DataType::Int64);
    let desc = strings(batch, "description")?;
    let kws = column::<ListArray>(batch, "keywords")?;
    let prompt_hash = strings(batch, "prompt_hash")?;
    let input = strings(batch, "input_hash")?;
    let i64s = |n: &str| column::<Int64Array>(batch, n).cloned();
    let (seed, pt, gt, ms) = (i64s("seed")?, i64s("prompt_tokens")?, i64s("generated_tokens")?, i64s("generation_ms")?);
    let f64s = |n: &str| column::<Float64Array>(batch, n).cloned();
    let (kg, dg) = (f64s("keyword_grounding")?, f64s("description_grounding")?);
    let mut out = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        if ids.is_null(r) || desc.is_null(r) || kws.is_null(r) {
            return None;
        }
        let key = ids.value(r).to_string();
        let kw = kws.value(r);
        let kw = kw.as_any().downcast_ref::<StringArray>()?;
        let id = match (int_ids, key.parse::<i64>()) {
            (true, Ok(i)) => ItemId::Int(i),
            _ => ItemId::Str(key.clone()),
        };
        let row = GeneratedRow {
            id,
            description: desc.value(r).to_string(),
            keywords: kw.iter().flatten().map(str::to_string).collect(),
            prompt_hash: prompt_hash.value(r).to_string(),
            seed: u32::try_from(seed.value(r)).ok()?,
            prompt_tokens: u32::try_from(pt.value(r)).ok()?,
            generated_tokens: u32::try_from(gt.value(r)).ok()?,
            generation_ms: u64::try_from(ms.value(r)).ok()?,
            grounding: crate::grounding::Grounding { keywords: kg.value(r), description: dg.value(r) },
        };
        out.push((input.value(r).to_string(), row));
    }
    Some(out)
}

impl Cache {
    /// Opens the fingerprint's directory under `root` and reads its rows.
    pub async fn open(root: &Location, fingerprint: &str) -> Result<Cache> {
        let dir = root.as_dir().join(&format!("{fingerprint}/"));
        let mut rows = HashMap::new();
        for (input, row) in read_shards(&dir.join(output::GENERATED_DIR), rows_of).await? {
            rows.entry(row.id.key()).or_insert((input, row));
        }
        let mut rejects = HashMap::new();
        for (key, input, reason, attempts) in read_shards(&dir.join(output::REJECTS_DIR), rejects_of).await? {
            rejects.entry(key).or_insert((input, reason, attempts));
        }
        tracing::info!(cache = dir.display(), rows = rows.len(), rejects = rejects.len(), "generate cache");
        Ok(Cache { dir, rows, rejects })
    }

    /// Accepted rows cached for this fingerprint.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.rejects.is_empty()
    }

    /// The cached row of `key` if it was generated from the same prompt messages.
    pub fn get(&self, key: &str, input_hash: &str) -> Option<&GeneratedRow> {
        self.rows.get(key).filter(|(h, _)| h == input_hash).map(|(_, r)| r)
    }

    /// The cached reject (reason, attempts) of `key` for the same prompt messages.
    pub fn get_reject(&self, key: &str, input_hash: &str) -> Option<(&str, u32)> {
        self.rejects.get(key).filter(|(h, _, _)| h == input_hash).map(|(_, r, a)| (r.as_str(), *a))
    }

    /// Adds accepted rows (with their input hashes) as a new shard.
    pub async fn add(
        &self,
        kind: IdKind,
        rows: &[(String, GeneratedRow)],
        model_sha256: &str,
        params_hash: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let plain: Vec<GeneratedRow> = rows.iter().map(|(_, r)| r.clone()).collect();
        let batch = output::generated_batch(kind, &plain, model_sha256, params_hash)?;
        let hashes: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
        add_shard(&self.dir.join(&format!("{}/", output::GENERATED_DIR)), batch, &hashes).await
    }

    /// Adds rejected items (with their input hashes) as a new shard.
    pub async fn add_rejects(&self, kind: IdKind, rows: &[(String, RejectRow)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let plain: Vec<RejectRow> = rows.iter().map(|(_, r)| r.clone()).collect();
        let batch = output::rejects_batch(kind, &plain)?;
        let hashes: Vec<&str> = rows.iter().map(|(h, _)| h.as_str()).collect();
        add_shard(&self.dir.join(&format!("{}/", output::REJECTS_DIR)), batch, &hashes).await
    }

    pub fn location(&self) -> &Location {
        &self.dir
    }
}
