#!/usr/bin/env python3
"""Writes the ONNX models corestream's tests, examples and benches run.

Models (random, seeded weights: they measure speed and check equality, not accuracy; the batch
axis of every input and output is symbolic, named "N"):

  examplenet1  the anchor doc's ExampleNet1: Conv2d(64->128, 3x3, stride 2, pad 1, no bias)
               + flatten. x (N,64,3,3) -> y (N,512)
  examplenet2  the anchor doc's ExampleNet2: forward(x1, x2) returns (conv(x1), flatten(conv(x1)));
               conv2(x2) is computed in the doc but unused, so the traced graph drops it and x2
               is an input the graph does not read. -> y1 (N,128,2,2), y (N,512)
  mlp256       a small MLP, MatMul(256x256) + Relu + MatMul(256x256): x (N,256) -> y (N,256).
               Its products are large enough at big batches for tract to split them across
               threads (the tests use it to watch intra-op threads).
  seqpool      a sequence model with two symbolic axes, batch N and length S (like BERT's):
               MatMul(32x32) + Relu per position, then the mean over positions.
               x (N,S,32) -> h (N,S,32), pooled (N,32)
  resnet18     ResNet-18 layout (torchvision, BatchNorm folded into the convolutions),
               input (N,3,224,224) -> logits (N,1000). ~45 MB: generated on demand, not committed.

Usage:
  python3 scripts/make_models.py                      # the small models -> assets/models
  python3 scripts/make_models.py resnet18 --out models
Needs: pip install onnx numpy
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
SEED = 20261124


class Graph:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}_{self.n}"

    def weight(self, shape, scale):
        w = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(w, name))
        return name

    def op(self, kind, inputs, **attrs):
        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def conv(self, x, cin, cout, k, stride, pad, bias=True):
        fan_in = cin * k * k
        inputs = [x, self.weight([cout, cin, k, k], np.sqrt(2.0 / fan_in))]
        if bias:
            inputs.append(self.weight([cout], 0.01))
        return self.op("Conv", inputs, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4)

    def model(self, inputs, outputs, doc):
        def vi(name, shape):
            return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
        graph = helper.make_graph(self.nodes, "corestream", [vi(*i) for i in inputs],
                                  [vi(*o) for o in outputs], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="corestream scripts/make_models.py", doc_string=doc)
        onnx.checker.check_model(m)
        return m

    def rename(self, old, new):
        for node in self.nodes:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]


def examplenet1():
    g = Graph(SEED)
    y = g.op("Flatten", [g.conv("x", 64, 128, 3, 2, 1, bias=False)], axis=1)
    g.rename(y, "y")
    return g.model([("x", ["N", 64, 3, 3])], [("y", ["N", 512])], "ExampleNet1")


def examplenet2():
    g = Graph(SEED + 1)
    y1 = g.conv("x1", 64, 128, 3, 2, 1, bias=False)
    g.rename(y1, "y1")
    y = g.op("Flatten", ["y1"], axis=1)
    g.rename(y, "y")
    return g.model([("x1", ["N", 64, 3, 3]), ("x2", ["N", 64, 3, 3])],
                   [("y1", ["N", 128, 2, 2]), ("y", ["N", 512])], "ExampleNet2")


def mlp256():
    g = Graph(SEED + 3)
    h = g.op("Relu", [g.op("MatMul", ["x", g.weight([256, 256], 0.0625)])])
    y = g.op("MatMul", [h, g.weight([256, 256], 0.0625)])
    g.rename(y, "y")
    return g.model([("x", ["N", 256])], [("y", ["N", 256])], "MLP 256-256-256")


def seqpool():
    g = Graph(SEED + 4)
    h = g.op("Relu", [g.op("MatMul", ["x", g.weight([32, 32], 0.17)])])
    g.rename(h, "h")
    pooled = g.op("ReduceMean", ["h"], axes=[1], keepdims=0)
    g.rename(pooled, "pooled")
    return g.model([("x", ["N", "S", 32])], [("h", ["N", "S", 32]), ("pooled", ["N", 32])],
                   "sequence pooling, two symbolic axes")


def resnet18():
    g = Graph(SEED + 2)
    x = g.op("Relu", [g.conv("input", 3, 64, 7, 2, 3)])
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
        for block in range(2):
            s = stride if block == 0 else 1
            h = g.op("Relu", [g.conv(x, cin, cout, 3, s, 1)])
            h = g.conv(h, cout, cout, 3, 1, 1)
            skip = g.conv(x, cin, cout, 1, s, 0) if (s != 1 or cin != cout) else x
            x = g.op("Relu", [g.op("Add", [h, skip])])
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    logits = g.op("Gemm", [x, g.weight([1000, 512], 0.02), g.weight([1000], 0.01)], transB=1)
    g.rename(logits, "logits")
    return g.model([("input", ["N", 3, 224, 224])], [("logits", ["N", 1000])], "ResNet-18 layout")


BUILDERS = {"examplenet1": examplenet1, "examplenet2": examplenet2, "mlp256": mlp256,
            "seqpool": seqpool, "resnet18": resnet18}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help=f"any of {sorted(BUILDERS)} (default: examplenet1 examplenet2 mlp256 seqpool)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "assets",
                                                      "models"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    unknown = [m for m in args.models if m not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted(BUILDERS)}")
    for name in args.models or ["examplenet1", "examplenet2", "mlp256", "seqpool"]:
        path = os.path.join(args.out, f"{name}.onnx")
        onnx.save(BUILDERS[name](), path)
        print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
