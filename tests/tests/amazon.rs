//! Amazon Scientific (../shared/data/amazon-scientific) end to end: the plain
//! `events` + `items` Parquet pair through the normal input path, checked
//! against facts computed here from the raw events and against EVAL.md's
//! exact MostPop figures, including the `cold` group.

use std::collections::HashMap;

use tailforge_tests::*;

fn amazon() -> std::path::PathBuf {
    let p = shared_dir().join("data").join("amazon-scientific");
    assert!(
        p.join("events.parquet").is_file(),
        "Amazon Scientific not found at {} (set TAILFORGE_SHARED)",
        p.display()
    );
    p
}

/// One analyze run shared by the checks below.
fn analyzed() -> &'static TestDir {
    static DIR: std::sync::OnceLock<TestDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let t = TestDir::new();
        let data = amazon();
        let events = data.join("events.parquet");
        let items = data.join("items.parquet");
        t.run_ok(&[
            "analyze",
            "--events",
            events.to_str().unwrap(),
            "--items",
            items.to_str().unwrap(),
            "--out",
            "out",
        ]);
        t
    })
}

/// The raw events in eval-v1 order per user (ts, then item id), read with arrow only.
fn sequences() -> HashMap<i64, Vec<i64>> {
    let b = read_parquet(&amazon().join("events.parquet"));
    let (users, items, ts) = (i64s(&b, "user_id"), i64s(&b, "item_id"), i64s(&b, "ts"));
    let mut by_user: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for ((u, i), t) in users.into_iter().zip(items).zip(ts) {
        by_user.entry(u.unwrap()).or_default().push((t.unwrap(), i.unwrap()));
    }
    by_user
        .into_iter()
        .map(|(u, mut v)| {
            v.sort_unstable();
            (u, v.into_iter().map(|(_, i)| i).collect())
        })
        .collect()
}

#[test]
fn the_pipeline_file_reads_the_shared_data_in_place() {
    let t = TestDir::new();
    let pipeline = repo_root().join("pipelines/amazon-scientific.toml");
    let out = t.run_ok(&["analyze", "--pipeline", pipeline.to_str().unwrap(), "--print-config"]);
    let config = stdout(&out);
    assert!(config.contains("../shared/data/amazon-scientific/events.parquet"), "{config}");
    assert!(config.contains("variant = \"dual\""), "{config}");
}

#[test]
fn counts_match_eval_v1_facts_and_an_independent_count() {
    let t = analyzed();
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("out/summary.json")).unwrap()).unwrap();
    // EVAL.md: 8317 users (all evaluated), 4344 items, 58492 events, 41858 training interactions.
    assert_eq!(s["users"], 8317);
    assert_eq!(s["events"], 58492);
    assert_eq!(s["catalog_items"], 4344);
    assert_eq!(s["evaluated_users"], 8317);
    assert_eq!(s["train_interactions"], 41858);

    // Training popularity from the raw events: everything but each user's last two.
    let seqs = sequences();
    let mut pop: HashMap<i64, u64> = HashMap::new();
    for seq in seqs.values() {
        for &i in &seq[..seq.len().saturating_sub(2)] {
            *pop.entry(i).or_default() += 1;
        }
    }
    assert_eq!(pop.values().sum::<u64>(), 41858);
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let ids = i64s(&stats, "item_id");
    let train = i64s(&stats, "train_interactions");
    for (id, n) in ids.iter().zip(&train) {
        assert_eq!(n.unwrap() as u64, pop.get(&id.unwrap()).copied().unwrap_or(0), "item {id:?}");
    }
    let groups = strings(&stats, "eval_group");
    assert_eq!(groups.iter().filter(|g| g.as_deref() == Some("head")).count(), 869);
    assert_eq!(groups.iter().filter(|g| g.as_deref() == Some("tail")).count(), 3475);
    assert_eq!(
        train.iter().filter(|n| **n == Some(0)).count(),
        17,
        "EVAL.md: 17 tail items without training interactions"
    );

    // cold test/validation targets: at most 5 training interactions.
    let cold = |phase_from_end: usize| {
        seqs.values().filter(|s| pop.get(&s[s.len() - phase_from_end]).copied().unwrap_or(0) <= 5).count()
    };
    assert_eq!((cold(1), cold(2)), (2913, 2481));
}

