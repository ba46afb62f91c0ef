//! Property tests of the eval-v1 evaluator (docs/reliability.md, "Property
//! tests"; the protocol is ../shared/EVAL.md) on random small datasets and
//! random scores with many ties, infinities and signed zeros.
//!
//! The reference below is written from EVAL.md, not from src/eval.rs: the
//! leave-one-out split (§2), training popularity and the head/tail/cold
//! groups (§3), the full-ranking rank with ties against the target (§4).

use proptest::prelude::*;
use proptest::test_runner::Config;
use tailforge_train::Phase;
use tailforge_train::eval::{EvalOptions, EvalReport, GroupMetrics, Scorer, evaluate, full_rank, rank_among};
use tailforge_train::{Dataset, Ids};

/// Case counts (also in docs/reliability.md).
const EVAL_CASES: u32 = 512;
const TIE_CASES: u32 = 1024;
const NAN_CASES: u32 = 128;

fn config(cases: u32) -> Config {
    // Failures become explicit regression tests below, not files.
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Fixed scores per user, whatever the history.
struct Fixed(Vec<Vec<f32>>);

impl Scorer for Fixed {
    fn score(&self, user: usize, _history: &[u32], out: &mut [f32]) {
        out.copy_from_slice(&self.0[user]);
    }
}

/// A score: mostly from a handful of values (ties), else anything but NaN.
fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        3 => prop::sample::select(vec![0.0f32, -0.0, 1.0, 2.0, -1.0, f32::INFINITY, f32::NEG_INFINITY]),
        1 => any::<f32>().prop_filter("not NaN", |s| !s.is_nan()),
    ]
}

/// A random small interaction log: up to 12 users with 1..=14 interactions
/// over up to 40 item ids (repeats allowed, some items popular), with a
/// score vector per user. Item ids are re-indexed densely over the items
/// that occur (eval-v1's catalog), keeping their order.
#[derive(Debug, Clone)]
struct Case {
    sequences: Vec<Vec<u32>>,
    n_items: usize,
    scores: Vec<Vec<f32>>,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=40, 1usize..=12)
        .prop_flat_map(|(ids, users)| {
            let item = prop_oneof![1 => 0..ids.min(3) as u32, 3 => 0..ids as u32];
            proptest::collection::vec(proptest::collection::vec(item, 1..=14), users)
        })
        .prop_map(|raw| {
            let mut used: Vec<u32> = raw.iter().flatten().copied().collect();
            used.sort_unstable();
            used.dedup();
            let dense = |i: &u32| used.binary_search(i).unwrap() as u32;
            let sequences = raw.iter().map(|s| s.iter().map(dense).collect()).collect();
            (sequences, used.len())
        })
        .prop_flat_map(|(sequences, n_items): (Vec<Vec<u32>>, usize)| {
            let users = sequences.len();
            proptest::collection::vec(proptest::collection::vec(score(), n_items), users).prop_map(move |scores| Case {
                sequences: sequences.clone(),
                n_items,
                scores,
            })
        })
}

fn dataset(c: &Case) -> Dataset {
    Dataset::from_sequences(
        Ids::Int64((0..c.n_items as i64).map(|i| i * 10).collect()),
        Ids::Int64((0..c.sequences.len() as i64).collect()),
        c.sequences.clone(),
    )
    .unwrap()
}

/// One group's figures by EVAL.md, from (rank, in group) per case.
#[derive(Debug, Default)]
struct Expected {
    n: u64,
    hr: f64,
    ndcg: f64,
}

impl Expected {
    fn add(&mut self, rank: usize) {
        self.n += 1;
        if rank < 10 {
            self.hr += 1.0;
            self.ndcg += 1.0 / ((rank + 2) as f64).log2();
        }
    }

    fn check(&self, name: &str, got: &GroupMetrics) -> Result<(), TestCaseError> {
        prop_assert_eq!(got.n, self.n, "{} n", name);
        let mean = |x: f64| if self.n == 0 { 0.0 } else { x / self.n as f64 };
        prop_assert!((got.hr - mean(self.hr)).abs() < 1e-9, "{} HR {} != {}", name, got.hr, mean(self.hr));
        prop_assert!((got.ndcg - mean(self.ndcg)).abs() < 1e-9, "{} NDCG {} != {}", name, got.ndcg, mean(self.ndcg));
        Ok(())
    }
}

