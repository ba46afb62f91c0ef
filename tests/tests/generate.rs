//! `tailforge generate` through the binary on real MovieLens-100k tail items
//! with the real default model (SmolLM2-135M, installed by `make setup`).
//! The crate's own tests cover batching, grammar, injection and resume in
//! depth; these check the commands a user and a scheduler run: resume, the
//! cross-run cache, `--pipeline`, and a `kill -9` in the middle of a run.
//! Every test here runs the LLM and holds [`llm_lock`].

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tailforge_tests::*;

/// `generate` arguments for the first `limit` tail items of `out/` into `dest`.
fn gen_args(dest: &str, limit: &str, parallel: &str, extra: &[&str]) -> Vec<String> {
    let model = smollm2();
    let mut v: Vec<String> = [
        "generate",
        "--input",
        "out",
        "--out",
        dest,
        "--limit",
        limit,
        "--parallel",
        parallel,
        "--threads",
        "1",
        "--model",
        model.to_str().expect("utf8 path"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_gen(t: &TestDir, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    stdout(&t.run_ok(&args))
}

fn summary(t: &TestDir, dir: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(t.path(&format!("{dir}/summary.json"))).expect("summary.json"))
        .expect("summary JSON")
}

#[test]
fn generate_writes_validated_rows_for_tail_items_and_resumes() {
    let _llm = llm_lock();
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    let first = run_gen(&t, &gen_args("gen", "3", "3", &[]));
    assert!(first.contains("generated for 3 items (0 skipped"), "{first}");
    assert!(t.path("gen/_SUCCESS").is_file());

    // Every written row belongs to a tail item and carries a validated answer.
    let tail = read_parquet(&t.path("out/tail_items.parquet"));
    let tail_ids: Vec<i64> = i64s(&tail, "item_id").into_iter().map(Option::unwrap).collect();
    let generated = read_parquet(&t.path("gen/generated/part-00000.parquet"));
    for (id, description) in i64s(&generated, "item_id").iter().zip(strings(&generated, "description")) {
        assert!(tail_ids[..3].contains(&id.unwrap()), "item {id:?} is one of the first 3 tail items");
        let d = description.unwrap();
        assert!((40..=400).contains(&d.chars().count()), "{d}");
    }
    let s = summary(&t, "gen");
    assert_eq!(s["items"], 3);
    assert!(s["filtered_attempts"].is_object() && s["rejected"].is_object(), "{s}");

    // A second run with a higher limit skips what is done and adds the rest.
    let second = run_gen(&t, &gen_args("gen", "5", "3", &[]));
    assert!(second.contains("generated for 5 items (3 skipped"), "{second}");
    let rows = shard_rows(&t.path("gen/generated"), &[]).len() + shard_rows(&t.path("gen/rejects"), &[]).len();
    assert_eq!(rows, 5, "each of the 5 items once, accepted or rejected");

    // Another seed into the same output is refused instead of mixing rows.
    let args: Vec<String> = gen_args("gen", "5", "3", &["--seed", "7"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let err = t.run_fails(&args, 2);
    assert!(err.contains("another model, prompt template, sampling parameters or seed"), "{err}");
}

/// The cross-run cache: a second run into another output directory with the
/// same cache and settings generates nothing and writes the same rows.
#[test]
fn a_second_run_with_the_same_cache_reuses_every_item() {
    let _llm = llm_lock();
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    // Answers are cut at 56 tokens: some first attempts come out truncated
    // and are retried with a new seed, so the retry path is walked whatever
    // the model's numerics (with the default budget all 8 can pass at once).
    let cache =
        ["--set", "generate.cache=cache", "--set", "generate.shard_size=4", "--set", "generate.max_new_tokens=56"];
    let first = run_gen(&t, &gen_args("night1", "8", "4", &cache));
    assert!(first.contains("0 reused from cache"), "{first}");
    let s1 = summary(&t, "night1");
    assert_eq!(s1["items"], 8);
    let fp = s1["fingerprint"].as_str().expect("fingerprint").to_string();
    assert!(t.path(&format!("cache/{fp}/generated")).is_dir(), "rows cached under the fingerprint");
    // A retry after a filtered attempt: more attempts were filtered than the
    // rejected items spent, so some accepted item got there on a retry.
    let filtered: u64 = s1["filtered_attempts"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    let spent_on_rejects: u64 = shard_rows(&t.path("night1/rejects"), &[])
        .values()
        .map(|row| row.iter().find_map(|c| c.strip_prefix("attempts=")).unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(filtered > spent_on_rejects, "no accepted item needed a retry: {s1}");

    let second = run_gen(&t, &gen_args("night2", "8", "4", &cache));
    let s2 = summary(&t, "night2");
    assert_eq!(s2["reused_from_cache"], 8, "{second}");
    assert_eq!(s2["accepted"], 0, "nothing generated: {second}");
    assert_eq!(s2["generated_tokens"], 0);
    assert_eq!(s2["fingerprint"], s1["fingerprint"]);
    for dir in ["generated", "rejects"] {
        let a = shard_rows(&t.path(&format!("night1/{dir}")), &[]);
        let b = shard_rows(&t.path(&format!("night2/{dir}")), &[]);
        assert_eq!(a, b, "{dir}: the reused rows equal the generated ones");
    }
    assert_eq!(s1["generated_rows"], s2["generated_rows"]);

    // Two more tail items: only they are generated.
    let third = run_gen(&t, &gen_args("night3", "10", "4", &cache));
    let s3 = summary(&t, "night3");
    assert_eq!(s3["reused_from_cache"], 8, "{third}");
    assert_eq!(
        s3["accepted"].as_u64().unwrap()
            + s3["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>(),
        2
    );

    // A changed title is another prompt: that item alone is generated again.
    let items_file = t.path("ml/items/part-00000.parquet");
    let items = read_parquet(&items_file);
    let changed = i64s(&read_parquet(&t.path("out/tail_items.parquet")), "item_id")[3].unwrap();
    let titles: Vec<Option<String>> = i64s(&items, "item_id")
        .iter()
        .zip(strings(&items, "title"))
        .map(
            |(id, title)| {
                if *id == Some(changed) { Some("A Renamed Film About Lighthouses (1995)".into()) } else { title }
            },
        )
        .collect();
    let title_column = items.schema().index_of("title").unwrap();
    let mut columns = items.columns().to_vec();
    columns[title_column] = std::sync::Arc::new(arrow::array::StringArray::from(titles));
    write_parquet(&items_file, &arrow::array::RecordBatch::try_new(items.schema(), columns).unwrap());
    t.run_ok(&["analyze", "--events", "ml/events", "--items", "ml/items", "--out", "out"]);
    let fourth = run_gen(&t, &gen_args("night4", "8", "4", &cache));
    let s4 = summary(&t, "night4");
    assert_eq!(s4["reused_from_cache"], 7, "{fourth}");
    assert_eq!(s4["fingerprint"], s1["fingerprint"], "the fingerprint is the model and settings, not the items");
    for dir in ["generated", "rejects"] {
        let before = shard_rows(&t.path(&format!("night1/{dir}")), &["generation_ms"]);
        for (id, row) in shard_rows(&t.path(&format!("night4/{dir}")), &["generation_ms"]) {
            if id == changed.to_string() {
                assert_ne!(before.get(&id), Some(&row), "item {id} was not generated again");
            } else {
                assert_eq!(before.get(&id), Some(&row), "{dir}: item {id} should come from the cache");
            }
        }
    }

    // Other sampling settings are another fingerprint: no reuse.
    let hot = run_gen(
        &t,
        &gen_args("hot", "2", "2", &["--set", "generate.cache=cache", "--set", "generate.temperature=0.9"]),
    );
    assert_eq!(summary(&t, "hot")["reused_from_cache"], 0, "{hot}");
}

/// `--pipeline` reads `<output>/analyze/tail_items.parquet`, writes
/// `<output>/generate/` and caches under `<output>/cache/generate/`.
#[test]
fn the_shared_prompt_prefix_is_decoded_once_per_run() {
    let _llm = llm_lock();
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    // One attempt per item and no cache, so both runs decode the same prompts.
    let run = |dest: &str, share: &str| -> (serde_json::Value, String) {
        let sets = ["--set", "generate.max_retries=0", "--set", "generate.use_cache=false", "--set", share];
        let args = gen_args(dest, "6", "3", &sets);
        let trace = t.path(&format!("{dest}.trace"));
        let out = t.cmd().args(&args).env("TAILFORGE_GENERATE_TRACE", &trace).output().expect("spawn tailforge");
        assert!(out.status.success(), "{}", stderr(&out));
        (summary(&t, dest), std::fs::read_to_string(trace).expect("trace"))
    };
    let (shared, shared_trace) = run("shared", "generate.share_prefix=true");
    let (plain, plain_trace) = run("plain", "generate.share_prefix=false");
    let prefix = shared["shared_prefix_tokens"].as_u64().unwrap();
    assert!(prefix >= 16, "the system message and instructions are shared: {shared}");
    assert_eq!(plain["shared_prefix_tokens"], 0);
    for s in [&shared, &plain] {
        let rejected: u64 = s["rejected"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(s["accepted"].as_u64().unwrap() + rejected, 6, "{s}");
    }
    // Six prompts: the prefix is decoded once instead of six times.
    let (a, b) = (shared["prompt_tokens"].as_u64().unwrap(), plain["prompt_tokens"].as_u64().unwrap());
    assert_eq!(a, b - 5 * prefix, "shared {a}, plain {b}, prefix {prefix}");

    // The trace: the prefix decoded once into sequence 3 (after the 3 slots),
    // copied into a slot before each item, whose own tokens start at `prefix`.
    let lines: Vec<&str> = shared_trace.lines().collect();
    assert_eq!(lines[0], format!("D {prefix} 3:0:{prefix}"));
    assert_eq!(lines.iter().filter(|l| l.starts_with("K 3 ")).count(), 6, "{shared_trace}");
    let prompt_segments = |trace: &str| -> Vec<(u64, u64)> {
        let segments = trace.lines().filter(|l| l.starts_with("D ")).flat_map(|l| l.split(' ').skip(2));
        segments
            .map(|seg| seg.split(':').map(|x| x.parse::<u64>().unwrap()).collect::<Vec<_>>())
            .filter(|v| v[2] > 1)
            .map(|v| (v[1], v[2]))
            .collect()
    };
    let own = prompt_segments(&shared_trace);
    assert_eq!(own.len(), 7, "the prefix and six prompts: {shared_trace}");
    assert!(own[1..].iter().all(|&(pos, _)| pos == prefix), "{own:?}");
    let whole = prompt_segments(&plain_trace);
    assert!(whole.iter().all(|&(pos, _)| pos == 0), "{whole:?}");
    let decoded: u64 = own.iter().map(|&(_, n)| n).sum();
    assert_eq!(decoded, a);
}

#[test]
fn pipeline_mode_reads_the_analyze_output() {
    let _llm = llm_lock();
    let t = TestDir::new();
    t.run_ok(&["import", "movielens", "--src", movielens_100k().to_str().unwrap(), "--out", "ml"]);
    let model = smollm2();
    std::fs::write(
        t.path("p.toml"),
        format!(
            "output = \"root\"\n[inputs]\nevents = \"ml/events\"\nitems = \"ml/items\"\n[generate]\nmodel = {:?}\nn_threads = 1\nparallel = 2\nlimit = 2\n",
            model.to_str().unwrap()
        ),
    )
    .unwrap();
    t.run_ok(&["analyze", "--pipeline", "p.toml"]);
    let printed =
        stdout(&t.run_ok(&["generate", "--pipeline", "p.toml", "--set", "generate.limit=3", "--print-config"]));
    assert!(printed.contains("[generate]") && printed.contains("limit = 3"), "{printed}");
    let out = stdout(&t.run_ok(&["generate", "--pipeline", "p.toml"]));
    assert!(out.contains("generated for 2 items"), "{out}");
    assert!(t.path("root/generate/_SUCCESS").is_file());
    let fp = summary(&t, "root/generate")["fingerprint"].as_str().unwrap().to_string();
    assert!(t.path(&format!("root/cache/generate/{fp}")).is_dir(), "{out}");
    // Env overrides work for the section as for any other.
    let err = t.run_fails(&["generate", "--pipeline", "p.toml", "--set", "generate.parallel=0"], 2);
    assert!(err.contains("generate.parallel"), "{err}");
    let out =
        t.cmd().args(["generate", "--pipeline", "p.toml"]).env("TAILFORGE_GENERATE__TOP_P", "2").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("generate.top_p"), "{}", stderr(&out));
}

/// `kill -9` in the middle of a run, then a rerun: the result equals an
/// uninterrupted run with the same seed — same items, no duplicates,
/// identical rows. One sequence at a time (`--parallel 1`): llama.cpp's
/// floating-point sums depend on which sequences share a batch and where
/// their KV cells lie, so only single-sequence decoding is bit-identical
/// between runs that batch items differently (a resumed run does).
#[test]
fn kill_9_mid_run_then_rerun_equals_an_uninterrupted_run() {
    let _llm = llm_lock();
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    let extra = ["--set", "generate.shard_size=3"];
    run_gen(&t, &gen_args("whole", "20", "1", &extra));

    let args = gen_args("killed", "20", "1", &extra);
    let mut child = t.cmd().args(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn tailforge");
    let first_shard = t.path("killed/generated/part-00000.parquet");
    let started = Instant::now();
    while !first_shard.exists() {
        assert!(child.try_wait().expect("wait").is_none(), "tailforge exited before its first shard");
        assert!(started.elapsed() < Duration::from_secs(300), "no shard after 5 minutes");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL"); // kill(2) with SIGKILL on Unix
    child.wait().expect("reap");
    assert!(!t.path("killed/_SUCCESS").exists(), "killed before it finished");
    let partial = shard_rows(&t.path("killed/generated"), &[]).len();
    assert!((3..20).contains(&partial), "killed mid-run with {partial} rows written");

    let rerun = run_gen(&t, &args);
    assert!(rerun.contains("generated for 20 items") && !rerun.contains("(0 skipped"), "{rerun}");
    // generation_ms is wall time; every other column must match.
    for dir in ["generated", "rejects"] {
        let whole: BTreeMap<String, Vec<String>> = shard_rows(&t.path(&format!("whole/{dir}")), &["generation_ms"]);
        let resumed = shard_rows(&t.path(&format!("killed/{dir}")), &["generation_ms"]);
        assert_eq!(whole.keys().collect::<Vec<_>>(), resumed.keys().collect::<Vec<_>>(), "{dir}: same items");
        assert_eq!(whole, resumed, "{dir}: identical rows");
    }
    let n = shard_rows(&t.path("whole/generated"), &[]).len() + shard_rows(&t.path("whole/rejects"), &[]).len();
    assert_eq!(n, 20);
}
