-- import_movielens_items: MovieLens latest movies.csv + tags.csv → the items contract.
-- Inputs: movies(movieId, title, genres), tags(userId, movieId, tag, timestamp)
-- Output: items(item_id, title, genres, tags); tags are users' free-text
--         labels, lower-cased, de-duplicated, sorted and joined with '|'.
SELECT
  CAST(m."movieId" AS BIGINT) AS item_id,
  CAST(m.title AS VARCHAR)  AS title,
  CAST(m.genres AS VARCHAR) AS genres,
  t.tags
FROM movies m
LEFT JOIN (
  SELECT "movieId",
         array_to_string(array_sort(array_distinct(array_agg(lower(trim(CAST(tag AS VARCHAR)))))), '|') AS tags
  FROM tags
  WHERE tag IS NOT NULL
  GROUP BY "movieId"
) t ON t."movieId" = m."movieId"
ORDER BY item_id
