#!/usr/bin/env bash
# make bench-generate-ideal: tailforge generate's wall time against the ideal
# batch of the same model (benches/generate/ideal_batch.cpp, compiled against
# the llama.cpp of this cargo build), at each parallel × threads.
#
# For each run, ideal wall = prompt tokens decoded / ideal prompt tok/s
#                           + generated tokens / ideal decode tok/s at `parallel`,
# where the ideal rates come from NPL = parallel sequences with the run's own mean
# prompt length (the whole prompt, shared prefix included: the context each
# answer token attends to) and mean answer length; the prompt tokens decoded
# count the shared prefix once. "ratio" = ideal / tailforge (1.0 = no time lost to
# scheduling, sampling, grammar, retries' bookkeeping or I/O; tokens spent on
# rejected attempts count as tailforge's, so they lower the ratio only through
# the tokens themselves being decoded — see "attempts per item").
# Not a test: prints a table for BENCHMARKS.md. Run it on a quiet machine.
#
#   BENCH_GEN_ITEMS=64 BENCH_GEN_PARALLEL="1 4 8 16" BENCH_GEN_THREADS="1 2" make bench-generate-ideal
#   BENCH_GEN_REUSE=1 keeps the generate runs already under $BENCH_OUT and only re-measures the ideal.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}
BIN=$TARGET/release/tailforge
OUT=${BENCH_OUT:-bench-out}/generate-ideal
ITEMS=${BENCH_GEN_ITEMS:-64}
PARALLEL=${BENCH_GEN_PARALLEL:-1 4 8 16}
THREADS=${BENCH_GEN_THREADS:-1 2}
MODEL=${BENCH_GEN_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ML=${MOVIELENS_100K:-../shared/data/movielens-100k}
N_CTX=2048
mkdir -p "$OUT"

LIB=$(ls -td "$TARGET"/release/build/llama-cpp-sys-2-*/out/lib 2>/dev/null | while read -r d; do
  [ -f "$d/libllama.a" ] && echo "$d" && break; done)
[ -n "$LIB" ] || { echo "no llama-cpp-sys-2 build under $TARGET: run make build" >&2; exit 1; }
"${CXX:-c++}" -O2 -std=c++17 -I "$(dirname "$LIB")/include" benches/generate/ideal_batch.cpp -o "$OUT/ideal_batch" \
  -L "$LIB" -lllama -lggml -lggml-cpu -lggml-base -lpthread -lm -ldl

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q import movielens --src "$ML" --out "$OUT/ml" >&2
  "$BIN" -q analyze --events "$OUT/ml/events" --items "$OUT/ml/items" --out "$OUT/analyze" >&2
fi

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), revision $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $ITEMS MovieLens-100k tail items, seed 42"
printf '| threads | parallel | accepted / rejected | attempts per item | prompt tokens (shared prefix) | generated tokens | tailforge wall s | ideal prompt tok/s | ideal decode tok/s | ideal wall s | ratio ideal / tailforge |\n'
printf '|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for t in $THREADS; do
  for p in $PARALLEL; do
    if [ "${BENCH_GEN_REUSE:-0}" != 1 ] || [ ! -f "$OUT/t$t-p$p/summary.json" ]; then
    rm -rf "$OUT/t$t-p$p"
    "$BIN" -q generate --input "$OUT/analyze" --out "$OUT/t$t-p$p" --limit "$ITEMS" --parallel "$p" \
      --threads "$t" --seed 42 --model "$MODEL" >/dev/null
    fi
    # The run's mean prompt (item part) and answer lengths, for the ideal batch's shape.
    read -r npp ntg < <(python3 - "$OUT/t$t-p$p/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
attempts = s["accepted"] + sum(s["filtered_attempts"].values())
print(max(1, round((s["prompt_tokens"] - s["shared_prefix_tokens"]) / attempts + s["shared_prefix_tokens"])),
      max(1, round(s["generated_tokens"] / attempts)))
PY
)
    ideal=$("$OUT/ideal_batch" "$MODEL" "$N_CTX" "$t" "$npp" "$ntg" "$p" 2>"$OUT/ideal-t$t-p$p.log")
    python3 - "$OUT/t$t-p$p/summary.json" "$ideal" "$t" "$p" <<'PY'
import json, sys
s, i, t, p = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
rejected = sum(s["rejected"].values())
attempts = s["accepted"] + sum(s["filtered_attempts"].values())
ideal = s["prompt_tokens"] / i["prompt_tok_s"] + s["generated_tokens"] / i["generated_tok_s"]
print(f"| {t} | {p} | {s['accepted']} / {rejected} | {attempts / s['items']:.2f} | {s['prompt_tokens']} ({s['shared_prefix_tokens']}) "
      f"| {s['generated_tokens']} | {s['seconds']:.1f} | {i['prompt_tok_s']:.0f} | {i['generated_tok_s']:.1f} | {ideal:.1f} | {ideal / s['seconds']:.2f} |")
PY
  done
done
