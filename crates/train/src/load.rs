//! Reading the analyze stage's outputs into a [`Dataset`].
//!
//! `sequences.parquet` is the source of truth: the vocabulary, the users'
//! sequences and (through [`Dataset::from_sequences`]) the split, training
//! popularity and groups are computed from it. `split.parquet` and
//! `item_stats.parquet` are then checked against what was computed, so an
//! evaluator and an analyze stage that disagree on eval-v1 fail loudly
//! instead of producing figures nobody can compare.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::ops::Range;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type};
use tailforge_core::parquet_io::read_parquet;
use tailforge_core::schema::{IdKind, outputs};
use tailforge_core::{DataError, Error, Location, Result};

use crate::dataset::{Dataset, Ids};

const HINT: &str = "produce it with `tailforge analyze`; sequences, split and item_stats must come from the same run";

/// Reads `sequences.parquet`, `split.parquet` and `item_stats.parquet` from an
/// analyze output directory into a [`Dataset`], checking that the three agree
/// with each other and with eval-v1.
///
/// Errors: a missing or unreadable file is a storage or data error; a missing
/// column, a column of the wrong type, a null where a value is required, a
/// length that does not match its list, a sequence out of eval-v1 order or a
/// split row that does not match its sequence is a [`DataError`] naming the
/// file, column and row. Training popularity, interaction counts or eval-v1
/// groups that differ from `item_stats.parquet` are internal errors: the
/// analyze stage and this evaluator implement eval-v1 differently.
pub async fn load_dataset(analyze_out: &Location) -> Result<Dataset> {
    let start = Instant::now();
    let marker = analyze_out.join(tailforge_core::storage::SUCCESS_MARKER);
    if !marker.exists().await? {
        return Err(Error::usage(format!(
            "{} is not a finished analyze output (no {}): pass the --out directory of `tailforge analyze`, or run it first",
            analyze_out.display(),
            tailforge_core::storage::SUCCESS_MARKER
        )));
    }
    let (sequences, split, item_stats) = tokio::try_join!(
        Table::read(analyze_out, outputs::SEQUENCES),
        Table::read(analyze_out, outputs::SPLIT),
        Table::read(analyze_out, outputs::ITEM_STATS),
    )?;
    let dataset = tokio::task::spawn_blocking(move || build(&sequences, &split, &item_stats))
        .await
        .map_err(|e| Error::internal(format!("dataset loading task failed: {e}")))??;
    tracing::info!(
        users = dataset.n_users(),
        items = dataset.n_items(),
        train_interactions = dataset.train_interactions(),
        head_items = dataset.n_head,
        seconds = start.elapsed().as_secs_f64(),
        "loaded dataset"
    );
    Ok(dataset)
}

/// One Parquet output, read whole.
struct Table {
    file: String,
    batches: Vec<RecordBatch>,
}

impl Table {
    async fn read(dir: &Location, name: &str) -> Result<Table> {
        let location = dir.join(&format!("{name}.parquet"));
        let batches = read_parquet(&location).await?;
        Ok(Table { file: location.display(), batches })
    }

