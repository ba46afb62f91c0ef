//! Each file in sql/ on a small fixture with its expected output, in the
//! spirit of DataFusion's sqllogictest: the query, the input, the table it
//! must return. The fixture has the cases that matter — same-second ties, a
//! user with fewer than 3 interactions, a catalog item without events, an
//! event item missing from the catalog, exact duplicate events.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use tailforge_analyze::{Param, run_sql, sql, udf};

fn table(columns: Vec<(&str, ArrayRef)>) -> Arc<MemTable> {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())
}

fn ints(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

/// Users 1 and 2 rate items 10..40; user 3 has 2 events (not evaluated);
/// item 50 is cold; item 99 is not in the catalog; user 1 has a duplicate
/// (1, 20, 100) and a same-second tie at ts 100 (items 20 and 30).
async fn fixture() -> SessionContext {
    let ctx = SessionContext::new();
    ctx.register_udf(udf::ListField::udf());
    let events = table(vec![
        ("user_id", ints(&[1, 1, 1, 1, 1, 2, 2, 2, 3, 3])),
        ("item_id", ints(&[30, 20, 10, 20, 40, 10, 20, 99, 10, 30])),
        ("ts", ints(&[100, 100, 50, 100, 200, 10, 20, 30, 5, 6])),
        ("event_type", Arc::new(StringArray::from(vec![Some("view"); 10])) as ArrayRef),
    ]);
    ctx.register_table("events", events).unwrap();
    let catalog = table(vec![
        ("item_id", ints(&[10, 20, 30, 40, 50])),
        ("title", Arc::new(StringArray::from(vec!["Ten", "Twenty", "Thirty", "Forty", "Fifty"])) as ArrayRef),
        ("genre", Arc::new(StringArray::from(vec!["a", "b", "a", "c", "b"])) as ArrayRef),
    ]);
    ctx.register_table("catalog", catalog).unwrap();
    ctx
}

async fn run(ctx: &SessionContext, file: &str, text: &str, params: &[(&str, ScalarValue)]) -> String {
    let df = run_sql(ctx, file, text, params).await.unwrap();
    let batches = df.collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// Runs interactions → sequences → split → item_stats → neighbors (k = 5)
/// with `dedup` and the long-tail parameters, materializing each as the next
/// query's input.
async fn pipeline(dedup: &str, rule: &str, share: f64) -> (SessionContext, Vec<String>) {
    let ctx = fixture().await;
    let mut out = Vec::new();
    let steps: [(&str, &str, Vec<Param>); 5] = [
        ("interactions", sql::INTERACTIONS, vec![("dedup", ScalarValue::from(dedup))]),
        ("sequences", sql::SEQUENCES, vec![]),
        ("split", sql::SPLIT, vec![]),
        (
            "item_stats",
            sql::ITEM_STATS,
            vec![
                ("rule", ScalarValue::from(rule)),
                ("share", ScalarValue::from(share)),
                ("pareto_share", ScalarValue::from(0.5)),
                ("min_count", ScalarValue::from(2i64)),
                ("percentile", ScalarValue::from(0.5)),
            ],
        ),
        ("neighbors", sql::NEIGHBORS, vec![("k", ScalarValue::from(5i64))]),
    ];
    for (name, text, params) in steps {
        let df = run_sql(&ctx, name, text, &params).await.unwrap();
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.unwrap();
        out.push(pretty_format_batches(&batches).unwrap().to_string());
        ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![batches]).unwrap())).unwrap();
    }
    (ctx, out)
}

