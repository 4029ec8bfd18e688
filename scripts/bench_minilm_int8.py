#!/usr/bin/env python3
"""Speed and accuracy of the ONNX files of a MiniLM model directory, in Python onnxruntime.

    target/ci-cache/minilm-env/bin/python scripts/bench_minilm_int8.py models/all-MiniLM-L6-v2 \
        [--threads 2] [--seconds 1] [--rounds 5] [FILE ...]

FILE defaults to DIR/model.onnx (FP32, the reference) and every DIR/onnx/*.onnx.
Speed: rows/s at batch 1 and batch 16 of short sentences (9 tokens with [CLS] and [SEP]),
intra-op threads --threads, one inter-op thread, sequential execution; each file is timed for
--seconds per round after 3 warm-up runs, the files interleaved in --rounds rounds; the best
round is reported (on a shared machine a neighbour's build only ever slows a round down, so the
fastest round is the least disturbed one; every round is printed too). Also the process's CPU
time per row (all its threads; pool threads do not spin, so that is the work done), the median
round: on a busy machine it moves much less than the wall-clock rate. "(Nx)": speed relative
to the FP32 file (for CPU time: FP32's ms/row over this file's).
Accuracy: each file's mean-pooled, L2-normalized embedding of each of the ~50 probe sentences
of scripts/minilm_common.py vs the FP32 file's: mean and worst cosine, with each sentence
alone (batch 1, no padding) and all of them in one padded batch (dynamic int8 quantization
takes its activation range from the whole batch, so neighbours can move a row).
Prints a Markdown table.
"""

import argparse
import glob
import os
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from minilm_common import PROBES, Tokenizer, embed, row_cosines  # noqa: E402

# 16 short sentences, each 7 word pieces (9 tokens with [CLS] and [SEP]) in the BERT vocabulary.
SHORT = [
    "The cat sat on the mat.",
    "A man is eating some food.",
    "She reads a book every night.",
    "The train leaves at nine tomorrow.",
    "We walked along the quiet river.",
    "He plays guitar in a band.",
    "The weather is cold and wet.",
    "My phone battery died again today.",
    "They opened a new shop downtown.",
    "The children laughed at the clown.",
    "Please close the door behind you.",
    "Our team won the final match.",
    "The soup needs a little salt.",
    "I forgot my keys at work.",
    "Birds sing loudly in the spring.",
    "The server restarted late last night.",
]


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning, so the process's CPU time is the work done.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def rate(sess, feeds, seconds):
    names = {i.name for i in sess.get_inputs()}
    feeds = {k: v for k, v in feeds.items() if k in names}
    for _ in range(3):
        sess.run(["last_hidden_state"], feeds)
    rows, n = feeds["input_ids"].shape[0], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while True:
        sess.run(["last_hidden_state"], feeds)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            cpu = time.process_time() - cpu_start
            return rows * n / elapsed, 1000.0 * cpu / (rows * n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("files", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    fp32 = os.path.join(args.dir, "model.onnx")
    files = args.files or [fp32] + sorted(glob.glob(os.path.join(args.dir, "onnx", "*.onnx")))
    tok = Tokenizer(os.path.join(args.dir, "tokenizer.json"))
    lengths = {len(tok.encode(s)) for s in SHORT}
    b1, b16 = tok.batch(SHORT[:1]), tok.batch(SHORT)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads, "
          f"{os.cpu_count()} CPUs, avx512_vnni={'avx512_vnni' in flags}, "
          f"avx2={' avx2' in flags}; short sentences of {sorted(lengths)} tokens; "
          f"{args.rounds} rounds of {args.seconds:g} s per file and batch, best round")

    sessions = {f: session(f, args.threads) for f in files}
    ref = sessions[fp32] if fp32 in sessions else session(fp32, args.threads)
    alone_ref = np.concatenate([embed(ref, tok.batch([p])) for p in PROBES])
    batch_feeds = tok.batch(PROBES)
    batch_ref = embed(ref, batch_feeds)

    speeds = {f: {1: [], 16: []} for f in files}
    cpu_ms = {f: {1: [], 16: []} for f in files}
    for _ in range(args.rounds):
        for f in files:
            for b, feeds in ((1, b1), (16, b16)):
                wall, cpu = rate(sessions[f], feeds, args.seconds)
                speeds[f][b].append(wall)
                cpu_ms[f][b].append(cpu)

    base = {b: max(speeds[fp32][b]) for b in (1, 16)} if fp32 in speeds else None
    cbase = {b: statistics.median(cpu_ms[fp32][b]) for b in (1, 16)} if fp32 in speeds else None
    print()
    print("| file | MB | rows/s batch 1 | rows/s batch 16 | CPU ms/row batch 1 | CPU ms/row batch 16 "
          "| cosine vs FP32, alone: mean / worst | in a padded batch of 50: mean / worst |")
    print("| --- | --: | --: | --: | --: | --: | --: | --: |")
    for f in files:
        s = sessions[f]
        alone = row_cosines(alone_ref, np.concatenate([embed(s, tok.batch([p])) for p in PROBES]))
        batched = row_cosines(batch_ref, embed(s, batch_feeds))
        cells = []
        for b in (1, 16):
            best = max(speeds[f][b])
            rel = f" ({best / base[b]:.2f}x)" if base else ""
            cells.append(f"{best:,.0f}{rel}")
        for b in (1, 16):
            med = statistics.median(cpu_ms[f][b])
            rel = f" ({cbase[b] / med:.2f}x)" if cbase else ""
            cells.append(f"{med:.2f}{rel}")
        print(f"| {os.path.relpath(f, args.dir)} | {os.path.getsize(f) / 1e6:.1f} | "
              + " | ".join(cells)
              + f" | {alone.mean():.4f} / {alone.min():.4f} | "
              f"{batched.mean():.4f} / {batched.min():.4f} |")
    print()
    for f in files:
        spread = ", ".join(f"b{b}: " + " ".join(f"{v:,.0f}" for v in speeds[f][b]) for b in (1, 16))
        cpu = ", ".join(f"b{b}: " + " ".join(f"{v:.2f}" for v in cpu_ms[f][b]) for b in (1, 16))
        print(f"  rounds {os.path.relpath(f, args.dir)}: rows/s {spread}; CPU ms/row {cpu}")


if __name__ == "__main__":
    main()
