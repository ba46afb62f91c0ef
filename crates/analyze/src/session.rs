//! The DataFusion session of one analyze run, configured from the pipeline.

use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tailforge_core::config::{AnalyzeConfig, AnalyzeEngine};
use tailforge_core::{Error, Location, Result};

/// Builds the session: partitions, batch size, and — when a memory limit is
/// set — a [`FairSpillPool`] so sorts and aggregations spill to disk instead
/// of failing, with the spill directory capped at `max_temp_size`.
pub fn build_session(cfg: &AnalyzeConfig) -> Result<SessionContext> {
    let partitions = if cfg.target_partitions == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        cfg.target_partitions
    };
    let limit = cfg.memory_limit.bytes();
    let mut config = SessionConfig::new().with_target_partitions(partitions).with_batch_size(cfg.batch_size);
    // Hive-style `dt=…/` directories below an input prefix are read;
    // other sub-directories are not (DataFusion's default, kept explicit).
    config.options_mut().execution.listing_table_ignore_subdirectory = true;
    // Write each output as one file, encoding row groups in parallel.
    config.options_mut().execution.parquet.allow_single_file_parallelism = true;
    if limit > 0 {
        // An external sort pre-reserves this much for merging its runs when
        // it spills, and the merge converts every buffered row into the row
        // format — about as much memory again as the buffered batches. With
        // DataFusion's 10 MB default, sorters fill the pool and the merge
        // then fails (100M events under 4 GiB did). Reserving 60% of each
        // sorter's share makes it spill early enough for its merge to fit.
        config.options_mut().execution.sort_spill_reservation_bytes =
            ((limit as f64 * 0.6) / partitions as f64).max((10 << 20) as f64) as usize;
    }
    for (key, value) in &cfg.datafusion {
        config
            .options_mut()
            .set(key, value)
            .map_err(|e| Error::config("(config)", format!("analyze.datafusion.\"{key}\""), e.to_string()))?;
    }

    let max_temp = cfg.max_temp_size.bytes();
    // Merging many spill files at once holds a batch per file in memory; cap
    // the fan-in so a long external sort merges in several bounded passes.
    let mut disk = DiskManagerBuilder::default().with_max_temp_directory_size(max_temp).with_max_spill_merge_fan_in(16);
    if let Some(dir) = &cfg.spill_dir {
        disk = disk.with_mode(DiskManagerMode::Directories(vec![dir.into()]));
    }
    let mut runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(disk);
    if limit > 0 {
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(limit as usize),
            std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
        runtime = runtime.with_memory_pool(pool);
    }
    let runtime =
        runtime.build_arc().map_err(|e| Error::internal(format!("cannot build the DataFusion runtime: {e}")))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// The session of `cfg.engine`: [`build_session`] for "local"; for
/// "ballista", the same settings in a session whose queries are planned and
/// run by the Ballista scheduler at `cfg.scheduler`. Only listing the inputs
/// and reading their footers stay in this process; every query runs on the
/// cluster, and a query the cluster cannot run fails (never falls back to
/// running here).
pub async fn build_engine_session(cfg: &AnalyzeConfig) -> Result<SessionContext> {
    let local = build_session(cfg)?;
    match cfg.engine {
        AnalyzeEngine::Local => Ok(local),
        AnalyzeEngine::Ballista => remote(cfg, local).await,
    }
}

#[cfg(feature = "ballista")]
async fn remote(cfg: &AnalyzeConfig, local: SessionContext) -> Result<SessionContext> {
    use ballista::prelude::SessionContextExt;
    // `PipelineConfig::validate` has checked that a Ballista engine has one.
    let scheduler = cfg.scheduler.as_deref().unwrap_or_default();
    let (host, port) = tailforge_core::config::parse_scheduler(scheduler)
        .map_err(|m| Error::config("(config)", "analyze.scheduler", m))?;
    // The client connects only when the first query runs; say plainly now
    // when nothing listens there.
    let reach =
        tokio::time::timeout(std::time::Duration::from_secs(10), tokio::net::TcpStream::connect((host.as_str(), port)));
    match reach.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(Error::config(
                "(config)",
                "analyze.scheduler",
                format!(
                    "cannot reach the Ballista scheduler at {host}:{port}: {e}; check the address and that the scheduler is running"
                ),
            ));
        }
        Err(_) => {
            return Err(Error::config(
                "(config)",
                "analyze.scheduler",
                format!(
                    "no answer from the Ballista scheduler at {host}:{port} within 10 s; check the address and the network"
                ),
            ));
        }
    }
    SessionContext::remote_with_state(scheduler, local.state()).await.map_err(|e| {
        Error::config("(config)", "analyze.scheduler", format!("cannot open a Ballista session at {scheduler}: {e}"))
    })
}

#[cfg(not(feature = "ballista"))]
async fn remote(_cfg: &AnalyzeConfig, _local: SessionContext) -> Result<SessionContext> {
    Err(Error::config(
        "(config)",
        "analyze.engine",
        "this tailforge was built without Ballista support; rebuild with `cargo build --release --workspace --bins --features ballista` (`make build FEATURES=ballista`), or set analyze.engine = \"local\"",
    ))
}

/// Names the query and the cluster in an error from a query that ran on
/// Ballista; errors of the local engine pass unchanged.
pub fn on_engine(cfg: &AnalyzeConfig, file: &str, e: Error) -> Error {
    match (cfg.engine, e) {
        (AnalyzeEngine::Ballista, Error::Internal(m)) => {
            let hint = if m.contains("list_field") {
                "; the scheduler and the executors must know tailforge's list_field function (docs/ballista.md, \"Executors\")"
            } else {
                ""
            };
            Error::internal(format!(
                "sql/{file} failed on the Ballista cluster (analyze.scheduler = {:?}): {m}{hint}",
                cfg.scheduler.as_deref().unwrap_or_default()
            ))
        }
        (_, e) => e,
    }
}

/// Makes `location`'s object store known to the session.
pub fn register_store(ctx: &SessionContext, location: &Location) {
    ctx.runtime_env().register_object_store(&location.store_url(), location.store());
}
