#!/usr/bin/env bash
# Creates (or completes) .venv-bench, the venv of the peer-model benchmarks:
# torch (used on CPU only), numpy, pyarrow, safetensors, tokenizers.
# Idempotent: a venv that already imports everything and runs a matmul is left
# alone. See benches/requirements-train.txt for why torch comes in two steps.
#
#   benches/setup-train-venv.sh                 # -> .venv-bench
#   VENV=/some/where benches/setup-train-venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-bench}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.15.0}
check='import torch, numpy, pyarrow, safetensors, tokenizers
torch.set_num_threads(1)
a = torch.ones(64, 64)
assert (a @ a).sum().item() == 64 ** 3
print("torch", torch.__version__, "numpy", numpy.__version__, "pyarrow", pyarrow.__version__, "ok")'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" 2>/dev/null; then
  echo "$VENV already complete"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/pip" install --disable-pip-version-check --quiet)
"${pip[@]}" --upgrade pip
"${pip[@]}" --no-deps "torch==$TORCH_VERSION"
# pip then warns that torch "requires" triton and cuda-bindings: expected, they are left out on purpose.
"${pip[@]}" -r benches/requirements-train.txt
"$VENV/bin/python" -c "$check"
