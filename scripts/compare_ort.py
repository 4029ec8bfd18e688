#!/usr/bin/env python3
"""corestream + ONNX Runtime against Python onnxruntime, side by side on this machine.

Alternates R rounds of `scripts/peer_ort.py` (Python onnxruntime: lat_1xS, ms_shared,
ms_2sess) and `corestream bench --backend ort --streams 1,S` (1 stream x S CPUs, S streams x
1 CPU) on the same ONNX files and batches, keeps the best of the rounds for every cell (a noisy
VM only ever makes a cell slower), and prints per model: each side's best configuration, the
ratio, and the same-configuration ratio (corestream S streams vs ms_shared; 1 stream vs lat_1xS).

Usage (after `cargo build --release --features cli`, scripts/fetch-models.sh and
scripts/fetch-onnxruntime.sh, `pip install onnxruntime==1.32.0 numpy`):
  python3 scripts/compare_ort.py --rounds 3 --seconds 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "resnet18": ("models/resnet18.onnx", []),
    "examplenet1": ("assets/models/examplenet1.onnx", []),
    "minilm-l3 (128 tokens)": ("models/paraphrase-MiniLM-L3-v2.onnx",
                               ["--input", "input_ids=1x128", "--input", "attention_mask=1x128"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--models", default=",".join(MODELS), help="a subset of: " + ", ".join(MODELS))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/corestream"))
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    models = {k: MODELS[k] for k in a.models.split(",")}
    best: dict = {}

    def keep(model, mode, vals):
        cur = best.setdefault(model, {}).setdefault(mode, [0.0] * len(batches))
        best[model][mode] = [max(x, y) for x, y in zip(cur, vals)]

    tmp = tempfile.mkdtemp()
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
        out = os.path.join(tmp, "peer.json")
        paths = [os.path.join(ROOT, p) for p, _ in models.values()]
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/peer_ort.py"), *paths,
                        "--batches", a.batches, "--seconds", str(a.seconds), "--json", out],
                       check=True, stdout=subprocess.DEVNULL)
        peer = json.load(open(out))
        for name, (path, extra) in models.items():
            for mode, vals in peer[os.path.basename(path)].items():
                if mode != "batches":
                    keep(name, "python " + mode, vals)
            js = os.path.join(tmp, "cs.json")
            subprocess.run([a.bin, "bench", os.path.join(ROOT, path), "--backend", "ort", *extra,
                            "--streams", "1,2", "--batch", a.batches,
                            "--duration", f"{int(a.seconds * 1000)}ms", "--json", js],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows = json.load(open(js))["results"]
            for streams, mode in ((1, "corestream 1 stream x 2 CPUs"), (2, "corestream 2 streams x 1 CPU")):
                keep(name, mode, [next(x["items_per_s"] for x in rows
                                       if x["num_streams"] == streams and x["batch"] == b)
                                  for b in batches])
    head = "| mode | " + " | ".join(f"B={b}" for b in batches) + " |\n|---|" + "---:|" * len(batches)
    for model, modes in best.items():
        print(f"\n**{model}** (items/s, best of {a.rounds} rounds)\n\n{head}")
        for mode, vals in modes.items():
            print(f"| {mode} | " + " | ".join(f"{v:,.1f}" for v in vals) + " |")
        py = [max(v[i] for m, v in modes.items() if m.startswith("python")) for i in range(len(batches))]
        cs = [max(v[i] for m, v in modes.items() if m.startswith("corestream")) for i in range(len(batches))]
        print("| **corestream best / Python best** | " + " | ".join(f"**{c / p:.2f}x**" for c, p in zip(cs, py)) + " |")
        same = [c / p for c, p in zip(modes["corestream 2 streams x 1 CPU"], modes["python ms_shared"])]
        print("| corestream 2 streams / Python ms_shared | " + " | ".join(f"{x:.2f}x" for x in same) + " |")
        same = [c / p for c, p in zip(modes["corestream 1 stream x 2 CPUs"], modes["python lat_1x2"])]
        print("| corestream 1 stream / Python lat_1x2 | " + " | ".join(f"{x:.2f}x" for x in same) + " |")


if __name__ == "__main__":
    main()
