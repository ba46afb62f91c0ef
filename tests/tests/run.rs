//! `tailforge run`: the run layout, the manifest, skipping finished stages on
//! a re-run, the run lock, `{date}` inputs, the latest pointer and the
//! Pushgateway push.

use tailforge_tests::*;

/// SHA-256 of a file, by coreutils (not by tailforge's own code).
fn sha256sum(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

fn json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Demo data laid out as a daily partition `logs/dt=2026-11-22/`.
fn setup() -> TestDir {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "300", "--items", "200", "--events", "9000", "--seed", "4", "--out", "gen"]);
    std::fs::create_dir_all(t.path("logs/dt=2026-11-22")).unwrap();
    for f in std::fs::read_dir(t.path("gen/events")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, t.path("logs/dt=2026-11-22").join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        t.path("nightly.toml"),
        // The LLM and training stages have their own tests below; these are about the run mechanics.
        "output = \"out\"\n[inputs]\nevents = \"logs/dt={date}/\"\nitems = \"gen/items/\"\n[generate]\nenabled = false\n[train]\nenabled = false\n",
    )
    .unwrap();
    t
}

#[test]
fn a_run_writes_its_layout_manifest_and_latest_pointer() {
    let t = setup();
    let out = t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    assert!(stdout(&out).contains("run 2026-11-22 succeeded"), "{}", stdout(&out));
    let run = "out/runs/2026-11-22";
    for f in [
        "analyze/_SUCCESS",
        "analyze/item_stats.parquet",
        "evaluate/_SUCCESS",
        "evaluate/metrics.json",
        "manifest.json",
        "report.md",
        "report.html",
        "metrics.prom",
    ] {
        assert!(t.path(&format!("{run}/{f}")).is_file(), "{run}/{f} missing");
    }
    let m = json(t.path(&format!("{run}/manifest.json")));
    assert_eq!(m["status"], "succeeded");
    assert_eq!(m["run_id"], "2026-11-22");
    assert_eq!(m["config_hash"].as_str().unwrap().len(), 64);
    assert!(m["git_revision"].as_str().is_some_and(|r| !r.is_empty()));
    let stages: Vec<(&str, &str)> = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert_eq!(stages, [("analyze", "succeeded"), ("evaluate", "succeeded")]);
    assert_eq!(m["stages"][0]["rows"]["sequences"], 300);
    assert!(m["stages"][0]["bytes"].as_u64().unwrap() > 0);
    // The {date} partition was read: its files are the manifest's inputs.
    let inputs: Vec<&str> = m["input_files"].as_array().unwrap().iter().map(|f| f["url"].as_str().unwrap()).collect();
    assert!(inputs.iter().any(|u| u.contains("logs/dt=2026-11-22/part-00000.parquet")), "{inputs:?}");
    assert_eq!(m["metrics"]["events"], 9000.0);
    assert_eq!(json(t.path("out/latest"))["run_id"], "2026-11-22");
    let prom = std::fs::read_to_string(t.path("out/metrics.prom")).unwrap();
    assert!(prom.contains("tailforge_last_success_timestamp_seconds "), "{prom}");
    assert!(
        prom.contains("tailforge_stage_rows{run_id=\"2026-11-22\",stage=\"analyze\",output=\"sequences\"} 300"),
        "{prom}"
    );
    assert!(prom.contains("tailforge_tail_ndcg_at_10{run_id=\"2026-11-22\",model=\"mostpop\"}"), "{prom}");
    assert!(prom.contains("# TYPE tailforge_cold_ndcg_at_10 gauge"), "{prom}");
    assert!(prom.contains("tailforge_cold_ndcg_at_10{run_id=\"2026-11-22\",model=\"mostpop\"} 0"), "{prom}");
    assert!(!t.path("out/_lock").exists(), "the lock is released");
    let report = std::fs::read_to_string(t.path(&format!("{run}/report.md"))).unwrap();
    assert!(report.contains("| analyze | succeeded |") && report.contains("| overall |"), "{report}");
    let html = std::fs::read_to_string(t.path(&format!("{run}/report.html"))).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "two embedded plots");
    assert!(html.contains("40 head items hold"), "the popularity plot states the cut (200 items × 0.2)");
}

