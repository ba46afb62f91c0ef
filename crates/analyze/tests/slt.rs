//! The files in sql/ tested in SQL: each `tests/slt/*.slt` file holds a
//! fixture, the query and the table it must return, side by side, in the
//! sqllogictest format DataFusion tests its own SQL with
//! (`datafusion/sqllogictest`). See tests/slt/README.md for the format.
//!
//! The reader is this file's own, for the records the files use: `#`
//! comments, `include <file>`, `statement ok` and `query <type letters>`
//! with its `----` block of expected rows (a blank line ends a record).
//! A crate for the format would bring `std` features of two small crates
//! under ring and object_store, and with them a second build of arrow,
//! parquet and DataFusion for the tests: more than the whole CI's time.
//!
//! Besides plain SQL, a record may run one of the stage's files:
//!
//! ```text
//! RUN sql/<name>.sql [INTO <table>] [WITH $param = literal, ...]
//! ```
//!
//! runs the file from the source tree through [`run_sql`] — the stage's own
//! function, so `$param`s are bound as typed values, never spliced — and,
//! with `INTO`, keeps the result as `<table>` (replacing it) for the next
//! file in the chain, as the stage materializes each output. Literals: `'text'`
//! (Utf8), `true`/`false`, an integer (Int64), a number with `.` or `e`
//! (Float64) — the types the stage binds.
//!
//! Each .slt file runs in its own session (files are isolated); every file
//! runs and all failures are reported together. `TAILFORGE_SLT_COMPLETE=1`
//! rewrites every expected result with the actual one (DataFusion's
//! `--complete`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use tailforge_analyze::{run_sql, udf};

/// Where the .slt files are, relative to the crate.
const SLT_DIR: &str = "tests/slt";
/// Set to 1 to rewrite the expected results instead of checking them.
const COMPLETE_ENV: &str = "TAILFORGE_SLT_COMPLETE";

#[tokio::test]
async fn every_sql_file_returns_the_table_its_slt_file_expects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SLT_DIR);
    let complete = std::env::var(COMPLETE_ENV).is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("cannot list tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {SLT_DIR}");
    let mut failures = Vec::new();
    for path in &files {
        if let Err(e) = run_file(path, complete).await {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} .slt files failed:\n\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// `analyze.neighbors = 0` must cost nothing: with `$k = 0` the planner folds
/// neighbors.sql to an empty plan, without the self-join whose size grows with
/// the square of history lengths (it once ran in full and exhausted memory on
/// wide histories; BENCHMARKS.md "Scale"). With `$k = 5` the join is there.
#[tokio::test]
async fn neighbors_off_plans_no_join() {
    let db = Tailforge::new();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join(SLT_DIR).join("include/pipeline.slt");
    for record in parse(&include, false).expect("the pipeline fixture parses") {
        db.run(&record.sql).await.expect("the pipeline fixture loads");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join("sql/neighbors.sql")).expect("sql/neighbors.sql");
    let plan = |k: i64| {
        let (ctx, text) = (&db.ctx, &text);
        async move {
            let df = run_sql(ctx, "neighbors.sql", text, &[("k", ScalarValue::from(k))]).await.expect("plans");
            let physical = df.create_physical_plan().await.expect("physical plan");
            datafusion::physical_plan::displayable(physical.as_ref()).indent(true).to_string()
        }
    };
    let (off, on) = (plan(0).await, plan(5).await);
    assert!(on.contains("HashJoinExec"), "k = 5 joins:\n{on}");
    assert!(!off.contains("JoinExec") && !off.contains("AggregateExec"), "k = 0 plans no join nor count:\n{off}");
}

/// One record of a file, with where it starts.
#[derive(Debug)]
struct Record {
    /// `file:line` of the record's first line.
    at: String,
    kind: Kind,
    sql: String,
}

#[derive(Debug)]
enum Kind {
    Statement,
    Query {
        types: String,
        expected: Vec<String>,
        /// Line range (0-based, end exclusive) of the expected rows in the
        /// file itself, for complete mode; `None` for an included record.
        rows: Option<(usize, usize)>,
    },
}

/// The records of `path`, `include`s expanded in place.
fn parse(path: &Path, top: bool) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().collect();
    let name = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(path).display().to_string();
    let mut records = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let at = format!("{name}:{}", i + 1);
        if line.is_empty() || line.starts_with('#') {
            i += 1;
            continue;
        }
        if let Some(file) = line.strip_prefix("include ") {
            let base = path.parent().unwrap_or(Path::new("."));
            records.extend(parse(&base.join(file.trim()), false)?);
            i += 1;
            continue;
        }
        let header: Vec<&str> = line.split_whitespace().collect();
        i += 1;
        let mut sql = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].trim_end() != "----" {
            sql.push(lines[i]);
            i += 1;
        }
        let sql = sql.join("\n");
        let kind = match header.as_slice() {
            ["statement", "ok"] => Kind::Statement,
            ["query", types] => {
                if i >= lines.len() || lines[i].trim_end() != "----" {
                    return Err(format!("{at}: a query record needs a `----` line before its expected rows"));
                }
                i += 1;
                let start = i;
                while i < lines.len() && !lines[i].trim().is_empty() {
                    i += 1;
                }
                let expected = lines[start..i].iter().map(|l| l.to_string()).collect();
                Kind::Query { types: types.to_string(), expected, rows: top.then_some((start, i)) }
            }
            _ => {
                return Err(format!(
                    "{at}: expected `statement ok`, `query <types>`, `include <file>` or a comment, got `{line}`"
                ));
            }
        };
        if sql.trim().is_empty() {
            return Err(format!("{at}: the record has no SQL"));
        }
        records.push(Record { at, kind, sql });
    }
    Ok(records)
}

