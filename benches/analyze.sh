#!/usr/bin/env bash
# make bench-analyze: tailforge analyze vs DuckDB running equivalent SQL on the
# same demo files, then 100M events under a 4 GB memory limit.
# Not a test: prints wall times, the ratio and peak RSS for BENCHMARKS.md.
#
#   BENCH_EVENTS=10000000 BENCH_BIG_EVENTS=100000000 BENCH_RUNS=3 make bench-analyze
#   BENCH_BIG_EVENTS=0 skips the 100M run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
OUT=${BENCH_OUT:-bench-out}
EVENTS=${BENCH_EVENTS:-10000000}
BIG=${BENCH_BIG_EVENTS:-100000000}
RUNS=${BENCH_RUNS:-3}
DUCKDB_VERSION=${DUCKDB_VERSION:-2.0.0}
mkdir -p "$OUT"

if ! "$OUT/venv/bin/python" -c "import duckdb" 2>/dev/null; then
  python3 -m venv "$OUT/venv"
  "$OUT/venv/bin/pip" install --quiet --disable-pip-version-check "duckdb==$DUCKDB_VERSION"
fi

gen() { # events dir
  local users=$(( $1 / 50 )) items=$(( $1 / 100 ))
  [ -f "$2/demo.json" ] || "$BIN" -q demo-data --users "$users" --items "$items" --events "$1" --seed 1 --out "$2"
}

# measure N CMD...: best of N wall-clock seconds and the peak RSS (KiB) of a
# command, left in $secs and $kib; a failing command stops the benchmark.
measure() {
  local runs=$1 best="" rss=0
  shift
  for _ in $(seq "$runs"); do
    if ! /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > "$OUT/last.log" 2>&1; then
      echo "FAILED: $*" >&2; tail -5 "$OUT/last.log" >&2; exit 1
    fi
    read -r s k < "$OUT/time.txt"
    if [ -z "$best" ] || awk "BEGIN{exit !($s < $best)}"; then best=$s; fi
    [ "$k" -gt "$rss" ] && rss=$k
  done
  secs=$best kib=$rss
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "== $EVENTS events =="
gen "$EVENTS" "$OUT/d$EVENTS"
measure "$RUNS" "$BIN" -q analyze --events "$OUT/d$EVENTS/events" --items "$OUT/d$EVENTS/items" --out "$OUT/tf$EVENTS"
tf_s=$secs tf_kib=$kib
measure "$RUNS" "$OUT/venv/bin/python" benches/duckdb_analyze.py "$OUT/d$EVENTS/events" "$OUT/d$EVENTS/items" "$OUT/dd$EVENTS"
dd_s=$secs dd_kib=$kib
"$OUT/venv/bin/python" benches/duckdb_analyze.py "$OUT/d$EVENTS/events" "$OUT/d$EVENTS/items" "$OUT/dd$EVENTS" --check "$OUT/tf$EVENTS" | grep check
echo "tailforge analyze: ${tf_s}s, peak RSS $((tf_kib / 1024)) MiB"
echo "duckdb $DUCKDB_VERSION:    ${dd_s}s, peak RSS $((dd_kib / 1024)) MiB"
echo "ratio tailforge/duckdb: $(awk "BEGIN{printf \"%.2f\", $tf_s / $dd_s}")"

if [ "$BIG" -gt 0 ]; then
  echo "== $BIG events, memory_limit 4GiB =="
  gen "$BIG" "$OUT/d$BIG"
  measure 1 "$BIN" -q analyze --events "$OUT/d$BIG/events" --items "$OUT/d$BIG/items" --out "$OUT/tf$BIG" \
    --set analyze.memory_limit=4GiB --set "analyze.spill_dir=$OUT/spill"
  echo "tailforge analyze, memory_limit 4GiB: ${secs}s, peak RSS $((kib / 1024)) MiB"
  measure 1 "$BIN" -q analyze --events "$OUT/d$BIG/events" --items "$OUT/d$BIG/items" --out "$OUT/tf$BIG"
  echo "tailforge analyze, no limit:          ${secs}s, peak RSS $((kib / 1024)) MiB"
fi
