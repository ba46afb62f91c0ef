//! Property test of the SQL in sql/ (docs/reliability.md, "Property tests"):
//! interactions → sequences → split → item_stats → neighbors, run by
//! DataFusion on random small event logs as in tests/slt/, against a
//! plain-Rust model of each output written from the files' headers and
//! ../shared/EVAL.md, not from the SQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use proptest::prelude::*;
use proptest::test_runner::Config;
use tailforge_analyze::{Param, run_sql, sql, udf};

/// Case count (also in docs/reliability.md): each case plans and runs five
/// queries, about 20 ms on 2 cores.
const SQL_CASES: u32 = 64;

/// A random event log: up to 8 users, 16 item ids, 40 events, timestamps
/// 0..6 (many same-second ties, exact duplicates), a catalog that misses
/// some event items and has items without events.
#[derive(Debug, Clone)]
struct Log {
    events: Vec<(i64, i64, i64)>,
    catalog: Vec<i64>,
    dedup: &'static str,
    share: f64,
    k: i64,
}

fn log() -> impl Strategy<Value = Log> {
    (
        proptest::collection::vec((0i64..8, 0i64..16, 0i64..6), 0..40),
        proptest::collection::btree_set(0i64..20, 0..12),
        prop::sample::select(vec!["keep_all", "drop_exact", "first_per_pair"]),
        prop::sample::select(vec![0.2, 0.1, 0.35, 0.5, 0.9]),
        0i64..4,
    )
        .prop_map(|(events, catalog, dedup, share, k)| Log {
            events,
            catalog: catalog.into_iter().collect(),
            dedup,
            share,
            k,
        })
}

fn title(item: i64) -> String {
    format!("Item {item}")
}

fn table(columns: Vec<(&str, ArrayRef)>) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
}

/// Runs the five files in order, each registered as the next one's input,
/// and returns each output as one batch.
async fn run_pipeline(l: &Log) -> BTreeMap<&'static str, RecordBatch> {
    let ctx = SessionContext::new();
    ctx.register_udf(udf::ListField::udf());
    let col =
        |f: fn(&(i64, i64, i64)) -> i64| Arc::new(Int64Array::from_iter_values(l.events.iter().map(f))) as ArrayRef;
    let events = table(vec![("user_id", col(|e| e.0)), ("item_id", col(|e| e.1)), ("ts", col(|e| e.2))]);
    ctx.register_table("events", events).unwrap();
    let catalog = table(vec![
        ("item_id", Arc::new(Int64Array::from(l.catalog.clone())) as ArrayRef),
        ("title", Arc::new(StringArray::from_iter_values(l.catalog.iter().map(|&i| title(i)))) as ArrayRef),
    ]);
    ctx.register_table("catalog", catalog).unwrap();
    let steps: [(&'static str, &str, Vec<Param>); 5] = [
        ("interactions", sql::INTERACTIONS, vec![("dedup", ScalarValue::from(l.dedup))]),
        ("sequences", sql::SEQUENCES, vec![]),
        ("split", sql::SPLIT, vec![]),
        (
            "item_stats",
            sql::ITEM_STATS,
            vec![
                ("rule", ScalarValue::from("top_share")),
                ("share", ScalarValue::from(l.share)),
                ("pareto_share", ScalarValue::from(0.8)),
                ("min_count", ScalarValue::from(2i64)),
                ("percentile", ScalarValue::from(0.5)),
            ],
        ),
        ("neighbors", sql::NEIGHBORS, vec![("k", ScalarValue::from(l.k))]),
    ];
    let mut out = BTreeMap::new();
    for (name, text, params) in steps {
        let df = run_sql(&ctx, name, text, &params).await.unwrap();
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.unwrap();
        out.insert(name, concat_batches(&schema, &batches).unwrap());
        ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches]).unwrap())).unwrap();
    }
    out
}