/// EVAL.md's full-ranking figures (overall, head, tail, cold) of `phase`.
fn reference(c: &Case, phase: Phase) -> [Expected; 4] {
    // §2: the last interaction is the test target, the one before it the
    // validation target; users with fewer than 3 are not evaluated and train.
    fn train(s: &[u32]) -> &[u32] {
        if s.len() >= 3 { &s[..s.len() - 2] } else { s }
    }
    // §3: popularity over the training parts; head = first ceil(0.2 N) by
    // popularity descending, id ascending; cold = at most 5 training interactions.
    let mut popularity = vec![0u32; c.n_items];
    for s in &c.sequences {
        for &i in train(s) {
            popularity[i as usize] += 1;
        }
    }
    let mut order: Vec<usize> = (0..c.n_items).collect();
    order.sort_by(|&a, &b| popularity[b].cmp(&popularity[a]).then(a.cmp(&b)));
    let n_head = (c.n_items as f64 * 0.2).ceil() as usize;
    let head: Vec<usize> = order[..n_head].to_vec();
    let mut out: [Expected; 4] = Default::default();
    for (u, s) in c.sequences.iter().enumerate() {
        if s.len() < 3 {
            continue;
        }
        let (target, seen) = match phase {
            Phase::Valid => (s[s.len() - 2], &s[..s.len() - 2]),
            Phase::Test => (s[s.len() - 1], &s[..s.len() - 1]),
        };
        // §4: candidates are the catalog minus what the model saw; rank =
        // other candidates scoring higher than or equal to the target.
        let t = c.scores[u][target as usize];
        let rank = (0..c.n_items as u32)
            .filter(|i| *i != target && !seen.contains(i))
            .filter(|&i| c.scores[u][i as usize] >= t)
            .count();
        out[0].add(rank);
        if head.contains(&(target as usize)) {
            out[1].add(rank);
        } else {
            out[2].add(rank);
        }
        if popularity[target as usize] <= 5 {
            out[3].add(rank);
        }
    }
    out
}

fn in_unit(x: f64) -> bool {
    (0.0..=1.0).contains(&x)
}

fn check_report(r: &EvalReport, expected: &[Expected; 4]) -> Result<(), TestCaseError> {
    for (name, g) in r.full.groups().into_iter().chain(r.sampled.groups()) {
        prop_assert!(in_unit(g.hr) && in_unit(g.ndcg), "{} out of [0, 1]: {:?}", name, g);
        prop_assert!(g.ndcg <= g.hr + 1e-12, "{}: NDCG@10 above HR@10: {:?}", name, g);
    }
    prop_assert!(in_unit(r.coverage) && in_unit(r.tail_share), "{:?}", r);
    for ((name, got), want) in r.full.groups().into_iter().zip(expected) {
        want.check(name, got)?;
    }
    for (full, sampled) in [
        (r.full.overall, r.sampled.overall),
        (r.full.head, r.sampled.head),
        (r.full.tail, r.sampled.tail),
        (r.full.cold, r.sampled.cold),
    ] {
        prop_assert_eq!(full.n, sampled.n, "sampled and full count the same cases");
    }
    // Head and tail partition the cases; cold is a subset of them.
    prop_assert_eq!(r.full.head.n + r.full.tail.n, r.full.overall.n);
    prop_assert!(r.full.cold.n <= r.full.overall.n);
    let weighted = |g: &GroupMetrics| g.hr * g.n as f64;
    prop_assert!((weighted(&r.full.head) + weighted(&r.full.tail) - weighted(&r.full.overall)).abs() < 1e-9);
    Ok(())
}

