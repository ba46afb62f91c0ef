-- split: eval-v1 §2 leave-one-out. The last interaction is the test target,
-- the second-to-last the validation target, the rest is training. Users with
-- fewer than 3 interactions are not evaluated; all their events train.
-- Input:  sequences(user_id, item_ids, ts, length)   (lists are 1-indexed)
-- Output: split(user_id, length, train_length, valid_item, valid_ts,
--               test_item, test_ts, evaluated), ordered by user_id
SELECT
  user_id,
  length,
  CASE WHEN length >= 3 THEN length - 2 ELSE length END           AS train_length,
  CASE WHEN length >= 3 THEN item_ids[length - 1] END            AS valid_item,
  CASE WHEN length >= 3 THEN ts[length - 1] END                  AS valid_ts,
  CASE WHEN length >= 3 THEN item_ids[length] END                AS test_item,
  CASE WHEN length >= 3 THEN ts[length] END                      AS test_ts,
  length >= 3                                                    AS evaluated
FROM sequences
ORDER BY user_id