fn lines(s: &str) -> String {
    s.trim().lines().map(str::trim_end).collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn sequences_break_ts_ties_by_item_id_and_split_holds_out_the_last_two() {
    let (_, out) = pipeline("keep_all", "top_share", 0.2).await;
    assert_eq!(
        lines(&out[1]),
        lines(
            "
+---------+----------------------+--------------------------+--------+
| user_id | item_ids             | ts                       | length |
+---------+----------------------+--------------------------+--------+
| 1       | [10, 20, 20, 30, 40] | [50, 100, 100, 100, 200] | 5      |
| 2       | [10, 20, 99]         | [10, 20, 30]             | 3      |
| 3       | [10, 30]             | [5, 6]                   | 2      |
+---------+----------------------+--------------------------+--------+"
        )
    );
    assert_eq!(
        lines(&out[2]),
        lines(
            "
+---------+--------+--------------+------------+----------+-----------+---------+-----------+
| user_id | length | train_length | valid_item | valid_ts | test_item | test_ts | evaluated |
+---------+--------+--------------+------------+----------+-----------+---------+-----------+
| 1       | 5      | 3            | 30         | 100      | 40        | 200     | true      |
| 2       | 3      | 1            | 20         | 20       | 99        | 30      | true      |
| 3       | 2      | 2            |            |          |           |         | false     |
+---------+--------+--------------+------------+----------+-----------+---------+-----------+"
        )
    );
}

#[tokio::test]
async fn item_stats_ranks_counts_and_groups() {
    let (_, out) = pipeline("keep_all", "top_share", 0.2).await;
    // 6 items (5 catalog + 99); head = ceil(0.2 × 6) = 2 → items 10 and 20.
    // eval-v1 groups rank the 5 items with events by training popularity:
    // item 10: 3 train, 20: 3 - 1 (valid of user 2) = 2, 30: 2 - 1 = 1,
    // 40: 1 - 1 (test of user 1) = 0, 99: 1 - 1 = 0 → head = ceil(0.2 × 5) = 1 item.
    assert_eq!(
        lines(&out[3]),
        lines(
            "
+---------+--------------+----------------+----------+---------+--------------------+------+-----------+-------+------------+------------+
| item_id | interactions | distinct_users | first_ts | last_ts | train_interactions | rank | cum_share | group | eval_group | in_catalog |
+---------+--------------+----------------+----------+---------+--------------------+------+-----------+-------+------------+------------+
| 10      | 3            | 3              | 5        | 50      | 3                  | 1    | 0.3       | head  | head       | true       |
| 20      | 3            | 2              | 20       | 100     | 2                  | 2    | 0.6       | head  | tail       | true       |
| 30      | 2            | 2              | 6        | 100     | 1                  | 3    | 0.8       | tail  | tail       | true       |
| 40      | 1            | 1              | 200      | 200     | 0                  | 4    | 0.9       | tail  | tail       | true       |
| 99      | 1            | 1              | 30       | 30      | 0                  | 5    | 1.0       | tail  | tail       | false      |
| 50      | 0            | 0              |          |         | 0                  | 6    | 1.0       | tail  |            | true       |
+---------+--------------+----------------+----------+---------+--------------------+------+-----------+-------+------------+------------+"
        )
    );
}

#[tokio::test]
async fn dedup_policies() {
    let count = |s: &str| s.lines().filter(|l| l.starts_with("| ")).count() - 1;
    let (_, keep) = pipeline("keep_all", "top_share", 0.2).await;
    let (_, exact) = pipeline("drop_exact", "top_share", 0.2).await;
    let (_, first) = pipeline("first_per_pair", "top_share", 0.2).await;
    assert_eq!(count(&keep[0]), 10);
    assert_eq!(count(&exact[0]), 9, "the repeated (1, 20, 100) counts once");
    assert_eq!(count(&first[0]), 9, "user 1's item 20 counts once, at its first ts");
    assert!(exact[1].contains("| 1       | [10, 20, 30, 40]"), "{}", exact[1]);
}

#[tokio::test]
async fn long_tail_rules() {
    let heads = |s: &str| s.lines().filter(|l| l.contains("| head  |")).count();
    // pareto 0.5 of 10 interactions: items 10 (3) and 20 (3 → 6 ≥ 5): the second item crosses.
    let (_, p) = pipeline("keep_all", "pareto", 0.2).await;
    assert_eq!(heads(&p[3]), 2);
    // min_count 2: items with ≥ 2 interactions are head: 10, 20, 30.
    let (_, m) = pipeline("keep_all", "min_count", 0.2).await;
    assert_eq!(heads(&m[3]), 3);
    // percentile 0.5 over counts [3, 3, 2, 1, 1, 0]: cume_dist ≤ 0.5 for 0, 1, 1 → 3 tail.
    let (_, q) = pipeline("keep_all", "percentile", 0.2).await;
    assert_eq!(heads(&q[3]), 3);
}

#[tokio::test]
async fn neighbours_come_from_training_sequences_only() {
    let (ctx, out) = pipeline("keep_all", "top_share", 0.2).await;
    // Tail items: 30, 40, 50, 99. In training only user 3 (not evaluated: all
    // of [10, 30] trains) has a tail item: 30, next to 10. Item 40 is user 1's
    // test target and 99 user 2's: held-out targets never make neighbours.
    assert_eq!(
        lines(&out[4]),
        lines(
            "
+---------+-------------+----------------+-------+------+
| item_id | neighbor_id | neighbor_title | users | rank |
+---------+-------------+----------------+-------+------+
| 30      | 10          | Ten            | 1     | 1    |
+---------+-------------+----------------+-------+------+"
        )
    );
    // k = 0 turns them off.
    let none = run_sql(&ctx, "neighbors", sql::NEIGHBORS, &[("k", ScalarValue::from(0i64))]).await.unwrap();
    assert_eq!(none.count().await.unwrap(), 0);
}

#[tokio::test]
async fn tail_items_join_catalog_text_and_summary_counts() {
    let (ctx, _) = pipeline("keep_all", "top_share", 0.2).await;
    let tail = run(&ctx, "tail_items", sql::TAIL_ITEMS, &[]).await;
    assert_eq!(
        lines(&tail),
        lines(
            "
+---------+--------+--------------+------+-------+-----------------+
| item_id | title  | interactions | rank | genre | neighbor_titles |
+---------+--------+--------------+------+-------+-----------------+
| 30      | Thirty | 2            | 3    | a     | [Ten]           |
| 40      | Forty  | 1            | 4    | c     |                 |
| 50      | Fifty  | 0            | 6    | b     |                 |
+---------+--------+--------------+------+-------+-----------------+"
        )
    );
    let summary = rows(&run(&ctx, "summary", sql::SUMMARY, &[]).await);
    let s = &summary[0];
    for (column, value) in [
        ("users", "3"),
        ("events", "10"),
        ("train_interactions", "6"),
        ("evaluated_users", "2"),
        ("catalog_items", "5"),
        ("items_with_events", "5"),
        ("items_missing_from_catalog", "1"),
        ("cold_items", "1"),
        ("head_items", "2"),
        ("tail_items", "4"),
        ("head_share", "0.6"),
    ] {
        assert_eq!(s[column], value, "{column}");
    }
    // Gini over counts sorted ascending [0, 1, 1, 2, 3, 3], n = 6, total 10:
    // sum((2i - 7) x_i) = -5·0 - 3·1 - 1·1 + 1·2 + 3·3 + 5·3 = 22 → 22 / 60.
    let gini: f64 = s["gini"].parse().unwrap();
    assert!((gini - 22.0 / 60.0).abs() < 1e-12, "{gini}");
}

/// The rows of a pretty-printed table as column → cell maps.
fn rows(pretty: &str) -> Vec<std::collections::HashMap<String, String>> {
    let split = |l: &str| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect::<Vec<_>>();
    let mut data = pretty.lines().filter(|l| l.starts_with('|'));
    let header = split(data.next().unwrap());
    data.map(|l| header.iter().cloned().zip(split(l)).collect()).collect()
}
