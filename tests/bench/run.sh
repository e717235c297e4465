#!/usr/bin/env bash
# Micro-benchmarks (tests/bench): run them, save the run, and compare it with the last saved run
# of this machine, failing when a benchmark is more than BENCH_FAIL slower.  The first run on a
# machine has nothing to compare with: it only saves.  A failing run is saved too.
#   bash tests/bench/run.sh [pytest arguments: -k lstm, --benchmark-json=FILE, --benchmark-compare=0001 ...]
# Every benchmark by default; -m 'not slow' runs the covering subset CI runs (each backend once).
# Environment: PYTHON (default .venv/bin/python, else python3), BENCH_STORAGE (default .benchmarks,
# git-ignored), BENCH_FAIL (default min:75%, in --benchmark-compare-fail syntax: the fastest round,
# which other processes can only slow; between unchanged runs on a shared 2-core machine (load 3-10)
# it moved by up to 60%, medians by 3x, and a 2x slowdown moves it by 100%; on a machine to yourself
# min:25% holds), OMP_NUM_THREADS (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x .venv/bin/python ] && PYTHON=.venv/bin/python
fi
STORAGE="${BENCH_STORAGE:-.benchmarks}"
FAIL="${BENCH_FAIL:-min:75%}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout, installed or not
# One torch thread unless asked otherwise: on a shared CPU, threads waiting at each op's barrier for
# a descheduled sibling made timings swing by 100x; the threads used go into extra_info.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

machine="$("$PYTHON" -c 'from pytest_benchmark.utils import get_machine_id; print(get_machine_id())')"
compare=()
if compgen -G "$STORAGE/$machine/*.json" >/dev/null; then
    compare=(--benchmark-compare "--benchmark-compare-fail=$FAIL")
else
    echo "run.sh: no saved run in $STORAGE/$machine yet: this run is saved, nothing is compared" >&2
fi
exec "$PYTHON" -m pytest tests/bench -q --benchmark-enable --benchmark-autosave --benchmark-storage="$STORAGE" \
    --benchmark-warmup=on --benchmark-warmup-iterations=3 --benchmark-max-time=0.5 --benchmark-disable-gc \
    --benchmark-columns=median,iqr,min,rounds --benchmark-name=short -m "slow or not slow" "${compare[@]}" "$@"
