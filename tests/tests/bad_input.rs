//! Bad input, as one table. Each row is an input the test writes into a
//! fresh temp dir, the `tailforge` command, the exit code it must give
//! (0 ok, 2 usage/config, 65 bad input data, 1 storage/I/O/internal) and the
//! words its message must hold: file, column and row where they apply, and
//! what to do. Every row also asserts that nothing panicked, and a failed
//! command left no `out/_SUCCESS`. Some rows check the outputs further.
//!
//! All rows run in one test; failures are collected and printed together as
//! a table. `BAD_INPUT_ROWS=<word>` runs only the rows whose name holds it.
//!
//! Nothing here reaches the network: every row runs with
//! `AWS_EC2_METADATA_DISABLED=true` and with the instance-metadata endpoint
//! pointed at a local listener that must see no connection; the S3 rows talk
//! to a closed local port or to a tiny local HTTP responder that answers
//! every request as S3 answers for a missing bucket (moto is not needed for
//! a fixed error reply).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::{Field, Schema};
use tailforge_tests::*;

const OK: i32 = 0;
const INTERNAL: i32 = 1;
const USAGE: i32 = 2;
const DATA: i32 = 65;

const ANALYZE: &[&str] = &["analyze", "--events", "events/", "--items", "items/", "--out", "out"];

/// One row of the table.
struct Row {
    name: &'static str,
    /// Writes the input; returns the environment and `{placeholders}` of the command.
    input: fn(&TestDir) -> Setup,
    args: &'static [&'static str],
    code: i32,
    /// Words the message must hold: stderr, or stdout and stderr for code 0.
    words: &'static [&'static str],
    /// A further check of what the command wrote (or must not have done).
    check: Check,
}

type Check = fn(&TestDir, &Setup) -> Result<(), String>;

fn row(
    name: &'static str,
    input: fn(&TestDir) -> Setup,
    args: &'static [&'static str],
    code: i32,
    words: &'static [&'static str],
) -> Row {
    Row { name, input, args, code, words, check: |_, _| Ok(()) }
}

impl Row {
    fn then(mut self, check: Check) -> Row {
        self.check = check;
        self
    }
}

#[test]
fn bad_input_table() {
    let rows = table();
    assert!(rows.len() >= 30, "the table must keep at least 30 rows");
    let only = std::env::var("BAD_INPUT_ROWS").ok();
    let mut report = Vec::new();
    let mut failed = 0;
    for r in rows.iter().filter(|r| only.as_deref().is_none_or(|w| r.name.contains(w))) {
        let result = run_row(r);
        if result.is_err() {
            failed += 1;
        }
        report.push((r.name, r.code, result));
    }
    let mut table = String::from("| row | expected exit | result |\n|---|---|---|\n");
    for (name, code, result) in &report {
        let cell = match result {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {}", e.replace('\n', "\n    ")),
        };
        table.push_str(&format!("| {name} | {code} | {cell} |\n"));
    }
    println!("{table}");
    assert!(failed == 0, "{failed} of {} rows failed:\n{table}", report.len());
}

