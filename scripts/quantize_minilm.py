#!/usr/bin/env python3
"""Int8-compute ONNX files from DIR/model.onnx with ONNX Runtime's own dynamic quantizer.

    python scripts/quantize_minilm.py DIR               # the two files below
    python scripts/quantize_minilm.py --broken DIR [--out PATH]

Run it through scripts/quantize.sh, which makes the hash-pinned virtual environment.

Writes, from the FP32 DIR/model.onnx (Hugging Face's file names, as sentence-transformers'
export_dynamic_quantized_onnx_model names them):
  DIR/onnx/model_qint8_avx512_vnni.onnx   optimum's AutoQuantizationConfig.avx512_vnni(
                                           is_static=False): QInt8 weights
  DIR/onnx/model_quint8_avx2.onnx         optimum's AutoQuantizationConfig.avx2(
                                           is_static=False): QUInt8 weights
Both with onnxruntime.quantization.quantize_dynamic and the settings optimum's ORTQuantizer
passes to ONNX Runtime for those configurations (optimum-onnx, optimum/onnxruntime/
configuration.py and quantization.py): dynamic (no calibration: activations are quantized to
uint8 at run time, per tensor, from each batch's own range), per_channel=True, reduce_range=
False, every operator type ONNX Runtime's IntegerOps registry quantizes (MatMul, Gather,
Conv, Attention, LSTM, Transpose, EmbedLayerNormalization; in this graph: the 48 MatMuls and
the 3 embedding Gathers), extra options WeightSymmetric=True, ActivationSymmetric=False,
EnableSubgraph=False, ForceSymmetric=False, and MatMulConstBOnly=False: optimum builds
ONNXQuantizer itself, whose default quantizes also the activation x activation MatMuls of
attention (QK^T and the product with V), where quantize_dynamic's own default (True) would
leave those two per layer in float.

--broken writes a deliberately wrong file for the accuracy gate's negative test: a copy of
DIR/onnx/model_qint8_avx512_vnni.onnx (made first when missing) in which the per-channel
weight scale of ONE MatMulInteger, the weight of layer 0's attention output projection
(checkpoint tensor encoder.layer.0.attention.output.dense.weight, found through the
corestream.weight_names metadata of DIR/model.onnx, initializer "<name>_scale" of shape
[384]), is multiplied by 8. The file loads and runs and gives [batch, sequence, 384] outputs
like the good one, but layer 0's attention output is 8x too large, so the embeddings are far
off (cosine with FP32 about 0.5). Default --out: DIR/onnx/model_qint8_broken.onnx.

Each file carries a corestream.quantization metadata entry with these settings (the broken
one also corestream.broken). Each file is written to a temporary name and renamed, so an interrupted run leaves no partial
file. quantize_dynamic is deterministic here: the same model.onnx gives the same bytes.
After writing, each file is run on the probe sentences and its mean cosine with FP32 printed;
a good file below 0.97 or a broken file above 0.9 is an error.
"""

import argparse
import json
import logging
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minilm_common import PROBES, Tokenizer, embed, row_cosines  # noqa: E402

BROKEN_TENSOR = "encoder.layer.0.attention.output.dense.weight"
BROKEN_FACTOR = 8.0

# optimum's ORTQuantizer.quantize extra_options for AutoQuantizationConfig.avx512_vnni/avx2
# with is_static=False (weights_symmetric=True, activations_symmetric=False), plus the
# ONNXQuantizer default MatMulConstBOnly=False made explicit (quantize_dynamic would set True).
EXTRA_OPTIONS = {
    "WeightSymmetric": True,
    "ActivationSymmetric": False,
    "EnableSubgraph": False,
    "ForceSymmetric": False,
    "MatMulConstBOnly": False,
}


def configs():
    from onnxruntime.quantization import QuantType
    return {
        "model_qint8_avx512_vnni.onnx": QuantType.QInt8,
        "model_quint8_avx2.onnx": QuantType.QUInt8,
    }


def quantize(src, dst, weight_type):
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    tmp = dst + ".tmp.onnx"
    quantize_dynamic(
        src, tmp,
        op_types_to_quantize=list(IntegerOpsRegistry.keys()),
        per_channel=True,
        reduce_range=False,
        weight_type=weight_type,
        extra_options=dict(EXTRA_OPTIONS),
    )
    model = onnx.load(tmp)
    model.metadata_props.add(
        key="corestream.quantization",
        value=f"scripts/quantize.sh: onnxruntime {ort_version()} quantize_dynamic, weight_type "
              f"{weight_type.name}, per_channel=True, reduce_range=False, op_types "
              f"{sorted(IntegerOpsRegistry.keys())}, extra_options "
              f"{json.dumps(EXTRA_OPTIONS, sort_keys=True)}")
    onnx.save(model, tmp)
    os.replace(tmp, dst)


