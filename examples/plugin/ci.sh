#!/usr/bin/env bash
# The example plugin through every command that must see it (.ci/run, once installed): usage ci.sh RNNBENCH
# (the CLI to use; a plain-file plugin works the same with RNNBENCH="rnnbench --plugin jit_lstm.py").
set -euo pipefail
read -r -a RNNBENCH <<< "$1"
OUT="$(mktemp -d)"
TINY=(--backends jit_lstm,torch_eager --cells lstm --batch 2 --seq-len 8 --hidden 8 --mode forward,train --rounds 1
      --quiet --no-report --machine ci)

"${RNNBENCH[@]}" check jit_lstm --dtype float32
"${RNNBENCH[@]}" run "${TINY[@]}" --out "$OUT/inline"
"${RNNBENCH[@]}" run "${TINY[@]}" --out "$OUT/isolated" --isolate
RUN="$(echo "$OUT"/isolated/ci/*)"
grep -q '"module": "jit_lstm"' "$RUN/run.json"
python3 - "$RUN/records.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
mine = [r for r in records if r["backend"] == "jit_lstm" and r["kind"] == "timing"]
assert len(mine) == 2 and all(r["status"] == "ok" and r["peak_bytes"] for r in mine), mine
with open(sys.argv[1], "w") as f:  # forget the last configurations: --resume runs them again
    f.writelines(json.dumps(r) + "\n" for r in records[:1])
PY
"${RNNBENCH[@]}" run --resume "$RUN" --quiet --no-report
test "$(grep -c '"backend": "jit_lstm"' "$RUN/records.jsonl")" -ge 2
"${RNNBENCH[@]}" report "$RUN" --out "$OUT/report" > /dev/null
grep -q jit_lstm "$OUT/report/report.md"
"${RNNBENCH[@]}" recommend --measure --backends jit_lstm,torch_eager --cell lstm --batch 2 --seq-len 8 --hidden 8 \
    --mode forward --device cpu --budget-s 20 --out "$OUT/measured" --machine ci
rm -rf "$OUT"
echo "example plugin: check, run (inline, --isolate), --resume, report, recommend --measure: ok"
