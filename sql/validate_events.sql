-- validate_events: one pass over the normalized events that counts every
-- contract violation, so a bad input fails before any output is written.
-- Input:  events(user_id, item_id, ts, event_type, weight)
-- Params: $min_ts, $max_ts  plausible Unix-seconds range (inclusive)
-- Output: one row of counts; Rust turns non-zero counts into located errors.
SELECT
  count(*)                                                           AS rows_read,
  sum(CASE WHEN user_id IS NULL THEN 1 ELSE 0 END)                   AS null_user_id,
  sum(CASE WHEN item_id IS NULL THEN 1 ELSE 0 END)                   AS null_item_id,
  sum(CASE WHEN ts IS NULL THEN 1 ELSE 0 END)                        AS null_ts,
  sum(CASE WHEN ts < $min_ts OR ts > $max_ts THEN 1 ELSE 0 END)      AS implausible_ts,
  min(ts)                                                            AS min_ts,
  max(ts)                                                            AS max_ts,
  -- decodes the text column too, so invalid UTF-8 surfaces here
  sum(octet_length(event_type))                                      AS event_type_bytes
FROM events
