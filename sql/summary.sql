-- summary: headline facts of the analyzed data for summary.json.
-- Inputs: item_stats(...), sequences(user_id, length), split(train_length, evaluated)
-- Output: one row. Gini over all items with x sorted ascending, i = 1..n:
--         G = sum((2i - n - 1) * x_i) / (n * sum(x)).
WITH ordered AS (
  SELECT interactions, "group", in_catalog,
         row_number() OVER (ORDER BY interactions, item_id) AS i,
         count(*) OVER ()                                   AS n,
         sum(interactions) OVER ()                          AS total
  FROM item_stats
)
SELECT
  (SELECT count(*) FROM sequences)                                               AS users,
  (SELECT coalesce(sum(length), 0) FROM sequences)                               AS events,
  (SELECT coalesce(sum(train_length), 0) FROM split)                             AS train_interactions,
  (SELECT count(*) FROM split WHERE evaluated)                                   AS evaluated_users,
  sum(CASE WHEN in_catalog THEN 1 ELSE 0 END)                                    AS catalog_items,
  sum(CASE WHEN interactions > 0 THEN 1 ELSE 0 END)                              AS items_with_events,
  sum(CASE WHEN NOT in_catalog THEN 1 ELSE 0 END)                                AS items_missing_from_catalog,
  sum(CASE WHEN in_catalog AND interactions = 0 THEN 1 ELSE 0 END)               AS cold_items,
  sum(CASE WHEN "group" = 'head' THEN 1 ELSE 0 END)                              AS head_items,
  sum(CASE WHEN "group" = 'tail' THEN 1 ELSE 0 END)                              AS tail_items,
  CASE WHEN max(total) > 0
       THEN CAST(sum(CASE WHEN "group" = 'head' THEN interactions ELSE 0 END) AS DOUBLE) / max(total)
       ELSE 0.0 END                                                              AS head_share,
  CASE WHEN max(total) > 0
       THEN sum(CAST(2 * i - n - 1 AS DOUBLE) * interactions) / (CAST(max(n) AS DOUBLE) * max(total))
       ELSE 0.0 END                                                              AS gini
FROM ordered
