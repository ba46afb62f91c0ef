//! The embedded default end to end: `demo-data` then `analyze`, through the
//! real binary, plus input layouts (Hive partitions, globs) and the shipped
//! pipeline files.

use tailforge_tests::*;

fn generate(t: &TestDir, out: &str, seed: &str) {
    t.run_ok(&[
        "demo-data",
        "--users",
        "400",
        "--items",
        "300",
        "--events",
        "20000",
        "--seed",
        seed,
        "--events-per-file",
        "7000",
        "--out",
        out,
    ]);
}

fn file_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

#[test]
fn same_seed_gives_identical_files_and_analysis() {
    let t = TestDir::new();
    generate(&t, "a", "11");
    generate(&t, "b", "11");
    generate(&t, "c", "12");
    assert_eq!(file_bytes(&t.path("a/events")).len(), 3, "20000 events at 7000 per file");
    assert_eq!(file_bytes(&t.path("a/events")), file_bytes(&t.path("b/events")));
    assert_eq!(file_bytes(&t.path("a/items")), file_bytes(&t.path("b/items")));
    assert_ne!(file_bytes(&t.path("a/events")), file_bytes(&t.path("c/events")));

    for run in ["a", "b"] {
        t.run_ok(&[
            "analyze",
            "--events",
            &format!("{run}/events"),
            "--items",
            &format!("{run}/items"),
            "--out",
            &format!("{run}-out"),
        ]);
    }
    for table in ["item_stats", "tail_items", "sequences", "split"] {
        let a = read_parquet(&t.path(&format!("a-out/{table}.parquet")));
        let b = read_parquet(&t.path(&format!("b-out/{table}.parquet")));
        assert_eq!(a, b, "{table}");
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("a-out/summary.json")).unwrap()).unwrap();
    assert_eq!(s["events"], 20000);
    assert_eq!(s["users"], 400);
    assert_eq!(s["catalog_items"], 300);
    // A Zipf catalog is unequal: the head fifth holds well over half of the events.
    assert!(s["head_share"].as_f64().unwrap() > 0.5, "{s}");
    assert!(s["gini"].as_f64().unwrap() > 0.4, "{s}");
    // Catalog text reaches tail_items as attributes.
    let tail = read_parquet(&t.path("a-out/tail_items.parquet"));
    for attr in ["category", "brand", "colour", "material", "price_band"] {
        assert!(tail.column_by_name(attr).is_some(), "attribute {attr} kept");
    }
}

#[test]
fn hive_partitions_and_globs_select_files() {
    let t = TestDir::new();
    generate(&t, "gen", "3");
    // Lay the three event files out as daily partitions.
    let files = file_bytes(&t.path("gen/events"));
    for (k, (name, bytes)) in files.iter().enumerate() {
        let dir = t.path(&format!("logs/dt=2026-11-2{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    // A stray non-partition sub-directory is not read.
    std::fs::create_dir_all(t.path("logs/_tmp")).unwrap();
    std::fs::write(t.path("logs/_tmp/junk.parquet"), b"not parquet").unwrap();

    let events_in = |out: &str| -> u64 {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(t.path(&format!("{out}/summary.json"))).unwrap()).unwrap();
        s["events_read"].as_u64().unwrap()
    };
    t.run_ok(&["analyze", "--events", "logs/", "--items", "gen/items", "--out", "all"]);
    assert_eq!(events_in("all"), 20000, "every dt=… partition is read");
    t.run_ok(&["analyze", "--events", "logs/dt=2026-11-22/", "--items", "gen/items", "--out", "one"]);
    t.run_ok(&["analyze", "--events", "logs/dt=2026-11-2[01]/*.parquet", "--items", "gen/items", "--out", "two"]);
    assert_eq!(events_in("one") + events_in("two"), 20000, "a partition plus a glob over the others cover all");
    assert_eq!(events_in("one"), 20000 - 2 * 7000);
}

#[test]
fn shipped_pipelines_load_and_the_demo_pipeline_runs() {
    let root = repo_root();
    let t = TestDir::new();
    for entry in std::fs::read_dir(root.join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out =
                t.cmd().args(["analyze", "--pipeline", path.to_str().unwrap(), "--print-config"]).output().unwrap();
            assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        }
    }
    // pipelines/demo.toml as `make demo` runs it, redirected into the temp dir.
    generate(&t, "data/demo/input", "42");
    let demo = root.join("pipelines/demo.toml");
    t.run_ok(&["analyze", "--pipeline", demo.to_str().unwrap()]);
    assert!(t.path("data/demo/out/analyze/_SUCCESS").is_file());
    // pipelines/movielens-100k.toml stands alone: it names the MovieLens
    // directory (../shared, relative to the repo root; here the test's copy
    // of that path), and analyze imports it first.
    let ml = root.join("pipelines/movielens-100k.toml");
    let config = stdout(&t.run_ok(&["analyze", "--pipeline", ml.to_str().unwrap(), "--print-config"]));
    assert!(config.contains("movielens = \"../shared/data/movielens-100k\""), "{config}");
    let src = format!("inputs.movielens={}", movielens_100k().display());
    t.run_ok(&["analyze", "--pipeline", ml.to_str().unwrap(), "--set", &src]);
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("data/movielens-100k/out/analyze/summary.json")).unwrap())
            .unwrap();
    assert_eq!(s["events"], 100000);
    assert_eq!(s["catalog_items"], 1682);
    assert!(t.path("data/movielens-100k/out/import/movielens/events").is_dir());
    // Both a MovieLens directory and events: which one is meant is not guessed.
    let err =
        t.run_fails(&["analyze", "--pipeline", ml.to_str().unwrap(), "--set", &src, "--set", "inputs.events=x"], 2);
    assert!(err.contains("inputs.movielens") && err.contains("inputs.events"), "{err}");
}

#[test]
fn memory_limit_with_spilling_gives_the_same_result() {
    let t = TestDir::new();
    generate(&t, "gen", "5");
    t.run_ok(&["analyze", "--events", "gen/events", "--items", "gen/items", "--out", "free"]);
    t.run_ok(&[
        "analyze",
        "--events",
        "gen/events",
        "--items",
        "gen/items",
        "--out",
        "tight",
        "--set",
        "analyze.memory_limit=64MiB",
        "--set",
        "analyze.target_partitions=2",
        "--set",
        "analyze.batch_size=1024",
    ]);
    for table in ["item_stats", "sequences", "split"] {
        assert_eq!(
            read_parquet(&t.path(&format!("free/{table}.parquet"))),
            read_parquet(&t.path(&format!("tight/{table}.parquet"))),
            "{table}"
        );
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let t = TestDir::new();
    generate(&t, "gen", "9");
    let out = t
        .cmd()
        .args(["--log-format", "json", "analyze", "--events", "gen/events", "--items", "gen/items", "--out", "out"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let done = lines.iter().find(|l| l["message"] == "analyze done").expect("a final log line");
    assert_eq!(done["events"], 20000);
    assert!(lines.iter().any(|l| l["message"] == "written" && l["output"] == "sequences" && l["seconds"].is_number()));
}