    fn column<'a>(&self, batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
        batch
            .column_by_name(name)
            .ok_or_else(|| DataError::new("missing column").file(&self.file).column(name).hint(HINT).into())
    }

    fn data_type(&self, name: &str) -> Result<Option<DataType>> {
        match self.batches.first() {
            Some(b) => Ok(Some(self.column(b, name)?.data_type().clone())),
            None => Ok(None),
        }
    }

    fn wrong_type(&self, name: &str, got: &DataType, expected: &str) -> Error {
        DataError::new(format!("has type {got}, expected {expected}")).file(&self.file).column(name).hint(HINT).into()
    }

    fn null(&self, name: &str, row: u64) -> Error {
        DataError::new("null value").file(&self.file).column(name).row(row).hint(HINT).into()
    }

    fn unreadable(&self, name: &str, e: impl Display) -> Error {
        DataError::new(format!("cannot read values: {e}")).file(&self.file).column(name).hint(HINT).into()
    }

    fn mismatch(&self, name: &str, row: u64, message: String) -> Error {
        DataError::new(message).file(&self.file).column(name).row(row).hint(HINT).into()
    }

    /// A scalar column as `K` values (ids, integers or text).
    fn scalar<K: Value>(&self, batch: &RecordBatch, name: &str) -> Result<Vec<Option<K>>> {
        let array = self.column(batch, name)?;
        if !K::accepts(array.data_type()) {
            return Err(self.wrong_type(name, array.data_type(), K::EXPECTED));
        }
        let cast = cast(array, &K::data_type()).map_err(|e| self.unreadable(name, e))?;
        K::extract(cast.as_ref())
    }

    /// A list column: per row the range of its entries in `values` (None for a null list).
    fn list<K: Value>(&self, batch: &RecordBatch, name: &str) -> Result<ListColumn<K>> {
        let array = self.column(batch, name)?;
        let element_ok = match array.data_type() {
            DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
                K::accepts(f.data_type())
            }
            _ => false,
        };
        if !element_ok {
            return Err(self.wrong_type(name, array.data_type(), &format!("a list of {}", K::EXPECTED)));
        }
        let cast = cast(array, &DataType::new_list(K::data_type(), true)).map_err(|e| self.unreadable(name, e))?;
        let list =
            cast.as_list_opt::<i32>().ok_or_else(|| Error::internal(format!("{name}: cast to a list failed")))?;
        let offsets = list.value_offsets();
        let ranges =
            (0..list.len()).map(|i| (!list.is_null(i)).then(|| offsets[i] as usize..offsets[i + 1] as usize)).collect();
        Ok(ListColumn { ranges, values: K::extract(list.values().as_ref())? })
    }
}

struct ListColumn<K> {
    ranges: Vec<Option<Range<usize>>>,
    values: Vec<Option<K>>,
}

/// A Rust type a column is read as: `i64` (ids and counts), `String` (ids
/// and labels) or `bool`.
trait Value: Sized {
    const EXPECTED: &'static str;
    fn accepts(dt: &DataType) -> bool;
    fn data_type() -> DataType;
    /// The values of an array already cast to [`Value::data_type`].
    fn extract(array: &dyn Array) -> Result<Vec<Option<Self>>>;
}

impl Value for i64 {
    const EXPECTED: &'static str = "integers";
    fn accepts(dt: &DataType) -> bool {
        IdKind::of(dt) == Some(IdKind::Int64)
    }
    fn data_type() -> DataType {
        DataType::Int64
    }
    fn extract(array: &dyn Array) -> Result<Vec<Option<i64>>> {
        let a = array.as_primitive_opt::<Int64Type>().ok_or_else(|| Error::internal("cast to Int64 failed"))?;
        Ok(a.iter().collect())
    }
}

impl Value for String {
    const EXPECTED: &'static str = "text";
    fn accepts(dt: &DataType) -> bool {
        IdKind::of(dt) == Some(IdKind::Utf8)
    }
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn extract(array: &dyn Array) -> Result<Vec<Option<String>>> {
        let a = array.as_string_opt::<i32>().ok_or_else(|| Error::internal("cast to Utf8 failed"))?;
        Ok(a.iter().map(|v| v.map(str::to_string)).collect())
    }
}

impl Value for bool {
    const EXPECTED: &'static str = "booleans";
    fn accepts(dt: &DataType) -> bool {
        dt == &DataType::Boolean
    }
    fn data_type() -> DataType {
        DataType::Boolean
    }
    fn extract(array: &dyn Array) -> Result<Vec<Option<bool>>> {
        let a = array.as_boolean_opt().ok_or_else(|| Error::internal("cast to Boolean failed"))?;
        Ok(a.iter().collect())
    }
}

/// An id type: `i64` for integer ids, `String` for text ids.
trait Id: Value + Ord + Hash + Clone + Display + Send + Sync {
    fn into_ids(ids: Vec<Self>) -> Ids;
}

impl Id for i64 {
    fn into_ids(ids: Vec<i64>) -> Ids {
        Ids::Int64(ids)
    }
}

