//! The run report as a person sees it: report.html rendered by a real
//! browser (headless chromium) — it renders, shows the headline numbers and
//! the recommendations, and item text from the catalog is text in the page,
//! never markup. Skips, saying so, only when chromium is not installed
//! (`make setup` installs it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use tailforge_tests::*;

const HOSTILE_TITLE: &str = "<script>alert(1)</script>";
const HOSTILE_ITEM: i64 = 999_999;

/// The chromium binary on PATH, if any.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless chromium on `page` with `args`, killed after 60 s; returns stdout.
/// A page that runs `alert()` (item text become a script) hangs it: the kill fails the test.
fn render(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("spawn chromium");
    assert!(
        out.status.success(),
        "chromium failed or hung ({}; exit 124 = killed after 60 s, e.g. blocked by an alert() from unescaped item text):\n{}",
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

/// Replaces `column` of `batch` (row-wise values cast to the column's type).
fn with_column(batch: &RecordBatch, column: &str, values: ArrayRef) -> RecordBatch {
    let i = batch.schema().index_of(column).unwrap();
    let mut columns = batch.columns().to_vec();
    columns[i] = arrow::compute::cast(&values, batch.column(i).data_type()).unwrap();
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// Demo data plus one catalog item titled `<script>alert(1)</script>`,
/// bought last by the user with the smallest id (so it is their test target,
/// the last of their history, and that user is the report's first).
fn setup() -> TestDir {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "300", "--items", "200", "--events", "9000", "--seed", "4", "--out", "gen"]);
    let events = read_parquet(&t.path("gen/events/part-00000.parquet"));
    let first_user = i64s(&events, "user_id").into_iter().flatten().min().unwrap();
    let ts = arrow::compute::cast(events.column_by_name("ts").unwrap(), &DataType::Int64).unwrap();
    let last_ts = ts.as_any().downcast_ref::<Int64Array>().unwrap().iter().flatten().max().unwrap();
    let event = events.slice(0, 1);
    let event = with_column(&event, "user_id", Arc::new(Int64Array::from(vec![first_user])));
    let event = with_column(&event, "item_id", Arc::new(Int64Array::from(vec![HOSTILE_ITEM])));
    let event = with_column(&event, "ts", Arc::new(Int64Array::from(vec![last_ts + 1])));
    write_parquet(&t.path("gen/events/part-hostile.parquet"), &event);
    let items_file = std::fs::read_dir(t.path("gen/items")).unwrap().next().unwrap().unwrap().path();
    let item = read_parquet(&items_file).slice(0, 1);
    let item = with_column(&item, "item_id", Arc::new(Int64Array::from(vec![HOSTILE_ITEM])));
    let item = with_column(&item, "title", Arc::new(StringArray::from(vec![HOSTILE_TITLE])));
    write_parquet(&t.path("gen/items/part-hostile.parquet"), &item);
    let encoder = repo_root().join("models/all-MiniLM-L6-v2");
    std::fs::write(
        t.path("nightly.toml"),
        format!(
            "output = \"out\"\n[inputs]\nevents = \"gen/events/\"\nitems = \"gen/items/\"\n[generate]\nenabled = false\n\
             [train]\nenabled = true\nvariants = [\"id\", \"fused\"]\nepochs = 1\neval_every = 1\nmaxlen = 20\nencoder = \"{}\"\n",
            encoder.display()
        ),
    )
    .unwrap();
    t
}

#[test]
fn the_report_renders_in_a_browser_with_its_numbers_and_item_text_as_text() {
    let Some(chromium) = chromium() else {
        eprintln!("SKIPPED: chromium is not installed (make setup installs it); report.html was not rendered");
        return;
    };
    let t = setup();
    t.run_ok(&["run", "nightly.toml", "--date", "2026-11-22"]);
    let dir = t.path("out/runs/2026-11-22");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let metric = |key: &str| m["metrics"][key].as_f64().unwrap_or_else(|| panic!("{key} not in {m}"));

    let dom = render(&chromium, &t.path("profile"), &dir.join("report.html"), &["--dump-dom"]);
    assert!(dom.contains("<h1>tailforge run 2026-11-22</h1>"), "the page did not render: {dom}");
    // The headline's first row, figures as the manifest has them.
    let (id, fused) = (metric("id_test_ndcg@10_overall"), metric("fused_test_ndcg@10_overall"));
    let row = format!("<tr><td>overall</td><td>{id:.4}</td><td>{fused:.4}</td>");
    assert!(dom.contains(&row), "{row} not in the rendered headline: {dom}");
    for heading in ["Headline: SASRec fused vs SASRec id", "Head vs tail", "Training curves", "Recommendations"] {
        assert!(dom.contains(heading), "{heading} missing from the rendered page");
    }
    // The head-vs-tail chart: one legend entry per model.
    let chart = dom.split("Head vs tail").nth(1).unwrap().split("</svg>").next().unwrap();
    for model in ["MostPop", "SASRec id", "SASRec fused"] {
        assert_eq!(chart.matches(&format!(">{model}</text>")).count(), 1, "{model} in the legend: {chart}");
    }
    // The hostile title is text in the DOM (serialized escaped), in the
    // first user's history, and no element came from it: the page has no
    // script element at all.
    let escaped = "&lt;script&gt;alert(1)&lt;/script&gt;";
    let recs = dom.split("<h2>Recommendations</h2>").nth(1).unwrap();
    let first_user = recs.split("<h3>").nth(1).expect("a user in the recommendations");
    assert!(first_user.contains(&format!("{escaped} <span class=\"tail\">tail</span>")), "{first_user}");
    assert!(!dom.to_ascii_lowercase().contains("<script"), "a script element in the rendered page");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("\\<script\\>alert\\(1\\)\\</script\\> **(tail)**"), "{md}");
    assert!(!md.contains(HOSTILE_TITLE), "the title is raw in report.md");

    // A screenshot as a reviewer would see it: a real PNG of a drawn page.
    let shot = t.path("report.png");
    render(
        &chromium,
        &t.path("profile"),
        &dir.join("report.html"),
        &["--window-size=1280,2000", "--hide-scrollbars", &format!("--screenshot={}", shot.display())],
    );
    let png = std::fs::read(&shot).expect("no screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (w, h) =
        (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
    assert_eq!((w, h), (1280, 2000));
    assert!(png.len() > 40_000, "a {}-byte screenshot is a blank page", png.len());
    if let Ok(keep) = std::env::var("TAILFORGE_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
