"""Does the int4 decode keep its speed when another program starts and stops competing for the
cores? One decode per AIWRITER_ORT_SPIN setting (auto, 0, 1), each in its own process, through
the same scripted phases: quiet, then a competing process (a float32 matmul loop with N torch
threads) for a while, then quiet again. Prints, per setting and phase, the median step and
tok/s, and when the auto setting switched spinning off and on.

    AIWRITER_CACHE=/some/dir PYTHONPATH=. python benchmarks/spin_auto.py MODEL
        [--phases quiet:20,busy2:40,quiet:60] [--modes auto,0,1] [--shares]

The model is loaded with --dtype int4 (its cache entry written on the first use, before the
first setting runs). Phases: quiet:SECONDS or busyN:SECONDS (N competing threads).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMPETITOR = ("import sys, torch\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(1024, 1024)\n"
              "while True:\n    a = torch.tanh(a @ a * 0.001)\n")


def child(model: str, phases: list[tuple[str, float]]) -> dict:
    from aiwriter.engine import load_model

    m = load_model(model, dtype="int4")
    onnx_net = m.net.onnx_net
    state = m.new_state(1)
    logits, state = m.forward_batch([1], state)
    out = []
    for name, seconds in phases:
        rival = None
        if name.startswith("busy"):
            rival = subprocess.Popen([sys.executable, "-c", COMPETITOR, name[4:] or "1"])
            time.sleep(1.0)  # let it start its threads
        steps, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            s = time.perf_counter()
            logits, state = m.forward_batch([int(logits.argmax())], state)
            policy = onnx_net._spin_policy
            steps.append((round(time.perf_counter() - t0, 3), time.perf_counter() - s, onnx_net.spinning,
                          None if policy is None else policy.last_share))
        if rival is not None:
            rival.kill()
            rival.wait()
        out.append({"phase": name, "seconds": seconds, "steps": steps})
    return {"phases": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--phases", default="quiet:20,busy2:40,quiet:60")
    ap.add_argument("--modes", default="auto,0,1")
    ap.add_argument("--shares", action="store_true", help="also print the auto policy's window-by-window figures")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    phases = [(p.split(":")[0], float(p.split(":")[1])) for p in a.phases.split(",")]
    if a.child:
        print(json.dumps(child(a.model, phases)))
        return
    from aiwriter.engine import load_model

    load_model(a.model, dtype="int4")  # the cache entry, written once before any timed run
    print(f"{a.model}; phases {a.phases}; load average {os.getloadavg()[0]:.2f}")
    print("| AIWRITER_ORT_SPIN | " + " | ".join(f"{n} {s:.0f} s: median step ms (tok/s)" for n, s in phases) + " | switches |")
    print("|---|" + "---|" * len(phases) + "---|")
    for mode in a.modes.split(","):
        env = dict(os.environ, AIWRITER_ORT_SPIN="" if mode == "auto" else mode)
        res = subprocess.run([sys.executable, __file__, a.model, "--phases", a.phases, "--child"], env=env,
                             capture_output=True, text=True, check=True)
        data = json.loads(res.stdout.strip().splitlines()[-1])
        cells, switches, last = [], [], None
        for ph in data["phases"]:
            med = statistics.median(d for _, d, _, _ in ph["steps"])
            cells.append(f"{med * 1e3:.1f} ({1 / med:.1f})")
            for t, _, spinning, _ in ph["steps"]:
                if last is not None and spinning != last:
                    switches.append(f"{'on' if spinning else 'off'} at {ph['phase']} +{t:.1f} s")
                last = spinning
        print(f"| {mode} | " + " | ".join(cells) + f" | {', '.join(switches) or '-'} |", flush=True)
        if a.shares:
            for ph in data["phases"]:
                shares = [round(s, 3) for i, (_, _, _, s) in enumerate(ph["steps"])
                          if s is not None and (i == 0 or s != ph["steps"][i - 1][3])]
                print(f"    {mode} {ph['phase']}: wait per second of work, window by window: {shares}")


if __name__ == "__main__":
    main()
