//! The files in sql/ tested in SQL: each `tests/slt/*.slt` file holds a
//! fixture, the query and the table it must return, side by side, run by the
//! `sqllogictest` crate as DataFusion tests its own SQL
//! (`datafusion/sqllogictest`). See tests/slt/README.md for the format.
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
//! Each .slt file is one trial with its own session (files are isolated);
//! `cargo test --release -p tailforge-analyze --test slt -- <filter>` runs the
//! files whose name contains the filter. `TAILFORGE_SLT_COMPLETE=1` rewrites
//! every expected result with the actual one (DataFusion's `--complete`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use sqllogictest::harness::{Arguments, Failed, Trial};
use sqllogictest::{AsyncDB, ColumnType, DBOutput, Runner, default_normalizer, default_validator};
use tailforge_analyze::{run_sql, udf};

/// Where the .slt files are, relative to the crate (the test's working directory).
const SLT_DIR: &str = "tests/slt";
/// Set to 1 to rewrite the expected results instead of checking them.
const COMPLETE_ENV: &str = "TAILFORGE_SLT_COMPLETE";

fn main() {
    let args = Arguments::from_args();
    // cargo runs tests in the crate directory; make sure of it so locations
    // in failures read `tests/slt/<file>.slt:<line>`.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("cannot enter the crate directory");
    let complete = std::env::var(COMPLETE_ENV).is_ok_and(|v| v == "1");
    let mut files: Vec<PathBuf> = glob::glob(&format!("{SLT_DIR}/*.slt"))
        .expect("valid glob")
        .collect::<Result<_, _>>()
        .expect("cannot list tests/slt");
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {SLT_DIR}");
    let trials = files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            Trial::test(name, move || run_file(&path, complete))
        })
        .collect();
    sqllogictest::harness::run(&args, trials).exit();
}

/// Runs (or, in complete mode, rewrites) one .slt file in a fresh session.
fn run_file(path: &Path, complete: bool) -> Result<(), Failed> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut runner = Runner::new(|| async { Ok(Tailforge::new()) });
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if complete {
            runner
                .update_test_file(
                    path,
                    " ",
                    default_validator,
                    default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .map_err(|e| Failed::from(format!("{}: {e}", path.display())))?;
        } else {
            runner
                .run_file_async(path)
                .await
                .map_err(|e| Failed::from(e.display(std::io::stdout().is_terminal()).to_string()))?;
        }
        runner.shutdown_async().await;
        Ok(())
    })
}

/// A column's type letter in a `query` record: DataFusion's letters for the
/// types the sql/ files return.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    /// `B`: boolean
    Bool,
    /// `I`: any integer
    Int,
    /// `R`: float or decimal
    Float,
    /// `T`: string
    Text,
    /// `?`: anything else (lists, structs…)
    Other,
}

impl ColumnType for Column {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'B' => Self::Bool,
            'I' => Self::Int,
            'R' => Self::Float,
            'T' => Self::Text,
            '?' => Self::Other,
            _ => return None,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Self::Bool => 'B',
            Self::Int => 'I',
            Self::Float => 'R',
            Self::Text => 'T',
            Self::Other => '?',
        }
    }
}

impl Column {
    fn of(dt: &DataType) -> Self {
        match dt {
            DataType::Boolean => Self::Bool,
            t if t.is_integer() => Self::Int,
            t if t.is_floating() || t.is_decimal() => Self::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            _ => Self::Other,
        }
    }
}

/// An error of a record, shown in the failure (or matched by `statement error`).
#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

fn err(e: impl std::fmt::Display) -> SltError {
    SltError(e.to_string())
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

    async fn run_sql_file(&self, run: RunFile) -> Result<DBOutput<Column>, SltError> {
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

#[async_trait]
impl AsyncDB for Tailforge {
    type Error = SltError;
    type ColumnType = Column;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<Column>, SltError> {
        if let Some(run) = RunFile::parse(sql)? {
            return self.run_sql_file(run).await;
        }
        let df = self.ctx.sql(sql).await.map_err(err)?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(err)?;
        if schema.fields().is_empty() {
            // DDL (CREATE TABLE …) returns no columns
            return Ok(DBOutput::StatementComplete(0));
        }
        rows(&schema, &batches)
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "tailforge"
    }
}

/// The result as text: `NULL` for null, `(empty)` for an empty string (as
/// DataFusion's runner writes them), floats rounded to 12 decimals so a
/// last-bit difference does not fail a test, the rest as Arrow displays it.
fn rows(schema: &Schema, batches: &[RecordBatch]) -> Result<DBOutput<Column>, SltError> {
    let types = schema.fields().iter().map(|f| Column::of(f.data_type())).collect();
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
            rows.push(cells.collect());
        }
    }
    Ok(DBOutput::Rows { types, rows })
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
    fn parse(sql: &str) -> Result<Option<Self>, SltError> {
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
fn tokens(sql: &str) -> Result<Vec<String>, SltError> {
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
fn literal(s: &str) -> Result<ScalarValue, SltError> {
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
