-- tail_items: the long-tail items with their catalog text, the input of the
-- generate stage. Items missing from the catalog have no text and are left out.
-- Inputs: item_stats(item_id, interactions, rank, group), catalog(item_id, title, <attributes>)
-- Output: tail_items(item_id, title, interactions, rank, <attributes...>), ordered by rank
SELECT s.item_id, c.title, s.interactions, s.rank, c.* EXCLUDE (item_id, title)
FROM item_stats s
JOIN catalog c ON c.item_id = s.item_id
WHERE s."group" = 'tail'
ORDER BY s.rank