impl Id for String {
    fn into_ids(ids: Vec<String>) -> Ids {
        Ids::Utf8(ids)
    }
}

fn id_kind(table: &Table, column: &str, dt: &DataType) -> Result<IdKind> {
    IdKind::of(dt).ok_or_else(|| table.wrong_type(column, dt, "integer or text ids"))
}

fn build(sequences: &Table, split: &Table, item_stats: &Table) -> Result<Dataset> {
    let (Some(user_dt), Some(items_dt)) = (sequences.data_type("user_id")?, sequences.data_type("item_ids")?) else {
        return Err(DataError::new("no users: the file has no rows").file(&sequences.file).hint(HINT).into());
    };
    let user_kind = id_kind(sequences, "user_id", &user_dt)?;
    let item_kind = match &items_dt {
        DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) | DataType::LargeListView(f) => {
            id_kind(sequences, "item_ids", f.data_type())?
        }
        other => return Err(sequences.wrong_type("item_ids", other, "a list of item ids")),
    };
    match (user_kind, item_kind) {
        (IdKind::Int64, IdKind::Int64) => build_typed::<i64, i64>(sequences, split, item_stats),
        (IdKind::Int64, IdKind::Utf8) => build_typed::<i64, String>(sequences, split, item_stats),
        (IdKind::Utf8, IdKind::Int64) => build_typed::<String, i64>(sequences, split, item_stats),
        (IdKind::Utf8, IdKind::Utf8) => build_typed::<String, String>(sequences, split, item_stats),
    }
}

fn build_typed<U: Id, I: Id>(sequences: &Table, split: &Table, item_stats: &Table) -> Result<Dataset> {
    // sequences.parquet: users, their items in order, and the vocabulary.
    let mut user_ids: Vec<U> = Vec::new();
    let mut user_index: HashMap<U, usize> = HashMap::new();
    let mut offsets: Vec<usize> = vec![0];
    let mut flat_items: Vec<I> = Vec::new();
    let mut flat_ts: Vec<i64> = Vec::new();
    let mut row0 = 0u64;
    for batch in &sequences.batches {
        let users = sequences.scalar::<U>(batch, "user_id")?;
        let mut items = sequences.list::<I>(batch, "item_ids")?;
        let mut ts = sequences.list::<i64>(batch, "ts")?;
        let lengths = sequences.scalar::<i64>(batch, "length")?;
        for r in 0..batch.num_rows() {
            let row = row0 + r as u64;
            let user = users[r].clone().ok_or_else(|| sequences.null("user_id", row))?;
            let range = items.ranges[r].clone().ok_or_else(|| sequences.null("item_ids", row))?;
            let ts_range = ts.ranges[r].clone().ok_or_else(|| sequences.null("ts", row))?;
            if ts_range.len() != range.len() {
                let msg = format!("{} timestamps for {} items", ts_range.len(), range.len());
                return Err(sequences.mismatch("ts", row, msg));
            }
            let length = lengths[r].ok_or_else(|| sequences.null("length", row))?;
            if length != range.len() as i64 {
                let msg = format!("length is {length} but item_ids has {} entries", range.len());
                return Err(sequences.mismatch("length", row, msg));
            }
            for k in range {
                flat_items.push(items.values[k].take().ok_or_else(|| sequences.null("item_ids", row))?);
            }
            for k in ts_range {
                flat_ts.push(ts.values[k].take().ok_or_else(|| sequences.null("ts", row))?);
            }
            if user_index.insert(user.clone(), user_ids.len()).is_some() {
                return Err(sequences.mismatch("user_id", row, format!("user {user} has more than one row")));
            }
            user_ids.push(user);
            offsets.push(flat_items.len());
        }
        row0 += batch.num_rows() as u64;
    }

    // The vocabulary: every item in the interactions, ascending by id.
    let mut vocabulary = flat_items.clone();
    vocabulary.sort_unstable();
    vocabulary.dedup();
    if u32::try_from(vocabulary.len()).is_err() {
        return Err(Error::internal(format!("{} items do not fit 32-bit item indices", vocabulary.len())));
    }
    let item_index: HashMap<I, u32> = vocabulary.iter().cloned().enumerate().map(|(i, id)| (id, i as u32)).collect();
    let dense: Vec<u32> = flat_items
        .iter()
        .map(|id| {
            item_index.get(id).copied().ok_or_else(|| Error::internal(format!("item {id} not in the vocabulary")))
        })
        .collect::<Result<_>>()?;
    drop(flat_items);

    // eval-v1 §1 order: timestamp ascending, ties by item id ascending.
    let mut seqs: Vec<Vec<u32>> = Vec::with_capacity(user_ids.len());
    for (u, w) in offsets.windows(2).enumerate() {
        let (items, ts) = (&dense[w[0]..w[1]], &flat_ts[w[0]..w[1]]);
        if let Some(p) = (1..items.len()).find(|&p| (ts[p], items[p]) < (ts[p - 1], items[p - 1])) {
            let msg = format!(
                "not in eval-v1 order (timestamp ascending, ties by item id): position {p} (ts {}, item {}) follows (ts {}, item {})",
                ts[p],
                vocabulary[items[p] as usize],
                ts[p - 1],
                vocabulary[items[p - 1] as usize]
            );
            return Err(sequences.mismatch("item_ids", u as u64, msg));
        }
        seqs.push(items.to_vec());
    }
    drop(flat_ts);
    drop(dense);

    let dataset = Dataset::from_sequences(I::into_ids(vocabulary), U::into_ids(user_ids), seqs)?;
    check_split::<U, I>(&dataset, split, &user_index, &item_index)?;
    check_item_stats::<I>(&dataset, item_stats, &item_index)?;
    Ok(dataset)
}