/// The table: name, input, command, exit code, words of the message, and
/// (`.then`) a check of the outputs.
#[rustfmt::skip]
fn table() -> Vec<Row> {
    const P: &[&str] = &["analyze", "--pipeline", "p.toml", "--print-config"];
    const S3: &[&str] = &["analyze", "--events", "s3://tailforge-test/events/", "--items", "s3://tailforge-test/items/", "--out", "s3://tailforge-test/out/"];
    vec![
        // --- analyze: the cases of the former tests/tests/errors.rs ------------------------------------
        row("good fixture", good, ANALYZE, OK, &["analyzed 6 events of 3 users over 3 catalog items"]).then(succeeded),
        row("no events files", items_only, ANALYZE, DATA, &["events/", "no Parquet files", "events input", "hint:"]),
        row("CSV named .parquet", csv_as_parquet, ANALYZE, DATA, &["events/part-0.parquet", "not a readable Parquet file", "hint:"]),
        row("missing column ts", ts_renamed, ANALYZE, DATA, &["events/part-0.parquet", "column \"ts\"", "columns present: user_id, item_id, time", "inputs.events_columns.ts"]),
        row("renamed columns mapped with --set", all_renamed, &["analyze", "--events", "events/", "--items", "items/", "--out", "out", "--set", "inputs.events_columns.user_id=customer", "--set", "inputs.events_columns.item_id=sku", "--set", "inputs.events_columns.ts=time"], OK, &["analyzed 6 events"]).then(succeeded),
        row("ts is text", ts_text, ANALYZE, DATA, &["events/part-0.parquet", "column \"ts\"", "has type Utf8", "hint:"]),
        row("null user id", null_user, ANALYZE, DATA, &["events/part-0.parquet: column \"user_id\": row 4: null value", "hint: drop or repair"]),
        row("ms timestamps read as seconds", ms_ts, ANALYZE, DATA, &["events/part-0.parquet: column \"ts\": row 1: implausible event time 1600000000000", "inputs.ts_unit = \"ms\""]),
        row("ms timestamps with ts_unit=ms", ms_ts, &["analyze", "--events", "events/", "--items", "items/", "--out", "out", "--set", "inputs.ts_unit=ms"], OK, &["analyzed 6 events"]).then(seconds_in_sequences),
        row("negative timestamp", negative_ts, ANALYZE, DATA, &["events/part-0.parquet: column \"ts\": row 6: implausible event time -5", "analyze.validation.min_ts"]),
        row("events with 0 rows", empty_events, ANALYZE, DATA, &["events/", "the events input has no rows", "hint:"]),
        row("duplicate catalog ids", duplicate_catalog_ids, ANALYZE, DATA, &["items/", "column \"item_id\"", "1 item ids occur more than once (e.g. \"20\"", "de-duplicate"]),
        row("invalid UTF-8 title", invalid_utf8_title, ANALYZE, DATA, &["items/part-0.parquet: column \"title\": invalid UTF-8", "re-encode"]), // no row: Arrow validates a whole page at once, so the failing batch does not tell it
        row("unknown pipeline key", |t| toml(t, "[analyze]\nbatch_sise = 10\n"), P, USAGE, &["p.toml: analyze.batch_sise", "did you mean `batch_size`?"]),
        row("bad --set value", nothing, &["analyze", "--set", "analyze.batch_size=many", "--print-config"], USAGE, &["--set analyze.batch_size=many", "analyze.batch_size"]),
        row("no --out", good, &["analyze", "--events", "events/", "--items", "items/"], USAGE, &["no output", "--out"]),
        row("unknown flag", nothing, &["analyze", "--bogus"], USAGE, &["--bogus"]),
        row("env override", |_| Setup::env(&[("TAILFORGE_ANALYZE__LONG_TAIL__RULE", "pareto")]), &["analyze", "--print-config"], OK, &["rule = \"pareto\""]),
        row("bad env override", |_| Setup::env(&[("TAILFORGE_ANALYZE__LONG_TAIL__RULE", "zipfian")]), &["analyze", "--print-config"], USAGE, &["TAILFORGE_ANALYZE__LONG_TAIL__RULE", "zipfian"]),
        // --- analyze: files and partitions -------------------------------------------------------------
        row("zero-row file among good ones", zero_row_file, ANALYZE, OK, &["events/part-1.parquet", "has no rows", "analyzed 6 events"]).then(six_events_two_files),
        row("non-Parquet files in a partition", non_parquet_in_partition, ANALYZE, OK, &["analyzed 6 events"]).then(one_events_file),
        // --- analyze: odd but legal rows ---------------------------------------------------------------
        row("duplicate (user, item, ts), keep_all", duplicate_events, ANALYZE, OK, &["analyzed 7 events"]).then(|t, _| summary_is(t, "events", 7)),
        row("duplicate (user, item, ts), drop_exact", duplicate_events, &["analyze", "--events", "events/", "--items", "items/", "--out", "out", "--set", "analyze.dedup=drop_exact"], OK, &["analyzed 6 events"]).then(|t, _| summary_is(t, "events", 6)),
        row("events name items not in the catalog", event_item_not_in_catalog, ANALYZE, OK, &["events mention items the catalog lacks"]).then(|t, _| summary_is(t, "items_missing_from_catalog", 1)),
        row("catalog items without events", catalog_item_without_events, ANALYZE, OK, &["over 4 catalog items", "1 never interacted with"]).then(|t, _| summary_is(t, "cold_items", 1)),
        row("catalog with 0 items", empty_catalog, ANALYZE, DATA, &["items/", "the items input has no rows", "hint:"]),
        row("timestamps in the future", future_ts, ANALYZE, OK, &["events/part-0.parquet: column \"ts\": row 3:", "in the future", "analyze.validation.max_ts"]).then(succeeded),
        row("1 MiB title", |t| title(t, &"x".repeat(1 << 20)), ANALYZE, OK, &["analyzed 6 events"]).then(title_kept),
        row("whitespace-only title", |t| title(t, " \t  "), ANALYZE, OK, &["analyzed 6 events"]).then(title_kept),
        row("NUL and bidi overrides in a title", |t| title(t, "Safe\0Title \u{202E}txt.exe\u{202C} \u{2066}x\u{2069}"), ANALYZE, OK, &["analyzed 6 events"]).then(title_kept),
        // --- configuration -----------------------------------------------------------------------------
        row("pipeline value of the wrong type", |t| toml(t, "[analyze]\nbatch_size = \"big\"\n"), P, USAGE, &["p.toml: analyze.batch_size", "invalid type"]),
        row("pipeline with a duplicate key", |t| toml(t, "[analyze]\nbatch_size = 1\nbatch_size = 2\n"), P, USAGE, &["p.toml", "duplicate key", "batch_size", "line 3"]),
        row("pipeline with an unknown section", |t| toml(t, "[analyse]\nbatch_size = 1\n"), P, USAGE, &["p.toml", "unknown field `analyse`", "did you mean `analyze`?"]),
        row("--set of a key that does not exist", nothing, &["analyze", "--set", "analyze.long_tail.rules=pareto", "--print-config"], USAGE, &["--set analyze.long_tail.rules=pareto", "unknown field `rules`", "did you mean `rule`?"]),
        // --- outputs -----------------------------------------------------------------------------------
        row("output path is a file", out_is_a_file, ANALYZE, USAGE, &["/out", "is a file, not a directory", "--out"]).then(file_untouched),
        row("unwritable output", unwritable_output, &["analyze", "--events", "events/", "--items", "items/", "--out", "{out}"], INTERNAL, &["{out}", "cannot write", "check that the output location is writable"]),
        // --- object stores -----------------------------------------------------------------------------
        row("s3:// without credentials", no_credentials, S3, USAGE, &["s3://tailforge-test/events/", "no AWS credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"]),
        row("s3:// with a wrong endpoint", wrong_endpoint, S3, INTERNAL, &["s3://tailforge-test/", "cannot reach the S3 endpoint http://127.0.0.1:{port}", "AWS_ENDPOINT"]),
        row("s3:// bucket that does not exist", missing_bucket, &["analyze", "--events", "s3://no-such-bucket/events/", "--items", "s3://no-such-bucket/items/", "--out", "s3://no-such-bucket/out/"], USAGE, &["s3://no-such-bucket/events/", "bucket \"no-such-bucket\" does not exist at http://127.0.0.1:{port}", "AWS_ENDPOINT"]),
        // --- models ------------------------------------------------------------------------------------
        row("truncated GGUF", |t| model_file(t, &truncated_gguf()), GENERATE, USAGE, &["model.gguf", "is the file a complete GGUF?", "generate.model", "make setup"]),
        row("not a GGUF", |t| model_file(t, b"{\"this is\": \"json, not a model\"}"), GENERATE, USAGE, &["model.gguf", "not a GGUF model file", "generate.model", "make setup"]),
        row("corrupt tokenizer.json", corrupt_tokenizer, &["evaluate", "--input", "an", "--model", "text-knn", "--set", "train.encoder=enc"], USAGE, &["enc/tokenizer.json", "train.encoder"]),
        row("--augment from another dataset", augment_from_elsewhere, &["train", "--input", "an", "--augment", "gen", "--out", "out", "--variant", "id", "--epochs", "1", "--threads", "1"], DATA, &["gen/generated/part-00000.parquet: column \"item_id\"", "none of its 2 items", "another dataset", "--augment"]),
    ]
}