#[test]
fn a_rerun_skips_finished_stages_and_force_redoes_them() {
    let t = setup();
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    let first = json(t.path("out/runs/2026-11-22/manifest.json"));
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    let second = json(t.path("out/runs/2026-11-22/manifest.json"));
    for k in 0..2 {
        assert_eq!(second["stages"][k]["status"], "skipped");
        assert_eq!(second["stages"][k]["fingerprint"], first["stages"][k]["fingerprint"]);
    }
    // A different configuration is a different fingerprint: the stages run again.
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--set", "analyze.long_tail.share=0.3"]);
    let third = json(t.path("out/runs/2026-11-22/manifest.json"));
    assert_eq!(third["stages"][0]["status"], "succeeded");
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--set", "analyze.long_tail.share=0.3", "--force"]);
    assert_eq!(json(t.path("out/runs/2026-11-22/manifest.json"))["stages"][1]["status"], "succeeded");
}

#[test]
fn a_file_that_lands_late_in_the_partition_is_not_skipped() {
    let t = setup();
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    let first = json(t.path("out/runs/2026-11-22/manifest.json"));
    assert_eq!(first["metrics"]["events"], 9000.0);
    // A second file lands in tonight's partition after the first run (here a
    // copy of the first, so the events double); same configuration, same URLs.
    let part = t.path("logs/dt=2026-11-22/part-00000.parquet");
    std::fs::copy(&part, t.path("logs/dt=2026-11-22/part-late.parquet")).unwrap();
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    let second = json(t.path("out/runs/2026-11-22/manifest.json"));
    assert_eq!(second["stages"][0]["status"], "succeeded", "analyze reran");
    assert_ne!(second["stages"][0]["fingerprint"], first["stages"][0]["fingerprint"]);
    assert_eq!(second["metrics"]["events"], 18000.0, "the late file was read");
    assert_eq!(second["input_files"].as_array().unwrap().len(), first["input_files"].as_array().unwrap().len() + 1);
}

#[test]
fn a_held_lock_keeps_a_second_run_off_the_output() {
    let t = setup();
    std::fs::create_dir_all(t.path("out")).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    std::fs::write(
        t.path("out/_lock"),
        format!("{{\"run_id\":\"other\",\"pid\":1,\"host\":\"h\",\"acquired_at\":{now}}}"),
    )
    .unwrap();
    let err = t.run_fails(&["run", "nightly.toml", "--date", "2026-11-22"], 1);
    assert!(err.contains("another run holds the lock (run other"), "{err}");
    // A stale lock is taken over.
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--stale-lock-after", "0"]);
    assert!(!t.path("out/_lock").exists());
}

#[test]
fn a_failed_run_keeps_latest_and_resumes_after_the_fix() {
    let t = setup();
    // No partition for this date: analyze fails with a data error.
    let err = t.run_fails(&["run", "nightly.toml", "--date", "2026-11-23"], 65);
    assert!(err.contains("no Parquet files"), "{err}");
    let m = json(t.path("out/runs/2026-11-23/manifest.json"));
    assert_eq!(m["status"], "failed");
    assert!(!t.path("out/latest").exists(), "latest only moves on success");
    assert!(!t.path("out/_lock").exists(), "the lock is released after a failure");
    std::fs::create_dir_all(t.path("logs/dt=2026-11-23")).unwrap();
    for f in std::fs::read_dir(t.path("gen/events")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, t.path("logs/dt=2026-11-23").join(f.file_name().unwrap())).unwrap();
    }
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-23"]);
    assert_eq!(json(t.path("out/latest"))["run_id"], "2026-11-23");
    t.run_fails(&["run", "nightly.toml", "--date", "2026-13-01"], 2);
}