/// Runs (or, in complete mode, rewrites) one .slt file in a fresh session.
async fn run_file(path: &Path, complete: bool) -> Result<(), String> {
    let records = parse(path, true)?;
    let db = Tailforge::new();
    // Complete mode: (line range, new rows) of each query of the file itself.
    let mut rewrites: Vec<((usize, usize), Vec<String>)> = Vec::new();
    for record in records {
        let result = db.run(&record.sql).await.map_err(|e| format!("{}: {e}\n    {}", record.at, record.sql))?;
        let Kind::Query { types, expected, rows } = record.kind else { continue };
        let (actual_types, actual) =
            result.ok_or_else(|| format!("{}: a query record, but the SQL returns no table", record.at))?;
        if complete {
            if let Some(range) = rows {
                rewrites.push((range, actual));
            }
            continue;
        }
        if actual_types != types {
            return Err(format!("{}: column types {types} expected, the result has {actual_types}", record.at));
        }
        let normalized = |rows: &[String]| -> Vec<String> {
            rows.iter().map(|r| r.split_whitespace().collect::<Vec<_>>().join(" ")).collect()
        };
        if normalized(&expected) != normalized(&actual) {
            return Err(format!(
                "{}: the result differs (- expected, + actual)\n{}",
                record.at,
                diff(&expected, &actual)
            ));
        }
    }
    if complete && !rewrites.is_empty() {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        // From the last query up, so earlier line numbers stay valid.
        for ((start, end), rows) in rewrites.into_iter().rev() {
            lines.splice(start..end, rows);
        }
        let tmp = path.with_extension("slt.tmp");
        std::fs::write(&tmp, lines.join("\n") + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Expected and actual rows, line by line.
fn diff(expected: &[String], actual: &[String]) -> String {
    let mut out = String::new();
    for k in 0..expected.len().max(actual.len()) {
        match (expected.get(k), actual.get(k)) {
            (Some(e), Some(a)) if e.split_whitespace().eq(a.split_whitespace()) => out.push_str(&format!("    {e}\n")),
            (e, a) => {
                if let Some(e) = e {
                    out.push_str(&format!("-   {e}\n"));
                }
                if let Some(a) = a {
                    out.push_str(&format!("+   {a}\n"));
                }
            }
        }
    }
    out
}

/// The database under test: a session with the stage's UDFs.
struct Tailforge {
    ctx: SessionContext,
}

impl Tailforge {
    fn new() -> Self {
        let ctx = SessionContext::new();
        ctx.register_udf(udf::ListField::udf());
        Tailforge { ctx }
    }

    /// Runs a record's SQL (or `RUN` line): its column letters and rows, or
    /// `None` for a statement without a result table (DDL).
    async fn run(&self, sql: &str) -> Result<Option<(String, Vec<String>)>, String> {
        if let Some(run) = RunFile::parse(sql)? {
            return self.run_sql_file(run).await.map(Some);
        }
        let df = self.ctx.sql(sql).await.map_err(err)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(err)?;
        if schema.fields().is_empty() {
            return Ok(None);
        }
        rows(&schema, &batches).map(Some)
    }

    async fn run_sql_file(&self, run: RunFile) -> Result<(String, Vec<String>), String> {
        // The workspace root: RUN paths are written as in the repository.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join(&run.path)).map_err(|e| err(format!("{}: {e}", run.path)))?;
        let name = Path::new(&run.path).file_name().unwrap_or_default().to_string_lossy().into_owned();
        let params: Vec<(&str, ScalarValue)> = run.params.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let df = run_sql(&self.ctx, &name, &text, &params).await.map_err(err)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(err)?;
        let out = rows(&schema, &batches)?;
        if let Some(table) = run.into {
            self.ctx.deregister_table(table.as_str()).map_err(err)?;
            let mem = MemTable::try_new(schema, vec![batches]).map_err(err)?;
            self.ctx.register_table(table.as_str(), Arc::new(mem)).map_err(err)?;
        }
        Ok(out)
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A column's type letter in a `query` record, DataFusion's: `B` boolean,
/// `I` any integer, `R` float or decimal, `T` string, `?` anything else
/// (lists, structs…).
fn type_letter(dt: &DataType) -> char {
    match dt {
        DataType::Boolean => 'B',
        t if t.is_integer() => 'I',
        t if t.is_floating() || t.is_decimal() => 'R',
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => 'T',
        _ => '?',
    }
}

/// The result as text: `NULL` for null, `(empty)` for an empty string (as
/// DataFusion's runner writes them), floats rounded to 12 decimals so a
/// last-bit difference does not fail a test, the rest as Arrow displays it.
fn rows(schema: &Schema, batches: &[RecordBatch]) -> Result<(String, Vec<String>), String> {
    let types = schema.fields().iter().map(|f| type_letter(f.data_type())).collect();
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>();
        let formatters = formatters.map_err(err)?;
        for row in 0..batch.num_rows() {
            let cells = batch.columns().iter().zip(&formatters).map(|(column, f)| cell(column.as_ref(), f, row));
            rows.push(cells.collect::<Vec<_>>().join(" "));
        }
    }
    Ok((types, rows))
}

fn cell(column: &dyn Array, formatter: &ArrayFormatter, row: usize) -> String {
    if column.is_null(row) {
        return "NULL".into();
    }
    match column.data_type() {
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => float(column.as_primitive::<Float32Type>().value(row).into()),
        _ => match formatter.value(row).to_string() {
            s if s.is_empty() => "(empty)".into(),
            s => s,
        },
    }
}

/// 12 decimals, trailing zeros dropped but one kept: 0.3, 1.0, 0.366666666667.
fn float(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let s = format!("{v:.12}");
    let s = s.trim_end_matches('0');
    let s = if s.ends_with('.') { format!("{s}0") } else { s.to_string() };
    if s == "-0.0" { "0.0".into() } else { s }
}

/// `RUN sql/<name>.sql [INTO <table>] [WITH $param = literal, ...]`.
struct RunFile {
    path: String,
    into: Option<String>,
    params: Vec<(String, ScalarValue)>,
}

impl RunFile {
    /// `None` when `sql` is not a RUN record (plain SQL).
    fn parse(sql: &str) -> Result<Option<Self>, String> {
        let tokens = tokens(sql)?;
        let mut it = tokens.iter().map(String::as_str).peekable();
        if !it.peek().is_some_and(|t| t.eq_ignore_ascii_case("RUN")) {
            return Ok(None);
        }
        it.next();
        let usage =
            || err(format!("expected RUN sql/<name>.sql [INTO <table>] [WITH $param = literal, ...], got: {sql}"));
        let path = it.next().filter(|p| p.ends_with(".sql")).ok_or_else(usage)?.to_string();
        let mut run = RunFile { path, into: None, params: Vec::new() };
        while let Some(word) = it.next() {
            if word.eq_ignore_ascii_case("INTO") {
                run.into = Some(it.next().ok_or_else(usage)?.to_string());
            } else if word.eq_ignore_ascii_case("WITH") {
                loop {
                    let name = it.next().and_then(|n| n.strip_prefix('$')).ok_or_else(usage)?;
                    if it.next() != Some("=") {
                        return Err(usage());
                    }
                    let value = literal(it.next().ok_or_else(usage)?)?;
                    run.params.push((name.to_string(), value));
                    if it.peek() != Some(&",") {
                        break;
                    }
                    it.next();
                }
            } else {
                return Err(usage());
            }
        }
        Ok(Some(run))
    }
}

/// Words, `=`, `,` and quoted strings (kept with their quotes).
fn tokens(sql: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '=' || c == ',' {
            out.push(c.to_string());
            chars.next();
        } else if c == '\'' {
            let mut s = String::from(chars.next().unwrap_or('\''));
            loop {
                match chars.next() {
                    Some('\'') if chars.peek() == Some(&'\'') => {
                        chars.next();
                        s.push_str("''");
                    }
                    Some('\'') => {
                        s.push('\'');
                        break;
                    }
                    Some(c) => s.push(c),
                    None => return Err(err(format!("unterminated string in: {sql}"))),
                }
            }
            out.push(s);
        } else {
            let mut s = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '=' || c == ',' || c == '\'' {
                    break;
                }
                s.push(c);
                chars.next();
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// A parameter value, typed as the stage binds it.
fn literal(s: &str) -> Result<ScalarValue, String> {
    if let Some(text) = s.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Ok(ScalarValue::from(text.replace("''", "'").as_str()));
    }
    match s.to_ascii_lowercase().as_str() {
        "true" => return Ok(ScalarValue::from(true)),
        "false" => return Ok(ScalarValue::from(false)),
        _ => {}
    }
    if s.contains(['.', 'e', 'E']) {
        s.parse::<f64>().map(ScalarValue::from).map_err(|_| err(format!("not a number: {s}")))
    } else {
        s.parse::<i64>().map(ScalarValue::from).map_err(|_| err(format!("not a literal: {s}")))
    }
}
