-- sequences_sorted: the interactions in eval-v1 order, user by user — the
-- bounded-memory route to `sequences`, used when analyze.memory_limit is set.
-- An external sort spills to disk under the limit; Rust then cuts the sorted
-- stream into one list row per user (crates/analyze/src/sequences.rs), so no
-- operator ever holds a whole user-to-list hash table in memory.
-- Input:  interactions(user_id, item_id, ts)
-- Output: (user_id, item_id, ts) ordered by user_id, ts, item_id
SELECT user_id, item_id, ts
FROM interactions
ORDER BY user_id, ts, item_id
