//! The in-memory dataset every model trains on and the evaluator scores:
//! eval-v1's catalog as a dense vocabulary, the users' sequences with their
//! leave-one-out split, training popularity and head/tail groups.

use std::cmp::Reverse;

use serde::Serialize;
use tailforge_core::schema::{HEAD, IdKind, TAIL};
use tailforge_core::{Error, Result};

/// Original ids (users or items), by dense index, in their input kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    Int64(Vec<i64>),
    Utf8(Vec<String>),
}

impl Ids {
    pub fn kind(&self) -> IdKind {
        match self {
            Ids::Int64(_) => IdKind::Int64,
            Ids::Utf8(_) => IdKind::Utf8,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Ids::Int64(v) => v.len(),
            Ids::Utf8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id at `index` as text (for logs, reports and error messages).
    pub fn display(&self, index: usize) -> String {
        match self {
            Ids::Int64(v) => v.get(index).map(i64::to_string),
            Ids::Utf8(v) => v.get(index).cloned(),
        }
        .unwrap_or_else(|| format!("<index {index} out of range>"))
    }

    /// Whether the ids are strictly ascending (numeric order for `Int64`,
    /// byte order for `Utf8`, as the analyze stage sorts them).
    fn strictly_ascending(&self) -> bool {
        match self {
            Ids::Int64(v) => v.windows(2).all(|w| w[0] < w[1]),
            Ids::Utf8(v) => v.windows(2).all(|w| w[0] < w[1]),
        }
    }
}

/// An item's eval-v1 group (EVAL.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Head,
    Tail,
}

impl Group {
    /// The label used in `item_stats.eval_group`.
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Head => HEAD,
            Group::Tail => TAIL,
        }
    }
}

/// Which held-out target is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The second-to-last interaction; the model sees the training part.
    Valid,
    /// The last interaction; the model sees the training part plus the validation item.
    Test,
}

/// One user's interactions in eval-v1 order, as dense item indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSequence {
    /// The full sequence: training part, then (if evaluated) validation and test targets.
    pub items: Vec<u32>,
    /// Length of the training part: `items.len() - 2` if evaluated, else `items.len()`.
    pub train_len: usize,
    /// Whether the user has at least 3 interactions (EVAL.md §2).
    pub evaluated: bool,
}

impl UserSequence {
    /// eval-v1 §2: the last interaction is the test target, the second-to-last
    /// the validation target; users with fewer than 3 interactions are not evaluated.
    pub fn new(items: Vec<u32>) -> UserSequence {
        let evaluated = items.len() >= 3;
        let train_len = if evaluated { items.len() - 2 } else { items.len() };
        UserSequence { items, train_len, evaluated }
    }

    /// The training part (all of the sequence for users that are not evaluated).
    pub fn train(&self) -> &[u32] {
        &self.items[..self.train_len]
    }

    pub fn valid_target(&self) -> Option<u32> {
        if self.evaluated { self.items.get(self.train_len).copied() } else { None }
    }

    pub fn test_target(&self) -> Option<u32> {
        if self.evaluated { self.items.get(self.train_len + 1).copied() } else { None }
    }

    /// The held-out target of `phase`, if the user is evaluated.
    pub fn target(&self, phase: Phase) -> Option<u32> {
        match phase {
            Phase::Valid => self.valid_target(),
            Phase::Test => self.test_target(),
        }
    }

    /// What the model sees when predicting `phase`'s target: the training
    /// part, plus the validation item for the test target (EVAL.md §4).
    /// These are also the items excluded from the full ranking's candidates.
    pub fn history(&self, phase: Phase) -> &[u32] {
        match phase {
            Phase::Test if self.evaluated => &self.items[..self.train_len + 1],
            _ => self.train(),
        }
    }
}