const GENERATE: &[&str] =
    &["generate", "--input", "an", "--out", "out", "--model", "model.gguf", "--limit", "1", "--threads", "1"];

fn run_row(r: &Row) -> Result<(), String> {
    let t = TestDir::new();
    let setup = (r.input)(&t);
    let args: Vec<String> = r.args.iter().map(|a| setup.fill(a)).collect();
    let mut cmd = t.cmd();
    // Never a real cloud: no inherited AWS settings, no instance metadata.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let metadata = Listener::start(None);
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_METADATA_ENDPOINT", format!("http://127.0.0.1:{}", metadata.port));
    for (k, v) in &setup.env {
        cmd.env(k, setup.fill(v));
    }
    let out = cmd.args(&args).output().map_err(|e| format!("spawn: {e}"))?;
    let (so, se) = (stdout(&out), stderr(&out));
    let shown = || format!("tailforge {}\n--- stderr:\n{}", args.join(" "), tail(&se));
    if se.contains("panicked at") {
        return Err(format!("panicked\n{}", shown()));
    }
    if out.status.code() != Some(r.code) {
        return Err(format!("exit {:?}, expected {}\n{}", out.status.code(), r.code, shown()));
    }
    let text = if r.code == OK { format!("{so}\n{se}") } else { se.clone() };
    for w in r.words {
        let w = setup.fill(w);
        if !text.contains(&w) {
            return Err(format!("message lacks {w:?}\n{}", shown()));
        }
    }
    if r.code != OK && t.path("out/_SUCCESS").exists() {
        return Err("out/_SUCCESS exists after a failure".into());
    }
    let hits = metadata.hits.load(Ordering::SeqCst);
    if hits > 0 {
        return Err(format!("{hits} connections to the instance-metadata endpoint"));
    }
    (r.check)(&t, &setup).map_err(|e| format!("{e}\n{}", shown()))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The environment of a row and the values of `{name}` placeholders in its
/// arguments and words.
#[derive(Default)]
struct Setup {
    env: Vec<(String, String)>,
    vars: Vec<(&'static str, String)>,
    /// Kept alive while the command runs.
    _server: Option<Listener>,
}

impl Setup {
    fn env(pairs: &[(&str, &str)]) -> Setup {
        Setup { env: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    fn fill(&self, text: &str) -> String {
        self.vars.iter().fold(text.to_string(), |s, (k, v)| s.replace(&format!("{{{k}}}"), v))
    }
}

/// A local TCP listener that counts connections and answers each with a
/// fixed HTTP response (or closes it at once).
struct Listener {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Listener {
    fn start(response: Option<String>) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let Some(response) = &response else { continue };
                let mut reader = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                // Headers up to the blank line; these requests carry no body.
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                    line.clear();
                }
                let _ = s.write_all(response.as_bytes());
            }
        });
        Listener { port, hits }
    }
}

