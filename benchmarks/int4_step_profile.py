"""Where the int4 mode's one-token step spends its time, and how onnxruntime's thread count moves it.

    AIWRITER_CACHE=/some/dir PYTHONPATH=. python benchmarks/int4_step_profile.py MODEL [--profile]
        [--threads 1,2,4] [--seconds 90]

Loads MODEL with `--dtype int4` (writing its cache entry on the first use), then opens the cached
optimized step (NAME.int4.<cpu key>.ort.onnx) once per thread count, as the int4 mode does (no
optimizer pass, threads not spinning), and runs one-token steps from the initial state:
- --profile: onnxruntime's own profile of 8 steps with the first thread count: milliseconds per
  step by operator type, and the heaviest (operator, input shape) groups;
- then the A/B: every session in turn, 3 steps each, for --seconds; per thread count the median,
  tenth-percentile and mean step time. Interleaving is what makes the thread counts comparable on
  a machine whose load changes from minute to minute.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np


def session(path: str, threads: int, profile: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def profile(path: str, feeds: dict, threads: int, steps: int = 8) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = session(path, threads, os.path.join(tmp, "prof"))
        for _ in range(2):
            s.run(None, feeds)
        t = time.perf_counter()
        for _ in range(steps):
            s.run(None, feeds)
        wall = (time.perf_counter() - t) / steps
        with open(s.end_profiling()) as f:
            events = json.load(f)
    runs = sum(1 for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    by_op, nodes, groups = collections.Counter(), collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            op = e["args"].get("op_name")
            by_op[op] += e["dur"]
            nodes[op] += 1
            groups[(op, str(e["args"].get("input_type_shape"))[:90])] += e["dur"]
    print(f"threads {threads}: {wall * 1e3:.1f} ms a step (wall); kernels {sum(by_op.values()) / runs / 1e3:.1f} ms")
    for op, us in by_op.most_common(12):
        print(f"  {op:22s} {us / runs / 1e3:7.2f} ms  {nodes[op] // runs:5d} nodes")
    print("  heaviest (operator, inputs):")
    for (op, shapes), us in groups.most_common(12):
        print(f"  {op:14s} {us / runs / 1e3:7.2f} ms  {shapes}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", default="1,2,4")
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    from aiwriter.engine import load_model

    m = load_model(args.model, dtype="int4")
    onnx_net = m.net.onnx_net
    path = str(onnx_net.path)
    st = onnx_net.new_state(1)
    feeds = {n: st[n].numpy() for n in onnx_net.names}
    feeds["ids"] = np.array([1], dtype=np.int64)
    del m
    counts = [int(c) for c in args.threads.split(",")]
    print(f"{path}; load {os.getloadavg()[0]:.2f}")
    if args.profile:
        profile(path, feeds, counts[0])
    sessions = {t: session(path, t) for t in counts}
    times = {t: [] for t in counts}
    for s in sessions.values():
        s.run(None, feeds)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.seconds:
        for t, s in sessions.items():
            for _ in range(3):
                a = time.perf_counter()
                s.run(None, feeds)
                times[t].append(time.perf_counter() - a)
    print(f"interleaved for {args.seconds:.0f} s; load {os.getloadavg()[0]:.2f}")
    for t in counts:
        x = sorted(times[t])
        print(f"  {t} threads: {len(x)} steps, median {statistics.median(x) * 1e3:.1f} ms, "
              f"p10 {x[len(x) // 10] * 1e3:.1f} ms, mean {sum(x) / len(x) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
