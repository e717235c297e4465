#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash dev.sh run   -> set up .venv if needed, run the quick CPU sweep, write its report
#   bash dev.sh test  -> set up .venv if needed, run the test suite
# Set-up happens once: a stamp of pyproject.toml + constraints/cpu.txt in .venv says
# whether the environment is current, so a second run starts at once.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.rnnbench-installed"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV with $("$PYTHON" --version)" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local want
    want="$(cat pyproject.toml constraints/cpu.txt | sha256sum | cut -c1-16)"
    if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
        echo "installing rnnbench and its dependencies into $VENV (CPU torch, constraints/cpu.txt)" >&2
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        # torch==2.13.0 (CPU build) comes from the constraints file; numpy is listed explicitly
        "$VENV/bin/python" -m pip install --quiet -c constraints/cpu.txt numpy "torch==2.13.0" -e ".[dev,ray]"
        echo "$want" > "$STAMP"
    fi
}

case "${1:-}" in
    run)
        setup
        shift
        exec "$VENV/bin/rnnbench" run "$@"
        ;;
    test)
        setup
        shift
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: bash dev.sh run [rnnbench run flags] | bash dev.sh test [pytest flags]" >&2
        exit 2
        ;;
esac
