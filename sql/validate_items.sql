-- validate_items: counts catalog contract violations in one pass.
-- Input:  catalog(item_id, title, <attributes>)
-- Output: one row: rows, null ids, how many ids repeat and the smallest such id
--         (as text, since ids may be integers or strings).
WITH per_id AS (
  SELECT item_id, count(*) AS n FROM catalog WHERE item_id IS NOT NULL GROUP BY item_id
)
SELECT
  (SELECT count(*) FROM catalog)                                AS rows_read,
  (SELECT count(*) FROM catalog WHERE item_id IS NULL)          AS null_item_id,
  (SELECT count(*) FROM per_id WHERE n > 1)                     AS duplicated_ids,
  (SELECT CAST(min(item_id) AS VARCHAR) FROM per_id WHERE n > 1) AS first_duplicated_id,
  (SELECT max(n) FROM per_id)                                   AS max_repeats
