//! Protocol eval-v1 (`../shared/EVAL.md`) for any [`Scorer`].
//!
//! For every evaluated user and the chosen [`Phase`]:
//!
//! - **Input.** The scorer sees the user's history: the training part for
//!   the validation target, the training part plus the validation item for
//!   the test target ([`UserSequence::history`](crate::UserSequence::history)),
//!   and writes one score per catalog item.
//! - **Full ranking (§4).** Candidates are all catalog items except that
//!   history; the target is always ranked, even if it also occurs in the
//!   history (repeat consumption). rank = number of *other* candidates whose
//!   score is higher than or equal to the target's (ties count against the
//!   target). HR@10 = 1 if rank < 10; NDCG@10 = 1 / log2(rank + 2) if rank < 10.
//!   A scorer that means a strict order must put it in its scores (as
//!   [`MostPop`](crate::baselines::MostPop) does with eval-v1's
//!   popularity-then-id order); equal scores are ties, and ties lose.
//! - **Sampled (§5).** The target against `negatives` (100) items drawn
//!   uniformly without replacement from the items the user never interacted
//!   with (not anywhere in the full sequence, whichever the phase), with the
//!   same rank rule. See [`sample_negatives`] and [`user_rng`] for exactly
//!   how the draw is seeded, so a run can be reproduced.
//! - **Groups (§3).** Each case is counted in `overall`, in the eval-v1
//!   group (head/tail) of its target item, and in `cold` when the target has
//!   at most 5 training interactions (a subset of tail on real catalogs, but
//!   counted whatever the target's group).
//! - **Coverage (§6).** Each user's full-ranking top-10 list is the 10 best
//!   candidates by score descending, ties by item index (= id) ascending.
//!   coverage@10 = share of catalog items in at least one list;
//!   tail_share@10 = share of all list slots taken by tail items.
//!
//! Users are scored in parallel (rayon); per-user results are summed in user
//! order, so a report is bit-for-bit reproducible.
//!
//! A NaN score is an error: it comes from a diverged model or a scorer that
//! left an item unscored (the output buffer is filled with NaN before each
//! call), and ranking it would silently produce meaningless figures.

use std::collections::HashSet;
use std::time::Instant;

use rayon::prelude::*;
use tailforge_core::rng::{SplitMix64, mix64};
use tailforge_core::{Error, Result};

pub use crate::dataset::Phase;
use crate::dataset::{Dataset, Group};
pub use tailforge_core::records::{EvalReport, GroupMetrics, GroupedMetrics};

/// The cutoff of every eval-v1 metric.
pub const K: usize = 10;

/// A model as the evaluator sees it: scores for every catalog item, given a user and their history.
pub trait Scorer: Sync {
    /// Writes the score of every catalog item (by dense index) into `out`,
    /// whose length is the dataset's `n_items()`. `user` is the user's index
    /// in the dataset; `history` the items the model may see, oldest first.
    /// Higher is better. `out` arrives filled with NaN: every entry must be written.
    fn score(&self, user: usize, history: &[u32], out: &mut [f32]);

    /// Scores several users at once: `out[k]` for `users[k]` (user index,
    /// history), the same figures as [`Scorer::score`] bit for bit. A scorer
    /// whose cost is streaming a large item table overrides it to read the
    /// table once per block of users instead of once per user.
    fn score_block(&self, users: &[(usize, &[u32])], out: &mut [&mut [f32]]) {
        for (&(user, history), o) in users.iter().zip(out.iter_mut()) {
            self.score(user, history, o);
        }
    }
}

/// Users scored together by [`evaluate`] (see [`Scorer::score_block`]).
pub const USER_BLOCK: usize = 16;

/// eval-v1's seed of the sampled metrics' negative draws
/// (`../shared/EVAL.md` §5: "seeded, seed 42"). MostPop's sampled figures in
/// the tests depend on it through [`user_rng`].
pub const EVAL_V1_SEED: u64 = 42;

/// eval-v1's negatives per sampled case (`../shared/EVAL.md` §5: "the target
/// against 100 negatives drawn uniformly, without replacement").
pub const EVAL_V1_NEGATIVES: usize = 100;

