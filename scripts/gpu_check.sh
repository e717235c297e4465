#!/usr/bin/env bash
# The GPU check: one short script for a lent GPU machine (offline; its own python3 with torch, triton
# and jax; nothing installed).  Stages, each under its own `timeout` (the caps add up to 390 s = 6.5
# min), each logging its exit status; all output streamed to the log as it comes; records written by
# rnnbench as they are measured, so a stage cut short keeps what it has:
#   1 env      30 s  GPU, driver, versions, which backends are available
#   2 base     30 s  CUDA conformance of the baselines (torch_cudnn, torch_eager, jax_scan)
#     base-t   60 s  their timings on the gpu-check suite (4 LSTM points), inline (they cannot hang)
#   3 parity  170 s  Triton CUDA parity at the timed shapes (tests/test_triton.py test_timed_shapes_on_cuda),
#                    which also fills triton's cache with the kernels stage 4 runs; then a ragged bidirectional
#                    batch on the persistent kernel (test_ragged_bidirectional_on_cuda, triton and triton_wt:
#                    LSTM H=256 bf16, both directions, 4 kernels each): about 40 s more at the ~5 s a compile
#                    the stage is sized for (20 s from TOTAL's slack; it runs last, so a cut costs its verdict only)
#   4 triton  100 s  the Triton rows of the gpu-check suite, each configuration in a child process capped
#                    at the suite's timeout_s (40 s), so one hang costs one configuration
#   minscan  <=60 s  only while more than 40 s remain (40 s parity, 20 s timing): triton_minscan (minGRU/minLSTM's chunked scan) CUDA
#                    parity (conformance float32, the several-chunk test), then one timing if it passed:
#                    mingru train B 16 T 4096 H 256 beside torch_scan (seconds not yet measured on a GPU)
#   5 more    rest   only while more than 30 s of the 390 remain: the kernels suite's Triton rows, then
#                    FlashRNN if it is registered and available
# A backend is timed only if its parity stage printed a PASSED case and no FAILED/ERROR one: a failure of
# one Triton backend drops that backend only.
#   bash scripts/gpu_check.sh [--dry-run] [MACHINE_NAME]   (records: $OUT or results/, <machine>/<run-id>/)
# --dry-run: every stage on this CPU at tiny shapes (Triton under its interpreter), into a temp folder.
# On the device tool: command "bash scripts/gpu_check.sh h200", and copy $OUT back under results/.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
case "${1:-}" in -*) echo "usage: bash scripts/gpu_check.sh [--dry-run] [MACHINE_NAME]" >&2; exit 2 ;; esac
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
export TRITON_DEFAULT_FP_FUSION=1
TOTAL=390
T0=$SECONDS
if [ "$DRY" = 1 ]; then
    PY="${PYTHON:-.venv/bin/python}"
    DEVICE=cpu
    MACHINE="${1:-dry-run}"
    OUT_ROOT="${OUT:-$(mktemp -d)}"
    export TRITON_INTERPRET=1
    TOTAL=180  # the optional stages run only while the dry run is inside 3 minutes
    # replaces the suite's shapes: one tiny train configuration per backend
    TINY=(--cells rnn_tanh --batch 4 --seq-len 4 --hidden 16 --input-size 8 --dtype float32 --mode train)
    BASE_TESTS="backend_matches_oracle and cpu and float32 and rnn_tanh-L1-state"
    PARITY_TESTS=(tests/test_conformance.py tests/test_triton.py
                  -k "(backend_matches_oracle and cpu and float32 and rnn_tanh-L1-state and triton) or (ragged_bidirectional_matches_oracle and lstm)")
    MINSCAN_TESTS="backend_matches_oracle and cpu and float32 and mingru-L1-state and triton_minscan"
    MINSCAN_SHAPE=(--batch 4 --seq-len 8 --hidden 16 --input-size 16)
    MORE=(--suite kernels)
else
    PY="${PYTHON:-python3}"
    DEVICE=cuda
    MACHINE="${1:-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9_.-')}"
    OUT_ROOT="${OUT:-results}"
    TINY=()
    BASE_TESTS="(backend_matches_oracle or half_precision_on_cuda) and cuda and (float32 or bfloat16) and L1"
    PARITY_TESTS=(tests/test_triton.py -k "timed_shapes_on_cuda or (ragged_bidirectional_on_cuda and not stepwise)")
    MINSCAN_TESTS="(backend_matches_oracle and cuda and float32 and triton_minscan) or several_chunks"
    MINSCAN_SHAPE=(--batch 16 --seq-len 4096 --hidden 256 --input-size 256)
    MORE=(--suite kernels)
fi
LOG="$OUT_ROOT/gpu_check.log"
mkdir -p "$OUT_ROOT"
: > "$LOG"
PYTEST=("$PY" -m pytest -o addopts= -p no:cacheprovider -v -rN)
RUN=("$PY" -m rnnbench run --device "$DEVICE" --machine "$MACHINE" --out "$OUT_ROOT" --no-report --quiet)

