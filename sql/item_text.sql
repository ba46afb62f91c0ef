-- item_text: the catalog text of every item with interactions (head and
-- tail alike), which the train stage encodes into item text embeddings.
-- Items missing from the catalog keep their row with a NULL title, so the
-- recommender's vocabulary and this table cover the same items.
-- Inputs: item_stats(item_id, interactions), catalog(item_id, title, <attributes>)
-- Output: item_text(item_id, title, <attributes...>), ordered by item_id
SELECT s.item_id, c.title, c.* EXCLUDE (item_id, title)
FROM item_stats s
LEFT JOIN catalog c ON c.item_id = s.item_id
WHERE s.interactions > 0
ORDER BY s.item_id
