#!/usr/bin/env bash
# Int8-compute ONNX files of a model directory, made by ONNX Runtime's own quantizer
# (onnxruntime.quantization.quantize_dynamic) from its FP32 model.onnx:
#   scripts/quantize.sh DIR                   DIR/onnx/model_qint8_avx512_vnni.onnx (QInt8 weights)
#                                             DIR/onnx/model_quint8_avx2.onnx       (QUInt8 weights)
#   scripts/quantize.sh --broken DIR [OUT]    OUT (default DIR/onnx/model_qint8_broken.onnx): the
#                                             qint8 file with layer 0's attention output
#                                             projection's weight scale x8, for the accuracy
#                                             gate's negative test
# The settings are optimum's avx512_vnni / avx2 dynamic configurations; scripts/quantize_minilm.py
# says exactly which and why. Python packages (onnxruntime 1.32.0, the version
# scripts/fetch-onnxruntime.sh pins, onnx, numpy and their dependencies) come hash-pinned from
# scripts/minilm-requirements.txt (written by scripts/pylock.py), wheels only, no dependency
# resolution, into the virtual environment target/ci-cache/minilm-env (scripts/minilm-env.sh);
# the system Python is untouched. The files are rewritten on every run (deterministic: same input, same bytes).
# Needs python3 with venv and pip.
set -euo pipefail
broken=()
if [ "${1:-}" = "--broken" ]; then
    broken=(--broken)
    shift
fi
if [ $# -lt 1 ] || [ $# -gt $((1 + ${#broken[@]})) ]; then
    echo "usage: scripts/quantize.sh DIR | scripts/quantize.sh --broken DIR [OUT]" >&2
    exit 2
fi
dir="$(cd "$1" && pwd)"
out=()
if [ $# -eq 2 ]; then
    out=(--out "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")")
fi
cd "$(dirname "$0")/.."

python="$(bash scripts/minilm-env.sh)"
exec "$python" scripts/quantize_minilm.py "${broken[@]}" "$dir" "${out[@]}"
