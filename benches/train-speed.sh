#!/usr/bin/env bash
# make bench-train-speed: seconds per epoch of `tailforge train` (variant id)
# vs the PyTorch SASRec peer, same data and hyper-parameters, evaluation
# excluded. Small cloud VMs drift by ±10% over minutes, so the two programs
# run interleaved, round after round, at each thread count; each run's
# figure is the median of its epochs after the first (warm-up). Prints one
# line per run and a summary: medians over rounds and the range of the
# per-round ratios. Not a test: results go to BENCHMARKS.md by hand.
#
#   BENCH_ROUNDS=4 BENCH_SPEED_THREADS="1 2" BENCH_SPEED_EPOCHS=5 make bench-train-speed
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
OUT=${BENCH_OUT:-bench-out}/train-speed
ROUNDS=${BENCH_ROUNDS:-4}
THREAD_COUNTS=${BENCH_SPEED_THREADS:-1 2}
EPOCHS=${BENCH_SPEED_EPOCHS:-5}
ML=${MOVIELENS_100K:-../shared/data/movielens-100k}
mkdir -p "$OUT"
bash benches/setup-train-venv.sh

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q import movielens --src "$ML" --out "$OUT/ml"
  "$BIN" -q analyze --events "$OUT/ml/events" --items "$OUT/ml/items" --out "$OUT/analyze"
fi

# Median of the epochs after the first, from tailforge's metrics.json or the peer's JSON.
median_epoch() {
  python3 - "$1" <<'PY'
import json, statistics, sys
m = json.load(open(sys.argv[1]))
seconds = m["epoch_seconds"] if "epoch_seconds" in m else [h["seconds"] for h in m["history"]]
print(round(statistics.median(seconds[1:]), 3))
PY
}

: > "$OUT/runs.tsv"
for round in $(seq "$ROUNDS"); do
  for t in $THREAD_COUNTS; do
    rm -rf "$OUT/tailforge"
    # candle's element-wise kernels have a pool of their own: bound it too.
    CANDLE_NUM_THREADS=$t "$BIN" -q train --input "$OUT/analyze" --variant id --out "$OUT/tailforge" \
      --epochs "$EPOCHS" --set train.threads="$t" --set train.eval_every=100000
    printf '%s\t%s\ttailforge\t%s\n' "$round" "$t" "$(median_epoch "$OUT/tailforge/metrics.json")" | tee -a "$OUT/runs.tsv"
    OMP_WAIT_POLICY=PASSIVE .venv-bench/bin/python benches/sasrec_peer.py --data "$OUT/analyze" --epochs "$EPOCHS" \
      --eval-every 100000 --patience 0 --threads "$t" --seed 42 --out "$OUT/peer.json" > /dev/null
    printf '%s\t%s\tpeer\t%s\n' "$round" "$t" "$(median_epoch "$OUT/peer.json")" | tee -a "$OUT/runs.tsv"
  done
done

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), revision $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python3 - "$OUT/runs.tsv" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    rnd, threads, who, secs = line.split()
    runs[int(threads)].setdefault(who, {})[int(rnd)] = float(secs)
print("| threads | PyTorch peer s/epoch | tailforge s/epoch | ratio candle / PyTorch (per-round range) |")
print("|---:|---:|---:|---:|")
for t in sorted(runs):
    tf, peer = runs[t]["tailforge"], runs[t]["peer"]
    ratios = [tf[r] / peer[r] for r in tf if r in peer]
    print(f"| {t} | {statistics.median(peer.values()):.2f} | {statistics.median(tf.values()):.2f} | "
          f"{statistics.median(tf.values()) / statistics.median(peer.values()):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |")
PY