/// `split.parquet` must hold, for every user of `sequences.parquet`, the
/// leave-one-out split [`Dataset::from_sequences`] computed.
fn check_split<U: Id, I: Id>(
    dataset: &Dataset,
    split: &Table,
    user_index: &HashMap<U, usize>,
    item_index: &HashMap<I, u32>,
) -> Result<()> {
    let mut seen = vec![false; dataset.n_users()];
    let mut row0 = 0u64;
    for batch in &split.batches {
        let users = split.scalar::<U>(batch, "user_id")?;
        let lengths = split.scalar::<i64>(batch, "length")?;
        let train_lengths = split.scalar::<i64>(batch, "train_length")?;
        let valid_items = split.scalar::<I>(batch, "valid_item")?;
        let test_items = split.scalar::<I>(batch, "test_item")?;
        let evaluated = split.scalar::<bool>(batch, "evaluated")?;
        for r in 0..batch.num_rows() {
            let row = row0 + r as u64;
            let user = users[r].as_ref().ok_or_else(|| split.null("user_id", row))?;
            let Some(&u) = user_index.get(user) else {
                return Err(split.mismatch("user_id", row, format!("user {user} is not in sequences.parquet")));
            };
            if std::mem::replace(&mut seen[u], true) {
                return Err(split.mismatch("user_id", row, format!("user {user} has more than one row")));
            }
            let seq = &dataset.users[u];
            let length = lengths[r].ok_or_else(|| split.null("length", row))?;
            if length != seq.items.len() as i64 {
                let msg = format!(
                    "length is {length}, but user {user} has {} interactions in sequences.parquet",
                    seq.items.len()
                );
                return Err(split.mismatch("length", row, msg));
            }
            let train_length = train_lengths[r].ok_or_else(|| split.null("train_length", row))?;
            if train_length != seq.train_len as i64 {
                let msg = format!(
                    "train_length is {train_length}, eval-v1 gives {} for {length} interactions",
                    seq.train_len
                );
                return Err(split.mismatch("train_length", row, msg));
            }
            let flag = evaluated[r].ok_or_else(|| split.null("evaluated", row))?;
            if flag != seq.evaluated {
                let msg = format!("evaluated is {flag}, eval-v1 gives {} for {length} interactions", seq.evaluated);
                return Err(split.mismatch("evaluated", row, msg));
            }
            for (column, got, want) in
                [("valid_item", &valid_items[r], seq.valid_target()), ("test_item", &test_items[r], seq.test_target())]
            {
                let ok = match (got, want) {
                    (Some(id), Some(index)) => item_index.get(id) == Some(&index),
                    (None, None) => true,
                    _ => false,
                };
                if !ok {
                    let show = |v: Option<String>| v.unwrap_or_else(|| "null".into());
                    let msg = format!(
                        "{column} is {}, but the sequence of user {user} gives {}",
                        show(got.as_ref().map(|id| id.to_string())),
                        show(want.map(|i| dataset.item_ids.display(i as usize)))
                    );
                    return Err(split.mismatch(column, row, msg));
                }
            }
        }
        row0 += batch.num_rows() as u64;
    }
    if let Some(u) = seen.iter().position(|&s| !s) {
        let msg = format!("user {} of sequences.parquet has no row", dataset.user_ids.display(u));
        return Err(DataError::new(msg).file(&split.file).column("user_id").hint(HINT).into());
    }
    Ok(())
}

