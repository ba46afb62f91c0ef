"""The analyze stage written for DuckDB: the peer of `make bench-analyze`.

Runs the same work as `tailforge analyze` (sql/*.sql) on the same Parquet
files — validation scan, sequences, split, item_stats, tail_items, summary —
and writes the same outputs, so the wall times compare like for like.
With --check DIR it also compares its outputs with tailforge's in DIR.

The queries below restate sql/*.sql in DuckDB's dialect (each one names the
file it restates); sql/ is the source of truth. A change there must be made
here too: --check against a fresh tailforge output catches a drift.

usage: python duckdb_analyze.py EVENTS_DIR ITEMS_DIR OUT_DIR [--check TAILFORGE_OUT] [--memory-limit 4GB]
"""
import json
import os
import sys
import time

import duckdb

events, items, out = sys.argv[1:4]
check = sys.argv[sys.argv.index("--check") + 1] if "--check" in sys.argv else None
memory_limit = sys.argv[sys.argv.index("--memory-limit") + 1] if "--memory-limit" in sys.argv else None
os.makedirs(out, exist_ok=True)
con = duckdb.connect()
con.execute(f"SET threads = {os.cpu_count()}")
if memory_limit:
    con.execute(f"SET memory_limit = '{memory_limit}'")
con.execute("SET preserve_insertion_order = true")
t0 = time.time()
con.execute(f"CREATE VIEW events AS SELECT user_id, item_id, ts FROM read_parquet('{events}/**/*.parquet')")
con.execute(f"CREATE VIEW catalog AS SELECT * FROM read_parquet('{items}/**/*.parquet')")

# validate_events.sql / validate_items.sql
v = con.execute("""
  SELECT count(*), count(*) FILTER (user_id IS NULL), count(*) FILTER (item_id IS NULL),
         count(*) FILTER (ts IS NULL), count(*) FILTER (ts < 0 OR ts > 4102444800)
  FROM events""").fetchone()
assert v[0] > 0 and v[1:] == (0, 0, 0, 0), v
d = con.execute("SELECT count(*) FROM (SELECT item_id FROM catalog GROUP BY item_id HAVING count(*) > 1)").fetchone()
assert d[0] == 0, d

def copy(name, query):
    con.execute(f"COPY ({query}) TO '{out}/{name}.parquet' (FORMAT parquet, COMPRESSION zstd)")
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet('{out}/{name}.parquet')")

# restates sql/sequences.sql
copy("sequences", """
  SELECT user_id,
         list(item_id ORDER BY ts, item_id) AS item_ids,
         list(ts ORDER BY ts, item_id)      AS ts,
         count(*)                           AS length
  FROM events GROUP BY user_id ORDER BY user_id""")
# restates sql/split.sql
copy("split", """
  SELECT user_id, length,
         CASE WHEN length >= 3 THEN length - 2 ELSE length END AS train_length,
         CASE WHEN length >= 3 THEN item_ids[length - 1] END  AS valid_item,
         CASE WHEN length >= 3 THEN ts[length - 1] END        AS valid_ts,
         CASE WHEN length >= 3 THEN item_ids[length] END      AS test_item,
         CASE WHEN length >= 3 THEN ts[length] END            AS test_ts,
         length >= 3                                          AS evaluated
  FROM sequences ORDER BY user_id""")
# restates sql/item_stats.sql
copy("item_stats", """
  WITH counts AS (
    SELECT item_id, count(*) AS interactions, count(DISTINCT user_id) AS distinct_users,
           min(ts) AS first_ts, max(ts) AS last_ts
    FROM events GROUP BY item_id),
  held_out AS (
    SELECT item_id, count(*) AS n FROM (
      SELECT valid_item AS item_id FROM split WHERE evaluated
      UNION ALL SELECT test_item FROM split WHERE evaluated) GROUP BY item_id),
  all_items AS (
    SELECT coalesce(c.item_id, k.item_id) AS item_id, coalesce(c.interactions, 0) AS interactions,
           coalesce(c.distinct_users, 0) AS distinct_users, c.first_ts, c.last_ts,
           coalesce(c.interactions, 0) - coalesce(h.n, 0) AS train_interactions,
           k.item_id IS NOT NULL AS in_catalog
    FROM counts c FULL OUTER JOIN (SELECT item_id FROM catalog) k ON c.item_id = k.item_id
    LEFT JOIN held_out h ON h.item_id = coalesce(c.item_id, k.item_id)),
  ranked AS (
    SELECT *, row_number() OVER (ORDER BY interactions DESC, item_id) AS rank,
           sum(interactions) OVER (ORDER BY interactions DESC, item_id ROWS UNBOUNDED PRECEDING) AS cum_interactions,
           sum(interactions) OVER () AS total, count(*) OVER () AS n_items,
           CASE WHEN interactions > 0 THEN row_number() OVER (PARTITION BY interactions > 0
                ORDER BY train_interactions DESC, item_id) END AS eval_rank,
           sum(CASE WHEN interactions > 0 THEN 1 ELSE 0 END) OVER () AS n_eval_items
    FROM all_items)
  SELECT item_id, interactions, distinct_users, first_ts, last_ts, train_interactions, rank,
         CAST(cum_interactions AS DOUBLE) / total AS cum_share,
         CASE WHEN rank <= ceil(0.2 * n_items) THEN 'head' ELSE 'tail' END AS "group",
         CASE WHEN eval_rank IS NULL THEN NULL WHEN eval_rank <= ceil(0.2 * n_eval_items) THEN 'head' ELSE 'tail' END AS eval_group,
         in_catalog
  FROM ranked ORDER BY rank""")
# restates sql/tail_items.sql
copy("tail_items", """
  SELECT s.item_id, c.title, s.interactions, s.rank, c.* EXCLUDE (item_id, title)
  FROM item_stats s JOIN catalog c ON c.item_id = s.item_id
  WHERE s."group" = 'tail' ORDER BY s.rank""")
# restates sql/summary.sql
summary = con.execute("""
  WITH o AS (SELECT interactions, "group", row_number() OVER (ORDER BY interactions, item_id) AS i,
                    count(*) OVER () AS n, sum(interactions) OVER () AS total FROM item_stats)
  SELECT (SELECT count(*) FROM sequences), (SELECT sum(length) FROM sequences),
         sum(CASE WHEN "group" = 'head' THEN interactions ELSE 0 END) / max(total),
         sum((2 * i - n - 1) * interactions) / (max(n) * max(total))
  FROM o""").fetchone()
with open(f"{out}/summary.json", "w") as f:
    json.dump({"users": summary[0], "events": summary[1], "head_share": summary[2], "gini": summary[3]}, f)
print(f"duckdb {duckdb.__version__}: {time.time() - t0:.2f}s")

if check:
    for table, key in [("item_stats", "item_id"), ("split", "user_id"), ("sequences", "user_id")]:
        cols = "*" if table != "item_stats" else "item_id, interactions, distinct_users, first_ts, last_ts, train_interactions, rank, \"group\", eval_group"
        diff = con.execute(f"""
          SELECT count(*) FROM (
            (SELECT {cols} FROM read_parquet('{out}/{table}.parquet') EXCEPT ALL SELECT {cols} FROM read_parquet('{check}/{table}.parquet'))
            UNION ALL
            (SELECT {cols} FROM read_parquet('{check}/{table}.parquet') EXCEPT ALL SELECT {cols} FROM read_parquet('{out}/{table}.parquet')))
        """).fetchone()[0]
        print(f"check {table}: {'identical' if diff == 0 else f'{diff} rows differ'}")
        assert diff == 0
