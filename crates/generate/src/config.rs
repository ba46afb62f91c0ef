//! Settings of the generate stage: the `[generate]` section of the pipeline
//! configuration, declared in `tailforge-core` next to the other sections.

pub use tailforge_core::config::GenerateConfig;

/// GPU layers to offload: `n_gpu_layers` if set, else every layer in a build
/// with the `cuda` feature and none otherwise.
pub fn gpu_layers(cfg: &GenerateConfig) -> u32 {
    cfg.n_gpu_layers.unwrap_or(if cfg!(feature = "cuda") { u32::MAX } else { 0 })
}