/// Evaluation settings; the defaults are eval-v1's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalOptions {
    /// Seed of the sampled metrics' negative draws ([`EVAL_V1_SEED`]).
    pub seed: u64,
    /// Negatives per sampled case ([`EVAL_V1_NEGATIVES`]).
    pub negatives: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { seed: EVAL_V1_SEED, negatives: EVAL_V1_NEGATIVES }
    }
}

/// HR@10 of a 0-based rank.
pub fn hit(rank: usize) -> f64 {
    if rank < K { 1.0 } else { 0.0 }
}

/// NDCG@10 of a 0-based rank (one relevant item): 1 / log2(rank + 2) if rank < 10.
pub fn ndcg(rank: usize) -> f64 {
    if rank < K { 1.0 / ((rank + 2) as f64).log2() } else { 0.0 }
}

/// eval-v1's rank of `target` among `candidates`: how many candidates other
/// than the target score higher than or equal to it.
pub fn rank_among(scores: &[f32], target: u32, candidates: impl IntoIterator<Item = u32>) -> usize {
    let t = scores[target as usize];
    candidates.into_iter().filter(|&i| i != target && scores[i as usize] >= t).count()
}

/// The full-ranking rank of `target`: among all items not `excluded`.
pub fn full_rank(scores: &[f32], target: u32, excluded: &[bool]) -> usize {
    let t = scores[target as usize];
    let target = target as usize;
    scores.iter().zip(excluded).enumerate().filter(|&(i, (&s, &x))| i != target && !x && s >= t).count()
}

/// The `k` best items not `excluded`, by score descending, ties by index ascending.
pub fn top_k(scores: &[f32], excluded: &[bool], k: usize) -> Vec<u32> {
    let mut top: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    for (i, (&s, &x)) in scores.iter().zip(excluded).enumerate() {
        // An item enters only if strictly better than the current k-th: on a
        // tie the earlier (lower-index) item keeps its place.
        if x || (top.len() == k && s <= top[k - 1].0) {
            continue;
        }
        let pos = top.partition_point(|&(t, _)| t >= s);
        top.insert(pos, (s, i as u32));
        top.truncate(k);
    }
    top.into_iter().map(|(_, i)| i).collect()
}

/// The generator of one user's negatives: `SplitMix64::new(mix64(seed ^ mix64(user)))`,
/// where `user` is the user's index in the [`Dataset`] (users are ordered by
/// user id, as in `sequences.parquet`). It depends on nothing else, so the
/// validation and test cases of a user share the same negatives, and results
/// do not depend on the thread schedule.
pub fn user_rng(seed: u64, user: usize) -> SplitMix64 {
    SplitMix64::new(mix64(seed ^ mix64(user as u64)))
}

/// Draws `count` distinct items, uniformly, from the items with
/// `interacted[i] == false` (the user's never-interacted items), in draw order.
///
/// With P such items among N: if P ≤ count, all of them (ascending index, no
/// randomness). Otherwise, if 2P ≥ N, rejection sampling: repeatedly draw
/// `rng.below(N)` and keep the item unless the user interacted with it or it
/// was already drawn. Otherwise (a user who has seen most of the catalog) a
/// partial Fisher–Yates shuffle of the ascending list of the P items: for
/// j in 0..count swap position j with j + `rng.below(P − j)`. Both give every
/// `count`-subset the same probability.
pub fn sample_negatives(interacted: &[bool], count: usize, rng: &mut SplitMix64) -> Vec<u32> {
    let n = interacted.len();
    let pool_size = interacted.iter().filter(|&&x| !x).count();
    if pool_size <= count {
        return (0..n as u32).filter(|&i| !interacted[i as usize]).collect();
    }
    if 2 * pool_size >= n {
        let mut drawn: Vec<u32> = Vec::with_capacity(count);
        let mut taken: HashSet<u32> = HashSet::with_capacity(count);
        while drawn.len() < count {
            let i = rng.below(n as u64) as u32;
            if !interacted[i as usize] && taken.insert(i) {
                drawn.push(i);
            }
        }
        drawn
    } else {
        let mut pool: Vec<u32> = (0..n as u32).filter(|&i| !interacted[i as usize]).collect();
        for j in 0..count {
            let k = j + rng.below((pool_size - j) as u64) as usize;
            pool.swap(j, k);
        }
        pool.truncate(count);
        pool
    }
}

