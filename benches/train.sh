#!/usr/bin/env bash
# make bench-train: the candle SASRec (`tailforge train`) vs a PyTorch SASRec
# peer (benches/sasrec_peer.py, a port of SASRec.pytorch) on MovieLens-100k,
# same hyper-parameters, same threads, both evaluated under eval-v1; then the
# ablations of the item representation (id / text / fused, catalog text only
# and with generated text when a generate output is given).
# Not a test: prints seconds per epoch, the ratio and NDCG@10 for BENCHMARKS.md.
#
#   BENCH_THREADS=2 BENCH_EPOCHS=200 make bench-train
#   BENCH_GENERATED=path/to/generate/out make bench-train   # adds the with-generated-text rows
#   BENCH_PEER=0 skips the PyTorch peer; BENCH_VARIANTS="id fused" picks variants.
#   BENCH_LENGTH_BUCKETS=4 trains both with length-bucketed batches (train.length_buckets;
#   the peer's --length-buckets), BENCH_EXTRA="--set train.id_init=text_pca" adds settings.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
OUT=${BENCH_OUT:-bench-out}/train
THREADS=${BENCH_THREADS:-2}
# candle's element-wise kernels have their own pool (default: all physical
# cores); the peer's torch.set_num_threads bounds all of torch's work.
export CANDLE_NUM_THREADS=$THREADS
EPOCHS=${BENCH_EPOCHS:-200}
EVAL_EVERY=${BENCH_EVAL_EVERY:-5}
PATIENCE=${BENCH_PATIENCE:-10}
VARIANTS=${BENCH_VARIANTS:-id text fused}
BUCKETS=${BENCH_LENGTH_BUCKETS:-1}
ML=${MOVIELENS_100K:-../shared/data/movielens-100k}
mkdir -p "$OUT"

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q import movielens --src "$ML" --out "$OUT/ml"
  "$BIN" -q analyze --events "$OUT/ml/events" --items "$OUT/ml/items" --out "$OUT/analyze"
fi

common=(--set train.threads="$THREADS" --set train.eval_every="$EVAL_EVERY" --set train.patience="$PATIENCE"
        --set train.embedding_cache="$OUT/cache" --set train.length_buckets="$BUCKETS" --epochs "$EPOCHS")
# shellcheck disable=SC2206 # word splitting of BENCH_EXTRA is the point
common+=(${BENCH_EXTRA:-})
row() { # label metrics.json
  python3 - "$1" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[2]))
test = m["test"]
t = test["full"]
spe = m["seconds_per_epoch"]
spe = spe["mean"] if isinstance(spe, dict) else spe  # the peer reports mean/median/min
cov = m.get("coverage@10", test.get("coverage@10"))
share = m.get("tail_share@10", test.get("tail_share@10"))
print(f"| {sys.argv[1]} | {spe:.2f} | {m.get('best_epoch', '?')} | "
      f"{t['overall']['ndcg@10']:.4f} | {t['head']['ndcg@10']:.4f} | {t['tail']['ndcg@10']:.4f} | "
      f"{t['overall']['hr@10']:.4f} | {cov:.4f} | {share:.4f} |")
PY
}

echo "| model | s/epoch | best epoch | NDCG@10 | head NDCG@10 | tail NDCG@10 | HR@10 | coverage@10 | tail share@10 |" > "$OUT/table.md"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|" >> "$OUT/table.md"

for v in $VARIANTS; do
  rm -rf "$OUT/$v"
  "$BIN" train --input "$OUT/analyze" --variant "$v" --out "$OUT/$v" "${common[@]}"
  row "tailforge $v (catalog text)" "$OUT/$v/metrics.json" >> "$OUT/table.md"
  if [ -n "${BENCH_GENERATED:-}" ] && [ "$v" != id ]; then
    rm -rf "$OUT/$v-gen"
    "$BIN" train --input "$OUT/analyze" --augment "$BENCH_GENERATED" --variant "$v" --out "$OUT/$v-gen" "${common[@]}"
    row "tailforge $v (+ generated text)" "$OUT/$v-gen/metrics.json" >> "$OUT/table.md"
  fi
done

if [ "${BENCH_PEER:-1}" != 0 ]; then
  bash benches/setup-train-venv.sh
  .venv-bench/bin/python benches/sasrec_peer.py --data "$OUT/analyze" --epochs "$EPOCHS" --eval-every "$EVAL_EVERY" \
    --patience "$PATIENCE" --threads "$THREADS" --length-buckets "$BUCKETS" --seed 42 --out "$OUT/peer.json"
  row "PyTorch SASRec peer ($(.venv-bench/bin/python -c 'import torch; print(torch.__version__)'))" "$OUT/peer.json" >> "$OUT/table.md"
fi

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$THREADS, length_buckets=$BUCKETS"
cat "$OUT/table.md"
