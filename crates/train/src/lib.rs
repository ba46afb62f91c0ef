//! The train stage of tailforge: everything that turns the analyze stage's
//! sequences and eval-v1 split into models and into the numbers that say how
//! good they are on head and tail items.
//!
//! - [`load_dataset`] reads an analyze output directory (`sequences.parquet`,
//!   `split.parquet`, `item_stats.parquet`) into an in-memory [`Dataset`]:
//!   a dense item vocabulary, each user's sequence as dense indices with its
//!   leave-one-out split, training popularity and eval-v1 head/tail groups.
//! - [`eval`] implements protocol eval-v1 (`../shared/EVAL.md`) for any
//!   [`eval::Scorer`]: full-ranking and sampled HR@10 / NDCG@10 per
//!   overall/head/tail group, coverage@10 and the tail share of top-10 slots.
//! - [`baselines`] holds reference scorers (MostPop), which also serve as
//!   the evaluator's check: MostPop's full-ranking figures on MovieLens-100k
//!   are fixed by EVAL.md and the tests reproduce them exactly.
//! - [`sasrec`] is the sequential recommender (SASRec) in candle, with its
//!   three item representations (ID, text, fused); [`trainer`] is its
//!   training loop, [`text`] and [`item_text`] the item-text embeddings it
//!   reads, [`scoring`] how its scores are formed at inference.
//! - [`train`] is the `tailforge train` stage: dataset in, trained model,
//!   `metrics.json` and serving artefacts out. Every model, baseline or
//!   SASRec variant, is measured by the one evaluator through
//!   [`eval::Scorer`].

pub mod baselines;
mod dataset;
pub mod eval;
mod fused;
pub mod item_text;
mod load;
pub mod params;
mod pca;
pub mod sasrec;
pub mod scoring;
mod stage;
pub mod text;
pub mod trainer;

pub use dataset::{COLD_MAX_TRAIN_INTERACTIONS, Dataset, Group, Ids, Phase, UserSequence, eval_groups};
pub use load::load_dataset;
pub use stage::{
    Baseline, BaselineMetrics, TrainMetrics, TrainRequest, evaluate_baseline, train, write_baseline_metrics,
};
