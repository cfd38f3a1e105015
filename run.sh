#!/usr/bin/env bash
# The two set-up commands of the README.
#   ./run.sh demo [VIDEO] [QUERY...] [predict flags]
#                                   install into .venv, then `mrhd predict` (default: a generated sample
#                                   video and query; flags may come first: ./run.sh demo --weights random)
#   ./run.sh test                   install into .venv (reused when unchanged), then ruff + the whole test suite
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

install() {
    # Reuse the environment while pyproject.toml and constraints.txt are unchanged.
    local stamp="$VENV/.mrhd-install-stamp"
    local want
    want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true
        return
    fi
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    # constraints.txt pins torch with torchvision: an unpinned torch would pull the newest CUDA build.
    "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[all,dev]'
    echo "$want" > "$stamp"
}

case "${1:-}" in
    demo)
        install
        shift
        exec "$VENV/bin/python" -c 'import sys; from mrhd.cli import demo; sys.exit(demo(sys.argv[1:]))' "$@"
        ;;
    test)
        install
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/python" -m pytest
        ;;
    *)
        echo "usage: ./run.sh demo [VIDEO] [QUERY...] [predict flags...] | ./run.sh test" >&2
        exit 2
        ;;
esac