#[test]
fn evaluate_reproduces_the_eval_v1_mostpop_check_with_the_cold_group() {
    let t = analyzed();
    t.run_ok(&["evaluate", "--input", "out", "--model", "mostpop", "--out", "eval"]);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("eval/metrics.json")).unwrap()).unwrap();
    let at =
        |phase: &str, group: &str, metric: &str| format!("{:.6}", m[phase]["full"][group][metric].as_f64().unwrap());
    // EVAL.md, "Amazon Scientific … Check your evaluator".
    assert_eq!(at("test", "overall", "hr@10"), "0.024528");
    assert_eq!(at("test", "overall", "ndcg@10"), "0.016705");
    assert_eq!(at("test", "head", "hr@10"), "0.062963");
    assert_eq!(at("test", "head", "ndcg@10"), "0.042881");
    for group in ["tail", "cold"] {
        assert_eq!(at("test", group, "hr@10"), "0.000000");
        assert_eq!(at("test", group, "ndcg@10"), "0.000000");
    }
    assert_eq!(at("valid", "overall", "hr@10"), "0.033906");
    assert_eq!(at("valid", "overall", "ndcg@10"), "0.018682");
    let n = |phase: &str, group: &str| m[phase]["full"][group]["n"].as_u64().unwrap();
    assert_eq!((n("test", "head"), n("test", "tail"), n("test", "cold")), (3240, 5077, 2913));
    assert_eq!((n("valid", "head"), n("valid", "tail"), n("valid", "cold")), (3749, 4568, 2481));
    let md = std::fs::read_to_string(t.path("eval/metrics.md")).unwrap();
    assert!(md.contains("| cold | 2913 |"), "{md}");
}

/// A slice of the events (users with id below `users`), with the whole catalog:
/// encoding all 4,344 long texts takes minutes on one core, a slice seconds.
fn slice(t: &TestDir, users: i64) {
    let b = read_parquet(&amazon().join("events.parquet"));
    let keep: arrow::array::BooleanArray = i64s(&b, "user_id").iter().map(|u| Some(u.unwrap() < users)).collect();
    let sliced = arrow::compute::filter_record_batch(&b, &keep).unwrap();
    write_parquet(&t.path("slice/events.parquet"), &sliced);
    let items = amazon().join("items.parquet");
    t.run_ok(&["analyze", "--events", "slice/events.parquet", "--items", items.to_str().unwrap(), "--out", "out"]);
}

