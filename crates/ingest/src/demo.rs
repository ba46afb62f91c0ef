//! Placeholder: being written (helper). API fixed by the brief.
use tailforge_core::{Error, Location, Result};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DemoParams { pub users: u64, pub items: u64, pub events: u64, pub seed: u64, pub zipf_exponent: f64, pub events_per_file: u64 }
impl Default for DemoParams { fn default() -> Self { DemoParams { users: 5_000, items: 2_000, events: 200_000, seed: 42, zipf_exponent: 1.0, events_per_file: 10_000_000 } } }
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DemoSummary { pub users: u64, pub items: u64, pub events: u64, pub files: Vec<String>, pub seed: u64, pub zipf_exponent: f64 }
pub async fn generate(_params: &DemoParams, _out: &Location) -> Result<DemoSummary> { Err(Error::internal("demo-data not yet written")) }