/// The generate stage in a run: tail items of the run's analyze output, rows
/// in the manifest and metrics, a report section; the next night's run into
/// another run directory reuses the rows from `<output>/cache/generate`.
#[test]
fn the_generate_stage_runs_after_analyze_and_the_next_night_reuses_its_rows() {
    let _llm = llm_lock();
    let t = setup();
    for date in ["2026-11-22", "2026-11-23"] {
        std::fs::create_dir_all(t.path(&format!("logs/dt={date}"))).unwrap();
        for f in std::fs::read_dir(t.path("gen/events")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, t.path(&format!("logs/dt={date}")).join(f.file_name().unwrap())).unwrap();
        }
    }
    let model = smollm2();
    let sets = [
        "--set".to_string(),
        "generate.enabled=true".to_string(),
        "--set".to_string(),
        format!("generate.model={}", model.display()),
        "--set".to_string(),
        "generate.limit=4".to_string(),
        "--set".to_string(),
        "generate.n_threads=1".to_string(),
        "--set".to_string(),
        "generate.parallel=4".to_string(),
    ];
    let run = |date: &str| {
        let mut args = vec!["run", "nightly.toml", "--date", date];
        args.extend(sets.iter().map(String::as_str));
        t.run_ok(&args)
    };
    let out = run("2026-11-22");
    assert!(stdout(&out).contains("generate"), "{}", stdout(&out));
    let dir = "out/runs/2026-11-22";
    assert!(t.path(&format!("{dir}/generate/_SUCCESS")).is_file());
    let m = json(t.path(&format!("{dir}/manifest.json")));
    let names: Vec<&str> = m["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["analyze", "generate", "evaluate"]);
    let rows = &m["stages"][1]["rows"];
    let (accepted, rejected) = (rows["generated"].as_u64().unwrap(), rows["rejects"].as_u64().unwrap());
    assert_eq!(accepted + rejected, 4, "{m}");
    assert_eq!(accepted as usize, shard_rows(&t.path(&format!("{dir}/generate/generated")), &[]).len());
    assert_eq!(m["metrics"]["generate_items"], 4.0);
    assert!(m["metrics"]["generate_generated_tok_s"].as_f64().unwrap() > 0.0, "{m}");
    let prom = std::fs::read_to_string(t.path(&format!("{dir}/metrics.prom"))).unwrap();
    assert!(
        prom.contains(&format!("tailforge_generate_items{{run_id=\"2026-11-22\",outcome=\"accepted\"}} {accepted}")),
        "{prom}"
    );
    assert!(prom.contains("tailforge_generate_tokens_per_second{run_id=\"2026-11-22\"} "), "{prom}");
    assert!(prom.contains("stage=\"generate\",output=\"generated\""), "{prom}");
    let report = std::fs::read_to_string(t.path(&format!("{dir}/report.md"))).unwrap();
    assert!(report.contains("## Generation") && report.contains("generated tok/s"), "{report}");
    let html = std::fs::read_to_string(t.path(&format!("{dir}/report.html"))).unwrap();
    let section = html.split("<h2>Generation</h2>").nth(1).expect("a generation section");
    let section = section.split("<h2>").next().unwrap();
    // Generation over time: summary.json samples the run from its start to its last item.
    let summary = json(t.path(&format!("{dir}/generate/summary.json")));
    let progress = summary["progress"].as_array().expect("a progress record");
    let field = |p: &serde_json::Value, k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} in {p}"));
    assert_eq!(field(&progress[0], "items_done"), 0.0, "{summary}");
    assert_eq!(field(progress.last().unwrap(), "items_done"), 4.0, "{summary}");
    for w in progress.windows(2) {
        for k in ["seconds", "items_done", "generated_tokens"] {
            assert!(field(&w[1], k) >= field(&w[0], k), "{k} went back: {summary}");
        }
    }
    let tokens = field(progress.last().unwrap(), "generated_tokens");
    assert!(tokens > 0.0 && tokens <= field(&summary, "generated_tokens"), "{summary}");
    assert_eq!(section.matches("<svg").count(), 2, "items done and tok/s over time: {section}");
    assert!(section.contains("items done") && section.contains("generated tok/s"), "{section}");
    // The examples table: one row per accepted item (at most 10), each with its
    // grounding as written in the shards, and the item text escaped.
    let generated = read_parquet(&t.path(&format!("{dir}/generate/generated/part-00000.parquet")));
    let shares = f64s(&generated, "keyword_grounding");
    let examples = section.split("<table class=\"examples\">").nth(1).unwrap_or("").split("</table>").next().unwrap();
    assert_eq!(examples.matches("<tr><td>").count(), (accepted as usize).min(10), "{section}");
    // The rejects: one row per reason with its count in rejects/.
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for row in shard_rows(&t.path(&format!("{dir}/generate/rejects")), &[]).values() {
        let reason = row.iter().find_map(|c| c.strip_prefix("reason=")).unwrap();
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    assert_eq!(reasons.values().sum::<usize>() as u64, rejected);
    assert!(section.contains("<h3>Rejects</h3>"), "{section}");
    for (reason, n) in &reasons {
        assert!(section.contains(&format!("<tr><td>{reason}</td><td>{n}</td>")), "{reason} {n}: {section}");
    }
    for (d, k) in strings(&generated, "description").iter().zip(&shares).take(10) {
        let d = d
            .as_deref()
            .unwrap()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        let row = section.split("<tr><td>").find(|r| r.contains(&d)).unwrap_or_else(|| panic!("{d} in {section}"));
        assert!(row.contains(&format!("{:.2} / ", k.unwrap())), "{row}");
    }
    let grounded = m["metrics"]["generate_keywords_grounded"].as_f64().expect("grounding in the manifest");
    assert!(
        prom.contains(&format!("tailforge_generate_keywords_grounded{{run_id=\"2026-11-22\"}} {grounded}")),
        "{prom}"
    );
    assert_eq!(m["models"][format!("generate: {}", model.display())], sha256sum(&model), "{m}");

    // A re-run of the same night skips the finished stage.
    run("2026-11-22");
    assert_eq!(json(t.path(&format!("{dir}/manifest.json")))["stages"][1]["status"], "skipped");

    // The next night: a new run directory, same tail items, nothing generated.
    run("2026-11-23");
    let m2 = json(t.path("out/runs/2026-11-23/manifest.json"));
    assert_eq!(m2["stages"][1]["status"], "succeeded");
    assert_eq!(m2["metrics"]["generate_reused_from_cache"], 4.0, "{m2}");
    assert_eq!(m2["metrics"]["generate_new_items"], 0.0);
    let html2 = std::fs::read_to_string(t.path("out/runs/2026-11-23/report.html")).unwrap();
    assert!(html2.contains("No generation over time to show: nothing was generated in this run"), "{html2}");
    assert_eq!(
        shard_rows(&t.path(&format!("{dir}/generate/generated")), &[]),
        shard_rows(&t.path("out/runs/2026-11-23/generate/generated"), &[])
    );

    // generate.enabled = false leaves the stage out.
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-23", "--run-id", "no-gen"]);
    let m3 = json(t.path("out/runs/no-gen/manifest.json"));
    assert!(m3["stages"].as_array().unwrap().iter().all(|s| s["name"] != "generate"), "{m3}");
}