#[test]
fn dual_variant_with_a_tuned_scoring_rule_on_a_slice() {
    let t = TestDir::new();
    slice(&t, 1500);
    let encoder = repo_root().join("models/all-MiniLM-L6-v2").display().to_string();
    let sets = [
        "train.maxlen=50".to_string(),
        "train.threads=2".into(),
        "train.eval_every=2".into(),
        "train.max_text_tokens=48".into(),
        "train.tune_scoring=true".into(),
        format!("train.encoder={encoder}"),
    ];
    let mut args = vec!["train", "--input", "out", "--variant", "dual", "--out", "dual", "--epochs", "6"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    t.run_ok(&args);
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("dual/metrics.json")).unwrap()).unwrap();
    assert_eq!(m["variant"], "dual");

    // The cold group's size, counted from the analyze output's split and item stats.
    let split = read_parquet(&t.path("out/split.parquet"));
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let pop: HashMap<i64, i64> = i64s(&stats, "item_id")
        .into_iter()
        .zip(i64s(&stats, "train_interactions"))
        .map(|(i, n)| (i.unwrap(), n.unwrap()))
        .collect();
    let cold_targets = i64s(&split, "test_item").iter().flatten().filter(|i| pop[i] <= 5).count() as u64;
    assert!(cold_targets > 0);
    assert_eq!(m["test"]["full"]["cold"]["n"].as_u64().unwrap(), cold_targets);

    // The rule was chosen on validation, and the evaluator's validation
    // figure under that rule equals the tuner's one-pass figure for it.
    let scoring = &m["scoring"];
    assert_eq!(scoring["tuned"], true);
    let candidates = scoring["candidates"].as_array().unwrap();
    assert!(candidates.len() > 10, "routing × content grid");
    let cooccurrence = |c: &serde_json::Value| c["rule"]["cooccurrence_weight"].as_f64().unwrap();
    assert!(candidates.iter().any(|c| cooccurrence(c) > 0.0), "the co-occurrence weights were tried");
    let best = candidates.iter().map(|c| c["valid_ndcg"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    let chosen = scoring["rule_valid_ndcg"].as_f64().unwrap();
    assert_eq!(chosen, best);
    let valid = m["valid"]["full"]["overall"]["ndcg@10"].as_f64().unwrap();
    assert!((valid - chosen).abs() < 1e-9, "evaluator {valid} vs tuner {chosen}");
    assert!(chosen >= scoring["plain_valid_ndcg"].as_f64().unwrap());

    // Item vectors are the two views side by side.
    let emb = read_parquet(&t.path("dual/item_embeddings.parquet"));
    let vector = emb.column_by_name("vector").unwrap();
    assert_eq!(
        vector.data_type(),
        &arrow::datatypes::DataType::FixedSizeList(
            std::sync::Arc::new(arrow::datatypes::Field::new("item", arrow::datatypes::DataType::Float32, false)),
            128,
        )
    );
}

#[test]
fn a_reader_that_stops_early_is_not_a_crash() {
    // `tailforge evaluate … | head -1`: the reader is gone before the table is printed.
    let t = analyzed();
    let mut child = t
        .cmd()
        .args(["evaluate", "--input", "out", "--model", "mostpop"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

/// A list-of-strings column (nulls as empty lists).
fn string_lists(batch: &arrow::record_batch::RecordBatch, name: &str) -> Vec<Vec<String>> {
    use arrow::array::{Array, AsArray};
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let list = col.as_list::<i32>();
    (0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Vec::new();
            }
            let v = arrow::compute::cast(&list.value(i), &arrow::datatypes::DataType::Utf8).expect("cast");
            v.as_string::<i32>().iter().map(|s| s.expect("non-null title").to_string()).collect()
        })
        .collect()
}

#[test]
fn neighbours_match_a_co_user_count_over_training_sequences() {
    let t = analyzed();
    // Independently: each user's training items (all but the last two), once per user.
    let mut users_of: HashMap<i64, std::collections::BTreeSet<i64>> = HashMap::new();
    let mut train_of: HashMap<i64, std::collections::BTreeSet<i64>> = HashMap::new();
    for (u, seq) in sequences() {
        let train: std::collections::BTreeSet<i64> = seq[..seq.len().saturating_sub(2)].iter().copied().collect();
        for &i in &train {
            users_of.entry(i).or_default().insert(u);
        }
        train_of.insert(u, train);
    }
    let stats = read_parquet(&t.path("out/item_stats.parquet"));
    let tail: Vec<i64> = i64s(&stats, "item_id")
        .into_iter()
        .zip(strings(&stats, "group"))
        .filter(|(_, g)| g.as_deref() == Some("tail"))
        .map(|(i, _)| i.unwrap())
        .collect();
    let mut expected: Vec<(i64, i64, i64, i64)> = Vec::new();
    for &item in &tail {
        let mut counts: HashMap<i64, i64> = HashMap::new();
        for u in users_of.get(&item).into_iter().flatten() {
            for &j in &train_of[u] {
                if j != item {
                    *counts.entry(j).or_default() += 1;
                }
            }
        }
        let mut ranked: Vec<(i64, i64)> = counts.into_iter().collect();
        ranked.sort_by_key(|&(j, n)| (-n, j));
        for (r, (j, n)) in ranked.into_iter().take(5).enumerate() {
            expected.push((item, j, n, r as i64 + 1));
        }
    }
    expected.sort_unstable_by_key(|e| (e.0, e.3));
    let nb = read_parquet(&t.path("out/neighbors.parquet"));
    let got: Vec<(i64, i64, i64, i64)> = i64s(&nb, "item_id")
        .into_iter()
        .zip(i64s(&nb, "neighbor_id"))
        .zip(i64s(&nb, "users"))
        .zip(i64s(&nb, "rank"))
        .map(|(((i, j), n), r)| (i.unwrap(), j.unwrap(), n.unwrap(), r.unwrap()))
        .collect();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected, "neighbors.parquet is ordered by item, rank and equals the independent count");

    // tail_items carries the neighbours' titles in rank order (every neighbour has a title here).
    let titles: HashMap<i64, String> = {
        let items = read_parquet(&amazon().join("items.parquet"));
        i64s(&items, "item_id")
            .into_iter()
            .zip(strings(&items, "title"))
            .map(|(i, s)| (i.unwrap(), s.unwrap()))
            .collect()
    };
    let ti = read_parquet(&t.path("out/tail_items.parquet"));
    let lists = string_lists(&ti, "neighbor_titles");
    for (item, list) in i64s(&ti, "item_id").into_iter().zip(lists) {
        let want: Vec<String> =
            expected.iter().filter(|e| e.0 == item.unwrap()).map(|e| titles[&e.1].clone()).collect();
        assert_eq!(list, want, "item {item:?}");
    }
}

/// Generates for the 4 tail items with the least text into `dir` (fresh,
/// no cache) with the default model and `sets`; returns stdout and summary.json.
fn generate_least_text(t: &TestDir, dir: &str, sets: &[&str]) -> (String, serde_json::Value) {
    let model = smollm2();
    let out = t.path_str(dir);
    let _ = std::fs::remove_dir_all(&out);
    let mut args = vec![
        "generate",
        "--input",
        "out",
        "--out",
        &out,
        "--limit",
        "4",
        "--parallel",
        "4",
        "--threads",
        "1",
        "--model",
        model.to_str().unwrap(),
        "--set",
        "generate.priority=least_text",
        "--set",
        "generate.use_cache=false",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let printed = stdout(&t.run_ok(&args));
    let summary = std::fs::read_to_string(t.path(&format!("{dir}/summary.json"))).unwrap();
    (printed, serde_json::from_str(&summary).unwrap())
}

/// Grounded generation on the catalog's items with the least text: extractive
/// keywords are phrases of the item's own text or its neighbours' titles, and
/// the grounding score written with each row agrees with a check made here.
#[test]
fn extractive_keywords_are_found_in_the_items_text_or_its_neighbours() {
    let _llm = llm_lock();
    let t = analyzed();
    let (printed, s) = generate_least_text(t, "grounded", &[]);
    assert!(printed.contains("generated for 4 items"), "{printed}");

    // The source of each tail item, lower-cased: its catalog text and neighbours' titles.
    let ti = read_parquet(&t.path("out/tail_items.parquet"));
    let mut source: HashMap<i64, String> = HashMap::new();
    let cols = ["title", "brand", "categories", "description"];
    let values: Vec<Vec<Option<String>>> = cols.iter().map(|c| strings(&ti, c)).collect();
    for (row, (id, neighbours)) in
        i64s(&ti, "item_id").into_iter().zip(string_lists(&ti, "neighbor_titles")).enumerate()
    {
        let mut text: Vec<String> = values.iter().filter_map(|v| v[row].clone()).collect();
        text.extend(neighbours);
        source.insert(id.unwrap(), text.join(" \n ").to_lowercase());
    }
    let rows = shard_rows(&t.path("grounded/generated"), &[]);
    assert_eq!(s["grounding"]["rows"].as_u64().unwrap(), rows.len() as u64);
    assert_eq!(s["accepted"].as_u64().unwrap(), rows.len() as u64);
    assert!(!rows.is_empty(), "no item accepted: {s}");
    let generated = t.path("grounded/generated/part-00000.parquet");
    let g = read_parquet(&generated);
    let kws = string_lists(&g, "keywords");
    for ((id, keywords), share) in i64s(&g, "item_id").into_iter().zip(kws).zip(f64s(&g, "keyword_grounding")) {
        let text = &source[&id.unwrap()];
        // Each keyword's words occur in the source in order (phrases never cross punctuation,
        // so a plain substring search over the words joined by any separator suffices per word).
        for k in &keywords {
            for w in k.split([' ', '-']).filter(|w| !w.is_empty()) {
                assert!(text.contains(w), "item {id:?}: keyword {k:?} word {w:?} is not in its source");
            }
        }
        assert_eq!(share, Some(1.0), "item {id:?}: {keywords:?}");
    }
    assert_eq!(s["grounding"]["keywords_grounded"].as_f64(), Some(1.0), "{s}");
}

/// `min_grounding` with free keywords: every accepted row meets the
/// threshold, and the attempts that did not are counted as `ungrounded`.
#[test]
fn min_grounding_turns_invented_keywords_into_ungrounded_rejects() {
    let _llm = llm_lock();
    let t = analyzed();
    let (_, s) =
        generate_least_text(t, "free-min-grounding", &["generate.keywords=free", "generate.min_grounding=1.0"]);
    // Free keywords are rarely all grounded (BENCHMARKS.md: 3% of rows), so some attempts fail the filter.
    assert!(s["filtered_attempts"]["ungrounded"].as_u64().unwrap_or(0) > 0, "{s}");
    for (id, row) in shard_rows(&t.path("free-min-grounding/generated"), &[]) {
        assert!(row.contains(&"keyword_grounding=1.0".to_string()), "item {id}: {row:?}");
    }
    let written = shard_rows(&t.path("free-min-grounding/generated"), &[]).len()
        + shard_rows(&t.path("free-min-grounding/rejects"), &[]).len();
    assert_eq!(written, 4, "each item once, accepted or rejected");
}
