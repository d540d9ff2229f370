"""Continuing a long manuscript after a server restart: the disk state cache at work.

    python benchmarks/state_cache_restart.py                 # the default model, a 100k-char prompt
    python benchmarks/state_cache_restart.py --chars 20000 --model M.pth --vocab V.json

1. starts `aiwriter serve` (loopback, a fresh cache folder) and sends the prompt (POST /v1/completions,
   streamed, max_tokens 1): the cold read;
2. stops the server (Ctrl+C) and starts a new one on the same cache folder;
3. sends the same prompt plus 50 chars and measures the time to its first written char;
4. does 2-3 again with --no-state-cache, for comparison.
Prints the times; exit status 1 when the first char after the restart took longer than --target s.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BOOK = Path("/work/shared/corpus/heldout/儒林外史.txt")
EXTRA = "　　次日清早，王冕起来，收拾了行李，别过母亲，往城里去了。一路上只见"  # appended after the restart


def start_server(args, cache: Path, extra=()) -> tuple[subprocess.Popen, str, float]:
    cmd = [sys.executable, "-m", "aiwriter", "serve", "--no-browser", "--host", "127.0.0.1", "--port", "0",
           "--db", str(cache / "manuscripts.db"), *extra]
    if args.model:
        cmd += ["--model", args.model]
    if args.vocab:
        cmd += ["--vocab", args.vocab]
    env = {**os.environ, "AIWRITER_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            return proc, m.group(1), time.perf_counter() - t0
    raise SystemExit("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_char(url: str, prompt: str) -> tuple[float, dict]:
    """Seconds from sending the request to its first written char; the server's counters after."""
    body = {"prompt": prompt, "max_tokens": 8, "stream": True, "seed": 1}
    t0 = time.perf_counter()
    got = None
    with httpx.Client(timeout=3600) as c:
        with c.stream("POST", url + "v1/completions", json=body) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if got is None and line.startswith("data: {"):
                    if json.loads(line[6:])["choices"][0]["text"]:
                        got = time.perf_counter() - t0
        status = c.get(url + "api/status").json()
    return got, status


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--vocab")
    ap.add_argument("--chars", type=int, default=100_000)
    ap.add_argument("--target", type=float, default=1.5)
    args = ap.parse_args()
    text = BOOK.read_text(encoding="utf-8")[: args.chars]
    results = {}
    with tempfile.TemporaryDirectory(prefix="aiwriter-bench-cache-") as tmp:
        cache = Path(tmp)
        proc, url, _ = start_server(args, cache)
        try:
            results["cold_read_s"], st = first_char(url, text)
            results["prompt_ids"] = st["prompt_ids"]
        finally:
            stop_server(proc)
        stored = [p for p in (cache / "states").iterdir()]
        results["cache_files"] = len(stored)
        results["cache_mb"] = round(sum(p.stat().st_size for p in stored) / 2**20, 1)
        proc, url, results["restart_load_s"] = start_server(args, cache)
        try:
            results["after_restart_first_char_s"], st = first_char(url, text + EXTRA)
            results["after_restart_read_ids"] = st["read_ids"]
            results["after_restart_disk_ids"] = st.get("disk_ids")
        finally:
            stop_server(proc)
        proc, url, _ = start_server(args, cache, ["--no-state-cache"])
        try:
            results["no_cache_first_char_s"], st = first_char(url, text + EXTRA)
        finally:
            stop_server(proc)
    results["chars"] = len(text)
    for k, v in results.items():
        print(f"{k}: {round(v, 3) if isinstance(v, float) else v}")
    ok = results["after_restart_first_char_s"] <= args.target
    print(f"target: first char after restart <= {args.target} s: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
