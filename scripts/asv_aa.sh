#!/usr/bin/env bash
# Issue 27, item 3: the lowest asv gate factor that holds on this VM.  Run on a QUIET machine, then again with
# one busy core (BUSY=1).  benchmarks/gate.py: 8 rounds of 5 samples, one thread (asv.conf.json).
#   A/A:     PAIRS (5) unchanged pairs: base = HEAD, head = an empty scratch commit on a scratch branch (the same
#            tree, another hash, so asv builds and measures both); `asv continuous` once per pair, then
#            `asv compare --factor F --split` for each candidate F: the lowest F with no pair flagged holds.
#   planted: head = a scratch commit whose torch runners' forward and forward_backward take PLANT (1.15) times as
#            long: the candidate F must flag the 4 torch points (torch_eager, torch_cudnn x forward, train).
# Cost (estimated from the 2-round gate's 71-79 s a pair, quiet): 48 benchmark processes a commit instead of 12,
# about 3 minutes a commit and 6 a pair; 5 pairs and the planted one: about 36-40 minutes, plus ~2 minutes for
# the first environment.  With BUSY=1, about as long again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/plant.sh  # plant_slowdown
ASV="${ASV:-.venv/bin/asv}"
PAIRS="${PAIRS:-5}"
PLANT="${PLANT:-1.15}"
FACTORS="${FACTORS:-1.05 1.08 1.1 1.15 1.2 1.25}"
MACHINE="${MACHINE:-cpu-2core}"
base=$(git rev-parse HEAD)
busy_pid=""
if [ -n "${BUSY:-}" ]; then  # a neighbour's job on one core, outside asv's process tree
    setsid python3 -c 'while True: pass' & busy_pid=$!
    trap 'kill "$busy_pid"' EXIT
fi
"$ASV" machine --machine "$MACHINE" --yes >/dev/null

scratch_commit() {  # scratch_commit BRANCH [planted]: a commit on a scratch branch; its hash
    local branch=$1
    git branch -f "$branch" "$base" >/dev/null
    local tree
    tree=$(mktemp -d)/tree
    git worktree add --force "$tree" "$branch" >/dev/null
    if [ "${2:-}" = planted ]; then
        plant_slowdown "$tree/impls/torch_common.py" TorchRunner "$PLANT" "by scripts/asv_aa.sh on a scratch branch"
        git -C "$tree" commit -qam "scratch: planted x$PLANT (never merged)"
    else
        git -C "$tree" commit -q --allow-empty -m "scratch: unchanged (A/A)"
    fi
    git -C "$tree" rev-parse HEAD
    git worktree remove --force "$tree"
}

verdicts() {  # verdicts HEAD LABEL: per candidate factor, what asv compare flags
    local head=$1 label=$2
    for f in $FACTORS; do
        n=$("$ASV" compare --machine "$MACHINE" --factor "$f" --split --only-changed "$base" "$head" 2>/dev/null \
            | grep -c "^[|] [+-] " || true)
        echo "$label factor $f: $n flagged"
    done
}

for i in $(seq "$PAIRS"); do
    head=$(scratch_commit "scratch/aa-$i")
    echo "== A/A pair $i ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    "$ASV" continuous --machine "$MACHINE" --factor 1.05 --split --bench '^gate\.' "$base" "$head" >/dev/null || true
    verdicts "$head" "A/A $i"
done
head=$(scratch_commit scratch/planted planted)
echo "== planted x$PLANT ($(date -u +%H:%M:%S))"
"$ASV" continuous --machine "$MACHINE" --factor 1.05 --split --bench '^gate\.' "$base" "$head" >/dev/null || true
verdicts "$head" "planted x$PLANT"
"$ASV" compare --machine "$MACHINE" --split "$base" "$head"
