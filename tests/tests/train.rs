//! The train stage end to end on MovieLens-100k: the real binary trains
//! SASRec, and its outputs are checked against facts computed another way —
//! the MostPop baseline's eval-v1 figures, the users' histories read from
//! `u.data`, an uninterrupted run for kill-and-resume.

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tailforge_tests::*;

/// One import + analyze shared by the tests.
fn analyzed() -> &'static TestDir {
    static DIR: std::sync::OnceLock<TestDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let t = TestDir::new();
        analyze_movielens(&t, &[]);
        t
    })
}

fn encoder() -> String {
    repo_root().join("models/all-MiniLM-L6-v2").display().to_string()
}

/// Settings that keep a MovieLens run to seconds per epoch on 2 cores.
fn small(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["train.maxlen=50", "train.eval_every=2", "train.threads=2"].iter().map(|s| s.to_string()).collect();
    v.push(format!("train.encoder={}", encoder()));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn train_args<'a>(t: &TestDir, variant: &'a str, out: &'a str, epochs: &'a str, sets: &'a [String]) -> Vec<String> {
    let mut args: Vec<String> =
        ["train", "--input", &t.path_str("out"), "--variant", variant, "--out", out, "--epochs", epochs]
            .iter()
            .map(|s| s.to_string())
            .collect();
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    args
}

fn run(t: &TestDir, args: &[String]) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    t.run_ok(&refs);
}

fn metrics(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("metrics.json")
}

#[test]
fn id_variant_beats_mostpop_and_writes_servable_outputs() {
    let t = analyzed();
    let dir = TestDir::new();
    let out = dir.path_str("sasrec");
    run(t, &train_args(t, "id", &out, "20", &small(&[])));
    let m = metrics(dir.path("sasrec/metrics.json"));

    // The metrics.json shape, with eval-v1's case counts.
    assert_eq!(m["variant"], "id");
    assert_eq!(m["test"]["full"]["overall"]["n"], 943);
    let head = m["test"]["full"]["head"]["n"].as_u64().unwrap();
    let tail = m["test"]["full"]["tail"]["n"].as_u64().unwrap();
    assert_eq!(head + tail, 943);
    for key in ["hr@10", "ndcg@10"] {
        assert!(m["test"]["sampled"]["overall"][key].is_number());
        assert!(m["valid"]["full"]["tail"][key].is_number());
    }
    assert!(m["coverage@10"].as_f64().unwrap() > 0.0);
    assert!(m["seconds_per_epoch"].as_f64().unwrap() > 0.0);
    assert!(m["epochs"].as_u64().unwrap() <= 20);
    let history = m["history"].as_array().unwrap();
    assert_eq!(history.len() as u64, m["epochs"].as_u64().unwrap());
    let first = history[0]["loss"].as_f64().unwrap();
    let last = history.last().unwrap()["loss"].as_f64().unwrap();
    assert!(last < first, "training loss {first} → {last}");

    // Better than the popularity baseline under the same protocol.
    t.run_ok(&["evaluate", "--input", &t.path_str("out"), "--model", "mostpop", "--out", &dir.path_str("mostpop")]);
    let mostpop = metrics(dir.path("mostpop/metrics.json"));
    let ours = m["test"]["full"]["overall"]["ndcg@10"].as_f64().unwrap();
    let baseline = mostpop["test"]["full"]["overall"]["ndcg@10"].as_f64().unwrap();
    assert!(ours > baseline, "SASRec test NDCG@10 {ours} does not beat MostPop {baseline}");

    // Recommendations: 10 per user, ranked, never an item the user rated (u.data, read directly).
    let recs = read_parquet(&dir.path("sasrec/recommendations.parquet"));
    assert_eq!(recs.num_rows(), 943 * 10);
    let mut seen: HashMap<i64, HashSet<i64>> = HashMap::new();
    for (u, i, _, _) in u_data() {
        seen.entry(u).or_default().insert(i);
    }
    let users = i64s(&recs, "user_id");
    let items = i64s(&recs, "item_id");
    let ranks = i64s(&recs, "rank");
    let whys = strings(&recs, "why");
    let mut per_user: HashMap<i64, Vec<i64>> = HashMap::new();
    for r in 0..recs.num_rows() {
        let (u, i) = (users[r].unwrap(), items[r].unwrap());
        assert!(!seen[&u].contains(&i), "user {u} is recommended item {i} they already rated");
        per_user.entry(u).or_default().push(ranks[r].unwrap());
        assert!(!whys[r].as_deref().unwrap_or("").is_empty());
    }
    assert_eq!(per_user.len(), 943);
    assert!(per_user.values().all(|r| *r == (1..=10).collect::<Vec<_>>()));
    // MovieLens has genres, so most explanations name a shared one.
    let explained = whys.iter().filter(|w| w.as_deref().unwrap_or("").starts_with("shares ")).count();
    assert!(explained > recs.num_rows() / 2, "{explained} of {} explained by shared keywords", recs.num_rows());

    let emb = read_parquet(&dir.path("sasrec/item_embeddings.parquet"));
    assert_eq!(emb.num_rows(), 1682);
    assert!(dir.path("sasrec/checkpoints/best.safetensors").is_file());
    assert!(dir.path("sasrec/_SUCCESS").is_file());
}

