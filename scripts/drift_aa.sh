#!/usr/bin/env bash
# Issue 27, item 6: do comparisons of two runs hold?  Measure on a QUIET machine (others below 0.2 of a core).
#   A/A:     two runs of one command, 5 rounds a side (each round of each backend in a fresh process),
#            24 configurations (torch_cudnn, jax_scan, jax_scan_unroll8; LSTM, GRU; forward, train; T 32, 128;
#            B=8 H=32): `rnnbench report A A2` must flag at most 1 (the issue's jax_scan run is the T=32 half).
#   planted: the same grid from a scratch copy of the tree whose torch_cudnn runner takes FACTOR (1.3) times as
#            long (never committed): `report A B` must flag the 8 torch_cudnn rows and nothing else.
#   CV:      each backend's per-process coefficient of variation (scripts/process_cv.py) in A and A2.
#   ROUNDS=10 FACTOR=1.2 runs the 10-rounds-a-side variant.  THREADS=1 adds --threads 1 to every run.
# Cost on the 2-core VM (estimated, not measured: the machine was shared when this was written): about
# 4-5 minutes a run at 5 rounds (round 0: 3 processes with memory probes and oracle checks, ~30 s each;
# rounds 1-4: 12 processes, ~15 s each), so about 15 minutes for A, A2 and B; 8-9 minutes a run at 10 rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/plant.sh  # plant_slowdown
PY="${PY:-.venv/bin/python}"
ROUNDS="${ROUNDS:-5}"
FACTOR="${FACTOR:-1.3}"
OUT="${OUT:-/tmp/rnnbench-drift-aa}"
GRID=(--backends torch_cudnn,jax_scan,jax_scan_unroll8 --cells lstm,gru --batch 8 --seq-len 32,128 --hidden 32
      --mode forward,train --rounds "$ROUNDS" --quiet --no-report --machine aa ${THREADS:+--threads "$THREADS"})
mkdir -p "$OUT"

run() {  # run LABEL [PYTHONPATH]: one sweep into $OUT/LABEL, its run folder printed
    local label=$1 tree=${2:-$PWD}
    echo "== $label ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))" >&2
    (cd "$tree" && PYTHONPATH="$tree" "$OLDPWD/$PY" -m rnnbench run "${GRID[@]}" --out "$OUT/$label" >&2)
    ls -d "$OUT/$label"/aa/* | tail -1
}

a=$(run A)
a2=$(run A2)
scratch="$OUT/planted-tree"
rm -rf "$scratch"
git worktree add --detach --force "$scratch" HEAD >/dev/null
plant_slowdown "$scratch/impls/torch_cudnn.py" CudnnRunner "$FACTOR" "by scripts/drift_aa.sh in a scratch tree"
b=$(run "B-planted-$FACTOR" "$scratch")
git worktree remove --force "$scratch"

echo "== A/A (no change: at most 1 flagged)"
"$PY" -m rnnbench report "$a" "$a2" --out "$OUT/report-aa"
echo "== A/B (torch_cudnn x$FACTOR: its 8 rows flagged, no others)"
"$PY" -m rnnbench report "$a" "$b" --out "$OUT/report-planted"
echo "== per-process coefficient of variation"
"$PY" scripts/process_cv.py "$a" "$a2"
