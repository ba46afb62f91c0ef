-- import_movielens_events: MovieLens latest ratings.csv → the events contract.
-- Input:  ratings(userId, movieId, rating, timestamp)
-- Output: events(user_id, item_id, ts, event_type, weight); every rating is
--         one implicit interaction (eval-v1 §1), the rating kept as weight.
SELECT
  CAST("userId" AS BIGINT)    AS user_id,
  CAST("movieId" AS BIGINT)   AS item_id,
  CAST("timestamp" AS BIGINT) AS ts,
  'rating'                  AS event_type,
  CAST(rating AS DOUBLE)    AS weight
FROM ratings
ORDER BY user_id, ts, item_id
