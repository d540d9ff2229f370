"""Tokens/s of `aiwriter train` on this machine, one setting changed at a time.

    python benchmarks/train_speed.py --data BOOK.txt --seconds 60 --out train-speed.json

Each case is a fresh `python -m aiwriter train` process for --seconds of training (no held-out
evaluation, no checkpoint inside the window). Reported per case: the overall rate (tokens over the
training loop's wall time, compile time included) and the steady rate (median of the 10-step
windows after the first 20 % of the run), with the load average seen while it ran.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHAPES = {
    "2x128": ["--layers", "2", "--embd", "128"],  # the new user's try (issue 17): ctx 256, batch 16
    "4x256": ["--layers", "4", "--embd", "256", "--ctx-len", "256", "--batch-size", "8"],
}
VARIANTS = {
    "fp32 (2 threads; chunk 32)": [],
    "bf16 autocast": ["--dtype", "bf16"],
    "1 thread": ["--threads", "1"],
    "chunk 16": ["--wkv-chunk", "16"],
    "chunk 64": ["--wkv-chunk", "64"],
    "torch.compile": ["--compile"],
}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_case(data: str, shape: list[str], extra: list[str], seconds: float, root: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=root))
    base = ["--threads", "2"] if "--threads" not in extra else []
    cmd = [sys.executable, "-m", "aiwriter", "train", "--data", data, "--out", str(out), "--max-minutes",
           str(seconds / 60), "--eval-every", "1000000", "--save-every", "1000000", "--no-progress", *shape, *base, *extra]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    load = os.getloadavg()[0]
    if r.returncode != 0:
        return {"error": r.stderr[-2000:]}
    facts = json.loads((out / "train.json").read_text(encoding="utf-8"))
    hist = json.loads((out / "history.json").read_text(encoding="utf-8"))["train"]
    windows = [h["tok_per_s"] for h in hist if h["step"] > 1 and h["elapsed"] >= 0.2 * facts["wall_seconds"]]
    return {"steps": facts["steps"], "tokens": facts["tokens_seen"], "wall_s": facts["wall_seconds"],
            "overall_tok_s": round(facts["tokens_seen"] / max(facts["wall_seconds"], 1e-9)),
            "steady_tok_s": round(statistics.median(windows)) if windows else None,
            "last_loss": facts["last_train_loss"], "process_s": round(time.time() - t0, 1), "load_avg_1min": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--variants", default=None, help="comma separated names (default: all)")
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole list, interleaved (a shared machine's load drifts)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    names = [v.strip() for v in a.variants.split(",")] if a.variants else list(VARIANTS)
    report = {"cpu": cpu_name(), "cpus": os.cpu_count(), "seconds": a.seconds, "results": []}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        cases = [(shape, name) for _ in range(a.rounds) for shape in a.shapes.split(",") for name in names]
        for shape, name in cases:
            if True:
                r = {"shape": shape, "variant": name, **run_case(a.data, SHAPES[shape], VARIANTS[name], a.seconds, Path(tmp))}
                report["results"].append(r)
                print(json.dumps(r, ensure_ascii=False), flush=True)
                if a.out:
                    Path(a.out).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