/// eval-v1's view of the interactions, in memory.
///
/// Items are indexed densely `0..n_items()` in ascending id order, so "ties
/// by item id ascending" is "ties by index ascending" everywhere.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// eval-v1's catalog: every item that occurs in the interactions, by dense index.
    pub item_ids: Ids,
    /// User ids, by user index (the order of `sequences.parquet`: by user id).
    pub user_ids: Ids,
    /// Per user, by user index.
    pub users: Vec<UserSequence>,
    /// Interactions of each item in the training parts only (EVAL.md §3).
    pub train_popularity: Vec<u32>,
    /// eval-v1 head/tail group of each item.
    pub groups: Vec<Group>,
    /// Number of head items: ceil(0.2 × n_items).
    pub n_head: usize,
    /// Whether each item is eval-v1 `cold`: at most [`COLD_MAX_TRAIN_INTERACTIONS`]
    /// training interactions (0 included), whatever its group.
    pub cold: Vec<bool>,
}

/// eval-v1 §3: a test case is `cold` when its target has at most this many
/// training interactions.
pub const COLD_MAX_TRAIN_INTERACTIONS: u32 = 5;

impl Dataset {
    /// Builds the dataset from each user's full sequence (dense indices in
    /// eval-v1 order), applying the leave-one-out split and computing
    /// training popularity and groups.
    ///
    /// `item_ids` must be strictly ascending and every item must occur in
    /// some sequence (the catalog is the items in the interactions); a
    /// violation is an internal error, as callers build both from the data.
    pub fn from_sequences(item_ids: Ids, user_ids: Ids, sequences: Vec<Vec<u32>>) -> Result<Dataset> {
        let n = item_ids.len();
        if u32::try_from(n).is_err() {
            return Err(Error::internal(format!("{n} items do not fit 32-bit item indices")));
        }
        if user_ids.len() != sequences.len() {
            return Err(Error::internal(format!("{} user ids for {} sequences", user_ids.len(), sequences.len())));
        }
        if !item_ids.strictly_ascending() {
            return Err(Error::internal("item vocabulary is not strictly ascending by id"));
        }
        let mut occurs = vec![false; n];
        let mut train_popularity = vec![0u32; n];
        let users: Vec<UserSequence> = sequences.into_iter().map(UserSequence::new).collect();
        for (u, user) in users.iter().enumerate() {
            for (pos, &item) in user.items.iter().enumerate() {
                let Some(seen) = occurs.get_mut(item as usize) else {
                    return Err(Error::internal(format!(
                        "user {} has item index {item} at position {pos}, beyond the {n} items",
                        user_ids.display(u)
                    )));
                };
                *seen = true;
                if pos < user.train_len {
                    train_popularity[item as usize] += 1;
                }
            }
        }
        if let Some(i) = occurs.iter().position(|&o| !o) {
            return Err(Error::internal(format!(
                "item {} is in the vocabulary but in no sequence",
                item_ids.display(i)
            )));
        }
        let (groups, n_head) = eval_groups(&train_popularity);
        let cold = train_popularity.iter().map(|&p| p <= COLD_MAX_TRAIN_INTERACTIONS).collect();
        Ok(Dataset { item_ids, user_ids, users, train_popularity, groups, n_head, cold })
    }

    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }

    pub fn n_users(&self) -> usize {
        self.users.len()
    }

    /// Indices of the users eval-v1 evaluates (at least 3 interactions).
    pub fn evaluated_users(&self) -> impl Iterator<Item = usize> + '_ {
        self.users.iter().enumerate().filter(|(_, u)| u.evaluated).map(|(i, _)| i)
    }

    /// Interactions in the training parts.
    pub fn train_interactions(&self) -> u64 {
        self.users.iter().map(|u| u.train_len as u64).sum()
    }
}