/// Kill the training process after its first checkpoint, rerun: the result
/// equals an uninterrupted run's (same seed), so nothing was lost or redone differently.
#[test]
fn a_killed_run_resumes_from_its_checkpoint_to_the_same_result() {
    let t = analyzed();
    let dir = TestDir::new();
    let sets = small(&["train.eval_every=1"]);
    let straight = dir.path_str("straight");
    run(t, &train_args(t, "id", &straight, "6", &sets));

    let killed = dir.path_str("killed");
    let args = train_args(t, "id", &killed, "6", &sets);
    let mut child = t.cmd().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let state = dir.path("killed/checkpoints/last.json");
    let start = Instant::now();
    let mut interrupted = false;
    while start.elapsed() < Duration::from_secs(600) {
        if let Ok(text) = std::fs::read_to_string(&state) {
            let epoch = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["epoch"].as_u64());
            if epoch.is_some_and(|e| e >= 2) {
                child.kill().expect("kill");
                interrupted = true;
                break;
            }
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    assert!(interrupted, "the run finished before it could be killed");
    assert!(!dir.path("killed/_SUCCESS").exists());
    run(t, &args);

    let a = metrics(dir.path("straight/metrics.json"));
    let b = metrics(dir.path("killed/metrics.json"));
    assert!(b["resumed_after_epoch"].as_u64().unwrap() >= 2, "{}", b["resumed_after_epoch"]);
    assert_eq!(a["test"], b["test"], "resumed run differs from the uninterrupted one");
    assert_eq!(a["valid"], b["valid"]);
    assert_eq!(a["best_epoch"], b["best_epoch"]);
    let losses = |m: &serde_json::Value| -> Vec<f64> {
        m["history"].as_array().unwrap().iter().map(|h| h["loss"].as_f64().unwrap()).collect()
    };
    assert_eq!(losses(&a), losses(&b));
}

/// The fused variant encodes every item's catalog text once; a second run
/// takes all embeddings from the cache and, with the same seed, trains the same model.
#[test]
fn fused_variant_encodes_item_text_once_and_is_deterministic() {
    let t = analyzed();
    let dir = TestDir::new();
    let sets = small(&[&format!("train.embedding_cache={}", dir.path_str("cache"))]);
    run(t, &train_args(t, "fused", &dir.path_str("a"), "2", &sets));
    run(t, &train_args(t, "fused", &dir.path_str("b"), "2", &sets));
    let a = metrics(dir.path("a/metrics.json"));
    let b = metrics(dir.path("b/metrics.json"));
    // Items whose catalog text is identical (MovieLens lists some films
    // twice) share one encoding: count distinct (title, date, genres) in u.item.
    let u_item = std::fs::read(movielens_100k().join("u.item")).expect("u.item");
    let text: String = u_item.iter().map(|&b| b as char).collect(); // latin-1
    let distinct: HashSet<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            format!("{}|{}|{}", f[1], f[2], f[5..].join(""))
        })
        .collect();
    assert!(distinct.len() < 1682, "MovieLens-100k has duplicate films");
    assert_eq!(a["text"]["encoded_now"], distinct.len() as u64);
    assert_eq!(a["text"]["from_cache"], 0);
    assert_eq!(b["text"]["encoded_now"], 0);
    assert_eq!(b["text"]["from_cache"], 1682);
    assert_eq!(a["test"], b["test"], "same seed, same data → same model");
    assert_eq!(a["test"]["full"]["overall"]["n"], 943);
}

