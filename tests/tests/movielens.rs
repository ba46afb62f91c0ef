//! MovieLens-100k end to end: import, analyze, and check every output
//! against facts computed another way — plain Rust over `u.data`, and the
//! reference facts of eval-v1 (../shared/EVAL.md).

use std::collections::{BTreeMap, HashMap};

use tailforge_tests::*;

/// One analyze run shared by the checks below (import + analyze takes a few seconds).
fn analyzed() -> &'static TestDir {
    static DIR: std::sync::OnceLock<TestDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let t = TestDir::new();
        analyze_movielens(&t, &[]);
        t
    })
}

fn summary(t: &TestDir) -> serde_json::Value {
    let text = std::fs::read_to_string(t.path("out/summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn counts_match_the_dataset() {
    let t = analyzed();
    assert!(t.path("out/_SUCCESS").is_file(), "_SUCCESS is written last");
    let s = summary(t);
    assert_eq!(s["users"], 943);
    assert_eq!(s["catalog_items"], 1682);
    assert_eq!(s["events"], 100000);
    assert_eq!(s["events_read"], 100000);
    assert_eq!(s["items_with_events"], 1682);
    assert_eq!(s["cold_items"], 0);
    assert_eq!(s["items_missing_from_catalog"], 0);
    assert_eq!(s["rows"]["sequences"], 943);
    assert_eq!(s["rows"]["split"], 943);
    assert_eq!(s["rows"]["item_stats"], 1682);
    assert_eq!(s["rows"]["tail_items"], 1682 - 337);
    // eval-v1 reference: 100000 - 2 × 943 training interactions.
    assert_eq!(s["train_interactions"], 98114);
    assert_eq!(s["evaluated_users"], 943);
}

#[test]
fn per_item_counts_equal_an_independent_count() {
    let t = analyzed();
    let mut expected: HashMap<i64, (i64, std::collections::HashSet<i64>, i64, i64)> = HashMap::new();
    for (u, i, _, ts) in u_data() {
        let e = expected.entry(i).or_insert((0, Default::default(), i64::MAX, i64::MIN));
        e.0 += 1;
        e.1.insert(u);
        e.2 = e.2.min(ts);
        e.3 = e.3.max(ts);
    }
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let ids = i64s(&stats, "item_id");
    let counts = i64s(&stats, "interactions");
    let users = i64s(&stats, "distinct_users");
    let first = i64s(&stats, "first_ts");
    let last = i64s(&stats, "last_ts");
    assert_eq!(ids.len(), expected.len());
    for k in 0..ids.len() {
        let id = ids[k].unwrap();
        let (n, us, f, l) = &expected[&id];
        assert_eq!(counts[k], Some(*n), "item {id} count");
        assert_eq!(users[k], Some(us.len() as i64), "item {id} distinct users");
        assert_eq!((first[k], last[k]), (Some(*f), Some(*l)), "item {id} first/last ts");
    }
    // Ranks follow count descending, ties by id ascending.
    let ranks = i64s(&stats, "rank");
    let mut order: Vec<(i64, i64)> = expected.iter().map(|(id, e)| (-e.0, *id)).collect();
    order.sort();
    for k in 0..ids.len() {
        let pos = order.iter().position(|&(_, id)| Some(id) == ids[k]).unwrap();
        assert_eq!(ranks[k], Some(pos as i64 + 1), "rank of item {:?}", ids[k]);
    }
}

#[test]
fn top_337_items_hold_64_7_percent() {
    let t = analyzed();
    // Independently: sort per-item counts of u.data.
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, i, _, _) in u_data() {
        *counts.entry(i).or_default() += 1;
    }
    let mut v: Vec<i64> = counts.values().copied().collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    let head = (0.2f64 * 1682.0).ceil() as usize;
    assert_eq!(head, 337);
    let independent = v[..head].iter().sum::<i64>() as f64 / 100000.0;
    assert_eq!(format!("{independent:.3}"), "0.647");

    let s = summary(t);
    assert_eq!(s["head_items"], 337);
    assert_eq!(s["tail_items"], 1345);
    assert!((s["head_share"].as_f64().unwrap() - independent).abs() < 1e-12);
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let cum = f64s(&stats, "cum_share");
    let groups = strings(&stats, "group");
    assert!((cum[336].unwrap() - independent).abs() < 1e-12, "cum_share at rank 337");
    assert!(groups[..337].iter().all(|g| g.as_deref() == Some("head")));
    assert!(groups[337..].iter().all(|g| g.as_deref() == Some("tail")));
}

#[test]
fn sequences_are_ordered_by_ts_then_item() {
    let t = analyzed();
    let mut per_user: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    for (u, i, _, ts) in u_data() {
        per_user.entry(u).or_default().push((ts, i));
    }
    let seq = read_parquet(&t.path("out/sequences.parquet"));
    let users = i64s(&seq, "user_id");
    let items = i64_lists(&seq, "item_ids");
    let times = i64_lists(&seq, "ts");
    assert_eq!(users.len(), 943);
    for (k, u) in users.iter().enumerate() {
        let mut expected = per_user[&u.unwrap()].clone();
        expected.sort();
        let got: Vec<(i64, i64)> = times[k].iter().copied().zip(items[k].iter().copied()).collect();
        assert_eq!(got, expected, "user {u:?}");
    }
}

#[test]
fn split_follows_eval_v1() {
    let t = analyzed();
    let split = read_parquet(&t.path("out/split.parquet"));
    let users = i64s(&split, "user_id");
    let valid = i64s(&split, "valid_item");
    let test = i64s(&split, "test_item");
    let train_len = i64s(&split, "train_length");
    let row = |u: i64| users.iter().position(|x| *x == Some(u)).unwrap();
    // Hand-checked with `awk '$1==U' u.data | sort -k4,4n -k2,2n | tail -2`:
    // same-second ties are broken by item id ascending.
    for (user, v, te) in [(1, 74, 102), (2, 314, 281), (943, 450, 234)] {
        let r = row(user);
        assert_eq!((valid[r], test[r]), (Some(v), Some(te)), "user {user}");
    }
    assert_eq!(train_len[row(1)], Some(272 - 2));
    // eval-v1 reference: test targets head 437 / tail 506, validation head 517 / tail 426,
    // with head = top ceil(20%) by training popularity.
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let group: HashMap<i64, String> = i64s(&stats, "item_id")
        .into_iter()
        .zip(strings(&stats, "eval_group"))
        .map(|(i, g)| (i.unwrap(), g.unwrap()))
        .collect();
    let count = |targets: &[Option<i64>], g: &str| targets.iter().filter(|t| group[&t.unwrap()] == g).count();
    assert_eq!((count(&test, "head"), count(&test, "tail")), (437, 506));
    assert_eq!((count(&valid, "head"), count(&valid, "tail")), (517, 426));
    assert_eq!(group.values().filter(|g| *g == "head").count(), 337);
    let train = i64s(&stats, "train_interactions");
    let eval_group = strings(&stats, "eval_group");
    let zero_train_tail =
        train.iter().zip(&eval_group).filter(|(n, g)| **n == Some(0) && g.as_deref() == Some("tail")).count();
    assert_eq!(zero_train_tail, 5, "eval-v1: 5 tail items have no training interaction");
}

#[test]
fn latin1_titles_are_decoded() {
    let t = analyzed();
    let items = read_parquet(&t.path("ml/items/part-00000.parquet"));
    let titles: HashMap<i64, String> = i64s(&items, "item_id")
        .into_iter()
        .zip(strings(&items, "title"))
        .map(|(i, s)| (i.unwrap(), s.unwrap()))
        .collect();
    assert_eq!(titles[&543], "Misérables, Les (1995)");
    assert_eq!(titles[&1233], "Nénette et Boni (1996)");
    assert_eq!(titles[&1], "Toy Story (1995)");
    let genres = strings(&items, "genres");
    assert_eq!(genres[0].as_deref(), Some("Animation|Children's|Comedy"), "Toy Story's genre flags");
    // The accented titles reach the generate stage's input intact.
    let tail = read_parquet(&t.path("out/tail_items.parquet"));
    let tail_titles = strings(&tail, "title");
    assert!(tail_titles.iter().any(|s| s.as_deref() == Some("Nénette et Boni (1996)")));
    assert!(tail.column_by_name("genres").is_some(), "catalog attributes are kept");
}

#[test]
fn min_count_rule_finds_530_items_below_10_ratings() {
    let t = TestDir::new();
    analyze_movielens(&t, &["analyze.long_tail.rule=min_count", "analyze.long_tail.min_count=10"]);
    let s = summary(&t);
    assert_eq!(s["tail_items"], 530, "eval-v1 reference: 530 items have fewer than 10 ratings");
    assert_eq!(s["long_tail_rule"], "min_count");
}

#[test]
fn pareto_and_percentile_rules_match_a_plain_computation() {
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for (_, i, _, _) in u_data() {
        *counts.entry(i).or_default() += 1;
    }
    let mut ranked: Vec<(i64, i64)> = counts.iter().map(|(i, n)| (-n, *i)).collect();
    ranked.sort();
    // pareto 0.5: the fewest top items whose interactions reach half of all.
    let mut acc = 0;
    let mut head = 0;
    for (neg, _) in &ranked {
        if acc as f64 >= 0.5 * 100000.0 {
            break;
        }
        acc += -neg;
        head += 1;
    }
    let t = TestDir::new();
    analyze_movielens(&t, &["analyze.long_tail.rule=pareto", "analyze.long_tail.pareto_share=0.5"]);
    assert_eq!(summary(&t)["head_items"], head);

    // percentile 0.9: tail = items whose count is at or below the 90% quantile (cume_dist ≤ 0.9).
    let values: Vec<i64> = counts.values().copied().collect();
    let n = values.len() as f64;
    let tail = values.iter().filter(|&&c| values.iter().filter(|&&o| o <= c).count() as f64 / n <= 0.9).count();
    let t = TestDir::new();
    analyze_movielens(&t, &["analyze.long_tail.rule=percentile", "analyze.long_tail.percentile=0.9"]);
    assert_eq!(summary(&t)["tail_items"], tail as u64);
}

#[test]
fn evaluate_reproduces_the_eval_v1_mostpop_check() {
    let t = analyzed();
    let out = t.run_ok(&["evaluate", "--input", "out", "--model", "mostpop", "--out", "eval"]);
    assert!(stdout(&out).contains("| overall |"), "prints the Markdown table:\n{}", stdout(&out));
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("eval/metrics.json")).unwrap()).unwrap();
    let at =
        |phase: &str, group: &str, metric: &str| format!("{:.6}", m[phase]["full"][group][metric].as_f64().unwrap());
    // EVAL.md "Check your evaluator".
    assert_eq!(at("test", "overall", "hr@10"), "0.049841");
    assert_eq!(at("test", "overall", "ndcg@10"), "0.025440");
    assert_eq!(at("test", "head", "hr@10"), "0.107551");
    assert_eq!(at("test", "head", "ndcg@10"), "0.054896");
    assert_eq!(at("test", "tail", "ndcg@10"), "0.000000");
    assert_eq!(at("valid", "overall", "hr@10"), "0.063627");
    assert_eq!(at("valid", "overall", "ndcg@10"), "0.032743");
    assert_eq!(m["test"]["full"]["head"]["n"], 437);
    assert_eq!(m["test"]["full"]["tail"]["n"], 506);
    // EVAL.md: 26 test cases are cold (target with at most 5 training interactions); MostPop scores 0 on them.
    assert_eq!(m["test"]["full"]["cold"]["n"], 26);
    assert_eq!(at("test", "cold", "ndcg@10"), "0.000000");
}