/// One evaluated case.
struct Case {
    target: u32,
    group: Group,
    cold: bool,
    full_rank: usize,
    sampled_rank: usize,
    top: Vec<u32>,
}

/// Per-thread scratch space: a block of users' scores and two item masks.
struct Scratch {
    scores: Vec<Vec<f32>>,
    excluded: Vec<bool>,
    interacted: Vec<bool>,
}

/// Scores a block of users and evaluates each.
fn evaluate_block<S: Scorer + ?Sized>(
    dataset: &Dataset,
    scorer: &S,
    phase: Phase,
    options: &EvalOptions,
    block: &[usize],
    scratch: &mut Scratch,
) -> Result<Vec<Case>> {
    let Scratch { scores, excluded, interacted } = scratch;
    let users: Vec<(usize, &[u32])> = block.iter().map(|&u| (u, dataset.users[u].history(phase))).collect();
    let mut out: Vec<&mut [f32]> = scores.iter_mut().take(block.len()).map(|s| s.as_mut_slice()).collect();
    for o in out.iter_mut() {
        o.fill(f32::NAN);
    }
    scorer.score_block(&users, &mut out);
    block
        .iter()
        .zip(out)
        .map(|(&u, scores)| evaluate_user(dataset, phase, options, u, scores, excluded, interacted))
        .collect()
}

/// One user's case from its `scores`.
fn evaluate_user(
    dataset: &Dataset,
    phase: Phase,
    options: &EvalOptions,
    u: usize,
    scores: &[f32],
    excluded: &mut [bool],
    interacted: &mut [bool],
) -> Result<Case> {
    let user = &dataset.users[u];
    let target = user.target(phase).ok_or_else(|| {
        Error::internal(format!("user {} is evaluated but has no target", dataset.user_ids.display(u)))
    })?;
    let history = user.history(phase);
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::internal(format!(
            "the scorer gave item {} a NaN score (or none) for user {}",
            dataset.item_ids.display(i),
            dataset.user_ids.display(u)
        )));
    }

    for &i in history {
        excluded[i as usize] = true;
    }
    let full_rank = full_rank(scores, target, excluded);
    let top = top_k(scores, excluded, K);
    for &i in history {
        excluded[i as usize] = false;
    }

    for &i in &user.items {
        interacted[i as usize] = true;
    }
    let negatives = sample_negatives(interacted, options.negatives, &mut user_rng(options.seed, u));
    for &i in &user.items {
        interacted[i as usize] = false;
    }
    let sampled_rank = rank_among(scores, target, negatives);

    Ok(Case {
        target,
        group: dataset.groups[target as usize],
        cold: dataset.cold[target as usize],
        full_rank,
        sampled_rank,
        top,
    })
}

/// Sums of HR and NDCG, then their means.
#[derive(Default)]
struct Sums {
    n: u64,
    hr: f64,
    ndcg: f64,
}

impl Sums {
    fn add(&mut self, rank: usize) {
        self.n += 1;
        self.hr += hit(rank);
        self.ndcg += ndcg(rank);
    }

    fn metrics(&self) -> GroupMetrics {
        if self.n == 0 {
            return GroupMetrics::default();
        }
        GroupMetrics { n: self.n, hr: self.hr / self.n as f64, ndcg: self.ndcg / self.n as f64 }
    }
}

#[derive(Default)]
struct GroupedSums {
    overall: Sums,
    head: Sums,
    tail: Sums,
    cold: Sums,
}

impl GroupedSums {
    fn add(&mut self, group: Group, cold: bool, rank: usize) {
        self.overall.add(rank);
        match group {
            Group::Head => self.head.add(rank),
            Group::Tail => self.tail.add(rank),
        }
        if cold {
            self.cold.add(rank);
        }
    }

    fn metrics(&self) -> GroupedMetrics {
        GroupedMetrics {
            overall: self.overall.metrics(),
            head: self.head.metrics(),
            tail: self.tail.metrics(),
            cold: self.cold.metrics(),
        }
    }
}

