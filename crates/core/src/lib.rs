//! Shared types of tailforge: the pipeline configuration, storage locations,
//! the Arrow schemas of the data contracts between stages, the error type,
//! and the small shared helpers every stage needs the same way ([`rng`],
//! [`hash`]).
//!
//! Every stage crate depends on this one and on no other stage: stages hand
//! over Parquet files whose schemas [`schema`] declares.

pub mod config;
pub mod error;
pub mod hash;
pub mod layout;
pub mod parquet_io;
pub mod records;
pub mod rng;
pub mod schema;
pub mod storage;

pub use config::PipelineConfig;
pub use error::{DataError, Error, Result};
pub use storage::Location;
