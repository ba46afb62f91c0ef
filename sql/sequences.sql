-- sequences: each user's interactions in eval-v1 order: timestamp ascending,
-- ties by item id ascending (MovieLens has many same-second ratings).
-- Input:  interactions(user_id, item_id, ts)
-- Output: sequences(user_id, item_ids, ts, length), ordered by user_id
SELECT
  user_id,
  array_agg(item_id ORDER BY ts, item_id) AS item_ids,
  array_agg(ts ORDER BY ts, item_id)      AS ts,
  count(*)                                AS length
FROM interactions
GROUP BY user_id
ORDER BY user_id
