//! The near-duplicate filter: a description whose word shingles overlap an
//! already accepted description's by a Jaccard similarity at or above a
//! threshold is rejected (`near_duplicate`). Small models tend to fall back on
//! one stock sentence for items they know nothing about; such rows would give
//! different items the same text vector, which is worse than none.

use std::collections::{HashMap, HashSet};

use tailforge_core::hash::fnv1a64;

/// Accepted descriptions as shingle sets, with an inverted index from
/// shingle to description so that a check compares only with descriptions
/// sharing at least one shingle.
pub struct NearDuplicates {
    shingle: usize,
    threshold: f64,
    sets: Vec<HashSet<u64>>,
    index: HashMap<u64, Vec<u32>>,
}

/// Lower-cased words of `text` (letters and digits; apostrophes dropped).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric() && c != '\'' && c != '’')
        .map(|w| w.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect()
}

/// Hashed `k`-word shingles of `text`; a text shorter than `k` words is one shingle.
pub fn shingles(text: &str, k: usize) -> HashSet<u64> {
    let w = words(text);
    if w.is_empty() {
        return HashSet::new();
    }
    if w.len() < k {
        return HashSet::from([fnv1a64(w.join(" ").as_bytes())]);
    }
    w.windows(k).map(|s| fnv1a64(s.join(" ").as_bytes())).collect()
}

/// Jaccard similarity of two sets (1.0 for two empty sets).
pub fn jaccard(a: &HashSet<u64>, b: &HashSet<u64>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count();
    inter as f64 / (a.len() + b.len() - inter) as f64
}

impl NearDuplicates {
    pub fn new(shingle: usize, threshold: f64) -> NearDuplicates {
        NearDuplicates { shingle: shingle.max(1), threshold, sets: Vec::new(), index: HashMap::new() }
    }

    /// Accepted descriptions held.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The highest similarity at or above the threshold to an accepted
    /// description, or `None` if `text` is not a near duplicate.
    pub fn check(&self, text: &str) -> Option<f64> {
        let s = shingles(text, self.shingle);
        let mut candidates: Vec<u32> = s.iter().filter_map(|h| self.index.get(h)).flatten().copied().collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .into_iter()
            .map(|i| jaccard(&s, &self.sets[i as usize]))
            .filter(|&j| j >= self.threshold)
            .max_by(f64::total_cmp)
    }

    /// Adds an accepted description.
    pub fn insert(&mut self, text: &str) {
        let s = shingles(text, self.shingle);
        let id = self.sets.len() as u32;
        for h in &s {
            self.index.entry(*h).or_default().push(id);
        }
        self.sets.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Descriptions of MovieLens-100k tail items, and near-copies of one of them.
    const A: &str = "Theodore Rex is a 1995 comedy film about a dinosaur detective who teams up with a police officer to solve a murder in a futuristic city.";
    const A_REWORDED: &str = "Theodore Rex is a 1995 comedy film about a dinosaur detective who teams up with a police officer to solve a murder in a futuristic city!";
    const A_STOCK: &str = "Theodore Rex is a 1995 comedy film about a dinosaur detective who teams up with a police officer to solve a murder.";
    const B: &str = "Feast of July is a 1995 period drama about a young woman who flees her past and finds refuge with a family of brothers in rural England.";
    const C: &str = "Stripes is a 1981 comedy film about two friends who join the army, survive basic training and end up on a mission in Czechoslovakia.";

    #[test]
    fn identical_and_near_identical_descriptions_are_caught() {
        let mut d = NearDuplicates::new(3, 0.8);
        assert_eq!(d.check(A), None, "nothing accepted yet");
        d.insert(A);
        assert_eq!(d.check(A), Some(1.0), "identical");
        assert_eq!(d.check(A_REWORDED), Some(1.0), "punctuation and case do not count");
        let j = jaccard(&shingles(A, 3), &shingles(A_STOCK, 3));
        assert!(j > 0.8 && j < 1.0, "a shortened copy: {j}");
        assert!(d.check(A_STOCK).is_some());
        assert_eq!(d.check(B), None, "another item's description of the same shape is kept");
        assert_eq!(d.check(C), None);
        d.insert(B);
        d.insert(C);
        assert_eq!(d.len(), 3);
        assert_eq!(d.check(&C.to_uppercase()), Some(1.0));
    }

    #[test]
    fn threshold_decides() {
        let j = jaccard(&shingles(A, 3), &shingles(B, 3));
        assert!(j < 0.2, "unrelated descriptions share few shingles: {j}");
        let mut strict = NearDuplicates::new(3, 1.0);
        strict.insert(A);
        assert_eq!(strict.check(A_STOCK), None, "threshold 1.0 rejects only identical shingle sets");
        assert_eq!(strict.check(A_REWORDED), Some(1.0));
        let mut loose = NearDuplicates::new(3, 0.1);
        loose.insert(A);
        assert!(loose.check(C).is_none() || jaccard(&shingles(A, 3), &shingles(C, 3)) >= 0.1);
    }

    #[test]
    fn short_texts_are_one_shingle() {
        assert_eq!(shingles("Two words", 3).len(), 1);
        assert!(shingles("", 3).is_empty());
        assert_eq!(jaccard(&shingles("Two words", 3), &shingles("two, WORDS.", 3)), 1.0);
    }
}
