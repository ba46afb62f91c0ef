#!/usr/bin/env bash
# make bench-scale: how tailforge behaves at catalog and user counts beyond the
# public datasets (issue 21's "scale, measured"). Not a test: prints figures
# for BENCHMARKS.md ("Scale").
#
#  1. analyze: SCALE_USERS users × SCALE_EVENTS events over a SCALE_ITEMS-item
#     demo catalog under analyze.memory_limit = 4GiB: wall, peak RSS (from
#     /usr/bin/time) and peak spill bytes (the spill directory's size, sampled
#     every 0.2 s: spill files live only while a sort or aggregate needs them).
#  2. train: the `id` variant on TRAIN_USERS users over TRAIN_ITEMS items
#     (demo data with a flat Zipf slope, so nearly every item is interacted
#     with and lands in the model's vocabulary), hidden 64, TRAIN_EPOCHS
#     epochs with a validation after each: seconds per epoch, seconds per
#     full-ranking evaluation (validation, test, recommendations), peak RSS.
#
#   SCALE_USERS=10000000 SCALE_EVENTS=100000000 SCALE_ITEMS=1000000 \
#   TRAIN_USERS=100000 TRAIN_EVENTS=5000000 TRAIN_ITEMS=1000000 TRAIN_EPOCHS=1 make bench-scale
#   SCALE_EVENTS=0 skips the analyze part, TRAIN_EVENTS=0 the train part.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
OUT=${BENCH_OUT:-bench-out}/scale
SCALE_USERS=${SCALE_USERS:-10000000}
SCALE_EVENTS=${SCALE_EVENTS:-100000000}
SCALE_ITEMS=${SCALE_ITEMS:-1000000}
TRAIN_USERS=${TRAIN_USERS:-100000}
TRAIN_EVENTS=${TRAIN_EVENTS:-5000000}
TRAIN_ITEMS=${TRAIN_ITEMS:-1000000}
TRAIN_ZIPF=${TRAIN_ZIPF:-0.6}
TRAIN_MAXLEN=${TRAIN_MAXLEN:-50}
TRAIN_EPOCHS=${TRAIN_EPOCHS:-1}
mkdir -p "$OUT"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), revision $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# demo USERS ITEMS EVENTS ZIPF DIR: demo data, generated once.
demo() {
  [ -f "$5/demo.json" ] || "$BIN" -q demo-data --users "$1" --items "$2" --events "$3" --zipf "$4" --seed 1 --out "$5"
}

# timed NAME CMD...: runs CMD under /usr/bin/time, its log in $OUT/NAME.log;
# leaves wall seconds and peak RSS (KiB) in $secs and $kib.
timed() {
  local name=$1
  shift
  if ! /usr/bin/time -f "%e %M" -o "$OUT/$name.time" "$@" > "$OUT/$name.log" 2>&1; then
    echo "FAILED: $*" >&2; tail -5 "$OUT/$name.log" >&2; exit 1
  fi
  read -r secs kib < "$OUT/$name.time"
}

if [ "$SCALE_EVENTS" -gt 0 ]; then
  data="$OUT/d-$SCALE_USERS-$SCALE_EVENTS-$SCALE_ITEMS"
  echo "== analyze: $SCALE_USERS users, $SCALE_EVENTS events, $SCALE_ITEMS items, memory_limit 4GiB =="
  demo "$SCALE_USERS" "$SCALE_ITEMS" "$SCALE_EVENTS" 1.0 "$data"
  rm -rf "$OUT/analyze" "$OUT/spill"
  mkdir -p "$OUT/spill"
  peak=0
  timed analyze "$BIN" analyze --events "$data/events" --items "$data/items" --out "$OUT/analyze" \
    --set analyze.memory_limit=4GiB --set "analyze.spill_dir=$OUT/spill" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    now=$(du -sb "$OUT/spill" 2>/dev/null | cut -f1)
    [ "${now:-0}" -gt "$peak" ] && peak=$now
    sleep 0.2
  done
  wait "$pid"
  read -r secs kib < "$OUT/analyze.time"
  echo "analyze: ${secs}s wall, peak RSS $((kib / 1024)) MiB, peak spill $((peak / 1048576)) MiB"
  grep -E "written|analyze done" "$OUT/analyze.log" || true
fi

if [ "$TRAIN_EVENTS" -gt 0 ]; then
  data="$OUT/t-$TRAIN_USERS-$TRAIN_EVENTS-$TRAIN_ITEMS"
  echo "== train id: $TRAIN_USERS users, $TRAIN_EVENTS events, $TRAIN_ITEMS items (zipf $TRAIN_ZIPF), maxlen $TRAIN_MAXLEN =="
  demo "$TRAIN_USERS" "$TRAIN_ITEMS" "$TRAIN_EVENTS" "$TRAIN_ZIPF" "$data"
  # Neighbours feed generation only; their self-join grows with the square of history length.
  [ -f "$data/analyze/_SUCCESS" ] || "$BIN" -q analyze --events "$data/events" --items "$data/items" --out "$data/analyze" \
    --set analyze.neighbors=0
  rm -rf "$OUT/train"
  timed train "$BIN" --log-format json train --input "$data/analyze" --variant id --out "$OUT/train" \
    --epochs "$TRAIN_EPOCHS" --set train.eval_every=1 --set "train.maxlen=$TRAIN_MAXLEN"
  python3 - "$OUT/train.log" "$OUT/train/metrics.json" "$secs" "$kib" <<'PY'
import json, sys
log, metrics, wall, kib = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
events = [json.loads(l) for l in open(log) if l.startswith("{")]
def field(message, key):
    return [e[key] for e in events if e.get("message") == message and key in e]
m = json.load(open(metrics))
training = [e for e in events if e.get("message") == "training"][0]
print(f"users {training['users']}, items in the vocabulary {training['items']}, parameters {m['parameters']}")
print(f"s/epoch: {[round(s, 1) for s in field('epoch', 'seconds')]}")
print(f"validation inside the loop, s: {[round(s, 1) for s in field('epoch', 'valid_seconds')]}")
for what in ("validation evaluated", "test evaluated", "recommendations ranked"):
    print(f"{what}: {[round(s, 1) for s in field(what, 'seconds')]} s")
print(f"test cases: {m['test']['full']['overall']['n']}, of them cold: {m['test']['full']['cold']['n']}")
print(f"train wall {wall:.0f} s, peak RSS {kib / 1048576:.2f} GiB")
PY
fi
