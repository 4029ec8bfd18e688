#!/usr/bin/env python3
"""Python onnxruntime on the same ONNX files and batches as `benches/models.rs`, so that
corestream + ORT is compared with the peer on this machine, in this session.

Modes (S = number of CPUs, default: the first 2 allowed):
  lat_1xS    one session, intra_op_num_threads=S, called from the main thread (pinned to the
             first CPU; ORT's workers pinned to the others with session.intra_op_thread_affinities)
  ms_shared  one session, intra_op_num_threads=1, S pinned Python threads; each batch split
             IPEX-style (the first batch % S parts one row more), parts run concurrently,
             outputs concatenated (= MultiStreamModule semantics)
  ms_2sess   as ms_shared with one session per thread
  free_shared  one session, S pinned threads each looping on its own share of the batch with no
             per-batch synchronisation or concat: the ceiling of the split modes (the mode of
             ../shared/peers/bench_ort.py of the same name)

Prints a markdown table (items/s; rows: modes, columns: batch) per model, and the best mode
per batch. Usage:
  python3 scripts/peer_ort.py models/resnet18.onnx assets/models/examplenet1.onnx \\
      models/paraphrase-MiniLM-L3-v2.onnx --batches 1,2,4,8,16 --seq 128 --seconds 2
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import threading
import time

import numpy as np
import onnxruntime as ort


def feeds(sess: ort.InferenceSession, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        dims = [batch if k == 0 else (d if isinstance(d, int) else seq) for k, d in enumerate(i.shape)]
        if "int64" in i.type:
            if "mask" in i.name:
                out[i.name] = np.ones(dims, dtype=np.int64)
            else:
                out[i.name] = rng.integers(1000, 20000, size=dims, dtype=np.int64)
        else:
            out[i.name] = rng.standard_normal(dims, dtype=np.float32)
    return out


def session(path: str, threads: int, affinities: str | None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if affinities:
        so.add_session_config_entry("session.intra_op_thread_affinities", affinities)
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def split_sizes(batch: int, n: int) -> list[int]:
    used = min(batch, n)
    return [batch // used + (1 if i < batch % used else 0) for i in range(used)]


class Pinned:
    """A thread pinned to one CPU that runs submitted calls."""

    def __init__(self, cpu: int):
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(cpu,), daemon=True)
        self.thread.start()

    def _run(self, cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})
        while True:
            fn, done = self.jobs.get()
            if fn is None:
                return
            done.put(fn())

    def submit(self, fn) -> queue.Queue:
        done: queue.Queue = queue.Queue(1)
        self.jobs.put((fn, done))
        return done

    def close(self) -> None:
        self.jobs.put((None, None))


def rate(call, items: int, seconds: float) -> tuple[float, float]:
    """Best items/s of three rounds, and the p99 of one call's time (ms) in that round."""
    call()  # warm-up
    best, best_p99 = 0.0, 0.0
    for _ in range(3):
        times, start = [], time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
        r = len(times) * items / (time.perf_counter() - start)
        if r > best:
            times.sort()
            best, best_p99 = r, times[(len(times) - 1) * 99 // 100] * 1e3
    return best, best_p99


def free_rate(workers: list, sess: ort.InferenceSession, parts: list, seconds: float) -> tuple[float, float]:
    """Each worker loops on its own part for the time: rows done by all over the time, and the
    p99 of one run's time (ms) in the best round."""
    sess.run(None, parts[0])  # warm-up
    best, best_p99 = 0.0, 0.0
    for _ in range(3):
        deadline = time.perf_counter() + seconds / 3

        def loop(p):
            rows, n, times = next(iter(p.values())).shape[0], 0, []
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                sess.run(None, p)
                times.append(time.perf_counter() - t)
                n += rows
            return n, times

        start = time.perf_counter()
        done = [w.submit(lambda p=p: loop(p)) for w, p in zip(workers, parts)]
        results = [d.get() for d in done]
        r = sum(n for n, _ in results) / (time.perf_counter() - start)
        if r > best:
            times = sorted(t for _, ts in results for t in ts)
            best, best_p99 = r, times[(len(times) - 1) * 99 // 100] * 1e3
    return best, best_p99


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--cpus", default="")
    ap.add_argument("--seq", type=int, default=128, help="length of symbolic non-batch axes")
    ap.add_argument("--seconds", type=float, default=2.0, help="per cell")
    ap.add_argument("--json", default="", help="also write {model: {mode: [items/s per batch]}} here")
    a = ap.parse_args()
    cpus = [int(c) for c in a.cpus.split(",")] if a.cpus else sorted(os.sched_getaffinity(0))[:2]
    s = len(cpus)
    batches = [int(b) for b in a.batches.split(",")]
    print(f"onnxruntime {ort.__version__}, cpus {cpus}")
    report: dict = {}
    for path in a.models:
        os.sched_setaffinity(0, {cpus[0]})
        lat = session(path, s, ";".join(str(c + 1) for c in cpus[1:]) or None)
        shared = session(path, 1, None)
        own = [session(path, 1, None) for _ in cpus]
        workers = [Pinned(c) for c in cpus]
        rows = {"lat_1x%d" % s: [], "ms_shared": [], "ms_2sess": [], "free_shared": []}
        p99 = {mode: [] for mode in rows}

        def keep(mode, measured):
            rows[mode].append(measured[0])
            p99[mode].append(measured[1])

        for b in batches:
            f = feeds(shared, b, a.seq)
            keep("lat_1x%d" % s, rate(lambda: lat.run(None, f), b, a.seconds))
            for mode, sessions in (("ms_shared", [shared] * s), ("ms_2sess", own)):
                sizes = split_sizes(b, s)
                parts, start = [], 0
                for n in sizes:
                    parts.append({k: v[start:start + n] for k, v in f.items()})
                    start += n

                def call(parts=parts, sessions=sessions):
                    done = [w.submit(lambda p=p, se=se: se.run(None, p))
                            for w, p, se in zip(workers, parts, sessions)]
                    outs = [d.get() for d in done]
                    return [np.concatenate(o, axis=0) for o in zip(*outs)]

                keep(mode, rate(call, b, a.seconds))
            keep("free_shared", free_rate(workers, shared, parts, a.seconds))
        for w in workers:
            w.close()
        os.sched_setaffinity(0, set(cpus))
        print(f"\n{os.path.basename(path)} (items/s)\n")
        print("| mode | " + " | ".join(f"B={b}" for b in batches) + " |")
        print("|---|" + "---:|" * len(batches))
        for mode, vals in rows.items():
            print(f"| {mode} | " + " | ".join(f"{v:,.1f}" for v in vals) + " |")
        best = [max(v[i] for v in rows.values()) for i in range(len(batches))]
        print("| best | " + " | ".join(f"{v:,.1f}" for v in best) + " |")
        report[os.path.basename(path)] = {"batches": batches, **rows,
                                          **{mode + " p99_ms": v for mode, v in p99.items()}}
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