def ort_version():
    import onnxruntime
    return onnxruntime.__version__


def corrupt(fp32_path, good_path, dst):
    meta = {p.key: p.value for p in onnx.load(fp32_path, load_external_data=False).metadata_props}
    if "corestream.weight_names" not in meta:
        sys.exit(f"{fp32_path}: no corestream.weight_names metadata (not written by "
                 "scripts/export-minilm-l6.py?)")
    names = json.loads(meta["corestream.weight_names"])
    hits = [k for k, v in names.items() if v.removesuffix(".T") == BROKEN_TENSOR]
    if len(hits) != 1:
        sys.exit(f"{fp32_path}: {BROKEN_TENSOR} is held by {hits}, expected one initializer")
    weight = hits[0]
    model = onnx.load(good_path)
    g = model.graph
    users = [n for n in g.node if f"{weight}_quantized" in n.input]
    if [n.op_type for n in users] != ["MatMulInteger"]:
        sys.exit(f"{good_path}: {weight}_quantized feeds {[n.op_type for n in users]}, "
                 "expected one MatMulInteger")
    scale = [i for i in g.initializer if i.name == f"{weight}_scale"]
    if len(scale) != 1:
        sys.exit(f"{good_path}: no initializer {weight}_scale")
    old = numpy_helper.to_array(scale[0])
    scale[0].CopyFrom(numpy_helper.from_array(
        (old * np.float32(BROKEN_FACTOR)).astype(np.float32), scale[0].name))
    model.metadata_props.add(
        key="corestream.broken",
        value=f"deliberately wrong (scripts/quantize.sh --broken): initializer {weight}_scale "
              f"(per-channel weight scale of MatMulInteger {users[0].name}, checkpoint tensor "
              f"{BROKEN_TENSOR}) multiplied by {BROKEN_FACTOR:g}")
    tmp = dst + ".tmp.onnx"
    onnx.save(model, tmp)
    os.replace(tmp, dst)
    return f"{weight}_scale {list(old.shape)} x{BROKEN_FACTOR:g} (MatMulInteger {users[0].name})"


def mean_cosine(fp32_path, path, tokenizer):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    ref = ort.InferenceSession(fp32_path, opts, providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    a = np.concatenate([embed(ref, tokenizer.batch([p])) for p in PROBES])
    b = np.concatenate([embed(got, tokenizer.batch([p])) for p in PROBES])
    c = row_cosines(a, b)
    return float(c.mean()), float(c.min())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="model directory with model.onnx (FP32) and tokenizer.json")
    ap.add_argument("--broken", action="store_true", help="write the deliberately wrong file")
    ap.add_argument("--out", help="with --broken: where (default DIR/onnx/model_qint8_broken.onnx)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # quantize_dynamic's pre-processing advice

    fp32 = os.path.join(args.dir, "model.onnx")
    if not os.path.isfile(fp32):
        sys.exit(f"{fp32}: missing (scripts/fetch-models.sh --minilm-l6 writes it)")
    tokenizer_path = os.path.join(args.dir, "tokenizer.json")
    tokenizer = Tokenizer(tokenizer_path) if os.path.isfile(tokenizer_path) else None
    os.makedirs(os.path.join(args.dir, "onnx"), exist_ok=True)
    print(f"quantize: onnxruntime {ort_version()}, from {fp32}")

    if args.broken and args.out is None:
        args.out = os.path.join(args.dir, "onnx", "model_qint8_broken.onnx")
    if args.broken:
        good = os.path.join(args.dir, "onnx", "model_qint8_avx512_vnni.onnx")
        if not os.path.isfile(good):
            quantize(fp32, good, configs()["model_qint8_avx512_vnni.onnx"])
            print(f"  wrote {good}")
        what = corrupt(fp32, good, args.out)
        print(f"  wrote {args.out}: {what}")
        targets = [(args.out, True)]
    else:
        targets = []
        for name, weight_type in configs().items():
            dst = os.path.join(args.dir, "onnx", name)
            quantize(fp32, dst, weight_type)
            print(f"  wrote {dst} ({os.path.getsize(dst)} bytes, weights {weight_type.name})")
            targets.append((dst, False))

    if tokenizer is None:
        print(f"  (no {tokenizer_path}: accuracy not checked)")
        return
    for path, broken in targets:
        mean, worst = mean_cosine(fp32, path, tokenizer)
        print(f"  {os.path.basename(path)}: cosine with FP32 on {len(PROBES)} probes, each "
              f"alone: mean {mean:.4f}, worst {worst:.4f}")
        if broken and mean > 0.9:
            sys.exit(f"{path}: the broken file is too close to FP32 (mean cosine {mean:.4f})")
        if not broken and mean < 0.97:
            sys.exit(f"{path}: mean cosine {mean:.4f} with FP32 is below 0.97")


if __name__ == "__main__":
    main()
