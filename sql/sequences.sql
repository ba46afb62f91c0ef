-- sequences: each user's interactions in eval-v1 order: timestamp ascending,
-- ties by item id ascending (MovieLens has many same-second ratings).
-- Input:  interactions(user_id, item_id, ts)
-- Output: sequences(user_id, item_ids, ts, length), ordered by user_id
--
-- The order comes from sorting (ts, item_id) structs: array_sort compares
-- structs field by field, which is exactly the eval-v1 order, and it is much
-- faster than array_agg(… ORDER BY …). list_field (a tailforge UDF) takes
-- the field lists back out of the sorted list of structs.
WITH events AS (
  SELECT user_id, array_sort(array_agg(named_struct('ts', ts, 'item_id', item_id))) AS events
  FROM interactions
  GROUP BY user_id
)
SELECT
  user_id,
  list_field(events, 'item_id') AS item_ids,
  list_field(events, 'ts')      AS ts,
  CAST(array_length(events) AS BIGINT) AS length
FROM events
ORDER BY user_id
