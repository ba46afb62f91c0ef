//! How a trained model's item scores are formed at inference, for the
//! evaluator and for recommendations: the model's dot product, optionally
//! with two rules that carry rare items.
//!
//! - **Popularity routing.** A candidate with at most `cold_threshold`
//!   training interactions has its ID-view score scaled by `cold_id_scale`
//!   (0 drops it): an ID embedding that saw two interactions is mostly its
//!   random start, and its score is noise added to the text view's (`dual`)
//!   or to the content term (`id`, `fused`: the whole model score is the ID
//!   view; `text` has none and is never routed). A third-party reproduction
//!   of LLM-ESR found that dropping the ID score of cold candidates helps;
//!   [`tune`] checks it on validation.
//! - **Content similarity.** `content_weight` × the highest cosine between
//!   the candidate's text embedding and those of the user's `content_recent`
//!   most recent items: the text-kNN signal, which needs no interactions at all.
//! - **Co-occurrence.** `cooccurrence_weight` × the sum of the candidate's
//!   cosine co-occurrence with the user's latest items in the training
//!   sequences ([`ItemKnn`]): a rare item's few interactions, counted
//!   directly instead of through an embedding that barely moved from its
//!   random start. EVAL.md's strongest tail peer blends this with text kNN.
//!
//! score(i) = ⟨u_id, e_id,i⟩ · s(i) + ⟨u_text, e_text,i⟩ + β · max_j cos(t_i, t_j) + γ · Σ_j knn(i, j),
//! with s(i) = `cold_id_scale` if pop(i) ≤ `cold_threshold` else 1 (for
//! variants with one view, the whole dot product is the first term and s = 1).
//!
//! [`tune`] picks the rule on the validation targets (eval-v1's checkpoint
//! rule applied to the scoring rule); the test targets never inform it.

use rayon::prelude::*;
use tailforge_core::config::{ContentPool, Variant};

pub use tailforge_core::records::{ScoringRule, TunedRule};

use crate::baselines::ItemKnn;
use crate::dataset::{Dataset, Phase};
use crate::eval::{Scorer, USER_BLOCK, full_rank, ndcg};
use crate::trainer::VectorScorer;

/// What a rule's terms read besides the model: the items' text embeddings
/// (content term) and the training co-occurrence counts (co-occurrence term).
#[derive(Clone, Copy, Default)]
pub struct Signals<'a> {
    pub text: Option<&'a UnitText>,
    pub cooccurrence: Option<&'a ItemKnn>,
}

/// Unit-length text embeddings of the catalog items, `[n_items, dim]` row-major.
pub struct UnitText {
    pub dim: usize,
    pub rows: Vec<f32>,
}

impl UnitText {
    /// From the text features (`[n_items + 1, d]`, row 0 padding), normalised
    /// again so the content term is a cosine whatever the encoder did.
    pub fn from_features(features: &[Vec<f32>]) -> UnitText {
        let dim = features.first().map_or(0, Vec::len);
        let mut rows = Vec::with_capacity(features.len().saturating_sub(1) * dim);
        for f in features.iter().skip(1) {
            let norm = f.iter().map(|x| x * x).sum::<f32>().sqrt();
            let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
            rows.extend(f.iter().map(|x| x * inv));
        }
        UnitText { dim, rows }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i * self.dim..(i + 1) * self.dim]
    }

    /// The content term's similarity of every item to the last `recent` items of `history`.
    pub fn similarity(&self, pool: ContentPool, history: &[u32], recent: usize, out: &mut [f32]) {
        match pool {
            ContentPool::Max => self.max_similarity(history, recent, out),
            ContentPool::Mean => self.mean_similarity(history, recent, out),
        }
    }

    /// `out[i]` = cosine between item i and the mean of the unit embeddings
    /// of the last `recent` items of `history` (0 for an empty history).
    pub fn mean_similarity(&self, history: &[u32], recent: usize, out: &mut [f32]) {
        let mut mean = vec![0f32; self.dim];
        for &j in &history[history.len().saturating_sub(recent)..] {
            mean.iter_mut().zip(self.row(j as usize)).for_each(|(m, x)| *m += x);
        }
        let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            mean.iter_mut().for_each(|m| *m /= norm);
        }
        for (i, o) in out.iter_mut().enumerate() {
            *o = dot(self.row(i), &mean);
        }
    }

    /// `out[i] = max over the last `recent` items of history of cos(t_i, t_j)`
    /// (0 for an empty history).
    pub fn max_similarity(&self, history: &[u32], recent: usize, out: &mut [f32]) {
        let recent = &history[history.len().saturating_sub(recent)..];
        if recent.is_empty() {
            out.fill(0.0);
            return;
        }
        out.fill(f32::NEG_INFINITY);
        for &j in recent {
            let tj = self.row(j as usize);
            for (i, o) in out.iter_mut().enumerate() {
                let s = dot(self.row(i), tj);
                if s > *o {
                    *o = s;
                }
            }
        }
    }
}

