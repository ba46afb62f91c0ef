-- neighbors: for each long-tail item, the items most often consumed by the
-- same users in their TRAINING sequences (eval-v1: validation and test
-- targets never count, so generated text cannot leak them), with the number
-- of users sharing both. The generate stage shows the neighbours' titles to
-- the model ({neighbors} in the prompt template) so that a rare item is
-- described from what is known about it instead of from its title alone.
-- Inputs: sequences(user_id, item_ids, ...), split(user_id, train_length, ...),
--         item_stats(item_id, group, ...), catalog(item_id, title, ...)
-- Params: $k  neighbours kept per item (0 writes an empty table)
-- Output: neighbors(item_id, neighbor_id, neighbor_title, users, rank),
--         ordered by item_id, rank. Rank: users descending, ties by neighbour id.
WITH training AS (
  -- each user's training items, once per user (a repeat is one co-user)
  SELECT DISTINCT user_id, item_id
  FROM (SELECT s.user_id, unnest(array_slice(s.item_ids, 1, p.train_length)) AS item_id
        FROM sequences s
        JOIN split p ON p.user_id = s.user_id)
),
tail AS (
  -- $k = 0 (neighbours off) empties the query here, before the self-join below,
  -- whose cost grows with the square of history lengths: the planner folds the
  -- constant condition, so nothing is joined, counted or held in memory.
  SELECT t.user_id, t.item_id
  FROM training t
  JOIN item_stats i ON i.item_id = t.item_id AND i."group" = 'tail'
  WHERE $k > 0
),
pairs AS (
  SELECT a.item_id, b.item_id AS neighbor_id, count(*) AS users
  FROM tail a
  JOIN training b ON b.user_id = a.user_id AND b.item_id <> a.item_id
  GROUP BY a.item_id, b.item_id
),
ranked AS (
  SELECT item_id, neighbor_id, users,
         row_number() OVER (PARTITION BY item_id ORDER BY users DESC, neighbor_id) AS rank
  FROM pairs
)
SELECT r.item_id,
       r.neighbor_id,
       c.title                  AS neighbor_title,
       CAST(r.users AS BIGINT)  AS users,
       CAST(r.rank AS BIGINT)   AS rank
FROM ranked r
LEFT JOIN catalog c ON c.item_id = r.neighbor_id
WHERE r.rank <= $k
ORDER BY item_id, rank
