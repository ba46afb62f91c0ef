//! One error type for every stage, grouped by who has to act on it.
//!
//! The binary prints an error once, with its cause chain, and exits with the
//! code of its kind (see [`Error::exit_code`]):
//!
//! | code | kind | who acts |
//! |---|---|---|
//! | 0  | success | |
//! | 2  | [`Error::Usage`], [`Error::Config`] | whoever wrote the command line or pipeline file |
//! | 65 | [`Error::Data`] | whoever produces the input data |
//! | 1  | everything else (storage, I/O, internal) | the operator; internal errors are bugs |
//!
//! Data errors carry their location — file, column, row — because "bad
//! timestamp" alone sends a data engineer grepping through terabytes.

use std::fmt;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for internal errors, storage and I/O failures.
pub const EXIT_INTERNAL: i32 = 1;
/// Exit code for a bad command line or pipeline file.
pub const EXIT_USAGE: i32 = 2;
/// Exit code for bad input data (sysexits' `EX_DATAERR`).
pub const EXIT_DATA: i32 = 65;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad command line: unknown flag value, missing argument, conflicting options.
    #[error("{0}")]
    Usage(String),

    /// A bad pipeline file, `--set` override or `TAILFORGE_*` variable.
    #[error("{source_name}: {key}: {message}")]
    Config {
        /// Where the setting came from: a file path, `--set` or an env var name.
        source_name: String,
        /// Dotted key path, e.g. `analyze.long_tail.rule`.
        key: String,
        message: String,
    },

    /// Input data that breaks the data contract.
    #[error("{0}")]
    Data(DataError),

    /// Reading or writing an object store location failed.
    #[error("{url}: {message}")]
    Storage { url: String, message: String },

    /// Local I/O failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A bug in tailforge: an invariant did not hold.
    #[error("internal error (this is a bug in tailforge, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Config { .. } => EXIT_USAGE,
            Error::Data(_) => EXIT_DATA,
            Error::Storage { .. } | Error::Io { .. } | Error::Internal(_) => EXIT_INTERNAL,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Error::Usage(message.into())
    }

    pub fn config(source_name: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { source_name: source_name.into(), key: key.into(), message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }

    /// A failed object store request. Failures that no retry can fix (no
    /// credentials, a missing bucket) become usage errors saying what to set.
    pub fn storage(url: impl Into<String>, message: impl fmt::Display) -> Self {
        let (url, message) = (url.into(), message.to_string());
        crate::storage::explain_store_failure(&url, &message).unwrap_or(Error::Storage { url, message })
    }

    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        Error::Data(e)
    }
}

/// A violation of the input data contract, with as much location as is known.
///
/// Displays as `file: column "c": row N: message` followed by a hint line,
/// e.g. `events/part-0.parquet: column "ts": row 5012: null value`.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub file: Option<String>,
    pub column: Option<String>,
    /// 0-based row index within `file`.
    pub row: Option<u64>,
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
}

impl DataError {
    pub fn new(message: impl Into<String>) -> Self {
        DataError { file: None, column: None, row: None, message: message.into(), hint: None }
    }
    pub fn file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }
    pub fn column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
    pub fn row(mut self, row: u64) -> Self {
        self.row = Some(row);
        self
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if let Some(column) = &self.column {
            write!(f, "column \"{column}\": ")?;
        }
        if let Some(row) = self.row {
            write!(f, "row {row}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DataError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_error_names_file_column_row_and_hint() {
        let e = Error::from(
            DataError::new("null value").file("events.parquet").column("ts").row(5012).hint("fill or drop nulls"),
        );
        assert_eq!(e.to_string(), "events.parquet: column \"ts\": row 5012: null value\n  hint: fill or drop nulls");
        assert_eq!(e.exit_code(), EXIT_DATA);
    }

    #[test]
    fn exit_codes_follow_the_kind() {
        assert_eq!(Error::usage("x").exit_code(), EXIT_USAGE);
        assert_eq!(Error::config("p.toml", "a.b", "x").exit_code(), EXIT_USAGE);
        assert_eq!(Error::internal("x").exit_code(), EXIT_INTERNAL);
        assert_eq!(Error::storage("s3://b", "timeout").exit_code(), EXIT_INTERNAL);
    }
}