/// A dot product in 8 independent lanes, which the compiler vectorises.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// The scores of the users a model encoded, under a [`ScoringRule`].
pub struct RuledScorer<'a> {
    /// The model's item and user vectors.
    pub vectors: VectorScorer,
    /// Columns of the ID view in a row (`dual`: the first half), for routing.
    pub id_columns: usize,
    pub rule: ScoringRule,
    /// Items routed (their ID score scaled), by dense index.
    pub routed: Vec<bool>,
    pub signals: Signals<'a>,
}

impl RuledScorer<'_> {
    /// The ID-view and text-view (or whole-model) dot products of a block of
    /// users, reading the item table once per block
    /// ([`VectorScorer::for_each_tile`]); whether each user was encoded.
    fn view_scores_block(&self, users: &[usize], id_part: &mut [&mut [f32]], rest: &mut [&mut [f32]]) -> Vec<bool> {
        let vectors: Vec<Option<&[f32]>> = users.iter().map(|&u| self.vectors.user_vector(u)).collect();
        let c = self.id_columns;
        self.vectors.for_each_tile(&vectors, |k, i, u, v| {
            id_part[k][i] = dot(&u[..c], &v[..c]);
            rest[k][i] = dot(&u[c..], &v[c..]);
        });
        vectors.iter().map(Option::is_some).collect()
    }

    /// Adds the rule's routing and terms to a user's view scores `out` and `rest`.
    fn apply_rule(&self, user: usize, history: &[u32], out: &mut [f32], rest: &[f32], term: &mut [f32]) {
        for i in 0..out.len() {
            let scale = if self.routed[i] { self.rule.cold_id_scale } else { 1.0 };
            out[i] = out[i] * scale + rest[i];
        }
        if let (Some(text), true) = (self.signals.text, self.rule.needs_text()) {
            text.similarity(self.rule.content_pool, history, self.rule.content_recent, term);
            out.iter_mut().zip(term.iter()).for_each(|(o, s)| *o += self.rule.content_weight * s);
        }
        if let (Some(knn), true) = (self.signals.cooccurrence, self.rule.needs_cooccurrence()) {
            knn.score(user, history, term);
            out.iter_mut().zip(term.iter()).for_each(|(o, s)| *o += self.rule.cooccurrence_weight * s);
        }
    }
}

impl Scorer for RuledScorer<'_> {
    fn score(&self, user: usize, history: &[u32], out: &mut [f32]) {
        self.score_block(&[(user, history)], &mut [out]);
    }

    fn score_block(&self, users: &[(usize, &[u32])], out: &mut [&mut [f32]]) {
        let n = out.first().map_or(0, |o| o.len());
        let mut rest = vec![vec![0f32; n]; users.len()];
        let ids: Vec<usize> = users.iter().map(|&(u, _)| u).collect();
        let found = {
            let mut rest: Vec<&mut [f32]> = rest.iter_mut().map(|r| r.as_mut_slice()).collect();
            self.view_scores_block(&ids, out, &mut rest)
        };
        let mut term = vec![0f32; n];
        for (k, &(user, history)) in users.iter().enumerate() {
            if found[k] {
                self.apply_rule(user, history, out[k], &rest[k], &mut term);
            } else {
                out[k].fill(0.0);
            }
        }
    }
}

