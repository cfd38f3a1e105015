#!/usr/bin/env bash
# The two set-up commands of the README.
#   ./run.sh demo [VIDEO] [QUERY]   install into .venv, then `mrhd predict` on a generated sample video
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
        video=${2:-out/sample.mp4}
        query=${3:-"a white bar sweeps across a colourful screen"}
        if [ ! -f "$video" ]; then
            "$VENV/bin/python" -c "from mrhd.extract.synthetic import write_video; write_video('$video', duration=40)"
            echo "wrote sample video $video (40 s, generated)"
        fi
        shift $(( $# > 3 ? 3 : $# ))
        exec "$VENV/bin/mrhd" predict "$video" "$query" "$@"
        ;;
    test)
        install
        "$VENV/bin/ruff" check .
        exec "$VENV/bin/python" -m pytest
        ;;
    *)
        echo "usage: ./run.sh demo [VIDEO] [QUERY] [predict flags...] | ./run.sh test" >&2
        exit 2
        ;;
esac