fn column(b: &RecordBatch, name: &str, to: &DataType) -> ArrayRef {
    cast(b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")), to).unwrap()
}

fn ints(b: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    column(b, name, &DataType::Int64).as_primitive::<Int64Type>().iter().collect()
}

fn texts(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    column(b, name, &DataType::Utf8).as_string::<i32>().iter().map(|s| s.map(str::to_string)).collect()
}

fn bools(b: &RecordBatch, name: &str) -> Vec<Option<bool>> {
    let c = column(b, name, &DataType::Boolean);
    let c: &BooleanArray = c.as_boolean();
    c.iter().collect()
}

fn int_lists(b: &RecordBatch, name: &str) -> Vec<Vec<i64>> {
    let list = b.column_by_name(name).unwrap().as_list::<i32>();
    (0..list.len())
        .map(|r| {
            let v = cast(&list.value(r), &DataType::Int64).unwrap();
            v.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// (user, length, train length, valid item, valid ts, test item, test ts, evaluated).
type SplitRow = (i64, i64, i64, Option<i64>, Option<i64>, Option<i64>, Option<i64>, bool);
/// (item, interactions, distinct users, train interactions, rank, group, eval group, in catalog).
type ItemStatsRow = (i64, i64, i64, i64, i64, String, Option<String>, bool);

/// The model: each output as plain rows.
#[derive(Debug, PartialEq)]
struct Outputs {
    /// (user, item ids, ts, length), by user.
    sequences: Vec<(i64, Vec<i64>, Vec<i64>, i64)>,
    split: Vec<SplitRow>,
    /// By rank.
    item_stats: Vec<ItemStatsRow>,
    /// (item, neighbour, neighbour title, users, rank), by item and rank.
    neighbors: Vec<(i64, i64, Option<String>, i64, i64)>,
}

fn from_sql(o: &BTreeMap<&str, RecordBatch>) -> Outputs {
    let s = &o["sequences"];
    let sequences = itertools(
        ints(s, "user_id").into_iter().map(Option::unwrap),
        int_lists(s, "item_ids"),
        int_lists(s, "ts"),
        ints(s, "length").into_iter().map(Option::unwrap),
    );
    let p = &o["split"];
    let split = (0..p.num_rows())
        .map(|r| {
            (
                ints(p, "user_id")[r].unwrap(),
                ints(p, "length")[r].unwrap(),
                ints(p, "train_length")[r].unwrap(),
                ints(p, "valid_item")[r],
                ints(p, "valid_ts")[r],
                ints(p, "test_item")[r],
                ints(p, "test_ts")[r],
                bools(p, "evaluated")[r].unwrap(),
            )
        })
        .collect();
    let i = &o["item_stats"];
    let item_stats = (0..i.num_rows())
        .map(|r| {
            (
                ints(i, "item_id")[r].unwrap(),
                ints(i, "interactions")[r].unwrap(),
                ints(i, "distinct_users")[r].unwrap(),
                ints(i, "train_interactions")[r].unwrap(),
                ints(i, "rank")[r].unwrap(),
                texts(i, "group")[r].clone().unwrap(),
                texts(i, "eval_group")[r].clone(),
                bools(i, "in_catalog")[r].unwrap(),
            )
        })
        .collect();
    let n = &o["neighbors"];
    let neighbors = (0..n.num_rows())
        .map(|r| {
            (
                ints(n, "item_id")[r].unwrap(),
                ints(n, "neighbor_id")[r].unwrap(),
                texts(n, "neighbor_title")[r].clone(),
                ints(n, "users")[r].unwrap(),
                ints(n, "rank")[r].unwrap(),
            )
        })
        .collect();
    Outputs { sequences, split, item_stats, neighbors }
}

fn itertools(
    a: impl Iterator<Item = i64>,
    b: Vec<Vec<i64>>,
    c: Vec<Vec<i64>>,
    d: impl Iterator<Item = i64>,
) -> Vec<(i64, Vec<i64>, Vec<i64>, i64)> {
    a.zip(b).zip(c).zip(d).map(|(((a, b), c), d)| (a, b, c, d)).collect()
}

/// The model, from the SQL files' headers and EVAL.md.
fn model(l: &Log) -> Outputs {
    // interactions.sql: the dedup policies.
    let interactions: Vec<(i64, i64, i64)> = match l.dedup {
        "keep_all" => l.events.clone(),
        "drop_exact" => l.events.iter().copied().collect::<BTreeSet<_>>().into_iter().collect(),
        _ => {
            let mut first: BTreeMap<(i64, i64), i64> = BTreeMap::new();
            for &(u, i, t) in &l.events {
                let e = first.entry((u, i)).or_insert(t);
                *e = (*e).min(t);
            }
            first.into_iter().map(|((u, i), t)| (u, i, t)).collect()
        }
    };
    // EVAL.md §1: per user, by timestamp, ties by item id.
    let mut by_user: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for &(u, i, t) in &interactions {
        by_user.entry(u).or_default().push((t, i));
    }
    for v in by_user.values_mut() {
        v.sort();
    }
    let sequences: Vec<_> = by_user
        .iter()
        .map(|(&u, v)| (u, v.iter().map(|e| e.1).collect(), v.iter().map(|e| e.0).collect(), v.len() as i64))
        .collect();
    // EVAL.md §2: leave-one-out from 3 interactions.
    let split: Vec<_> = by_user
        .iter()
        .map(|(&u, v)| {
            let n = v.len();
            if n >= 3 {
                let (valid, test) = (v[n - 2], v[n - 1]);
                (u, n as i64, n as i64 - 2, Some(valid.1), Some(valid.0), Some(test.1), Some(test.0), true)
            } else {
                (u, n as i64, n as i64, None, None, None, None, false)
            }
        })
        .collect();
    let training: BTreeMap<i64, Vec<i64>> = by_user
        .iter()
        .map(|(&u, v)| {
            let keep = if v.len() >= 3 { v.len() - 2 } else { v.len() };
            (u, v[..keep].iter().map(|e| e.1).collect())
        })
        .collect();
    // item_stats.sql: every item of the catalog or the interactions.
    let items: BTreeSet<i64> = interactions.iter().map(|e| e.1).chain(l.catalog.iter().copied()).collect();
    let count = |i: i64| interactions.iter().filter(|e| e.1 == i).count() as i64;
    let users = |i: i64| interactions.iter().filter(|e| e.1 == i).map(|e| e.0).collect::<BTreeSet<_>>().len() as i64;
    let train = |i: i64| training.values().flatten().filter(|&&x| x == i).count() as i64;
    let mut ranked: Vec<i64> = items.iter().copied().collect();
    ranked.sort_by_key(|&i| (-count(i), i));
    let n_head = (l.share * ranked.len() as f64).ceil() as usize;
    let tail: BTreeSet<i64> = ranked[n_head.min(ranked.len())..].iter().copied().collect();
    // EVAL.md §3: the catalog is the items in the interactions; head =
    // first ceil(0.2 N) by training popularity, ties by id.
    let mut eval_order: Vec<i64> = items.iter().copied().filter(|&i| count(i) > 0).collect();
    eval_order.sort_by_key(|&i| (-train(i), i));
    let eval_head: BTreeSet<i64> = eval_order[..eval_order.len().div_ceil(5)].iter().copied().collect();
    let item_stats = ranked
        .iter()
        .enumerate()
        .map(|(r, &i)| {
            let group = if tail.contains(&i) { "tail" } else { "head" };
            let eval_group = (count(i) > 0).then(|| if eval_head.contains(&i) { "head" } else { "tail" }.to_string());
            (i, count(i), users(i), train(i), r as i64 + 1, group.to_string(), eval_group, l.catalog.contains(&i))
        })
        .collect();
    // neighbors.sql: for each tail item, the items in the same users'
    // training parts, counted once per user; users descending, id ascending; top k.
    let sets: Vec<BTreeSet<i64>> = training.values().map(|v| v.iter().copied().collect()).collect();
    let mut pairs: BTreeMap<i64, BTreeMap<i64, i64>> = BTreeMap::new();
    for set in &sets {
        for &a in set.iter().filter(|a| tail.contains(a)) {
            for &b in set.iter().filter(|&&b| b != a) {
                *pairs.entry(a).or_default().entry(b).or_default() += 1;
            }
        }
    }
    let mut neighbors = Vec::new();
    for (a, counts) in pairs {
        let mut v: Vec<(i64, i64)> = counts.into_iter().collect();
        v.sort_by_key(|&(b, n)| (-n, b));
        for (r, (b, n)) in v.into_iter().take(l.k as usize).enumerate() {
            neighbors.push((a, b, l.catalog.contains(&b).then(|| title(b)), n, r as i64 + 1));
        }
    }
    Outputs { sequences, split, item_stats, neighbors }
}

proptest! {
    #![proptest_config(Config { cases: SQL_CASES, failure_persistence: None, ..Config::default() })]

    /// On random small event logs (64 cases, random dedup policy, head share
    /// and k): sequences ordered by ts then item id, the eval-v1 split,
    /// popularity counts, ranks and groups (eval_group by training
    /// popularity only, head = ceil(N / 5)), and co-interaction neighbours
    /// from training sequences only equal the plain-Rust model, row for row.
    #[test]
    fn sql_outputs_equal_the_model(l in log()) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = from_sql(&rt.block_on(run_pipeline(&l)));
        let want = model(&l);
        prop_assert_eq!(&got.sequences, &want.sequences, "sequences");
        prop_assert_eq!(&got.split, &want.split, "split");
        prop_assert_eq!(&got.item_stats, &want.item_stats, "item_stats");
        prop_assert_eq!(&got.neighbors, &want.neighbors, "neighbors");
    }
}