log() { echo "$@" | tee -a "$LOG"; }

# stage NAME SECONDS CMD...: run CMD under `timeout`, output streamed to the log; its status in STAGE_RC
stage() {
    local name=$1 secs=$2 t=$SECONDS
    shift 2
    log "== stage $name: cap ${secs}s, at $((SECONDS - T0))s: $*"
    timeout -k 5 "$secs" "$@" 2>&1 | tee -a "$LOG"
    STAGE_RC=${PIPESTATUS[0]}
    local why=""
    [ "$STAGE_RC" = 124 ] || [ "$STAGE_RC" = 137 ] && why=" (timed out)"
    log "== stage $name: exit $STAGE_RC$why after $((SECONDS - t))s"
}

# passed FIRST_LINE NAME...: the names with a PASSED case and no FAILED/ERROR case in the log since FIRST_LINE
passed() {
    local from=$1 keep=() name
    shift
    for name in "$@"; do
        local lines
        lines=$(tail -n "+$from" "$LOG" | grep -E "\[$name-[^]]*\] (PASSED|FAILED|ERROR)")
        if echo "$lines" | grep -q " PASSED" && ! echo "$lines" | grep -qE " (FAILED|ERROR)"; then
            keep+=("$name")
        else
            log "-- $name: no clean parity run; not timed" >&2
        fi
    done
    local IFS=,
    echo "${keep[*]}"
}

line() { wc -l < "$LOG"; }

# 1: environment
stage env 30 bash -c "command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
  $PY -c 'import sys, torch, triton; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__)
try:
    import jax; print(\"jax\", jax.__version__, jax.devices())
except Exception as exc: print(\"jax:\", exc)
import impls
for n in (\"torch_cudnn\", \"torch_eager\", \"jax_scan\", \"triton\", \"triton_wt\", \"triton_stepwise\"):
    print(n, *impls.available(n, \"$DEVICE\"))'"

# 2: the baselines
from=$(line)
stage base 30 "${PYTEST[@]}" tests/test_conformance.py -k "($BASE_TESTS) and (torch_cudnn- or torch_eager- or jax_scan-)"
baselines=$(passed "$from" torch_cudnn torch_eager jax_scan)
log "-- baselines to time: ${baselines:-none}"
if [ -n "$baselines" ]; then
    stage base-t 60 "${RUN[@]}" --suite gpu-check --backends "$baselines" --executor inline "${TINY[@]}"
fi

# 3: Triton parity at the timed shapes
from=$(line)
stage parity 170 "${PYTEST[@]}" "${PARITY_TESTS[@]}"
tritons=$(passed "$from" triton triton_wt triton_stepwise)
log "-- Triton backends to time: ${tritons:-none}"

# 4: the Triton rows, one child process per configuration
if [ -n "$tritons" ]; then
    stage triton 100 "${RUN[@]}" --suite gpu-check --backends "$tritons" --executor process "${TINY[@]}"
fi

# minGRU/minLSTM's Triton scan: parity, then one timing beside torch_scan, within what is left (60 s at most)
left=$((TOTAL - (SECONDS - T0)))
if [ "$left" -gt 40 ]; then
    from=$(line)
    stage minscan "$(( left - 10 < 40 ? left - 10 : 40 ))" "${PYTEST[@]}" tests/test_conformance.py \
        tests/test_triton_minscan.py -k "$MINSCAN_TESTS"
    minscan=$(passed "$from" triton_minscan)
    left=$((TOTAL - (SECONDS - T0)))
    if [ "$STAGE_RC" = 0 ] && [ -n "$minscan" ] && [ "$left" -gt 30 ]; then
        stage minscan-t "$(( left - 10 < 20 ? left - 10 : 20 ))" "${RUN[@]}" --suite parallel \
            --backends triton_minscan,torch_scan --cells mingru --mode train "${MINSCAN_SHAPE[@]}" --executor process
    fi
fi

# 5: only while time remains
left=$((TOTAL - (SECONDS - T0)))
if [ -n "$tritons" ] && [ "$left" -gt 30 ]; then
    stage more "$((left - 10))" "${RUN[@]}" "${MORE[@]}" --backends "$tritons" --executor process "${TINY[@]}"
fi
left=$((TOTAL - (SECONDS - T0)))
if [ "$left" -gt 30 ] && "$PY" -c "import impls, sys; sys.exit(not ('flashrnn' in impls.names() and impls.available('flashrnn', '$DEVICE')[0]))" 2>/dev/null; then
    stage flashrnn "$((left - 5))" "${RUN[@]}" --suite gpu-check --backends flashrnn --executor process "${TINY[@]}"
fi
log "== done in $((SECONDS - T0))s; records under $OUT_ROOT/$MACHINE/"
