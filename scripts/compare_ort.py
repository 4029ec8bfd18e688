#!/usr/bin/env python3
"""corestream + ONNX Runtime against Python onnxruntime, side by side on this machine.

Alternates R rounds of `scripts/peer_ort.py` (Python onnxruntime: lat_1xS, ms_shared,
ms_2sess) and `corestream bench --backend ort --streams 1,S` (1 stream x S CPUs, S streams x
1 CPU) on the same ONNX files and batches, keeps the best of the rounds for every cell (a noisy
VM only ever makes a cell slower), and prints per model: each side's best configuration, the
ratio, and the same-configuration ratio (corestream S streams vs ms_shared; 1 stream vs lat_1xS).

With --cotenant both sides run beside the same controlled neighbour (scripts/cotenant.sh: one
busy `sh` loop per allowed CPU, same priority), started and stopped around each run.

Besides items/s it reports the p99 of one call (Python's free-running mode: of one run) of each
side's best configuration per batch (the lowest p99 of the rounds).

Usage (after `cargo build --release -p corestream-cli`, scripts/fetch-models.sh and
scripts/fetch-onnxruntime.sh, `pip install onnxruntime==1.32.0 numpy`):
  python3 scripts/compare_ort.py --rounds 3 --seconds 1 [--cotenant] [--python PYTHON]
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
    ap.add_argument("--python", default=sys.executable, help="the interpreter with onnxruntime")
    ap.add_argument("--cotenant", action="store_true",
                    help="run both sides beside one busy loop per CPU (scripts/cotenant.sh)")
    a = ap.parse_args()
    wrap = ["bash", os.path.join(ROOT, "scripts/cotenant.sh")] if a.cotenant else []
    batches = [int(b) for b in a.batches.split(",")]
    models = {k: MODELS[k] for k in a.models.split(",")}
    best: dict = {}
    p99: dict = {}

    def keep(model, mode, vals, tails):
        cur = best.setdefault(model, {}).setdefault(mode, [0.0] * len(batches))
        best[model][mode] = [max(x, y) for x, y in zip(cur, vals)]
        cur = p99.setdefault(model, {}).setdefault(mode, [float("inf")] * len(batches))
        p99[model][mode] = [min(x, y) for x, y in zip(cur, tails)]

    tmp = tempfile.mkdtemp()
    for r in range(a.rounds):
        print(f"round {r + 1}/{a.rounds}", file=sys.stderr)
        out = os.path.join(tmp, "peer.json")
        paths = [os.path.join(ROOT, p) for p, _ in models.values()]
        subprocess.run([*wrap, a.python, os.path.join(ROOT, "scripts/peer_ort.py"), *paths,
                        "--batches", a.batches, "--seconds", str(a.seconds), "--json", out],
                       check=True, stdout=subprocess.DEVNULL)
        peer = json.load(open(out))
        for name, (path, extra) in models.items():
            measured = peer[os.path.basename(path)]
            for mode, vals in measured.items():
                if mode != "batches" and not mode.endswith(" p99_ms"):
                    keep(name, "python " + mode, vals, measured[mode + " p99_ms"])
            js = os.path.join(tmp, "cs.json")
            subprocess.run([*wrap, a.bin, "bench", os.path.join(ROOT, path), "--backend", "ort", *extra,
                            "--streams", "1,2", "--batch", a.batches,
                            "--duration", f"{int(a.seconds * 1000)}ms", "--json", js],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rows = json.load(open(js))["results"]
            for streams, mode in ((1, "corestream 1 stream x 2 CPUs"), (2, "corestream 2 streams x 1 CPU")):
                cells = [next(x for x in rows if x["num_streams"] == streams and x["batch"] == b)
                         for b in batches]
                keep(name, mode, [c["items_per_s"] for c in cells], [c["p99_ms"] for c in cells])
    head = "| mode | " + " | ".join(f"B={b}" for b in batches) + " |\n|---|" + "---:|" * len(batches)
    beside = ", beside one busy loop per CPU" if a.cotenant else ""
    for model, modes in best.items():
        print(f"\n**{model}** (items/s, best of {a.rounds} rounds{beside})\n\n{head}")
        for mode, vals in modes.items():
            print(f"| {mode} | " + " | ".join(f"{v:,.1f}" for v in vals) + " |")
        py = [max(v[i] for m, v in modes.items() if m.startswith("python")) for i in range(len(batches))]
        cs = [max(v[i] for m, v in modes.items() if m.startswith("corestream")) for i in range(len(batches))]
        print("| **corestream best / Python best** | " + " | ".join(f"**{c / p:.2f}x**" for c, p in zip(cs, py)) + " |")

        def tail(side, i):
            mode = max((m for m in modes if m.startswith(side)), key=lambda m: modes[m][i])
            return p99[model][mode][i]
        print("| p99 ms, corestream best config / Python best mode | " + " | ".join(
            f"{tail('corestream', i):.3f} / {tail('python', i):.3f}" for i in range(len(batches))) + " |")
        same = [c / p for c, p in zip(modes["corestream 2 streams x 1 CPU"], modes["python ms_shared"])]
        print("| corestream 2 streams / Python ms_shared | " + " | ".join(f"{x:.2f}x" for x in same) + " |")
        same = [c / p for c, p in zip(modes["corestream 1 stream x 2 CPUs"], modes["python lat_1x2"])]
        print("| corestream 1 stream / Python lat_1x2 | " + " | ".join(f"{x:.2f}x" for x in same) + " |")


if __name__ == "__main__":
    main()
