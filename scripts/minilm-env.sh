#!/usr/bin/env bash
# The Python of the virtual environment target/ci-cache/minilm-env (onnx, numpy, onnxruntime
# 1.32.0 and their dependencies), made or updated first: every package hash-pinned in
# scripts/minilm-requirements.txt (written by scripts/pylock.py), wheels only, no dependency
# resolution, the system Python untouched. Reinstalled only when the requirements file
# changes. Prints the interpreter's path (relative to the repository root) on stdout; progress
# goes to stderr. Used by scripts/fetch-models.sh and scripts/quantize.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/ci-cache/minilm-env
stamp="$venv/.requirements.sha256"
want="$(sha256sum scripts/minilm-requirements.txt | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing scripts/minilm-requirements.txt into $venv" >&2
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q --require-hashes --only-binary :all: --no-deps \
        -r scripts/minilm-requirements.txt >&2
    echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
