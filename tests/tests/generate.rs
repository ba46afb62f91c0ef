//! `tailforge generate` through the binary on real MovieLens-100k tail items
//! with the real default model (SmolLM2-135M, installed by `make setup`).
//! The crate's own tests cover batching, grammar, injection and resume in
//! depth; this checks the command a user runs.

use tailforge_tests::*;

#[test]
fn generate_writes_validated_rows_for_tail_items_and_resumes() {
    let model = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(model.is_file(), "{} missing: run `make setup`", model.display());
    let t = TestDir::new();
    analyze_movielens(&t, &[]);
    let model = model.to_str().unwrap();
    let args = |limit: &'static str| {
        vec![
            "generate",
            "--input",
            "out",
            "--out",
            "gen",
            "--limit",
            limit,
            "--parallel",
            "3",
            "--threads",
            "1",
            "--model",
            model,
        ]
    };
    let first = t.run_ok(&args("3"));
    assert!(stdout(&first).contains("generated for 3 items (0 skipped"), "{}", stdout(&first));
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
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(t.path("gen/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["items"], 3);

    // A second run with a higher limit skips what is done and adds the rest.
    let second = t.run_ok(&args("5"));
    assert!(stdout(&second).contains("generated for 5 items (3 skipped"), "{}", stdout(&second));
}