/// Evaluates `scorer` on every evaluated user's `phase` target under eval-v1.
///
/// Errors only if the scorer produces a NaN score (see the module docs).
pub fn evaluate<S: Scorer + ?Sized>(
    dataset: &Dataset,
    scorer: &S,
    phase: Phase,
    options: &EvalOptions,
) -> Result<EvalReport> {
    let start = Instant::now();
    let n = dataset.n_items();
    let users: Vec<usize> = dataset.evaluated_users().collect();
    let blocks: Vec<Vec<Case>> = users
        .par_chunks(USER_BLOCK)
        .map_init(
            || Scratch { scores: vec![vec![0.0; n]; USER_BLOCK], excluded: vec![false; n], interacted: vec![false; n] },
            |scratch, block| evaluate_block(dataset, scorer, phase, options, block, scratch),
        )
        .collect::<Result<_>>()?;
    let cases: Vec<Case> = blocks.into_iter().flatten().collect();

    let mut full = GroupedSums::default();
    let mut sampled = GroupedSums::default();
    let mut covered = vec![false; n];
    let (mut slots, mut tail_slots) = (0u64, 0u64);
    for case in &cases {
        full.add(case.group, case.cold, case.full_rank);
        sampled.add(case.group, case.cold, case.sampled_rank);
        for &i in &case.top {
            covered[i as usize] = true;
            slots += 1;
            if dataset.groups[i as usize] == Group::Tail {
                tail_slots += 1;
            }
        }
    }
    if phase == Phase::Test {
        dump_ranks(dataset, &cases);
    }
    let share = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let report = EvalReport {
        full: full.metrics(),
        sampled: sampled.metrics(),
        coverage: share(covered.iter().filter(|&&c| c).count() as u64, n as u64),
        tail_share: share(tail_slots, slots),
    };
    tracing::debug!(
        ?phase,
        users = cases.len(),
        ndcg = report.full.overall.ndcg,
        seconds = start.elapsed().as_secs_f64(),
        "evaluated"
    );
    Ok(report)
}

