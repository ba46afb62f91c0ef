//! Where the stages write, declared once: under a pipeline's `output` root
//! the standalone commands write `<output>/analyze/`, `<output>/generate/`,
//! `<output>/train/<variant>/`; `tailforge run` writes the same tree under
//! `<output>/runs/<run_id>/`, next to the root's `latest` pointer and the
//! shared caches. The CLI's defaults and the run's stage directories both
//! come from here, so a path is spelled in one place.

use crate::config::{PipelineConfig, Variant};
use crate::error::Result;
use crate::storage::Location;

/// The stage directories under one root: a pipeline's output root or a run's directory.
#[derive(Debug, Clone)]
pub struct StageDirs {
    root: Location,
}

impl StageDirs {
    /// The stage directories under `root`.
    pub fn under(root: &Location) -> StageDirs {
        StageDirs { root: root.as_dir() }
    }

    /// Under the pipeline's `output`, when it sets one.
    pub fn of_output(config: &PipelineConfig) -> Result<Option<StageDirs>> {
        config.output.as_deref().map(|o| Ok(StageDirs::under(&Location::parse(o)?))).transpose()
    }

    pub fn root(&self) -> &Location {
        &self.root
    }

    /// `analyze/`: the analyze stage's tables and summary.
    pub fn analyze(&self) -> Location {
        self.root.join("analyze/")
    }

    /// `generate/`: the generated descriptions and rejects.
    pub fn generate(&self) -> Location {
        self.root.join("generate/")
    }

    /// `train/<variant>/`: one trained model's outputs.
    pub fn train(&self, variant: Variant) -> Location {
        self.root.join(&format!("train/{}/", variant.as_str()))
    }

    /// `evaluate/`: the MostPop reference of a run.
    pub fn evaluate(&self) -> Location {
        self.root.join("evaluate/")
    }

    /// `runs/<run_id>/`: one run of `tailforge run`, itself a [`StageDirs`] root.
    pub fn run(&self, run_id: &str) -> StageDirs {
        StageDirs::under(&self.root.join(&format!("runs/{run_id}/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_holds_the_same_tree_as_the_output_root() {
        let out = StageDirs::under(&Location::parse("s3://bucket/nightly").unwrap());
        assert_eq!(out.analyze().url().as_str(), "s3://bucket/nightly/analyze/");
        assert_eq!(out.train(Variant::Dual).url().as_str(), "s3://bucket/nightly/train/dual/");
        let run = out.run("2026-12-07");
        assert_eq!(run.generate().url().as_str(), "s3://bucket/nightly/runs/2026-12-07/generate/");
        assert_eq!(run.evaluate().url().as_str(), "s3://bucket/nightly/runs/2026-12-07/evaluate/");
    }
}