// --- fixtures ------------------------------------------------------------------------------------

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

fn ints(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

fn texts(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

const TS: [i64; 6] = [1_600_000_000, 1_600_000_100, 1_600_000_200, 1_600_000_000, 1_600_000_050, 1_600_000_000];

/// 3 users, 3 items, 6 events.
fn events_with(users: ArrayRef, items: ArrayRef, ts: ArrayRef) -> RecordBatch {
    batch(vec![("user_id", users), ("item_id", items), ("ts", ts)])
}

fn good_events() -> RecordBatch {
    events_with(ints(&[1, 1, 1, 2, 2, 3]), ints(&[10, 20, 30, 10, 20, 10]), ints(&TS))
}

fn good_items() -> RecordBatch {
    batch(vec![("item_id", ints(&[10, 20, 30])), ("title", texts(&["Ten", "Twenty", "Thirty"]))])
}

fn write(t: &TestDir, events: Option<&RecordBatch>, items: Option<&RecordBatch>) -> Setup {
    if let Some(e) = events {
        write_parquet(&t.path("events/part-0.parquet"), e);
    }
    if let Some(i) = items {
        write_parquet(&t.path("items/part-0.parquet"), i);
    }
    Setup::default()
}

fn nothing(_: &TestDir) -> Setup {
    Setup::default()
}

fn good(t: &TestDir) -> Setup {
    write(t, Some(&good_events()), Some(&good_items()))
}

fn items_only(t: &TestDir) -> Setup {
    write(t, None, Some(&good_items()))
}

fn csv_as_parquet(t: &TestDir) -> Setup {
    std::fs::create_dir_all(t.path("events")).unwrap();
    std::fs::write(t.path("events/part-0.parquet"), b"user_id,item_id,ts\n1,2,3\n").unwrap();
    write(t, None, Some(&good_items()))
}

fn ts_renamed(t: &TestDir) -> Setup {
    let e = batch(vec![("user_id", ints(&[1])), ("item_id", ints(&[10])), ("time", ints(&[1]))]);
    write(t, Some(&e), Some(&good_items()))
}

fn all_renamed(t: &TestDir) -> Setup {
    let e = good_events();
    let renamed =
        batch(vec![("customer", e.column(0).clone()), ("sku", e.column(1).clone()), ("time", e.column(2).clone())]);
    write(t, Some(&renamed), Some(&good_items()))
}

fn ts_text(t: &TestDir) -> Setup {
    let e = events_with(ints(&[1]), ints(&[10]), texts(&["yesterday"]));
    write(t, Some(&e), Some(&good_items()))
}

fn null_user(t: &TestDir) -> Setup {
    let users: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), Some(1), Some(1), None, Some(2), Some(3)]));
    let e = good_events();
    write(t, Some(&events_with(users, e.column(1).clone(), e.column(2).clone())), Some(&good_items()))
}

