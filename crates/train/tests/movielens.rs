//! eval-v1 on the real MovieLens-100k: the dataset facts and MostPop figures
//! that EVAL.md fixes, reproduced from the output of the real `tailforge`
//! binary (import + analyze), plus the loader's errors on broken outputs.
//!
//! Needs the binary: `cargo build --release --bins` (or `make build`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use tailforge_core::parquet_io::{ParquetSink, read_parquet};
use tailforge_core::{Error, Location};
use tailforge_train::baselines::MostPop;
use tailforge_train::eval::{EvalOptions, EvalReport, Phase, evaluate};
use tailforge_train::{Group, Ids, load_dataset};

fn repo_root() -> PathBuf {
    // The directory cargo runs the test from, not the one it was compiled in:
    // clones sharing one CARGO_TARGET_DIR can reuse each other's test binaries.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("../..")
}

fn movielens_100k() -> PathBuf {
    let shared =
        std::env::var_os("TAILFORGE_SHARED").map(PathBuf::from).unwrap_or_else(|| repo_root().join("../shared"));
    let p = shared.join("data").join("movielens-100k");
    assert!(p.join("u.data").is_file(), "MovieLens-100k not found at {} (set TAILFORGE_SHARED)", p.display());
    p
}

/// The built `tailforge` binary: target/release/deps/<test> → target/release/tailforge.
fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("tailforge{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: run `cargo build --release --bins` first", bin.display());
    bin
}

