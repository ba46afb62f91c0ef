#!/usr/bin/env bash
# make bench-train-amazon: the cold-tail ablation on Amazon Scientific
# (../shared/data/amazon-scientific, read in place): the reference scorers
# (MostPop, ItemKNN, text kNN), the model variants at two seeds, and the
# PyTorch SASRec peer, all under eval-v1 with the cold group.
# Not a test: prints NDCG@10 overall / head / tail / cold for BENCHMARKS.md.
#
#   BENCH_SEEDS="42 7" BENCH_VARIANTS="id fused dual dual+rule" make bench-train-amazon
#   A variant suffixed "+rule" is trained with train.tune_scoring = true.
#   BENCH_EXTRA="--set train.loss=sampled_softmax" adds settings to every run; BENCH_PEER=0 skips the peer.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
DATA=${AMAZON_SCIENTIFIC:-../shared/data/amazon-scientific}
OUT=${BENCH_OUT:-bench-out}/amazon
THREADS=${BENCH_THREADS:-2}
export CANDLE_NUM_THREADS=$THREADS
SEEDS=${BENCH_SEEDS:-42 7}
VARIANTS=${BENCH_VARIANTS:-id fused dual dual+rule}
mkdir -p "$OUT"

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q analyze --events "$DATA/events.parquet" --items "$DATA/items.parquet" --out "$OUT/analyze"
fi
cache=(--set train.embedding_cache="$OUT/cache")

row() { # label metrics.json
  python3 - "$1" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[2]))
t = m["test"]["full"]
g = lambda k: t[k]["ndcg@10"] if k in t else float("nan")
spe = m.get("seconds_per_epoch")
spe = spe["mean"] if isinstance(spe, dict) else spe
cov = m.get("coverage@10", m["test"].get("coverage@10"))
print(f"| {sys.argv[1]} | {m.get('best_epoch', '–')} | {g('overall'):.4f} | {g('head'):.4f} | {g('tail'):.4f} | "
      f"{g('cold'):.4f} | {t['overall']['hr@10']:.4f} | {cov:.4f} | " + (f"{spe:.2f} |" if spe else "– |"))
PY
}

table=$OUT/table.md
echo "| model | best epoch | NDCG@10 | head | tail | cold | HR@10 | coverage@10 | s/epoch |" > "$table"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|" >> "$table"
for model in mostpop item-knn text-knn knn-blend; do
  "$BIN" -q evaluate --input "$OUT/analyze" --model "$model" --out "$OUT/$model" "${cache[@]}" > /dev/null
  row "$model" "$OUT/$model/metrics.json" >> "$table"
done

common=(--set train.threads="$THREADS" --set train.maxlen=50 --set train.eval_every=5 --set train.patience=10 --epochs 200)
# shellcheck disable=SC2206 # word splitting of BENCH_EXTRA is the point
common+=(${BENCH_EXTRA:-})
for seed in $SEEDS; do
  for v in $VARIANTS; do
    variant=${v%+rule}
    extra=()
    [ "$v" != "$variant" ] && extra=(--set train.tune_scoring=true)
    dir="$OUT/$v-seed$seed"
    rm -rf "$dir"
    "$BIN" train --input "$OUT/analyze" --variant "$variant" --out "$dir" --set seed="$seed" \
      "${cache[@]}" "${common[@]}" "${extra[@]}" > /dev/null
    row "tailforge $v (seed $seed)" "$dir/metrics.json" >> "$table"
  done
done

if [ "${BENCH_PEER:-1}" != 0 ]; then
  bash benches/setup-train-venv.sh
  for seed in $SEEDS; do
    .venv-bench/bin/python benches/sasrec_peer.py --data "$OUT/analyze" --maxlen 50 --epochs 200 --eval-every 5 \
      --patience 10 --threads "$THREADS" --seed "$seed" --out "$OUT/peer-$seed.json"
    row "PyTorch SASRec peer (seed $seed)" "$OUT/peer-$seed.json" >> "$table"
  done
fi

echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$THREADS"
cat "$table"