fn with_ts(t: &TestDir, ts: &[i64]) -> Setup {
    let e = good_events();
    write(t, Some(&events_with(e.column(0).clone(), e.column(1).clone(), ints(ts))), Some(&good_items()))
}

fn ms_ts(t: &TestDir) -> Setup {
    with_ts(t, &TS.map(|s| s * 1000))
}

fn negative_ts(t: &TestDir) -> Setup {
    let mut ts = TS;
    ts[5] = -5;
    with_ts(t, &ts)
}

fn future_ts(t: &TestDir) -> Setup {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut ts = TS;
    ts[2] = now + 5 * 365 * 86_400;
    with_ts(t, &ts)
}

fn empty_events(t: &TestDir) -> Setup {
    write(t, Some(&good_events().slice(0, 0)), Some(&good_items()))
}

fn empty_catalog(t: &TestDir) -> Setup {
    write(t, Some(&good_events()), Some(&good_items().slice(0, 0)))
}

fn duplicate_catalog_ids(t: &TestDir) -> Setup {
    let items = batch(vec![("item_id", ints(&[10, 20, 20, 30])), ("title", texts(&["a", "b", "b2", "c"]))]);
    write(t, Some(&good_events()), Some(&items))
}

/// A catalog whose second title is latin-1 bytes. The arrow writer refuses
/// invalid UTF-8 in a string column, so the file is written at the Parquet
/// level: a `binary (UTF8)` column holding the raw bytes.
fn invalid_utf8_title(t: &TestDir) -> Setup {
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    write(t, Some(&good_events()), None);
    std::fs::create_dir_all(t.path("items")).unwrap();
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
    Setup::default()
}

fn out_is_a_file(t: &TestDir) -> Setup {
    good(t);
    std::fs::write(t.path("out"), b"not a directory").unwrap();
    Setup::default()
}

fn toml(t: &TestDir, text: &str) -> Setup {
    std::fs::write(t.path("p.toml"), text).unwrap();
    Setup::default()
}

fn zero_row_file(t: &TestDir) -> Setup {
    good(t);
    write_parquet(&t.path("events/part-1.parquet"), &good_events().slice(0, 0));
    Setup::default()
}

/// A Hive partition holding, next to its Parquet file, a CSV copy with
/// other rows, a Spark `_SUCCESS` marker and a checksum file: only `*.parquet`
/// is data.
fn non_parquet_in_partition(t: &TestDir) -> Setup {
    write_parquet(&t.path("events/dt=2026-01-01/part-0.parquet"), &good_events());
    std::fs::write(t.path("events/dt=2026-01-01/part-0.csv"), b"user_id,item_id,ts\n9,9,9\n").unwrap();
    std::fs::write(t.path("events/dt=2026-01-01/_SUCCESS"), b"").unwrap();
    std::fs::write(t.path("events/dt=2026-01-01/.part-0.parquet.crc"), b"crc").unwrap();
    write(t, None, Some(&good_items()))
}

