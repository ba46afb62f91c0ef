-- item_stats: popularity of every item in the catalog or the interactions,
-- its rank, cumulative share, long-tail group and eval-v1 group.
-- Inputs: interactions(user_id, item_id, ts), catalog(item_id, ...),
--         split(valid_item, test_item, evaluated)
-- Params: $rule          'top_share' | 'pareto' | 'min_count' | 'percentile'
--         $share         top_share: head = first ceil($share * items) by rank
--         $pareto_share  pareto: head = fewest top items holding this share
--         $min_count     min_count: tail = fewer interactions than this
--         $percentile    percentile: tail = count at or below this quantile
-- Output: item_stats(item_id, interactions, distinct_users, first_ts, last_ts,
--         train_interactions, rank, cum_share, group, eval_group, in_catalog),
--         ordered by rank. Rank: interactions descending, ties by item id.
WITH pairs AS (
  -- per (item, user) first: the distinct-user count then becomes a plain
  -- count, which spills under a memory limit (count(DISTINCT) state does not)
  SELECT item_id, user_id, count(*) AS n, min(ts) AS first_ts, max(ts) AS last_ts
  FROM interactions
  GROUP BY item_id, user_id
),
counts AS (
  SELECT item_id,
         sum(n)        AS interactions,
         count(*)      AS distinct_users,
         min(first_ts) AS first_ts,
         max(last_ts)  AS last_ts
  FROM pairs
  GROUP BY item_id
),
-- eval-v1 §3: training popularity excludes each evaluated user's validation
-- and test targets, one interaction each.
held_out AS (
  SELECT item_id, count(*) AS n
  FROM (SELECT valid_item AS item_id FROM split WHERE evaluated
        UNION ALL
        SELECT test_item AS item_id FROM split WHERE evaluated)
  GROUP BY item_id
),
all_items AS (
  SELECT coalesce(c.item_id, k.item_id)           AS item_id,
         coalesce(c.interactions, 0)              AS interactions,
         coalesce(c.distinct_users, 0)            AS distinct_users,
         c.first_ts,
         c.last_ts,
         coalesce(c.interactions, 0) - coalesce(h.n, 0) AS train_interactions,
         k.item_id IS NOT NULL                    AS in_catalog
  FROM counts c
  FULL OUTER JOIN (SELECT item_id FROM catalog) k ON c.item_id = k.item_id
  LEFT JOIN held_out h ON h.item_id = coalesce(c.item_id, k.item_id)
),
ranked AS (
  SELECT *,
         row_number() OVER (ORDER BY interactions DESC, item_id)        AS rank,
         sum(interactions) OVER (ORDER BY interactions DESC, item_id
                                 ROWS UNBOUNDED PRECEDING)              AS cum_interactions,
         sum(interactions) OVER ()                                      AS total,
         count(*) OVER ()                                               AS n_items,
         cume_dist() OVER (ORDER BY interactions)                       AS popularity_quantile,
         -- eval-v1: the catalog is the items that occur in the interactions,
         -- ranked by training popularity, ties by item id.
         CASE WHEN interactions > 0 THEN
           row_number() OVER (PARTITION BY interactions > 0
                              ORDER BY train_interactions DESC, item_id) END AS eval_rank,
         sum(CASE WHEN interactions > 0 THEN 1 ELSE 0 END) OVER ()      AS n_eval_items
  FROM all_items
)
SELECT
  item_id,
  interactions,
  distinct_users,
  first_ts,
  last_ts,
  train_interactions,
  CAST(rank AS BIGINT)                                               AS rank,
  CASE WHEN total > 0 THEN CAST(cum_interactions AS DOUBLE) / total ELSE 0.0 END AS cum_share,
  CASE WHEN CASE $rule
              WHEN 'top_share'  THEN rank <= ceil($share * n_items)
              WHEN 'pareto'     THEN CAST(cum_interactions - interactions AS DOUBLE) < $pareto_share * total
              WHEN 'min_count'  THEN interactions >= $min_count
              WHEN 'percentile' THEN popularity_quantile > $percentile
            END
       THEN 'head' ELSE 'tail' END                                   AS "group",
  CASE WHEN eval_rank IS NULL THEN NULL
       WHEN eval_rank <= ceil(0.2 * n_eval_items) THEN 'head'
       ELSE 'tail' END                                               AS eval_group,
  in_catalog
FROM ranked
ORDER BY rank
