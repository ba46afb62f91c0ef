//! Reference scorers. They need no training beyond counting, and their
//! figures under eval-v1 are fixed, so they double as checks of the evaluator.

use std::cmp::Reverse;

use crate::dataset::Dataset;
use crate::eval::Scorer;

/// MostPop: every user gets the same ranking, the items by training
/// popularity (EVAL.md §3: interactions in the training parts only),
/// descending, ties by item id ascending — the order eval-v1 §3 uses for
/// popularity everywhere.
///
/// [`MostPop::new`] writes that order into the scores (item at position p of
/// the order scores N − p), so no two items tie. This is the MostPop of
/// EVAL.md's "Check your evaluator" figures: with the evaluator's rule that
/// ties count against the target, scoring raw counts instead
/// ([`MostPop::raw_counts`]) ranks a target one place lower whenever another
/// candidate has the same count — on MovieLens-100k items 181 and 258 both
/// have 500 training interactions (positions 3 and 4) — and gives test
/// NDCG@10 0.024909 instead of EVAL.md's 0.025440 (HR@10 is the same).
#[derive(Debug, Clone)]
pub struct MostPop {
    scores: Vec<f32>,
}

impl MostPop {
    /// Scores = position in eval-v1's popularity order (popularity desc, item id asc), highest first.
    ///
    /// Scores are exact f32 integers for catalogs up to 2^24 items; beyond
    /// that, neighbours far down the order may tie, which cannot change any
    /// rank below 10 unless a user's history holds millions of items.
    pub fn new(dataset: &Dataset) -> MostPop {
        let pop = &dataset.train_popularity;
        let n = pop.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by_key(|&i| (Reverse(pop[i]), i));
        let mut scores = vec![0.0f32; n];
        for (position, &i) in order.iter().enumerate() {
            scores[i] = (n - position) as f32;
        }
        MostPop { scores }
    }

    /// Scores = raw training interaction counts: items with the same count
    /// tie, and eval-v1 counts ties against the target. Kept to show the
    /// difference; EVAL.md's figures are those of [`MostPop::new`].
    pub fn raw_counts(dataset: &Dataset) -> MostPop {
        // f32 holds counts exactly up to 2^24.
        MostPop { scores: dataset.train_popularity.iter().map(|&p| p as f32).collect() }
    }
}

impl Scorer for MostPop {
    fn score(&self, _user: usize, _history: &[u32], out: &mut [f32]) {
        out.copy_from_slice(&self.scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Ids;
    use crate::eval::{EvalOptions, Phase, evaluate, ndcg};

    #[test]
    fn most_pop_scores_training_popularity_ties_by_id() {
        // Items 0..=5; training parts [0, 1], [1, 0], [1] → popularity 0 → 2, 1 → 3, others 0.
        let ds = Dataset::from_sequences(
            Ids::Int64((0..6).collect()),
            Ids::Int64(vec![1, 2, 3]),
            vec![vec![0, 1, 3, 4], vec![1, 0, 2, 5], vec![1]],
        )
        .unwrap();
        assert_eq!(ds.train_popularity, vec![2, 3, 0, 0, 0, 0]);
        let mut out = vec![f32::NAN; 6];
        MostPop::raw_counts(&ds).score(0, &[], &mut out);
        assert_eq!(out, vec![2.0, 3.0, 0.0, 0.0, 0.0, 0.0]);
        // Order: 1 (3), 0 (2), then the zeros by id: 2, 3, 4, 5.
        MostPop::new(&ds).score(0, &[], &mut out);
        assert_eq!(out, vec![5.0, 6.0, 4.0, 3.0, 2.0, 1.0]);

        // Test targets: user 1 → item 4, history 0, 1, 3 excluded, candidates 2, 4, 5.
        // User 2 → item 5, history 1, 0, 2 excluded, candidates 3, 4, 5.
        // Raw counts: all candidates score 0, ties count against → ranks 2 and 2.
        let r = evaluate(&ds, &MostPop::raw_counts(&ds), Phase::Test, &EvalOptions::default()).unwrap();
        assert_eq!(r.full.overall.n, 2);
        assert!((r.full.overall.ndcg - ndcg(2)).abs() < 1e-12);
        // Ordered by id: item 4 is behind 2 only (rank 1); item 5 behind 3 and 4 (rank 2).
        let r = evaluate(&ds, &MostPop::new(&ds), Phase::Test, &EvalOptions::default()).unwrap();
        assert!((r.full.overall.ndcg - (ndcg(1) + ndcg(2)) / 2.0).abs() < 1e-12);
    }
}
