#!/usr/bin/env bash
# make bench-generate-ablation: does grounded generated text lift the cold
# tail? On Amazon Scientific (../shared/data/amazon-scientific, read in place):
#   1. analyze (co-interaction neighbours included);
#   2. generate for the LIMIT tail items with the least catalog text
#      (priority = least_text: the ~10% without a description come first),
#      grounded (extractive keywords, neighbours in the prompt), the same
#      without neighbours (analyze.neighbors = 0: not in the prompt, not in
#      the keyword grammar), and for the first GROUNDING_LIMIT of them two
#      ablations of the prompt, for the grounding figures: free keywords, and
#      free keywords without neighbours;
#   3. train the pipeline's model (dual, sampled softmax, tuned scoring rule)
#      with catalog text only, + generated text without neighbours, and +
#      generated text with neighbours, per seed;
#   4. print NDCG@10 overall / head / tail / cold, and on the test targets
#      whose item has no catalog description (from TAILFORGE_EVAL_RANKS).
# Not a test: prints the tables for BENCHMARKS.md.
#
#   BENCH_LIMIT=450 BENCH_SEEDS="42 7" make bench-generate-ablation
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}/release/tailforge
DATA=${AMAZON_SCIENTIFIC:-../shared/data/amazon-scientific}
OUT=${BENCH_OUT:-bench-out}/amazon-gen
THREADS=${BENCH_THREADS:-2}
LIMIT=${BENCH_LIMIT:-450}
GROUNDING_LIMIT=${BENCH_GROUNDING_LIMIT:-32}
SEEDS=${BENCH_SEEDS:-42 7}
MODEL=${BENCH_MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}
export CANDLE_NUM_THREADS=$THREADS
mkdir -p "$OUT"

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q analyze --events "$DATA/events.parquet" --items "$DATA/items.parquet" --out "$OUT/analyze"
fi

gen() { # name limit extra-settings...
  local name=$1 limit=$2
  shift 2
  /usr/bin/time -f "%e s wall" -o "$OUT/$name.time" "$BIN" generate --input "$OUT/analyze/tail_items.parquet" \
    --out "$OUT/$name" --model "$MODEL" --set generate.limit="$limit" --set generate.priority=least_text \
    --set generate.n_threads="$THREADS" --set generate.cache="$OUT/cache" "$@" > "$OUT/$name.log" 2>&1
}
gen grounded "$LIMIT"
sed '/^{neighbors}$/d' pipelines/prompts/describe.txt > "$OUT/no-neighbors.txt"
if [ ! -f "$OUT/analyze-no-neighbors/_SUCCESS" ]; then
  "$BIN" -q analyze --events "$DATA/events.parquet" --items "$DATA/items.parquet" --out "$OUT/analyze-no-neighbors" \
    --set analyze.neighbors=0
fi
/usr/bin/time -f "%e s wall" -o "$OUT/grounded-no-neighbors.time" "$BIN" generate \
  --input "$OUT/analyze-no-neighbors/tail_items.parquet" --out "$OUT/grounded-no-neighbors" --model "$MODEL" \
  --set generate.limit="$LIMIT" --set generate.priority=least_text --set generate.n_threads="$THREADS" \
  --set generate.cache="$OUT/cache" --set generate.prompt="$OUT/no-neighbors.txt" > "$OUT/grounded-no-neighbors.log" 2>&1
gen free "$GROUNDING_LIMIT" --set generate.keywords=free
gen free-no-neighbors "$GROUNDING_LIMIT" --set generate.keywords=free --set generate.prompt="$OUT/no-neighbors.txt"

common=(--variant dual --set train.loss=sampled_softmax --set train.tune_scoring=true --set train.threads="$THREADS"
  --set train.maxlen=50 --set train.eval_every=5 --set train.patience=10 --epochs 200
  --set train.embedding_cache="${BENCH_TEXT_CACHE:-$OUT/text-cache}")
for seed in $SEEDS; do
  for text in catalog generated-no-neighbors generated; do
    dir="$OUT/dual-$text-seed$seed"
    rm -rf "$dir" "$dir.ranks"
    augment=()
    [ "$text" = generated ] && augment=(--augment "$OUT/grounded")
    [ "$text" = generated-no-neighbors ] && augment=(--augment "$OUT/grounded-no-neighbors")
    [ "$text" = catalog ] && augment=(--set train.use_generated=false)
    TAILFORGE_EVAL_RANKS="$dir.ranks" "$BIN" train --input "$OUT/analyze" --out "$dir" --set seed="$seed" \
      "${common[@]}" "${augment[@]}" > "$dir.log" 2>&1
  done
done

.venv-bench/bin/python benches/generate_ablation_table.py "$OUT" "$DATA" $SEEDS