/// `item_stats.parquet` must agree with the dataset on every item's
/// interaction count, training popularity and eval-v1 group; items without
/// interactions are outside eval-v1's catalog and have no group.
fn check_item_stats<I: Id>(dataset: &Dataset, item_stats: &Table, item_index: &HashMap<I, u32>) -> Result<()> {
    let mut interactions = vec![0u64; dataset.n_items()];
    for user in &dataset.users {
        for &i in &user.items {
            interactions[i as usize] += 1;
        }
    }
    let disagree = |what: String| {
        Error::internal(format!(
            "{}: {what} (the analyze stage and the evaluator disagree on eval-v1, or the files come from different runs)",
            item_stats.file
        ))
    };
    let mut seen = vec![false; dataset.n_items()];
    let mut row0 = 0u64;
    for batch in &item_stats.batches {
        let ids = item_stats.scalar::<I>(batch, "item_id")?;
        let counts = item_stats.scalar::<i64>(batch, "interactions")?;
        let train_counts = item_stats.scalar::<i64>(batch, "train_interactions")?;
        let groups = item_stats.scalar::<String>(batch, "eval_group")?;
        for r in 0..batch.num_rows() {
            let row = row0 + r as u64;
            let id = ids[r].as_ref().ok_or_else(|| item_stats.null("item_id", row))?;
            let count = counts[r].ok_or_else(|| item_stats.null("interactions", row))?;
            let train_count = train_counts[r].ok_or_else(|| item_stats.null("train_interactions", row))?;
            let group = groups[r].as_deref();
            let Some(&i) = item_index.get(id) else {
                if count != 0 || group.is_some() {
                    return Err(disagree(format!(
                        "item {id} has {count} interactions and eval_group {group:?}, but occurs in no sequence"
                    )));
                }
                continue;
            };
            let i = i as usize;
            if std::mem::replace(&mut seen[i], true) {
                return Err(item_stats.mismatch("item_id", row, format!("item {id} has more than one row")));
            }
            if count != interactions[i] as i64 {
                return Err(disagree(format!(
                    "item {id} has {count} interactions, the sequences hold {}",
                    interactions[i]
                )));
            }
            let train_popularity = dataset.train_popularity[i];
            if train_count != i64::from(train_popularity) {
                return Err(disagree(format!(
                    "item {id} has train_interactions {train_count}, the evaluator counts {train_popularity}"
                )));
            }
            let want = dataset.groups[i].as_str();
            if group != Some(want) {
                return Err(disagree(format!(
                    "item {id} has eval_group {group:?}, the evaluator computes {want:?} \
                     (training popularity {train_popularity}, head = first {} of {} items)",
                    dataset.n_head,
                    dataset.n_items()
                )));
            }
        }
        row0 += batch.num_rows() as u64;
    }
    if let Some(i) = seen.iter().position(|&s| !s) {
        return Err(disagree(format!("item {} occurs in the sequences but has no row", dataset.item_ids.display(i))));
    }
    Ok(())
}