impl<'a> RuledScorer<'a> {
    /// `vectors` of a model of `variant` under `rule`; `signals` hold what
    /// the content and co-occurrence terms read (a term whose signal is
    /// absent adds nothing).
    pub fn new(
        dataset: &Dataset,
        variant: Variant,
        vectors: VectorScorer,
        rule: ScoringRule,
        signals: Signals<'a>,
    ) -> RuledScorer<'a> {
        let id_columns = id_columns(variant, vectors.width);
        let routed =
            dataset.train_popularity.iter().map(|&p| rule.cold_id_scale != 1.0 && p <= rule.cold_threshold).collect();
        RuledScorer { vectors, id_columns, rule, routed, signals }
    }
}

/// The ID view's share of a row: all of it for `id` and `fused` (whose
/// gate mixes the views inside each item vector), the first half for `dual`
/// (whose rows are `[E_id | W·t]`), none for `text`.
pub fn id_columns(variant: Variant, width: usize) -> usize {
    match variant {
        Variant::Dual => width / 2,
        Variant::Text => 0,
        Variant::Id | Variant::Fused => width,
    }
}

/// The rules [`tune`] tries: routing thresholds × ID scales (not for `text`) ×
/// content weights and recent-item counts (when text is available), the
/// plain rule first. The weights double up to 128: a model's logits are
/// not on the cosine's scale, and on Amazon Scientific the best weight for
/// a BCE-trained model was 16–64.
pub fn grid(variant: Variant, has_text: bool) -> Vec<ScoringRule> {
    let mut routing = vec![(0u32, 1.0f32)];
    // Without text, a routed item would score 0 and tie with every other.
    if variant != Variant::Text && has_text {
        for threshold in [1u32, 2, 3, 5, 10] {
            for scale in [0.0f32, 0.5] {
                routing.push((threshold, scale));
            }
        }
    }
    let plain = ScoringRule::PLAIN;
    let mut content = vec![(0.0f32, plain.content_recent, plain.content_pool)];
    if has_text {
        for pool in [ContentPool::Max, ContentPool::Mean] {
            for recent in [1usize, 3, 5] {
                for weight in WEIGHTS {
                    content.push((weight, recent, pool));
                }
            }
        }
    }
    let mut rules = Vec::new();
    for &(content_weight, content_recent, content_pool) in &content {
        for &(cold_threshold, cold_id_scale) in &routing {
            rules.push(ScoringRule {
                cold_threshold,
                cold_id_scale,
                content_weight,
                content_recent,
                content_pool,
                cooccurrence_weight: 0.0,
            });
        }
    }
    rules
}

/// The weights [`grid`] and [`refine`] try for the content and co-occurrence terms.
const WEIGHTS: [f32; 9] = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// The second round of the search, once [`grid`]'s best rule is known: the
/// co-occurrence weight against the content weight, routing and pooling
/// kept as chosen (the two terms overlap — both carry the user's recent
/// items — so their weights are chosen together; the full product with
/// routing would be ten times the rules for what routing was worth so far).
pub fn refine(best: ScoringRule, has_text: bool) -> Vec<ScoringRule> {
    let mut content: Vec<f32> = vec![0.0];
    if has_text {
        content.extend(WEIGHTS);
    }
    let mut rules = Vec::new();
    for &content_weight in &content {
        for cooccurrence_weight in WEIGHTS {
            rules.push(ScoringRule { content_weight, cooccurrence_weight, ..best });
        }
    }
    rules
}

