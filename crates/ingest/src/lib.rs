//! tailforge's input builders: importers that turn public datasets into the
//! events/items Parquet contract, and `demo-data`, the deterministic
//! synthetic shop used as the embedded default (like TPC-H's dbgen).

pub mod demo;
pub mod movielens;
