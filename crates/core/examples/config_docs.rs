//! Prints docs/config.md, the configuration reference, rendered from the
//! config structs' doc comments and `PipelineConfig::default()`:
//!
//! ```text
//! cargo run --release -p tailforge-core --example config_docs > docs/config.md
//! ```
//!
//! (`make config-docs` runs it.) The test `docs_config_md_is_current` fails
//! while the committed page differs from what this prints.

fn main() {
    print!("{}", tailforge_core::config::reference::markdown());
}