/// Validation NDCG@10 (full ranking) of every rule of `rules` for the
/// scorer's users, in one pass: each user's view scores and content term are
/// computed once and recombined per rule. Returns the rules with their
/// figures, in `rules` order.
pub fn tune(dataset: &Dataset, base: &RuledScorer, rules: &[ScoringRule]) -> Vec<TunedRule> {
    let n = dataset.n_items();
    let users: Vec<usize> = dataset.evaluated_users().collect();
    // The distinct (pool, recent) pairs: each user's similarities are computed once per pair.
    let pairs: Vec<(ContentPool, usize)> = {
        let mut r: Vec<(ContentPool, usize)> = rules.iter().map(|r| (r.content_pool, r.content_recent)).collect();
        r.sort_unstable_by_key(|&(p, m)| (p as u8, m));
        r.dedup();
        r
    };
    // Users in blocks, so the item table is streamed once per block
    // (`RuledScorer::view_scores_block`); blocks are summed in user order, so
    // the figures do not depend on the thread count.
    let per_block: Vec<Vec<f64>> = users
        .par_chunks(USER_BLOCK)
        .map(|block| {
            let mut id_part = vec![vec![0f32; n]; block.len()];
            let mut rest = vec![vec![0f32; n]; block.len()];
            let found = {
                let mut id_part: Vec<&mut [f32]> = id_part.iter_mut().map(Vec::as_mut_slice).collect();
                let mut rest: Vec<&mut [f32]> = rest.iter_mut().map(Vec::as_mut_slice).collect();
                base.view_scores_block(block, &mut id_part, &mut rest)
            };
            let (mut scores, mut cooccurrence, mut excluded) = (vec![0f32; n], vec![0f32; n], vec![false; n]);
            let mut sims = vec![vec![0f32; n]; pairs.len()];
            let mut per_rule = vec![0f64; rules.len()];
            for (k, &u) in block.iter().enumerate() {
                let user = &dataset.users[u];
                let Some(target) = user.target(Phase::Valid) else { continue };
                if !found[k] {
                    continue;
                }
                let history = user.history(Phase::Valid);
                if let Some(text) = base.signals.text {
                    for (p, &(pool, m)) in pairs.iter().enumerate() {
                        text.similarity(pool, history, m, &mut sims[p]);
                    }
                }
                match base.signals.cooccurrence {
                    Some(knn) => knn.score(u, history, &mut cooccurrence),
                    None => cooccurrence.fill(0.0),
                }
                history.iter().for_each(|&i| excluded[i as usize] = true);
                for (r, rule) in rules.iter().enumerate() {
                    let pair = (rule.content_pool, rule.content_recent);
                    let sim = &sims[pairs.iter().position(|&p| p == pair).unwrap_or(0)];
                    for i in 0..n {
                        let routed = rule.cold_id_scale != 1.0 && dataset.train_popularity[i] <= rule.cold_threshold;
                        let scale = if routed { rule.cold_id_scale } else { 1.0 };
                        let content = if base.signals.text.is_some() { rule.content_weight * sim[i] } else { 0.0 };
                        scores[i] =
                            id_part[k][i] * scale + rest[k][i] + content + rule.cooccurrence_weight * cooccurrence[i];
                    }
                    per_rule[r] += ndcg(full_rank(&scores, target, &excluded));
                }
                history.iter().for_each(|&i| excluded[i as usize] = false);
            }
            per_rule
        })
        .collect();
    let sums = per_block.iter().fold(vec![0f64; rules.len()], |a, b| a.iter().zip(b).map(|(x, y)| x + y).collect());
    let cases = users.iter().filter(|&&u| dataset.users[u].target(Phase::Valid).is_some()).count().max(1) as f64;
    rules.iter().zip(sums).map(|(&rule, s)| TunedRule { rule, valid_ndcg: s / cases }).collect()
}