fn duplicate_events(t: &TestDir) -> Setup {
    let e = good_events();
    let dup = arrow::compute::concat_batches(&e.schema(), &[e.clone(), e.slice(1, 1)]).unwrap();
    write(t, Some(&dup), Some(&good_items()))
}

fn event_item_not_in_catalog(t: &TestDir) -> Setup {
    let e = events_with(ints(&[1, 1, 1, 2, 2, 3]), ints(&[10, 20, 99, 10, 20, 10]), ints(&TS));
    write(t, Some(&e), Some(&good_items()))
}

fn catalog_item_without_events(t: &TestDir) -> Setup {
    let items =
        batch(vec![("item_id", ints(&[10, 20, 30, 40])), ("title", texts(&["Ten", "Twenty", "Thirty", "Forty"]))]);
    write(t, Some(&good_events()), Some(&items))
}

/// The catalog with item 20's title replaced by `title`.
fn title(t: &TestDir, title: &str) -> Setup {
    let items = batch(vec![("item_id", ints(&[10, 20, 30])), ("title", texts(&["Ten", title, "Thirty"]))]);
    write(t, Some(&good_events()), Some(&items));
    Setup { vars: vec![("title", title.to_string())], ..Default::default() }
}

/// An output below a directory that cannot be written. Unprivileged, a
/// read-only directory does it; as root (where permission bits do not stop
/// writes) a path below /proc, which refuses new files to everyone.
fn unwritable_output(t: &TestDir) -> Setup {
    good(t);
    let dir = t.path("ro");
    std::fs::create_dir_all(&dir).unwrap();
    let mut perms = std::fs::metadata(&dir).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&dir, perms).unwrap();
    let privileged = std::fs::write(dir.join("probe"), b"").is_ok();
    let out = if privileged { "/proc/tailforge-out".to_string() } else { format!("{}/out", dir.display()) };
    Setup { vars: vec![("out", out)], ..Default::default() }
}

/// No credentials of any kind; instance metadata disabled (the runner sets
/// AWS_EC2_METADATA_DISABLED for every row).
fn no_credentials(_: &TestDir) -> Setup {
    Setup::env(&[("AWS_REGION", "us-east-1")])
}

