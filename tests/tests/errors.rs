//! Bad input gives one clear message — file, column, row when known, what to
//! do — and the documented exit code: 65 for bad data, 2 for usage/config.
//! Never a panic. One test per case.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use tailforge_tests::*;

const DATA: i32 = 65;
const USAGE: i32 = 2;

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn ints(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

fn texts(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// A valid little dataset: 3 users, 3 items, 6 events.
fn good_events() -> RecordBatch {
    batch(vec![
        ("user_id", ints(&[Some(1), Some(1), Some(1), Some(2), Some(2), Some(3)])),
        ("item_id", ints(&[Some(10), Some(20), Some(30), Some(10), Some(20), Some(10)])),
        (
            "ts",
            ints(&[
                Some(1_600_000_000),
                Some(1_600_000_100),
                Some(1_600_000_200),
                Some(1_600_000_000),
                Some(1_600_000_050),
                Some(1_600_000_000),
            ]),
        ),
    ])
}

fn good_items() -> RecordBatch {
    batch(vec![("item_id", ints(&[Some(10), Some(20), Some(30)])), ("title", texts(&["Ten", "Twenty", "Thirty"]))])
}

/// Writes the fixture and runs analyze on it, expecting failure with `code`.
fn analyze_fails(
    events: Option<&RecordBatch>,
    items: Option<&RecordBatch>,
    extra: &[&str],
    code: i32,
) -> (TestDir, String) {
    let t = TestDir::new();
    if let Some(e) = events {
        write_parquet(&t.path("events/part-0.parquet"), e);
    }
    if let Some(i) = items {
        write_parquet(&t.path("items/part-0.parquet"), i);
    }
    let mut args = vec!["analyze", "--events", "events/", "--items", "items/", "--out", "out"];
    args.extend_from_slice(extra);
    let err = t.run_fails(&args, code);
    assert!(!t.path("out/_SUCCESS").exists(), "no _SUCCESS after a failure");
    (t, err)
}

#[test]
fn the_good_fixture_passes() {
    let t = TestDir::new();
    write_parquet(&t.path("events/part-0.parquet"), &good_events());
    write_parquet(&t.path("items/part-0.parquet"), &good_items());
    t.run_ok(&["analyze", "--events", "events/", "--items", "items/", "--out", "out"]);
    assert!(t.path("out/_SUCCESS").is_file());
}

#[test]
fn missing_input() {
    let (_, err) = analyze_fails(None, Some(&good_items()), &[], DATA);
    assert!(err.contains("no Parquet files") && err.contains("events input"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn corrupt_parquet() {
    let t = TestDir::new();
    std::fs::create_dir_all(t.path("events")).unwrap();
    std::fs::write(t.path("events/part-0.parquet"), b"user_id,item_id,ts\n1,2,3\n").unwrap();
    write_parquet(&t.path("items/part-0.parquet"), &good_items());
    let err = t.run_fails(&["analyze", "--events", "events/", "--items", "items/", "--out", "out"], DATA);
    assert!(err.contains("part-0.parquet") && err.contains("not a readable Parquet file"), "{err}");
}

#[test]
fn missing_column_lists_the_present_ones() {
    let events = batch(vec![("user_id", ints(&[Some(1)])), ("item_id", ints(&[Some(10)])), ("time", ints(&[Some(1)]))]);
    let (_, err) = analyze_fails(Some(&events), Some(&good_items()), &[], DATA);
    assert!(err.contains("column \"ts\""), "{err}");
    assert!(err.contains("columns present: user_id, item_id, time"), "{err}");
    assert!(err.contains("inputs.events_columns.ts"), "names the mapping to fix: {err}");
}

#[test]
fn column_mapping_fixes_a_renamed_column() {
    let t = TestDir::new();
    let e = good_events();
    let renamed =
        batch(vec![("customer", e.column(0).clone()), ("sku", e.column(1).clone()), ("time", e.column(2).clone())]);
    write_parquet(&t.path("events/part-0.parquet"), &renamed);
    write_parquet(&t.path("items/part-0.parquet"), &good_items());
    t.run_ok(&[
        "analyze",
        "--events",
        "events/",
        "--items",
        "items/",
        "--out",
        "out",
        "--set",
        "inputs.events_columns.user_id=customer",
        "--set",
        "inputs.events_columns.item_id=sku",
        "--set",
        "inputs.events_columns.ts=time",
    ]);
}

#[test]
fn wrong_type() {
    let events =
        batch(vec![("user_id", ints(&[Some(1)])), ("item_id", ints(&[Some(10)])), ("ts", texts(&["yesterday"]))]);
    let (_, err) = analyze_fails(Some(&events), Some(&good_items()), &[], DATA);
    assert!(err.contains("column \"ts\"") && err.contains("has type Utf8"), "{err}");
}

#[test]
fn null_ids_are_located_to_the_row() {
    let mut users = vec![Some(1); 6];
    users[3] = None;
    let e = good_events();
    let events = batch(vec![("user_id", ints(&users)), ("item_id", e.column(1).clone()), ("ts", e.column(2).clone())]);
    let (_, err) = analyze_fails(Some(&events), Some(&good_items()), &[], DATA);
    assert!(err.contains("events/part-0.parquet: column \"user_id\": row 4: null value"), "{err}");
}

#[test]
fn millisecond_timestamps_are_implausible_with_a_hint() {
    let e = good_events();
    let ms: Vec<Option<i64>> = super_ts(&e).iter().map(|t| Some(t * 1000)).collect();
    let events = batch(vec![("user_id", e.column(0).clone()), ("item_id", e.column(1).clone()), ("ts", ints(&ms))]);
    let (t, err) = analyze_fails(Some(&events), Some(&good_items()), &[], DATA);
    assert!(err.contains("column \"ts\": row 1: implausible event time 1600000000000"), "{err}");
    assert!(err.contains("inputs.ts_unit = \"ms\""), "{err}");
    // Following the hint works.
    t.run_ok(&["analyze", "--events", "events/", "--items", "items/", "--out", "out", "--set", "inputs.ts_unit=ms"]);
    let seq = read_parquet(&t.path("out/sequences.parquet"));
    assert_eq!(i64_lists(&seq, "ts")[0][0], 1_600_000_000);
}

fn super_ts(e: &RecordBatch) -> Vec<i64> {
    i64s(e, "ts").into_iter().map(|v| v.unwrap()).collect()
}

#[test]
fn negative_timestamps_are_implausible() {
    let e = good_events();
    let mut ts = super_ts(&e);
    ts[5] = -5;
    let events = batch(vec![
        ("user_id", e.column(0).clone()),
        ("item_id", e.column(1).clone()),
        ("ts", ints(&ts.into_iter().map(Some).collect::<Vec<_>>())),
    ]);
    let (_, err) = analyze_fails(Some(&events), Some(&good_items()), &[], DATA);
    assert!(err.contains("row 6: implausible event time -5"), "{err}");
    assert!(err.contains("analyze.validation.min_ts"), "{err}");
}

#[test]
fn empty_input() {
    let empty = good_events().slice(0, 0);
    let (_, err) = analyze_fails(Some(&empty), Some(&good_items()), &[], DATA);
    assert!(err.contains("the events input has no rows"), "{err}");
}

#[test]
fn duplicate_catalog_ids() {
    let items = batch(vec![
        ("item_id", ints(&[Some(10), Some(20), Some(20), Some(30)])),
        ("title", texts(&["a", "b", "b2", "c"])),
    ]);
    let (_, err) = analyze_fails(Some(&good_events()), Some(&items), &[], DATA);
    assert!(err.contains("1 item ids occur more than once (e.g. \"20\""), "{err}");
    assert!(err.contains("column \"item_id\""), "{err}");
}

#[test]
fn invalid_utf8_text_names_file_and_column() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let t = TestDir::new();
    write_parquet(&t.path("events/part-0.parquet"), &good_events());
    std::fs::create_dir_all(t.path("items")).unwrap();
    // The arrow writer refuses invalid UTF-8, so write the bytes at the Parquet level.
    let schema = Arc::new(
        parse_message_type("message items { required int64 item_id; required binary title (UTF8); }").unwrap(),
    );
    let file = std::fs::File::create(t.path("items/part-0.parquet")).unwrap();
    let mut w = SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build())).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    c.typed::<Int64Type>().write_batch(&[10, 20, 30], None, None).unwrap();
    c.close().unwrap();
    let mut c = rg.next_column().unwrap().unwrap();
    let titles = [
        ByteArray::from(b"Ten".to_vec()),
        ByteArray::from(vec![b'M', b'i', b's', 0xe9, b'r']),
        ByteArray::from(b"Thirty".to_vec()),
    ];
    c.typed::<ByteArrayType>().write_batch(&titles, None, None).unwrap();
    c.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();

    let err = t.run_fails(&["analyze", "--events", "events/", "--items", "items/", "--out", "out"], DATA);
    assert!(err.contains("items/part-0.parquet: column \"title\": invalid UTF-8"), "{err}");
    assert!(err.contains("re-encode"), "{err}");
}

#[test]
fn unknown_config_key_is_a_usage_error() {
    let t = TestDir::new();
    std::fs::write(t.path("p.toml"), "[analyze]\nbatch_sise = 10\n").unwrap();
    let err = t.run_fails(&["analyze", "--pipeline", "p.toml", "--print-config"], USAGE);
    assert!(
        err.contains("p.toml: analyze.batch_sise") || err.contains("p.toml: analyze: unknown field `batch_sise`"),
        "{err}"
    );
    assert!(err.contains("batch_size"), "suggests the valid keys: {err}");
}

#[test]
fn bad_override_and_missing_arguments_are_usage_errors() {
    let t = TestDir::new();
    let err = t.run_fails(&["analyze", "--set", "analyze.batch_size=many", "--print-config"], USAGE);
    assert!(err.contains("--set analyze.batch_size=many"), "{err}");
    let err = t.run_fails(&["analyze", "--events", "e", "--items", "i"], USAGE);
    assert!(err.contains("no output"), "{err}");
    let err = t.run_fails(&["analyze", "--bogus"], USAGE);
    assert!(err.contains("--bogus"), "{err}");
}

#[test]
fn env_overrides_apply() {
    let t = TestDir::new();
    let out = t
        .cmd()
        .args(["analyze", "--print-config"])
        .env("TAILFORGE_ANALYZE__LONG_TAIL__RULE", "pareto")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("rule = \"pareto\""), "{}", stdout(&out));
    let err = {
        let out = t
            .cmd()
            .args(["analyze", "--print-config"])
            .env("TAILFORGE_ANALYZE__LONG_TAIL__RULE", "zipfian")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(USAGE));
        stderr(&out)
    };
    assert!(err.contains("TAILFORGE_ANALYZE__LONG_TAIL__RULE") && err.contains("zipfian"), "{err}");
}
