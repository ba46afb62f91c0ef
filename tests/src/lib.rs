//! Helpers for the end-to-end tests: run the real `tailforge` binary in a
//! fresh temporary directory, read its Parquet outputs, and find the real
//! data in `../shared` (MovieLens-100k's license forbids copying it here).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, RecordBatch};

/// The repository root.
pub fn repo_root() -> PathBuf {
    manifest_dir().parent().expect("tests/ has a parent").to_path_buf()
}

/// This package's directory as cargo runs the test (it sets
/// CARGO_MANIFEST_DIR for test processes), falling back to the one compiled
/// in: clones sharing one CARGO_TARGET_DIR can reuse each other's unchanged
/// test binaries, whose compiled-in path may be another clone's.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// `../shared` next to the repository (override with TAILFORGE_SHARED).
pub fn shared_dir() -> PathBuf {
    std::env::var_os("TAILFORGE_SHARED").map(PathBuf::from).unwrap_or_else(|| repo_root().join("..").join("shared"))
}

/// MovieLens-100k, read in place.
pub fn movielens_100k() -> PathBuf {
    let p = shared_dir().join("data").join("movielens-100k");
    assert!(p.join("u.data").is_file(), "MovieLens-100k not found at {} (set TAILFORGE_SHARED)", p.display());
    p
}

/// The built `tailforge` binary, next to this test executable's directory.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/deps/<test> → target/release/tailforge
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("tailforge{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} is missing: run `make build` (or `cargo build --release --bins`) first", bin.display());
    bin
}

/// A temporary directory and a way to run `tailforge` inside it.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn path_str(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// A `tailforge` command with the temp dir as working directory and no
    /// `TAILFORGE_*` settings leaking in from the caller's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(binary());
        c.current_dir(self.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("TAILFORGE_") {
                c.env_remove(k);
            }
        }
        c
    }

    /// Runs `tailforge args…` and asserts success.
    pub fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("spawn tailforge");
        assert!(out.status.success(), "tailforge {} failed ({}):\n{}", args.join(" "), out.status, stderr(&out));
        out
    }

    /// Runs `tailforge args…` and asserts it fails with `code`; returns stderr.
    pub fn run_fails(&self, args: &[&str], code: i32) -> String {
        let out = self.cmd().args(args).output().expect("spawn tailforge");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "tailforge {} should exit {code}:\n{err}", args.join(" "));
        assert!(!err.contains("panicked"), "tailforge panicked:\n{err}");
        err
    }
}

impl Default for TestDir {
    fn default() -> Self {
        Self::new()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a local Parquet file into one batch.
pub fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .build()
        .expect("reader");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("decode");
    let schema = batches.first().map(|b| b.schema()).expect("at least one batch");
    arrow::compute::concat_batches(&schema, &batches).expect("concat")
}

/// A column of a batch as i64 values (casting integer types).
pub fn i64s(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).expect("cast to i64");
    let a = col.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64");
    a.iter().collect()
}

/// A column as f64 values.
pub fn f64s(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Float64).expect("cast to f64");
    let a = col.as_any().downcast_ref::<arrow::array::Float64Array>().expect("f64");
    a.iter().collect()
}

/// A column as strings (casting Utf8View / LargeUtf8 / others).
pub fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).expect("cast to utf8");
    let a = col.as_any().downcast_ref::<arrow::array::StringArray>().expect("utf8");
    a.iter().map(|v| v.map(str::to_string)).collect()
}

/// A list column as vectors of i64.
pub fn i64_lists(batch: &RecordBatch, name: &str) -> Vec<Vec<i64>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let list = col.as_any().downcast_ref::<arrow::array::ListArray>().expect("list column");
    (0..list.len())
        .map(|i| {
            let v = arrow::compute::cast(&list.value(i), &arrow::datatypes::DataType::Int64).expect("cast");
            v.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64").values().to_vec()
        })
        .collect()
}