fn tailforge(dir: &Path, args: &[&str]) {
    let mut c = Command::new(binary());
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("TAILFORGE_") {
            c.env_remove(k);
        }
    }
    let out = c.args(args).output().expect("spawn tailforge");
    assert!(out.status.success(), "tailforge {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Imports and analyzes MovieLens-100k into `dir/out`; returns that directory.
fn analyze_movielens(dir: &Path) -> PathBuf {
    let src = movielens_100k();
    let ml = dir.join("ml");
    let out = dir.join("out");
    tailforge(dir, &["import", "movielens", "--src", &src.display().to_string(), "--out", &ml.display().to_string()]);
    tailforge(
        dir,
        &[
            "analyze",
            "--events",
            &ml.join("events").display().to_string(),
            "--items",
            &ml.join("items").display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
    );
    out
}

fn location(p: &Path) -> Location {
    Location::parse(&p.display().to_string()).unwrap()
}

/// Equal when rounded to 6 decimals, as EVAL.md states its figures.
fn assert_6(what: &str, got: f64, want: f64) {
    assert_eq!(format!("{got:.6}"), format!("{want:.6}"), "{what}: got {got}, EVAL.md says {want}");
}

fn show(phase: &str, r: &EvalReport) {
    println!("MostPop {phase}:\n{}\n{}", serde_json::to_string(r).unwrap(), r.to_markdown());
}

#[tokio::test(flavor = "multi_thread")]
async fn movielens_100k_facts_and_most_pop_reproduce_eval_md() {
    let tmp = tempfile::tempdir().unwrap();
    let out = analyze_movielens(tmp.path());

    let start = Instant::now();
    let ds = load_dataset(&location(&out)).await.unwrap();
    let load_s = start.elapsed().as_secs_f64();

    // EVAL.md's reference facts.
    assert_eq!(ds.n_users(), 943);
    assert_eq!(ds.n_items(), 1682);
    assert_eq!(ds.users.iter().map(|u| u.items.len()).sum::<usize>(), 100_000);
    assert_eq!(ds.evaluated_users().count(), 943);
    assert_eq!(ds.train_interactions(), 98_114);
    assert_eq!(ds.n_head, 337);
    let tail: Vec<usize> = (0..ds.n_items()).filter(|&i| ds.groups[i] == Group::Tail).collect();
    assert_eq!(tail.len(), 1345);
    assert_eq!(tail.iter().filter(|&&i| ds.train_popularity[i] == 0).count(), 5);
    let targets = |phase: Phase| {
        let head = ds.users.iter().filter_map(|u| u.target(phase)).filter(|&t| ds.groups[t as usize] == Group::Head);
        head.count()
    };
    assert_eq!(targets(Phase::Test), 437);
    assert_eq!(943 - targets(Phase::Test), 506);
    assert_eq!(targets(Phase::Valid), 517);
    assert_eq!(943 - targets(Phase::Valid), 426);
    // Integer ids keep their kind; the vocabulary is ascending (MovieLens items are 1..=1682).
    assert_eq!(ds.item_ids, Ids::Int64((1..=1682).collect()));
    let Ids::Int64(users) = &ds.user_ids else { panic!("user ids should be Int64") };
    assert_eq!((users[0], users[942]), (1, 943));

    let most_pop = MostPop::new(&ds);
    let options = EvalOptions::default();
    let start = Instant::now();
    let test = evaluate(&ds, &most_pop, Phase::Test, &options).unwrap();
    let eval_s = start.elapsed().as_secs_f64();
    let valid = evaluate(&ds, &most_pop, Phase::Valid, &options).unwrap();
    show("test", &test);
    show("valid", &valid);
    println!("load {load_s:.3}s, one full+sampled evaluation {eval_s:.3}s");

    // EVAL.md "Check your evaluator": exact under full ranking.
    let (o, h, t) = (test.full.overall, test.full.head, test.full.tail);
    assert_eq!((o.n, h.n, t.n), (943, 437, 506));
    assert_eq!((o.hr * 943.0).round(), 47.0);
    assert_6("test overall HR@10", o.hr, 47.0 / 943.0);
    assert_6("test overall HR@10", o.hr, 0.049841);
    assert_6("test overall NDCG@10", o.ndcg, 0.025440);
    assert_6("test head HR@10", h.hr, 47.0 / 437.0);
    assert_6("test head HR@10", h.hr, 0.107551);
    assert_6("test head NDCG@10", h.ndcg, 0.054896);
    assert_eq!((t.hr, t.ndcg), (0.0, 0.0));
    assert_eq!((valid.full.head.n, valid.full.tail.n), (517, 426));
    assert_6("valid overall HR@10", valid.full.overall.hr, 0.063627);
    assert_6("valid overall NDCG@10", valid.full.overall.ndcg, 0.032743);

    // Sampled depends on the draw: EVAL.md's reference MostPop NDCG@10 is .163 / .350 / .002.
    let s = test.sampled;
    for (what, got, want) in
        [("overall", s.overall.ndcg, 0.163), ("head", s.head.ndcg, 0.350), ("tail", s.tail.ndcg, 0.002)]
    {
        assert!((got - want).abs() < 0.01, "sampled test {what} NDCG@10 = {got:.4}, EVAL.md's reference is {want}");
    }

    // MostPop recommends the same popular items to everyone: only head items in top-10 lists.
    assert_eq!(test.tail_share, 0.0);
    // Histories push different popular items out of the lists: 91 distinct items in all.
    assert_eq!((test.coverage * 1682.0).round(), 91.0, "coverage {}", test.coverage);

    // Scoring raw counts instead lets items 181 and 258 (500 training
    // interactions each) tie, and ties count against the target: same hits,
    // lower NDCG. These are not EVAL.md figures, only this evaluator's.
    let raw = MostPop::raw_counts(&ds);
    let raw_test = evaluate(&ds, &raw, Phase::Test, &options).unwrap();
    let raw_valid = evaluate(&ds, &raw, Phase::Valid, &options).unwrap();
    println!("MostPop on raw counts: test {:?}\nvalid {:?}", raw_test.full, raw_valid.full);
    assert_eq!(raw_test.full.overall.hr, o.hr);
    assert_6("raw-count test overall NDCG@10", raw_test.full.overall.ndcg, 0.024909);
    assert_6("raw-count test head NDCG@10", raw_test.full.head.ndcg, 0.053752);
    assert_6("raw-count valid overall HR@10", raw_valid.full.overall.hr, 0.063627);
    assert_6("raw-count valid overall NDCG@10", raw_valid.full.overall.ndcg, 0.031418);

    // Deterministic: a second run gives the identical report.
    assert_eq!(evaluate(&ds, &most_pop, Phase::Test, &options).unwrap(), test);
}

/// Rewrites `dir/name.parquet` with `edit` applied to its (single) table.
async fn rewrite(dir: &Path, name: &str, edit: impl Fn(&RecordBatch) -> RecordBatch) {
    let loc = location(&dir.join(format!("{name}.parquet")));
    let batches = read_parquet(&loc).await.unwrap();
    let edited: Vec<RecordBatch> = batches.iter().map(&edit).collect();
    let mut sink = ParquetSink::create(&loc, edited[0].schema()).unwrap();
    for b in &edited {
        sink.write(b).await.unwrap();
    }
    sink.finish().await.unwrap();
}

fn replace_column(batch: &RecordBatch, name: &str, column: ArrayRef) -> RecordBatch {
    let i = batch.schema().index_of(name).unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = column;
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_analyze_outputs_fail_with_located_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = analyze_movielens(tmp.path());
    let dir = tmp.path().join("copy");
    let reset = || {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["sequences", "split", "item_stats"] {
            std::fs::copy(out.join(format!("{f}.parquet")), dir.join(format!("{f}.parquet"))).unwrap();
        }
        std::fs::write(dir.join("_SUCCESS"), b"").unwrap();
    };

    // An eval-v1 group that disagrees with the evaluator's: internal error.
    reset();
    rewrite(&dir, "item_stats", |b| {
        let groups = b.column_by_name("eval_group").unwrap().as_string::<i32>();
        let flipped: StringArray =
            groups.iter().enumerate().map(|(i, g)| if i == 0 { Some("tail") } else { g }).collect();
        replace_column(b, "eval_group", Arc::new(flipped))
    })
    .await;
    let e = load_dataset(&location(&dir)).await.unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e}");
    assert!(e.to_string().contains("eval_group Some(\"tail\"), the evaluator computes \"head\""), "{e}");

    // A split whose test item does not match the sequence: a data error with its row.
    reset();
    rewrite(&dir, "split", |b| {
        let items = b.column_by_name("test_item").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
        let edited: arrow::array::Int64Array =
            items.iter().enumerate().map(|(i, v)| if i == 5 { v.map(|x| x % 1682 + 1) } else { v }).collect();
        replace_column(b, "test_item", Arc::new(edited))
    })
    .await;
    let e = load_dataset(&location(&dir)).await.unwrap_err();
    let Error::Data(d) = &e else { panic!("expected a data error, got {e}") };
    assert_eq!((d.column.as_deref(), d.row), (Some("test_item"), Some(5)), "{e}");
    assert!(d.file.as_deref().unwrap_or("").ends_with("split.parquet"), "{e}");

    // A file with the wrong columns: a data error naming the missing column.
    reset();
    std::fs::copy(out.join("sequences.parquet"), dir.join("split.parquet")).unwrap();
    let e = load_dataset(&location(&dir)).await.unwrap_err();
    let Error::Data(d) = &e else { panic!("expected a data error, got {e}") };
    assert_eq!((d.column.as_deref(), d.message.as_str()), (Some("train_length"), "missing column"), "{e}");

    // Not an analyze output at all: a usage error that says what to pass.
    let empty = tempfile::tempdir().unwrap();
    let e = load_dataset(&location(empty.path())).await.unwrap_err();
    assert!(matches!(e, Error::Usage(_)) && e.to_string().contains("tailforge analyze"), "{e}");

    // A missing file: an error, not a panic.
    reset();
    std::fs::remove_file(dir.join("item_stats.parquet")).unwrap();
    assert!(load_dataset(&location(&dir)).await.is_err());

    // A null inside a sequence: a data error at its row.
    reset();
    rewrite(&dir, "sequences", |b| {
        let lists = b.column_by_name("item_ids").unwrap().as_list::<i32>();
        let field = b.schema().field_with_name("item_ids").unwrap().clone();
        let arrow::datatypes::DataType::List(element) = field.data_type() else { panic!("item_ids is not a List") };
        let mut builder = arrow::array::ListBuilder::new(arrow::array::Int64Builder::new()).with_field(element.clone());
        for r in 0..lists.len() {
            let values = lists.value(r);
            let values = values.as_primitive::<arrow::datatypes::Int64Type>();
            for (k, v) in values.iter().enumerate() {
                builder.values().append_option(if r == 7 && k == 2 { None } else { v });
            }
            builder.append(true);
        }
        let list = builder.finish();
        assert_eq!(list.data_type(), field.data_type(), "rebuilt list type");
        replace_column(b, "item_ids", Arc::new(list))
    })
    .await;
    let e = load_dataset(&location(&dir)).await.unwrap_err();
    let Error::Data(d) = &e else { panic!("expected a data error, got {e}") };
    assert_eq!((d.column.as_deref(), d.row, d.message.as_str()), (Some("item_ids"), Some(7), "null value"), "{e}");
}

/// Replaces integer id columns by zero-padded text ids ("i0042"), whose byte
/// order is the numeric order, so eval-v1's tie-breaks are unchanged.
fn ids_as_text(batch: &RecordBatch, columns: &[(&str, &str)]) -> RecordBatch {
    let schema = batch.schema();
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    let mut arrays = batch.columns().to_vec();
    for &(name, prefix) in columns {
        let i = schema.index_of(name).unwrap();
        let ints = arrow::compute::cast(&arrays[i], &arrow::datatypes::DataType::Int64).unwrap();
        let text: StringArray = ints
            .as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .map(|v| v.map(|v| format!("{prefix}{v:05}")))
            .collect();
        fields[i] = Arc::new(fields[i].as_ref().clone().with_data_type(arrow::datatypes::DataType::Utf8));
        arrays[i] = Arc::new(text);
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
}

async fn copy_with_text_ids(from: &Path, to: &Path, columns: &[(&str, &str)]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "parquet") {
            let batches = read_parquet(&location(&path)).await.unwrap();
            let edited: Vec<RecordBatch> = batches.iter().map(|b| ids_as_text(b, columns)).collect();
            let target = location(&to.join(path.file_name().unwrap()));
            let mut sink = ParquetSink::create(&target, edited[0].schema()).unwrap();
            for b in &edited {
                sink.write(b).await.unwrap();
            }
            sink.finish().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn text_ids_give_the_same_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = analyze_movielens(d);
    let ints = load_dataset(&location(&out)).await.unwrap();

    copy_with_text_ids(&d.join("ml/events"), &d.join("text/events"), &[("user_id", "u"), ("item_id", "i")]).await;
    copy_with_text_ids(&d.join("ml/items"), &d.join("text/items"), &[("item_id", "i")]).await;
    let text_out = d.join("text/out");
    let s = |p: &str| d.join(p).display().to_string();
    tailforge(d, &["analyze", "--events", &s("text/events"), "--items", &s("text/items"), "--out", &s("text/out")]);
    let text = load_dataset(&location(&text_out)).await.unwrap();

    let Ids::Utf8(items) = &text.item_ids else { panic!("item ids should be text") };
    assert_eq!((items[0].as_str(), items[1681].as_str()), ("i00001", "i01682"));
    let Ids::Utf8(users) = &text.user_ids else { panic!("user ids should be text") };
    assert_eq!(users[0], "u00001");
    assert_eq!(text.users, ints.users);
    assert_eq!(text.groups, ints.groups);
    let options = EvalOptions::default();
    for phase in [Phase::Test, Phase::Valid] {
        assert_eq!(
            evaluate(&text, &MostPop::new(&text), phase, &options).unwrap(),
            evaluate(&ints, &MostPop::new(&ints), phase, &options).unwrap()
        );
    }
}

/// Knows the held-out items: scores the item right after the history (the target) 1, all else 0.
struct Oracle<'a>(&'a tailforge_train::Dataset);

impl tailforge_train::eval::Scorer for Oracle<'_> {
    fn score(&self, user: usize, history: &[u32], out: &mut [f32]) {
        out.fill(0.0);
        let items = &self.0.users[user].items;
        // The target is the item right after the history.
        out[items[history.len()] as usize] = 1.0;
    }
}

