-- tail_items: the long-tail items with their catalog text, the input of the
-- generate stage. Items missing from the catalog have no text and are left out.
-- neighbor_titles lists the titles of the item's co-interaction neighbours
-- (neighbors.sql), most shared first; NULL when it has none.
-- Inputs: item_stats(item_id, interactions, rank, group), catalog(item_id, title, <attributes>),
--         neighbors(item_id, neighbor_title, rank)
-- Output: tail_items(item_id, title, interactions, rank, <attributes...>, neighbor_titles), ordered by rank
WITH titles AS (
  SELECT item_id, array_agg(neighbor_title ORDER BY rank) AS neighbor_titles
  FROM neighbors
  WHERE neighbor_title IS NOT NULL
  GROUP BY item_id
)
SELECT s.item_id, c.title, s.interactions, s.rank, c.* EXCLUDE (item_id, title),
       n.neighbor_titles
FROM item_stats s
JOIN catalog c ON c.item_id = s.item_id
LEFT JOIN titles n ON n.item_id = s.item_id
WHERE s."group" = 'tail'
ORDER BY s.rank