#[test]
fn bad_settings_and_missing_inputs_are_clear_errors() {
    let t = analyzed();
    let dir = TestDir::new();
    let err = t
        .run_fails(&["train", "--input", &t.path_str("out"), "--out", &dir.path_str("x"), "--set", "train.heads=3"], 2);
    assert!(err.contains("train.heads"), "{err}");
    let err = t.run_fails(&["train", "--input", &dir.path_str("nothing-here"), "--out", &dir.path_str("x")], 2);
    assert!(err.contains("nothing-here") && err.contains("tailforge analyze"), "{err}");
    let err = t.run_fails(
        &[
            "train",
            "--input",
            &t.path_str("out"),
            "--out",
            &dir.path_str("x"),
            "--variant",
            "text",
            "--set",
            "train.encoder=/nonexistent",
        ],
        2,
    );
    assert!(err.contains("make setup"), "{err}");
}

/// The test figures are the best validation epoch's, not the last epoch's,
/// and `patience` stops the run. At lr 0.01 validation peaks early, so the
/// run stops `patience` evaluations after its best epoch; a second run that
/// simply ends at that epoch (same seed: the same trajectory) must report the
/// same test figures, and the validation figure in metrics.json must be the
/// one logged at the best epoch, not at the last.
#[test]
fn test_metrics_come_from_the_best_validation_epoch_and_patience_stops_the_run() {
    let t = analyzed();
    let dir = TestDir::new();
    let sets = small(&["train.eval_every=1", "train.patience=2", "train.lr=0.01"]);
    run(t, &train_args(t, "id", &dir.path_str("long"), "30", &sets));
    let long = metrics(dir.path("long/metrics.json"));
    let (best, epochs) = (long["best_epoch"].as_u64().unwrap(), long["epochs"].as_u64().unwrap());
    assert_eq!(epochs, best + 2, "patience 2 stops two evaluations after the best epoch");
    assert!(epochs < 30, "stopped early");
    let history = long["history"].as_array().unwrap();
    let logged = |epoch: u64| history[epoch as usize - 1]["valid_ndcg@10"].as_f64().unwrap();
    let reported = long["valid"]["full"]["overall"]["ndcg@10"].as_f64().unwrap();
    assert_eq!(reported, logged(best), "metrics.json's validation figure is the best epoch's");
    assert_ne!(reported, logged(epochs), "the last epoch scored differently, so the check above can fail");
    assert!((1..=epochs).all(|e| logged(e) <= logged(best)));

    run(t, &train_args(t, "id", &dir.path_str("short"), &best.to_string(), &sets));
    let short = metrics(dir.path("short/metrics.json"));
    assert_eq!(short["best_epoch"], best);
    assert_eq!(long["test"], short["test"], "the long run's test figures are not its best epoch's");
}