/// For benchmarks that slice the test figures by item segments the product
/// does not know (e.g. `benches/generate-ablation.sh`: items without a
/// catalog description): with `TAILFORGE_EVAL_RANKS=<file>`, each test
/// evaluation appends a `# evaluation` line and one `item_id,full_rank` line
/// per case (0-based rank). Best effort: a write error is a warning.
fn dump_ranks(dataset: &Dataset, cases: &[Case]) {
    let Some(path) = std::env::var_os("TAILFORGE_EVAL_RANKS") else { return };
    use std::io::Write;
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::OpenOptions::new().create(true).append(true).open(&path)?);
        writeln!(f, "# evaluation")?;
        for c in cases {
            writeln!(f, "{},{}", dataset.item_ids.display(c.target as usize), c.full_rank)?;
        }
        f.flush()
    };
    if let Err(e) = write() {
        tracing::warn!(path = %std::path::Path::new(&path).display(), error = %e, "cannot write the evaluation ranks");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::Ids;

    #[test]
    fn metrics_of_ranks() {
        assert_eq!(ndcg(0), 1.0);
        assert!((ndcg(1) - 0.630930).abs() < 1e-6);
        assert!((ndcg(3) - 0.430677).abs() < 1e-6);
        assert!((ndcg(9) - 1.0 / 11f64.log2()).abs() < 1e-12);
        assert_eq!(ndcg(10), 0.0);
        assert_eq!((hit(0), hit(9), hit(10), hit(500)), (1.0, 1.0, 0.0, 0.0));
    }

    #[test]
    fn ties_count_against_the_target() {
        let scores = [1.0, 3.0, 2.0, 2.0, 2.0, 0.5];
        // target 2 (score 2): item 1 is higher, items 3 and 4 tie → rank 3.
        assert_eq!(rank_among(&scores, 2, 0..6), 3);
        assert_eq!(full_rank(&scores, 2, &[false; 6]), 3);
        // excluding item 1 and 3 → only item 4 ties.
        assert_eq!(full_rank(&scores, 2, &[false, true, false, true, false, false]), 1);
        // a constant scorer earns nothing once 10 other candidates exist.
        let flat = [0.7f32; 11];
        assert_eq!(full_rank(&flat, 0, &[false; 11]), 10);
        assert_eq!(ndcg(full_rank(&flat, 5, &[false; 11])), 0.0);
    }

    #[test]
    fn top_k_breaks_ties_by_index_and_skips_excluded() {
        let scores = [1.0, 5.0, 3.0, 5.0, 3.0, 9.0, 3.0];
        let mut excluded = [false; 7];
        assert_eq!(top_k(&scores, &excluded, 4), vec![5, 1, 3, 2]);
        excluded[5] = true;
        assert_eq!(top_k(&scores, &excluded, 4), vec![1, 3, 2, 4]);
        assert_eq!(top_k(&scores, &excluded, 10), vec![1, 3, 2, 4, 6, 0]);
        assert_eq!(top_k(&scores, &excluded, 0), Vec::<u32>::new());
    }

    #[test]
    fn negatives_are_distinct_never_interacted_and_uniform() {
        // Rejection branch (pool 60 of 80) and pool branch (pool 30 of 80).
        for seen in [20usize, 50] {
            let mut interacted = vec![false; 80];
            for i in 0..seen {
                interacted[(i * 7) % 80] = true;
            }
            let mut counts = vec![0u32; 80];
            for u in 0..4000 {
                let neg = sample_negatives(&interacted, 10, &mut user_rng(42, u));
                assert_eq!(neg.len(), 10);
                let mut d = neg.clone();
                d.sort_unstable();
                d.dedup();
                assert_eq!(d.len(), 10, "duplicates in {neg:?}");
                for &i in &neg {
                    assert!(!interacted[i as usize]);
                    counts[i as usize] += 1;
                }
                assert_eq!(neg, sample_negatives(&interacted, 10, &mut user_rng(42, u)), "not reproducible");
            }
            let pool = 80 - seen;
            let expected = 4000.0 * 10.0 / pool as f64;
            for (i, &c) in counts.iter().enumerate() {
                if !interacted[i] {
                    assert!((c as f64 - expected).abs() < 0.2 * expected, "item {i}: {c} draws, expected {expected}");
                }
            }
        }
        // Fewer never-interacted items than requested: all of them.
        let interacted = [true, false, true, false];
        assert_eq!(sample_negatives(&interacted, 100, &mut user_rng(42, 0)), vec![1, 3]);
    }

    /// Fixed score vectors per user.
    struct Fixed(Vec<Vec<f32>>);

    impl Scorer for Fixed {
        fn score(&self, user: usize, _history: &[u32], out: &mut [f32]) {
            out.copy_from_slice(&self.0[user]);
        }
    }

    /// 12 items (ids 100..=111), head = ceil(2.4) = 3 items.
    /// Training popularity is 1 for items 0, 1, 2, 5, 6, 8, 9, 10, 11 and 0
    /// for 3, 4, 7: the tie at 1 goes by id, so head = {0, 1, 2}.
    fn tiny() -> Dataset {
        Dataset::from_sequences(
            Ids::Int64((100..112).collect()),
            Ids::Utf8(vec!["a".into(), "b".into(), "c".into(), "d".into()]),
            vec![
                vec![0, 1, 2, 3, 4], // train [0, 1, 2], valid 3 (tail), test 4 (tail)
                vec![5, 6, 7, 1],    // train [5, 6], valid 7 (tail), test 1 (head)
                vec![8, 9],          // not evaluated
                vec![10, 11],        // not evaluated
            ],
        )
        .unwrap()
    }

    fn scorer() -> Fixed {
        let flat = vec![0.0; 12];
        Fixed(vec![
            //   0    1    2    3    4    5    6    7    8    9    10   11
            vec![9.0, 9.0, 9.0, 1.0, 5.0, 5.0, 3.0, 0.0, 2.0, 5.0, 8.0, 0.0],
            vec![0.0, 7.0, 0.0, 0.0, 0.0, 6.0, 9.0, 7.0, 0.0, 0.0, 0.0, 0.0],
            flat.clone(),
            flat,
        ])
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn hand_computed_test_phase() {
        let ds = tiny();
        assert_eq!(ds.n_head, 3);
        assert_eq!(&ds.groups[..3], &[Group::Head; 3]);
        assert!(ds.groups[3..].iter().all(|&g| g == Group::Tail));
        let r = evaluate(&ds, &scorer(), Phase::Test, &EvalOptions::default()).unwrap();
        // User a: history [0, 1, 2, 3] excluded (their 9s do not count);
        // target 4 scores 5; items 5 and 9 tie (count against), 10 is higher → rank 3.
        // User b: history [5, 6, 7] excluded; target 1 scores 7, nothing else ≥ 7 → rank 0.
        let (a, b) = (ndcg(3), ndcg(0));
        assert!(close(a, 0.430677));
        assert_eq!(r.full.overall.n, 2);
        assert_eq!(r.full.overall.hr, 1.0);
        assert!(close(r.full.overall.ndcg, (a + b) / 2.0));
        assert_eq!((r.full.head.n, r.full.head.hr, r.full.head.ndcg), (1, 1.0, 1.0));
        assert_eq!(r.full.tail.n, 1);
        assert!(close(r.full.tail.ndcg, 0.430677));
        // Every item has at most 1 training interaction, so every case is cold.
        assert_eq!(r.full.cold, r.full.overall);
        // Sampled: fewer than 100 never-interacted items, so all of them are
        // negatives (a: 5..=11, b: 0, 2, 3, 4, 8..=11) — same ranks here.
        assert_eq!(r.sampled, r.full);
        // Top-10: a's candidates 4..=11 (8 items), b's 0..=4 and 8..=11 (9 items):
        // every item covered; tail slots 8 + 6 of 17.
        assert_eq!(r.coverage, 1.0);
        assert!(close(r.tail_share, 14.0 / 17.0));
    }

    #[test]
    fn hand_computed_valid_phase() {
        let ds = tiny();
        let r = evaluate(&ds, &scorer(), Phase::Valid, &EvalOptions::default()).unwrap();
        // a: history [0, 1, 2]; target 3 scores 1; 4, 5, 6, 8, 9, 10 are ≥ 1 → rank 6.
        // b: history [5, 6]; target 7 scores 7; item 1 ties → rank 1.
        assert_eq!(r.full.overall.n, 2);
        assert_eq!(r.full.head.n, 0);
        assert_eq!(r.full.tail.n, 2);
        assert!(close(r.full.tail.ndcg, (1.0 / 3.0 + 0.630930) / 2.0));
        assert_eq!(r.full.tail.hr, 1.0);
        // Sampled never includes interacted items: for a, item 3's rivals are 5..=11 only.
        // 5, 6, 8, 9, 10 are ≥ 1 → rank 5; b's negatives 0, 2, 3, 4, 8..=11 are all < 7 → rank 0.
        assert!(close(r.sampled.overall.ndcg, (ndcg(5) + 1.0) / 2.0));
    }

    #[test]
    fn nan_scores_are_errors() {
        struct Lazy;
        impl Scorer for Lazy {
            fn score(&self, _user: usize, _history: &[u32], out: &mut [f32]) {
                out[..5].fill(1.0);
            }
        }
        let e = evaluate(&tiny(), &Lazy, Phase::Test, &EvalOptions::default()).unwrap_err();
        assert!(e.to_string().contains("gave item 105 a NaN score"), "{e}");
    }

    #[test]
    fn report_json_shape_and_markdown() {
        let r = evaluate(&tiny(), &scorer(), Phase::Test, &EvalOptions::default()).unwrap();
        let v = serde_json::to_value(r).unwrap();
        assert_eq!(v["full"]["overall"]["n"], 2);
        assert_eq!(v["full"]["head"]["hr@10"], 1.0);
        assert!(v["sampled"]["tail"]["ndcg@10"].is_f64());
        assert_eq!(v["coverage@10"], 1.0);
        assert!(v["tail_share@10"].is_f64());
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 4);
        let md = r.to_markdown();
        assert!(md.contains("| overall | 2 | 1.0000 | 0.7153 |"), "{md}");
        assert!(md.contains("| head | 1 | 1.0000 | 1.0000 |"), "{md}");
        assert!(md.contains("| cold | 2 | 1.0000 | 0.7153 |"), "{md}");
        assert_eq!(v["full"]["cold"]["n"], 2);
    }
}