/// eval-v1 §3: sort the catalog by training popularity descending, ties by
/// item id (= dense index) ascending; the first ceil(0.2 × N) items are the
/// head, the rest (including items without training interactions) the tail.
/// Returns each item's group and the head size.
pub fn eval_groups(train_popularity: &[u32]) -> (Vec<Group>, usize) {
    let n = train_popularity.len();
    // ceil(0.2 × n) = ceil(n / 5), in exact integer arithmetic.
    let n_head = n.div_ceil(5);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by_key(|&i| (Reverse(train_popularity[i]), i));
    let mut groups = vec![Group::Tail; n];
    for &i in &order[..n_head] {
        groups[i] = Group::Head;
    }
    (groups, n_head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_leave_one_out_from_three_interactions() {
        let u = UserSequence::new(vec![4, 2, 7, 1]);
        assert!(u.evaluated);
        assert_eq!(u.train(), &[4, 2]);
        assert_eq!(u.valid_target(), Some(7));
        assert_eq!(u.test_target(), Some(1));
        assert_eq!(u.history(Phase::Valid), &[4, 2]);
        assert_eq!(u.history(Phase::Test), &[4, 2, 7]);

        let short = UserSequence::new(vec![3, 5]);
        assert!(!short.evaluated);
        assert_eq!(short.train(), &[3, 5]);
        assert_eq!(short.target(Phase::Valid), None);
        assert_eq!(short.target(Phase::Test), None);
        assert_eq!(short.history(Phase::Test), &[3, 5]);
    }

    #[test]
    fn head_is_ceil_fifth_by_popularity_then_id() {
        // 11 items → head = ceil(2.2) = 3. Popularity ties at 5 (items 1, 4, 9)
        // and the third head slot goes to the lower id among the tied ones.
        let pop = [0, 5, 2, 9, 5, 0, 1, 1, 3, 5, 0];
        let (groups, n_head) = eval_groups(&pop);
        assert_eq!(n_head, 3);
        let head: Vec<usize> = (0..pop.len()).filter(|&i| groups[i] == Group::Head).collect();
        assert_eq!(head, vec![1, 3, 4]);
        // Exactly 5 items → ceil(1.0) = 1 head item; all-equal popularity → lowest id.
        let (groups, n_head) = eval_groups(&[2, 2, 2, 2, 2]);
        assert_eq!(n_head, 1);
        assert_eq!(groups, vec![Group::Head, Group::Tail, Group::Tail, Group::Tail, Group::Tail]);
        // 1682 items (MovieLens-100k) → 337.
        assert_eq!(eval_groups(&vec![0; 1682]).1, 337);
    }

    #[test]
    fn training_popularity_excludes_held_out_targets() {
        let ds = Dataset::from_sequences(
            Ids::Int64(vec![10, 20, 30, 40]),
            Ids::Int64(vec![1, 2]),
            // user 1: train [0, 1], valid 2, test 3; user 2 (not evaluated): train [3, 3].
            vec![vec![0, 1, 2, 3], vec![3, 3]],
        )
        .unwrap();
        assert_eq!(ds.train_popularity, vec![1, 1, 0, 2]);
        assert_eq!(ds.n_head, 1);
        assert_eq!(ds.groups, vec![Group::Tail, Group::Tail, Group::Tail, Group::Head]);
        assert_eq!(ds.train_interactions(), 4);
        // Every item has at most 5 training interactions: all cold.
        assert_eq!(ds.cold, vec![true; 4]);
        assert_eq!(ds.evaluated_users().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn vocabulary_must_be_ascending_and_used() {
        let e = Dataset::from_sequences(Ids::Int64(vec![2, 1]), Ids::Int64(vec![1]), vec![vec![0, 1]]).unwrap_err();
        assert!(e.to_string().contains("ascending"), "{e}");
        let e = Dataset::from_sequences(Ids::Utf8(vec!["a".into(), "b".into()]), Ids::Int64(vec![1]), vec![vec![0]])
            .unwrap_err();
        assert!(e.to_string().contains("item b is in the vocabulary but in no sequence"), "{e}");
        let e = Dataset::from_sequences(Ids::Int64(vec![1]), Ids::Int64(vec![1]), vec![vec![0, 3]]).unwrap_err();
        assert!(e.to_string().contains("beyond the 1 items"), "{e}");
    }
}