/// Writes one batch as a Parquet file (for fixtures).
pub fn write_parquet(path: &Path, batch: &RecordBatch) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    let file = std::fs::File::create(path).expect("create");
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(batch).expect("write");
    w.close().expect("close");
}

/// MovieLens-100k's `u.data` parsed with plain Rust: (user, item, rating, ts).
pub fn u_data() -> Vec<(i64, i64, i64, i64)> {
    let text = std::fs::read_to_string(movielens_100k().join("u.data")).expect("u.data");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<i64> = l.split('\t').map(|x| x.parse().expect("int")).collect();
            (f[0], f[1], f[2], f[3])
        })
        .collect()
}

/// Imports MovieLens-100k into `dir/ml` and analyzes it into `dir/out`
/// with extra `--set` overrides.
pub fn analyze_movielens(t: &TestDir, sets: &[&str]) {
    t.run_ok(&["import", "movielens", "--src", movielens_100k().to_str().expect("utf8 path"), "--out", "ml"]);
    let mut args = vec!["analyze", "--events", "ml/events", "--items", "ml/items", "--out", "out"];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    t.run_ok(&args);
}

/// The default generation model (SmolLM2-135M-Instruct Q4_1, installed by `make setup`).
pub fn smollm2() -> PathBuf {
    let p = repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.is_file(), "{} missing: run `make setup`", p.display());
    p
}

/// Held by tests that run the LLM, so that they never run concurrently in
/// one test binary (two generations on 2 cores slow each other ~10×).
pub fn llm_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The rows of every `part-*.parquet` shard below `dir` (a generate output's
/// `generated/` or `rejects/`), keyed by item id, each row rendered as
/// `column=value` strings for all columns but `skip`. Panics on an item id
/// that appears twice.
pub fn shard_rows(dir: &Path, skip: &[&str]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut rows = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return rows };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-") && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    for f in files {
        let b = read_parquet(&f);
        let ids = strings(&b, "item_id");
        let opts = arrow::util::display::FormatOptions::default();
        let cols: Vec<(String, arrow::util::display::ArrayFormatter)> = b
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, fl)| !skip.contains(&fl.name().as_str()))
            .map(|(i, fl)| {
                (
                    fl.name().clone(),
                    arrow::util::display::ArrayFormatter::try_new(b.column(i), &opts).expect("formatter"),
                )
            })
            .collect();
        for (r, id) in ids.into_iter().enumerate() {
            let id = id.expect("non-null item_id");
            let row: Vec<String> = cols.iter().map(|(n, fmt)| format!("{n}={}", fmt.value(r))).collect();
            assert!(rows.insert(id.clone(), row).is_none(), "item {id} appears twice in {}", dir.display());
        }
    }
    rows
}

/// Every file below `dir`, recursively.
pub fn files_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(files_below(&path)) } else { files.push(path) }
    }
    files
}

/// A one-request HTTP server standing in for a Pushgateway: answers with
/// `status` (e.g. "200 OK") and hands over the request it got (request line,
/// headers and body).
pub fn fake_pushgateway(status: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        (&stream).write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).unwrap();
        head + &String::from_utf8(body).unwrap()
    });
    (port, server)
}

/// Demo data (300 users, 200 items, 9,000 events) under `gen/` and a pipeline
/// `pipeline` of analyze and evaluate only over it (generate and train off):
/// the run mechanics without the LLM or training.
pub fn small_pipeline(pipeline: &str) -> TestDir {
    let t = TestDir::new();
    t.run_ok(&["demo-data", "--users", "300", "--items", "200", "--events", "9000", "--seed", "4", "--out", "gen"]);
    std::fs::write(
        t.path(pipeline),
        "output = \"out\"\n[inputs]\nevents = \"gen/events/\"\nitems = \"gen/items/\"\n[generate]\nenabled = false\n[train]\nenabled = false\n",
    )
    .expect("write the pipeline");
    t
}