/// The best of [`tune`]'s results: highest validation NDCG@10, the earliest
/// (simplest) rule on a tie.
pub fn best(tuned: &[TunedRule]) -> Option<TunedRule> {
    tuned.iter().copied().fold(None, |best, t| match best {
        Some(b) if b.valid_ndcg >= t.valid_ndcg => Some(b),
        _ => Some(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum_for_any_length() {
        for len in [0usize, 1, 7, 8, 9, 384] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "len {len}");
        }
    }

    #[test]
    fn max_similarity_is_the_best_cosine_to_the_recent_items() {
        // Items 0..3 in 2-d: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1)/√2, 3 = (−1, 0); unnormalised input.
        let features = vec![vec![0.0, 0.0], vec![2.0, 0.0], vec![0.0, 3.0], vec![1.0, 1.0], vec![-1.0, 0.0]];
        let text = UnitText::from_features(&features);
        let mut out = vec![0f32; 4];
        // Only the last item (1) counts with recent = 1.
        text.max_similarity(&[0, 1], 1, &mut out);
        let expect = [0.0, 1.0, std::f32::consts::FRAC_1_SQRT_2, 0.0];
        out.iter().zip(expect).for_each(|(o, e)| assert!((o - e).abs() < 1e-6, "{out:?}"));
        // Both: item 3 is opposite to 0 (−1) and orthogonal to 1 (0) → 0.
        text.max_similarity(&[0, 1], 5, &mut out);
        let expect = [1.0, 1.0, std::f32::consts::FRAC_1_SQRT_2, 0.0];
        out.iter().zip(expect).for_each(|(o, e)| assert!((o - e).abs() < 1e-6, "{out:?}"));
        text.max_similarity(&[], 5, &mut out);
        assert_eq!(out, vec![0.0; 4]);
        // Mean of items 0 and 1 points at (1, 1)/√2: item 2 is parallel (1), items 0 and 1 at 45°.
        text.similarity(ContentPool::Mean, &[3, 0, 1], 2, &mut out);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        out.iter().zip([h, h, 1.0, -h]).for_each(|(o, e)| assert!((o - e).abs() < 1e-6, "{out:?}"));
    }

    #[test]
    fn the_cooccurrence_term_adds_weighted_item_knn_scores_and_the_tuner_agrees() {
        use crate::eval::Scorer;
        let ds = crate::baselines::three_users();
        let knn = ItemKnn::new(&ds, 5);
        // A one-column model: user u scores item i as w_u · (i + 1).
        let vectors = || VectorScorer {
            width: 1,
            items: (1..=6).map(|i| i as f32).collect(),
            user_row: vec![Some(0), Some(1), Some(2)],
            users: vec![0.5, -0.25, 0.125],
        };
        let signals = Signals { text: None, cooccurrence: Some(&knn) };
        let rule = ScoringRule { cooccurrence_weight: 4.0, ..ScoringRule::PLAIN };
        let scorer = RuledScorer::new(&ds, Variant::Id, vectors(), rule, signals);
        let (mut out, mut knn_scores) = (vec![0f32; 6], vec![0f32; 6]);
        scorer.score(0, &[1, 3], &mut out);
        knn.score(0, &[1, 3], &mut knn_scores);
        assert!(knn_scores.iter().any(|&s| s > 0.0));
        for i in 0..6 {
            let expected = 0.5 * (i + 1) as f32 + 4.0 * knn_scores[i];
            assert!((out[i] - expected).abs() < 1e-6, "item {i}: {out:?}");
        }
        // Without the signal the term adds nothing.
        let plain = RuledScorer::new(&ds, Variant::Id, vectors(), rule, Signals::default());
        plain.score(0, &[1, 3], &mut out);
        (0..6).for_each(|i| assert_eq!(out[i], 0.5 * (i + 1) as f32));

        // The tuner's one-pass figure for a rule equals the evaluator's under it.
        let base = RuledScorer::new(&ds, Variant::Id, vectors(), ScoringRule::PLAIN, signals);
        let rules = refine(ScoringRule::PLAIN, false);
        assert!(rules.iter().all(|r| r.cooccurrence_weight > 0.0 && r.content_weight == 0.0));
        for tuned in tune(&ds, &base, &rules) {
            let scorer = RuledScorer::new(&ds, Variant::Id, vectors(), tuned.rule, signals);
            let report = crate::eval::evaluate(&ds, &scorer, Phase::Valid, &Default::default()).unwrap();
            assert!((report.full.overall.ndcg - tuned.valid_ndcg).abs() < 1e-12, "{tuned:?}");
        }
    }

    /// A random dual model over more items than two tiles and more users
    /// than two blocks, under a rule with every term: scoring in blocks
    /// gives the per-user scores bit for bit, and the tuner's figure for a
    /// rule is the evaluator's.
    #[test]
    fn block_scoring_equals_one_user_at_a_time_across_tiles_and_blocks() {
        use crate::dataset::Ids;
        use crate::eval::Scorer;
        use crate::trainer::ITEM_TILE;
        use tailforge_core::rng::SplitMix64;
        let (n_items, n_users, width) = (2 * ITEM_TILE + 37, 2 * USER_BLOCK + 5, 8);
        let mut rng = SplitMix64::new(7);
        // Every item once (user u gets items u, u + n_users, …), and between
        // them items of a popular few, so popularity and co-occurrence vary.
        let sequences: Vec<Vec<u32>> = (0..n_users)
            .map(|u| {
                let mut s = Vec::new();
                for i in (u..n_items).step_by(n_users) {
                    s.push(i as u32);
                    if rng.below(3) == 0 {
                        s.push(rng.below(20) as u32);
                    }
                }
                s
            })
            .collect();
        let ds = Dataset::from_sequences(
            Ids::Int64((0..n_items as i64).collect()),
            Ids::Int64((0..n_users as i64).collect()),
            sequences,
        )
        .unwrap();
        let mut normal = || rng.unit_f64() as f32 - 0.5;
        let items: Vec<f32> = (0..n_items * width).map(|_| normal()).collect();
        let users: Vec<f32> = (0..n_users * width).map(|_| normal()).collect();
        let features: Vec<Vec<f32>> = (0..=n_items).map(|_| (0..6).map(|_| normal()).collect()).collect();
        // Every third user not encoded: its scores stay as they were.
        let user_row = (0..n_users).map(|u| (u % 3 != 2).then_some(u)).collect::<Vec<_>>();
        let vectors = || VectorScorer { width, items: items.clone(), user_row: user_row.clone(), users: users.clone() };
        let (text, knn) = (UnitText::from_features(&features), ItemKnn::new(&ds, 5));
        let signals = Signals { text: Some(&text), cooccurrence: Some(&knn) };
        let rule = ScoringRule {
            cold_threshold: 1,
            cold_id_scale: 0.5,
            content_weight: 2.0,
            content_recent: 3,
            content_pool: ContentPool::Mean,
            cooccurrence_weight: 0.25,
        };
        let scorer = RuledScorer::new(&ds, Variant::Dual, vectors(), rule, signals);
        let all: Vec<(usize, &[u32])> = (0..n_users).map(|u| (u, ds.users[u].items.as_slice())).collect();
        let mut blocked = vec![vec![0f32; n_items]; n_users];
        for (chunk, out) in all.chunks(USER_BLOCK).zip(blocked.chunks_mut(USER_BLOCK)) {
            let mut out: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
            scorer.score_block(chunk, &mut out);
        }
        for &(u, history) in &all {
            let mut one = vec![0f32; n_items];
            scorer.score(u, history, &mut one);
            let same = one.iter().zip(&blocked[u]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "user {u}: block scores differ from one-user scores");
        }
        let base = RuledScorer::new(&ds, Variant::Dual, vectors(), ScoringRule::PLAIN, signals);
        let tuned = tune(&ds, &base, &[ScoringRule::PLAIN, rule]);
        for t in tuned {
            let scorer = RuledScorer::new(&ds, Variant::Dual, vectors(), t.rule, signals);
            let report = crate::eval::evaluate(&ds, &scorer, Phase::Valid, &Default::default()).unwrap();
            assert!((report.full.overall.ndcg - t.valid_ndcg).abs() < 1e-12, "{t:?}");
        }
    }

    #[test]
    fn the_grid_starts_with_the_plain_rule_and_never_routes_text() {
        let g = grid(Variant::Dual, true);
        assert_eq!(g[0], ScoringRule::PLAIN);
        assert!(g.iter().any(|r| r.cold_id_scale == 0.0 && r.content_weight > 0.0));
        assert!(grid(Variant::Text, true).iter().all(|r| r.cold_id_scale == 1.0));
        assert!(grid(Variant::Id, true).iter().any(|r| r.cold_id_scale == 0.0));
        assert_eq!(grid(Variant::Id, false), vec![ScoringRule::PLAIN]);
        assert_eq!(grid(Variant::Dual, true).len(), 11 * 55);
        let tuned = [
            TunedRule { rule: g[0], valid_ndcg: 0.1 },
            TunedRule { rule: g[1], valid_ndcg: 0.2 },
            TunedRule { rule: g[2], valid_ndcg: 0.2 },
        ];
        assert_eq!(best(&tuned).unwrap().rule, g[1], "ties keep the earlier rule");
    }
}