fn s3_env(port: u16) -> Vec<(String, String)> {
    [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_ALLOW_HTTP", "true".to_string()),
        // Fail fast instead of riding out an outage.
        ("TAILFORGE_STORAGE__MAX_RETRIES", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A port nothing listens on.
fn wrong_endpoint(_: &TestDir) -> Setup {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    Setup { env: s3_env(port), vars: vec![("port", port.to_string())], ..Default::default() }
}

/// An S3 endpoint answering every request as S3 does for a missing bucket.
fn missing_bucket(_: &TestDir) -> Setup {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchBucket</Code>\
                <Message>The specified bucket does not exist</Message><BucketName>no-such-bucket</BucketName></Error>";
    let response = format!(
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let server = Listener::start(Some(response));
    let port = server.port;
    Setup { env: s3_env(port), vars: vec![("port", port.to_string())], _server: Some(server) }
}

/// A good analyze output in `an/`.
fn analyzed(t: &TestDir) {
    good(t);
    t.run_ok(&["analyze", "--events", "events/", "--items", "items/", "--out", "an"]);
}

fn model_file(t: &TestDir, bytes: &[u8]) -> Setup {
    analyzed(t);
    std::fs::write(t.path("model.gguf"), bytes).unwrap();
    Setup::default()
}

/// A GGUF header (magic, version 3, 291 tensors, 24 metadata pairs) and the
/// start of the first key, then the end of the file.
fn truncated_gguf() -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(291u64.to_le_bytes());
    b.extend(24u64.to_le_bytes());
    b.extend(20u64.to_le_bytes());
    b.extend(b"general.arch");
    b
}

/// An encoder directory whose tokenizer.json is cut off mid-way (config and
/// weights present, so the tokenizer is what fails).
fn corrupt_tokenizer(t: &TestDir) -> Setup {
    analyzed(t);
    std::fs::create_dir_all(t.path("enc")).unwrap();
    // all-MiniLM-L6-v2's config.json.
    std::fs::write(
        t.path("enc/config.json"),
        r#"{"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
            "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
            "num_attention_heads": 12, "num_hidden_layers": 6, "pad_token_id": 0,
            "position_embedding_type": "absolute", "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522}"#,
    )
    .unwrap();
    std::fs::write(t.path("enc/model.safetensors"), b"weights are not read before the tokenizer").unwrap();
    std::fs::write(t.path("enc/tokenizer.json"), r#"{"version": "1.0", "truncation": null, "model": {"type": "WordPi"#)
        .unwrap();
    Setup::default()
}

/// A generate output whose rows are for items 900 and 901, which this
/// dataset does not have: written for another catalog.
fn augment_from_elsewhere(t: &TestDir) -> Setup {
    analyzed(t);
    let mut keywords = ListBuilder::new(StringBuilder::new());
    for words in [["lamp", "brass"], ["chair", "oak"]] {
        for w in words {
            keywords.values().append_value(w);
        }
        keywords.append(true);
    }
    let generated = batch(vec![
        ("item_id", ints(&[900, 901])),
        ("description", texts(&["A brass lamp.", "An oak chair."])),
        ("keywords", Arc::new(keywords.finish())),
    ]);
    write_parquet(&t.path("gen/generated/part-00000.parquet"), &generated);
    std::fs::write(t.path("gen/_SUCCESS"), b"").unwrap();
    Setup::default()
}

// --- checks --------------------------------------------------------------------------------------

fn succeeded(t: &TestDir, _: &Setup) -> Result<(), String> {
    if t.path("out/_SUCCESS").is_file() { Ok(()) } else { Err("no out/_SUCCESS".into()) }
}

fn summary(t: &TestDir) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(t.path("out/summary.json")).map_err(|e| format!("summary.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("summary.json: {e}"))
}

fn summary_is(t: &TestDir, key: &str, want: i64) -> Result<(), String> {
    succeeded(t, &Setup::default())?;
    let got = summary(t)?[key].as_i64();
    if got == Some(want) { Ok(()) } else { Err(format!("summary.json {key} = {got:?}, expected {want}")) }
}

fn events_files(t: &TestDir) -> Result<Vec<String>, String> {
    let s = summary(t)?;
    let files = s["input_files"].as_array().ok_or("summary.json: no input_files")?;
    Ok(files.iter().filter_map(|f| f["url"].as_str()).filter(|u| u.contains("/events/")).map(str::to_string).collect())
}

fn six_events_two_files(t: &TestDir, _: &Setup) -> Result<(), String> {
    summary_is(t, "events", 6)?;
    let files = events_files(t)?;
    if files.len() == 2 { Ok(()) } else { Err(format!("expected both events files in input_files: {files:?}")) }
}

fn one_events_file(t: &TestDir, _: &Setup) -> Result<(), String> {
    summary_is(t, "events", 6)?;
    let files = events_files(t)?;
    if files.len() == 1 && files[0].ends_with("dt=2026-01-01/part-0.parquet") {
        Ok(())
    } else {
        Err(format!("only the Parquet file is input: {files:?}"))
    }
}

fn file_untouched(t: &TestDir, _: &Setup) -> Result<(), String> {
    match std::fs::read(t.path("out")) {
        Ok(b) if b == b"not a directory" => Ok(()),
        other => Err(format!("the file at out was changed: {other:?}")),
    }
}

fn seconds_in_sequences(t: &TestDir, _: &Setup) -> Result<(), String> {
    let seq = read_parquet(&t.path("out/sequences.parquet"));
    let first = i64_lists(&seq, "ts")[0][0];
    if first == 1_600_000_000 { Ok(()) } else { Err(format!("first ts {first}, expected 1600000000")) }
}

/// Text is data: the title reaches item_text.parquet byte for byte.
fn title_kept(t: &TestDir, s: &Setup) -> Result<(), String> {
    succeeded(t, s)?;
    let want = s.fill("{title}");
    let b = read_parquet(&t.path("out/item_text.parquet"));
    let ids = i64s(&b, "item_id");
    let titles = strings(&b, "title");
    let got = ids.iter().zip(&titles).find(|(id, _)| **id == Some(20)).and_then(|(_, t)| t.clone());
    match got {
        Some(g) if g == want => Ok(()),
        Some(g) => Err(format!("item 20's title changed: {} bytes, expected {}", g.len(), want.len())),
        None => Err("item 20 missing from item_text.parquet".into()),
    }
}
