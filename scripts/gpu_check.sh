#!/usr/bin/env bash
# The GPU check, one short script for a lent GPU machine (offline, its own python3 with
# torch/triton/jax; nothing installed): CUDA parity tests first, then the `kernels` suite inline,
# records appended as they are measured so a run cut short keeps what it has.
#   bash scripts/gpu_check.sh [MACHINE_NAME]      (results go to results/<machine>/<run-id>/)
# On the device tool: command "bash scripts/gpu_check.sh h100", and copy $OUT back under results/.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
MACHINE="${1:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')}"
OUT_ROOT="${OUT:-results}"
LOG="$OUT_ROOT/gpu_check.log"
mkdir -p "$OUT_ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$LOG"

echo "== CUDA parity (conformance + triton) ==" | tee -a "$LOG"
python3 -m pytest -q -x -p no:cacheprovider tests/test_conformance.py tests/test_triton.py -k "cuda or gpu" 2>&1 \
    | tail -25 | tee -a "$LOG"
parity=${PIPESTATUS[0]}

echo "== kernels suite (parity exit status $parity) ==" | tee -a "$LOG"
backends=triton,triton_stepwise,torch_cudnn,torch_eager
if [ "$parity" != 0 ] && [ "$parity" != 5 ]; then
    backends=torch_cudnn,torch_eager   # no figure is published for a backend whose parity fails
fi
timeout 480 python3 -m rnnbench run --device cuda --suite kernels --backends "$backends" \
    --machine "$MACHINE" --out "$OUT_ROOT" --no-report --quiet 2>&1 | tee -a "$LOG"