/// Scores everything alike.
struct Constant;

impl tailforge_train::eval::Scorer for Constant {
    fn score(&self, _user: usize, _history: &[u32], out: &mut [f32]) {
        out.fill(0.5);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_data_short_users_oracle_and_constant_scorers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = |p: &str| d.join(p).display().to_string();
    tailforge(
        d,
        &["demo-data", "--users", "300", "--items", "200", "--events", "6000", "--seed", "7", "--out", &s("in")],
    );
    tailforge(d, &["analyze", "--events", &s("in/events"), "--items", &s("in/items"), "--out", &s("out")]);
    let ds = load_dataset(&location(&d.join("out"))).await.unwrap();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(ds.n_users() as u64, summary["users"].as_u64().unwrap());
    assert_eq!(ds.evaluated_users().count() as u64, summary["evaluated_users"].as_u64().unwrap());
    assert_eq!(ds.train_interactions(), summary["train_interactions"].as_u64().unwrap());
    assert_eq!(ds.users.iter().map(|u| u.items.len() as u64).sum::<u64>(), summary["events"].as_u64().unwrap());

    let options = EvalOptions::default();
    for phase in [Phase::Valid, Phase::Test] {
        let oracle = evaluate(&ds, &Oracle(&ds), phase, &options).unwrap();
        let n = ds.evaluated_users().count() as u64;
        assert_eq!(oracle.full.overall.n, n);
        assert_eq!((oracle.full.overall.hr, oracle.full.overall.ndcg), (1.0, 1.0), "{phase:?}");
        assert_eq!((oracle.sampled.overall.hr, oracle.sampled.overall.ndcg), (1.0, 1.0), "{phase:?}");
        assert_eq!(oracle.full.head.n + oracle.full.tail.n, n);

        // "A model that scores everything alike earns nothing" (EVAL.md §4),
        // and its top-10 lists are the lowest ids not in the history.
        let flat = evaluate(&ds, &Constant, phase, &options).unwrap();
        assert_eq!((flat.full.overall.hr, flat.full.overall.ndcg), (0.0, 0.0));
        assert_eq!((flat.sampled.overall.hr, flat.sampled.overall.ndcg), (0.0, 0.0));
        assert!(flat.coverage < 0.5, "coverage {}", flat.coverage);
    }
}
