-- interactions: the events that count as implicit interactions (eval-v1 §1),
-- after the configured duplicate handling.
-- Input:  events(user_id, item_id, ts, event_type, weight)
-- Params: $dedup  'keep_all'       every event is one interaction (eval-v1)
--                 'drop_exact'     rows repeating (user_id, item_id, ts) count once
--                 'first_per_pair' only a user's earliest event per item counts
-- Output: interactions(user_id, item_id, ts)
SELECT user_id, item_id, ts
FROM events
WHERE $dedup = 'keep_all'
UNION ALL
SELECT DISTINCT user_id, item_id, ts
FROM events
WHERE $dedup = 'drop_exact'
UNION ALL
SELECT user_id, item_id, min(ts) AS ts
FROM events
WHERE $dedup = 'first_per_pair'
GROUP BY user_id, item_id