/// `--augment`: generated descriptions and keywords join the text of exactly
/// the items they were written for (a row for an item outside the catalog is
/// ignored), in the `text` variant; `train.use_generated = false` leaves them
/// out. Counted by the text-embedding cache, which encodes only texts it has
/// not seen: with the catalog texts cached, the augmented run encodes two.
/// The same cache then feeds `substitute_rate`, which must change training.
#[test]
fn generated_text_joins_exactly_its_items_and_use_generated_false_leaves_it_out() {
    use arrow::array::{ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
    let t = analyzed();
    let dir = TestDir::new();
    let tail = read_parquet(&t.path("out/tail_items.parquet"));
    let mut ids: Vec<i64> = i64s(&tail, "item_id").into_iter().take(2).map(Option::unwrap).collect();
    ids.push(999_999); // not in the catalog
    let mut keywords = ListBuilder::new(StringBuilder::new());
    for words in [&["lighthouse", "storm"][..], &["orchard"], &["nothing"]] {
        for w in words {
            keywords.values().append_value(w);
        }
        keywords.append(true);
    }
    let generated = RecordBatch::try_from_iter([
        ("item_id", std::sync::Arc::new(Int64Array::from(ids)) as ArrayRef),
        (
            "description",
            std::sync::Arc::new(StringArray::from(vec![
                "A keeper guards a lighthouse through one winter storm.",
                "Three sisters save the family orchard.",
                "Not an item of this catalog.",
            ])),
        ),
        ("keywords", std::sync::Arc::new(keywords.finish())),
    ])
    .unwrap();
    write_parquet(&dir.path("gen/generated/part-00000.parquet"), &generated);
    let cache = format!("train.embedding_cache={}", dir.path_str("cache"));
    let with_augment = |variant: &str, out: &str, extra: &[&str]| {
        let mut sets = small(&[&cache]);
        sets.extend(extra.iter().map(|s| s.to_string()));
        let mut args = train_args(t, variant, &dir.path_str(out), "1", &sets);
        args.extend(["--augment".to_string(), dir.path_str("gen")]);
        run(t, &args);
        metrics(dir.path(&format!("{out}/metrics.json")))
    };

    let catalog_only = with_augment("text", "catalog", &["train.use_generated=false"]);
    assert_eq!(catalog_only["text"]["items_with_generated_text"], 0);
    assert_eq!(catalog_only["text"]["from_cache"], 0);
    let augmented = with_augment("text", "augmented", &[]);
    assert_eq!(augmented["text"]["items_with_generated_text"], 2);
    assert_eq!(augmented["text"]["encoded_now"], 2, "only the two augmented items have new text");
    assert_eq!(augmented["text"]["from_cache"], 1682 - 2);
    assert_eq!(augmented["test"]["full"]["overall"]["n"], 943);

    // substitute_rate replaces training inputs by text neighbours: same seed, other losses.
    let plain = with_augment("id", "plain", &[]);
    let substituted = with_augment("id", "substituted", &["train.substitute_rate=0.5"]);
    assert_eq!(substituted["text"]["encoded_now"], 0, "the substitutes come from the cached text");
    assert_ne!(plain["history"][0]["loss"], substituted["history"][0]["loss"], "substitute_rate changed nothing");
}

/// `train.loss = "sampled_softmax"` is the loss that reaches the tail
/// (BENCHMARKS.md): same seed and epochs as BCE, it puts tail items into the
/// top 10 where BCE puts none.
#[test]
fn sampled_softmax_recommends_the_tail_where_bce_does_not() {
    let t = analyzed();
    let dir = TestDir::new();
    run(t, &train_args(t, "id", &dir.path_str("bce"), "10", &small(&[])));
    run(t, &train_args(t, "id", &dir.path_str("ss"), "10", &small(&["train.loss=sampled_softmax"])));
    let (bce, ss) = (metrics(dir.path("bce/metrics.json")), metrics(dir.path("ss/metrics.json")));
    let tail = |m: &serde_json::Value| m["test"]["full"]["tail"]["ndcg@10"].as_f64().unwrap();
    assert!(tail(&ss) > tail(&bce), "tail NDCG@10: sampled softmax {} vs BCE {}", tail(&ss), tail(&bce));
    assert!(ss["tail_share@10"].as_f64().unwrap() > bce["tail_share@10"].as_f64().unwrap());
    assert_eq!(ss["config"]["loss"], "sampled_softmax");
}
