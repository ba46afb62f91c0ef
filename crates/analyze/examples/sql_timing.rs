//! Times one SQL query over a Parquet `interactions` table and prints its
//! physical plan: the loop used to tune the files in sql/.
//!
//!     cargo run --release -p tailforge-analyze --example sql_timing -- EVENTS_DIR QUERY.sql
use std::time::Instant;

use datafusion::prelude::*;

#[tokio::main]
async fn main() -> datafusion::error::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (events, query) = (&args[1], std::fs::read_to_string(&args[2])?);
    let ctx = SessionContext::new();
    ctx.register_udf(tailforge_analyze::udf::ListField::udf());
    ctx.register_parquet("interactions", events, ParquetReadOptions::default()).await?;
    let df = ctx.sql(&query).await?;
    if std::env::var_os("EXPLAIN").is_some() {
        df.clone().explain(false, false)?.show().await?;
    }
    let t = Instant::now();
    let batches = df.collect().await?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("{rows} rows in {:.3}s", t.elapsed().as_secs_f64());
    Ok(())
}