proptest! {
    #![proptest_config(config(EVAL_CASES))]

    /// For any dataset and scores (512 cases, both phases): every HR@10 and
    /// NDCG@10 (full and sampled) is in [0, 1] and NDCG ≤ HR; coverage and
    /// tail share are in [0, 1]; the full-ranking figures of every group equal
    /// EVAL.md's, computed independently above (ties count against the
    /// target); head and tail partition the cases and cold is the cases whose
    /// target has at most 5 training interactions, whatever its group.
    #[test]
    fn metrics_match_eval_v1_and_groups_partition(c in case()) {
        let ds = dataset(&c);
        let scorer = Fixed(c.scores.clone());
        for phase in [Phase::Valid, Phase::Test] {
            let r = evaluate(&ds, &scorer, phase, &EvalOptions::default()).unwrap();
            check_report(&r, &reference(&c, phase))?;
        }
    }
}

proptest! {
    #![proptest_config(config(TIE_CASES))]

    /// Ties count against the target (1024 cases): a target tied with k other
    /// candidates and below h of them has rank h + k, and lifting its score
    /// just above the tie improves its rank by exactly k; excluded items
    /// never count. Same for the sampled metrics' `rank_among`.
    #[test]
    fn ties_count_against_the_target(
        scores in proptest::collection::vec(score(), 1..60),
        excluded_bits in proptest::collection::vec(any::<bool>(), 60),
        target_pick in any::<prop::sample::Index>(),
    ) {
        let n = scores.len();
        let target = target_pick.index(n);
        let excluded: Vec<bool> = excluded_bits[..n].to_vec();
        let t = scores[target];
        let others = || (0..n).filter(|&i| i != target && !excluded[i]);
        let higher = others().filter(|&i| scores[i] > t).count();
        let tied = others().filter(|&i| scores[i] == t).count();
        let rank = full_rank(&scores, target as u32, &excluded);
        prop_assert_eq!(rank, higher + tied);
        let candidates: Vec<u32> = others().map(|i| i as u32).chain([target as u32]).collect();
        prop_assert_eq!(rank_among(&scores, target as u32, candidates.iter().copied()), rank);
        if t < f32::INFINITY {
            let mut lifted = scores.clone();
            lifted[target] = t.next_up();
            prop_assert_eq!(full_rank(&lifted, target as u32, &excluded), rank - tied);
        }
    }
}

proptest! {
    #![proptest_config(config(NAN_CASES))]

    /// A NaN score anywhere an evaluated user is scored is an error naming
    /// the item, never a figure (128 cases).
    #[test]
    fn a_nan_score_is_an_error(c in case(), pick in any::<prop::sample::Index>(), item in any::<prop::sample::Index>()) {
        let ds = dataset(&c);
        let evaluated: Vec<usize> = ds.evaluated_users().collect();
        prop_assume!(!evaluated.is_empty());
        let u = evaluated[pick.index(evaluated.len())];
        let i = item.index(c.n_items);
        let mut scores = c.scores.clone();
        scores[u][i] = f32::NAN;
        let e = evaluate(&ds, &Fixed(scores), Phase::Test, &EvalOptions::default()).unwrap_err();
        prop_assert!(e.to_string().contains("NaN score"), "{}", e);
    }
}

/// A constant scorer earns nothing once 10 other candidates exist (EVAL.md
/// §4: "a model that scores everything alike earns nothing"), end to end.
#[test]
fn a_constant_scorer_earns_nothing() {
    let items = 30u32;
    let sequences: Vec<Vec<u32>> = (0..5).map(|u| (0..items).map(|i| (i + u * 7) % items).take(4).collect()).collect();
    let mut all: Vec<u32> = sequences.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    let sequences: Vec<Vec<u32>> =
        sequences.iter().map(|s| s.iter().map(|i| all.binary_search(i).unwrap() as u32).collect()).collect();
    let c = Case { n_items: all.len(), scores: vec![vec![0.5; all.len()]; 5], sequences };
    let r = evaluate(&dataset(&c), &Fixed(c.scores.clone()), Phase::Test, &EvalOptions::default()).unwrap();
    assert_eq!(r.full.overall.n, 5);
    assert_eq!((r.full.overall.hr, r.full.overall.ndcg), (0.0, 0.0));
}
