#!/usr/bin/env bash
# make bench-generate: generated tokens/s of `tailforge generate` at parallel
# 1, 4, 8, 16 on MovieLens-100k tail items, against the engine's ceiling: the
# same batches replayed with bare llama_decode calls by benches/generate/ceiling.cpp,
# compiled against the llama.cpp that llama-cpp-sys-2 vendors and linked with
# the static libraries of the same cargo build. Not a test: prints a table for
# BENCHMARKS.md.
#
#   BENCH_GEN_ITEMS=64 BENCH_GEN_PARALLEL="1 4 8 16" BENCH_GEN_THREADS=1 make bench-generate
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-/var/tmp/tailforge-target}
BIN=$TARGET/release/tailforge
OUT=${BENCH_OUT:-bench-out}/generate
ITEMS=${BENCH_GEN_ITEMS:-64}
PARALLEL=${BENCH_GEN_PARALLEL:-1 4 8 16}
THREADS=${BENCH_GEN_THREADS:-1}
MODEL=${BENCH_GEN_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ML=${MOVIELENS_100K:-../shared/data/movielens-100k}
mkdir -p "$OUT"

# The llama.cpp of this cargo build: the newest llama-cpp-sys-2 output with libraries.
LIB=$(ls -td "$TARGET"/release/build/llama-cpp-sys-2-*/out/lib 2>/dev/null | while read -r d; do
  [ -f "$d/libllama.a" ] && echo "$d" && break; done)
[ -n "$LIB" ] || { echo "no llama-cpp-sys-2 build under $TARGET: run make build" >&2; exit 1; }
INC=$(dirname "$LIB")/include
CXX=${CXX:-c++}
"$CXX" -O2 -std=c++17 -I "$INC" benches/generate/ceiling.cpp -o "$OUT/ceiling" \
  -L "$LIB" -lllama -lggml -lggml-cpu -lggml-base -lpthread -lm -ldl
echo "ceiling driver built against $LIB" >&2

if [ ! -f "$OUT/analyze/_SUCCESS" ]; then
  "$BIN" -q import movielens --src "$ML" --out "$OUT/ml" >&2
  "$BIN" -q analyze --events "$OUT/ml/events" --items "$OUT/ml/items" --out "$OUT/analyze" >&2
fi

printf '| parallel | items (accepted / rejected) | generated tokens | tailforge generated tok/s | tailforge decode-only tok/s | ceiling tok/s (llama_decode) | ratio | ratio (decode only) |\n'
printf '|---:|---|---:|---:|---:|---:|---:|---:|\n'
for p in $PARALLEL; do
  rm -rf "$OUT/p$p"
  TAILFORGE_GENERATE_TRACE="$OUT/trace-p$p.txt" "$BIN" -q generate --input "$OUT/analyze" --out "$OUT/p$p" \
    --limit "$ITEMS" --parallel "$p" --threads "$THREADS" --model "$MODEL" >/dev/null
  ceiling=$("$OUT/ceiling" "$MODEL" "$OUT/trace-p$p.txt" 2048 "$p" "$THREADS" 2>"$OUT/ceiling-p$p.log")
  python3 - "$OUT/p$p/summary.json" "$ceiling" "$p" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); c = json.loads(sys.argv[2]); p = sys.argv[3]
rej = sum(s["rejected"].values())
tf = s["generated_tokens_per_s"]
dec = s["generated_tokens"] / s["decode_seconds"] if s["decode_seconds"] else 0.0
ceil = c["generated_tok_s"]
print(f"| {p} | {s['accepted']} / {rej} | {s['generated_tokens']} | {tf:.1f} | {dec:.1f} | {ceil:.1f} | {tf / ceil:.2f} | {dec / ceil:.2f} |")
PY
done