/// The train stage in a run: one stage per variant under `train/<variant>/`,
/// their metrics in the manifest, metrics.prom and the report (with training
/// curves); a re-run skips them; the next night warm-starts from this one.
#[test]
fn the_train_stage_trains_each_variant_and_the_next_night_warm_starts() {
    let t = setup();
    std::fs::create_dir_all(t.path("logs/dt=2026-11-23")).unwrap();
    for f in std::fs::read_dir(t.path("gen/events")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, t.path("logs/dt=2026-11-23").join(f.file_name().unwrap())).unwrap();
    }
    let encoder = format!("train.encoder={}", repo_root().join("models/all-MiniLM-L6-v2").display());
    let sets = [
        "train.enabled=true",
        "train.variants=[\"id\", \"fused\"]",
        "train.epochs=2",
        "train.eval_every=1",
        "train.maxlen=20",
        "train.warm_start=\"previous\"",
        &encoder,
    ];
    let run = |date: &str| {
        let mut args = vec!["run", "nightly.toml", "--date", date];
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        t.run_ok(&args)
    };
    run("2026-11-22");
    let dir = "out/runs/2026-11-22";
    let m = json(t.path(&format!("{dir}/manifest.json")));
    let names: Vec<&str> = m["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["analyze", "train_id", "train_fused", "evaluate"]);
    for v in ["id", "fused"] {
        assert!(t.path(&format!("{dir}/train/{v}/_SUCCESS")).is_file());
        let metrics = json(t.path(&format!("{dir}/train/{v}/metrics.json")));
        assert_eq!(metrics["epochs"], 2);
        assert_eq!(metrics["warm_started"], false, "the first night has nothing to start from");
        assert_eq!(
            m["metrics"][format!("{v}_test_ndcg@10_tail")].as_f64().unwrap(),
            metrics["test"]["full"]["tail"]["ndcg@10"].as_f64().unwrap()
        );
    }
    let prom = std::fs::read_to_string(t.path(&format!("{dir}/metrics.prom"))).unwrap();
    assert!(prom.contains("tailforge_tail_ndcg_at_10{run_id=\"2026-11-22\",model=\"sasrec_fused\"}"), "{prom}");
    assert!(prom.contains("tailforge_cold_ndcg_at_10{run_id=\"2026-11-22\",model=\"sasrec_fused\"}"), "{prom}");
    let report = std::fs::read_to_string(t.path(&format!("{dir}/report.md"))).unwrap();
    assert!(report.contains("SASRec `fused` under eval-v1"), "{report}");
    // Each variant's tables are subsections of its section.
    assert!(report.contains("\n### fused (best epoch ") && !report.contains("\n## fused (best epoch "), "{report}");
    assert!(report.contains("\n#### test\n"), "{report}");
    let html = std::fs::read_to_string(t.path(&format!("{dir}/report.html"))).unwrap();
    assert!(html.contains("Training curves") && html.contains("SASRec fused"), "report.html lacks the train sections");
    // Recommendations: 5 test users; the first is the smallest evaluated user
    // id, and its rank-1 rows are each model's recommendations.parquet rank 1,
    // by title, marked when a tail item.
    let recs_md = report.split("\n## Recommendations\n").nth(1).expect("a recommendations section");
    assert_eq!(recs_md.matches("\n### User ").count(), 5, "{recs_md}");
    let split = read_parquet(&t.path(&format!("{dir}/analyze/split.parquet")));
    let (users, tests) = (i64s(&split, "user_id"), i64s(&split, "test_item"));
    let first = users.iter().zip(&tests).filter(|(_, t)| t.is_some()).filter_map(|(u, _)| *u).min().unwrap();
    let item_text = read_parquet(&t.path(&format!("{dir}/analyze/item_text.parquet")));
    let titles: std::collections::HashMap<i64, String> = i64s(&item_text, "item_id")
        .into_iter()
        .zip(strings(&item_text, "title"))
        .filter_map(|(i, t)| Some((i?, t?)))
        .collect();
    let stats = read_parquet(&t.path(&format!("{dir}/analyze/item_stats.parquet")));
    let tail: std::collections::HashSet<i64> = i64s(&stats, "item_id")
        .into_iter()
        .zip(strings(&stats, "group"))
        .filter(|(_, g)| g.as_deref() == Some("tail"))
        .filter_map(|(i, _)| i)
        .collect();
    let top1 = |v: &str| {
        let recs = read_parquet(&t.path(&format!("{dir}/train/{v}/recommendations.parquet")));
        let (u, r, i) = (i64s(&recs, "user_id"), i64s(&recs, "rank"), i64s(&recs, "item_id"));
        let k = (0..recs.num_rows()).find(|&k| u[k] == Some(first) && r[k] == Some(1)).unwrap();
        let item = i[k].unwrap();
        let escaped: String = titles[&item]
            .chars()
            .flat_map(|c| if "\\`*_[]()#|<>!~{}".contains(c) { vec!['\\', c] } else { vec![c] })
            .collect();
        format!("{escaped}{}", if tail.contains(&item) { " **(tail)**" } else { "" })
    };
    let block =
        recs_md.split(&format!("\n### User {first}\n")).nth(1).expect("the first user").split("\n### ").next().unwrap();
    let rank1 = block.lines().find(|l| l.starts_with("| 1 | ")).expect("a rank-1 row");
    let (id1, fused1) = (top1("id"), top1("fused"));
    assert!(rank1.starts_with(&format!("| 1 | {id1} | ")), "{id1} first in {rank1}");
    assert!(rank1.contains(&format!(" | {fused1} | ")), "{fused1} in {rank1}");
    assert_eq!(block.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| rank")).count(), 5, "{block}");
    let weights = repo_root().join("models/all-MiniLM-L6-v2/model.safetensors");
    let key = format!("text encoder: {}", repo_root().join("models/all-MiniLM-L6-v2").display());
    assert_eq!(m["models"][key], sha256sum(&weights), "{m}");

    // The same night again: nothing to redo.
    run("2026-11-22");
    let again = json(t.path(&format!("{dir}/manifest.json")));
    assert!(again["stages"].as_array().unwrap().iter().all(|s| s["status"] == "skipped"), "{again}");

    // The next night's catalog has 3 new items (ids 900001..=900003, events
    // of existing users): known items keep their learned rows, new ones start
    // as configured, and the manifest says how many of each.
    let night1 = read_parquet(&t.path("logs/dt=2026-11-23/part-00000.parquet"));
    let extra = night1.slice(0, 30);
    let ids: arrow::array::ArrayRef =
        std::sync::Arc::new(arrow::array::Int64Array::from_iter_values((0..30).map(|k| 900_001 + k % 3)));
    let item_col = extra.schema().index_of("item_id").unwrap();
    let mut columns = extra.columns().to_vec();
    columns[item_col] = arrow::compute::cast(&ids, extra.column(item_col).data_type()).unwrap();
    let extra = arrow::array::RecordBatch::try_new(extra.schema(), columns).unwrap();
    write_parquet(&t.path("logs/dt=2026-11-23/part-new-items.parquet"), &extra);
    run("2026-11-23");
    let before = read_parquet(&t.path(&format!("{dir}/train/id/item_embeddings.parquet")));
    let after = read_parquet(&t.path("out/runs/2026-11-23/train/id/item_embeddings.parquet"));
    assert_eq!(after.num_rows(), before.num_rows() + 3);
    let manifest = json(t.path("out/runs/2026-11-23/manifest.json"));
    for v in ["id", "fused"] {
        let next = json(t.path(&format!("out/runs/2026-11-23/train/{v}/metrics.json")));
        assert_eq!(next["warm_started"], true, "{next}");
        assert_eq!(next["warm_start_items"]["carried"].as_u64(), Some(before.num_rows() as u64), "{v}");
        assert_eq!(next["warm_start_items"]["new"], 3, "{v}");
        assert_eq!(manifest["metrics"][format!("{v}_warm_start_new_items")], 3.0);
    }

    // The report opens with the headline: fused against id per group, the
    // ratio recomputed here from the manifest, and the last night's figure.
    let report = std::fs::read_to_string(t.path("out/runs/2026-11-23/report.md")).unwrap();
    let first_section = report.split("\n## ").nth(1).unwrap();
    assert!(first_section.starts_with("Headline: SASRec fused vs SASRec id"), "{report}");
    let metric = |m: &serde_json::Value, key: &str| m["metrics"][key].as_f64().unwrap();
    let (fused, id) = (metric(&manifest, "fused_test_ndcg@10_overall"), metric(&manifest, "id_test_ndcg@10_overall"));
    let last = metric(&m, "fused_test_ndcg@10_overall");
    let row = format!("| overall | {id:.4} | {fused:.4} | {:.2}× | {last:.4}", fused / id);
    assert!(first_section.contains(&row), "{row} not in {report}");
    assert!(first_section.contains("the last run (2026-11-22)"), "{report}");
    let html = std::fs::read_to_string(t.path("out/runs/2026-11-23/report.html")).unwrap();
    let headline_at = html.find("Headline: SASRec fused vs SASRec id").expect("report.html has no headline");
    assert!(headline_at < html.find("Training curves").unwrap(), "the headline is not first in report.html");
}

#[test]
fn a_run_pushes_its_metrics_to_a_pushgateway_and_a_dead_one_does_not_fail_it() {
    let t = setup();
    let (port, server) = fake_pushgateway("200 OK");
    let gateway = format!("run.pushgateway=http://127.0.0.1:{port}/");
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--set", &gateway, "--set", "run.pushgateway_job=shop"]);
    let request = server.join().unwrap();
    assert!(request.starts_with("PUT /metrics/job/shop HTTP/1.1\r\n"), "{request}");
    assert!(request.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{request}");
    let prom = std::fs::read_to_string(t.path("out/runs/2026-11-22/metrics.prom")).unwrap();
    assert!(request.ends_with(&prom), "the body is the run's metrics.prom:\n{request}");
    assert!(prom.contains("tailforge_last_success_timestamp_seconds "));

    // Nobody listens there any more: the run still succeeds, with a warning.
    let out = t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--run-id", "second", "--set", &gateway]);
    assert!(stderr(&out).contains("could not push metrics to the Pushgateway"), "{}", stderr(&out));
}

/// A Pushgateway that answers with an HTTP error (here 500, as one behind a
/// failing proxy would) does not fail the finished run: the warning names the
/// status. Basic-auth credentials in the gateway URL never reach the log.
#[test]
fn a_pushgateway_answering_with_an_error_is_a_warning_without_the_credentials() {
    let t = setup();
    let (port, server) = fake_pushgateway("500 Internal Server Error");
    let gateway = format!("run.pushgateway=http://nightly:s3cr3t-pw@127.0.0.1:{port}/");
    let out = t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22", "--set", &gateway]);
    let request = server.join().unwrap();
    assert!(request.starts_with("PUT /metrics/job/tailforge HTTP/1.1\r\n"), "{request}");
    // reqwest sends the URL's userinfo as basic auth: base64("nightly:s3cr3t-pw").
    assert!(request.contains("bmlnaHRseTpzM2NyM3QtcHc="), "credentials sent as basic auth: {request}");
    let err = stderr(&out);
    assert!(err.contains("could not push metrics to the Pushgateway") && err.contains("500"), "{err}");
    assert!(!err.contains("s3cr3t-pw"), "the password reached the log: {err}");
    for file in files_below(&t.path("out")) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("s3cr3t-pw"), "the password is in {}", file.display());
    }
    let manifest = json(t.path("out/runs/2026-11-22/manifest.json"));
    assert_eq!(manifest["status"], "succeeded", "{manifest}");
}
