//! The DataFusion session of one analyze run, configured from the pipeline.

use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use tailforge_core::config::{AnalyzeConfig, parse_bytes};
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
    let mut config = SessionConfig::new().with_target_partitions(partitions).with_batch_size(cfg.batch_size);
    // Hive-style `dt=…/` directories below an input prefix are read;
    // other sub-directories are not (DataFusion's default, kept explicit).
    config.options_mut().execution.listing_table_ignore_subdirectory = true;
    // Write each output as one file, encoding row groups in parallel.
    config.options_mut().execution.parquet.allow_single_file_parallelism = true;

    let limit = parse_bytes(&cfg.memory_limit).map_err(|m| Error::config("(config)", "analyze.memory_limit", m))?;
    let max_temp = parse_bytes(&cfg.max_temp_size).map_err(|m| Error::config("(config)", "analyze.max_temp_size", m))?;
    let mut disk = DiskManagerBuilder::default().with_max_temp_directory_size(max_temp);
    if !cfg.spill_dir.is_empty() {
        disk = disk.with_mode(DiskManagerMode::Directories(vec![cfg.spill_dir.clone().into()]));
    }
    let mut runtime = RuntimeEnvBuilder::new().with_disk_manager_builder(disk);
    if limit > 0 {
        let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
            FairSpillPool::new(limit as usize),
            std::num::NonZeroUsize::new(5).unwrap_or(std::num::NonZeroUsize::MIN),
        ));
        runtime = runtime.with_memory_pool(pool);
    }
    let runtime = runtime.build_arc().map_err(|e| Error::internal(format!("cannot build the DataFusion runtime: {e}")))?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Makes `location`'s object store known to the session.
pub fn register_store(ctx: &SessionContext, location: &Location) {
    ctx.runtime_env().register_object_store(&location.store_url(), location.store());
}
