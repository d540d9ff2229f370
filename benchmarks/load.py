"""Load test: N concurrent streaming clients against a real `aiwriter serve` for S seconds.

    python benchmarks/load.py                      # 100 clients, 60 s, the default model
    python benchmarks/load.py --clients 20 --seconds 10 --model M.pth --vocab V.json
    python benchmarks/load.py --url http://127.0.0.1:8266   # a server already running

Each client loops: POST /v1/completions with stream=true, reads the stream to [DONE], reads
for about --think seconds (as a writer does), and asks again. Past the server's queue bound (max batch + max queue) it gets 429: the script
checks that Retry-After is there and waits that long. Prints requests/s, chars/s, p50/p99 time
to first char (from sending the request, queue wait included), 429s, errors, how many clients
got at least one continuation, and the server's RSS (start, peak, end). Exit status 1 on any
error or a client that never got a turn. Loopback only: the server it starts listens on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

OPENINGS = ["林黛玉进了贾府。", "那一天，雨下得很大。", "他推开门，", "第一章\n天色将晚，", "她说：“你来了。”",
            "山下有一座小庙，", "这是一个关于远方的故事。", "夜深了，城里的灯一盏一盏灭了。"]


def start_server(args, db: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "aiwriter", "serve", "--no-browser", "--host", "127.0.0.1", "--port", "0",
           "--db", str(db), "--max-batch", str(args.max_batch), "--max-queue", str(args.max_queue)]
    if args.model:
        cmd += ["--model", args.model]
    if args.vocab:
        cmd += ["--vocab", args.vocab]
    if args.device:
        cmd += ["--device", args.device]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if m:
            # keep reading its output (one log line per request) so the pipe never fills
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit(f"the server did not start (exit {proc.wait()})")


def rss_kib(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, KiB (Linux /proc)."""
    cur = peak = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    except OSError:
        pass
    return cur, peak


class Stats:
    def __init__(self, clients: int):
        self.done = [0] * clients         # continuations completed per client
        self.chars = 0
        self.ttfc: list[float] = []       # seconds from request to first char
        self.rejected = 0                 # 429s
        self.retry_after_missing = 0
        self.errors: list[str] = []


async def client(i: int, http: httpx.AsyncClient, args, deadline: float, stats: Stats) -> None:
    rng = random.Random(i)
    text = rng.choice(OPENINGS)
    await asyncio.sleep(rng.random() * 0.5)  # not all in the same millisecond
    while time.monotonic() < deadline:
        body = {"prompt": text, "max_tokens": args.length, "stream": True, "seed": rng.randrange(2**31)}
        t0 = time.perf_counter()
        first = None
        written = ""
        try:
            async with http.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code == 429:
                    stats.rejected += 1
                    wait = r.headers.get("retry-after")
                    if wait is None:
                        stats.retry_after_missing += 1
                    await r.aread()
                    await asyncio.sleep(min(float(wait or 1), max(0.0, deadline - time.monotonic())) + rng.random() * 0.2)
                    continue
                if r.status_code != 200:
                    stats.errors.append(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                    await asyncio.sleep(1)
                    continue
                buf = ""
                async for chunk in r.aiter_text():
                    buf += chunk
                    while "\n\n" in buf:
                        event, buf = buf.split("\n\n", 1)
                        if not event.startswith("data: ") or event == "data: [DONE]":
                            continue
                        data = json.loads(event[6:])
                        if "error" in data:
                            stats.errors.append(f"stream error: {data['error'].get('en')}")
                            continue
                        piece = "".join(c["text"] for c in data["choices"])
                        if piece and first is None:
                            first = time.perf_counter() - t0
                        written += piece
        except httpx.HTTPError as e:
            stats.errors.append(f"{type(e).__name__}: {e}")
            await asyncio.sleep(1)
            continue
        if first is not None:
            stats.ttfc.append(first)
        stats.chars += len(written)
        stats.done[i] += 1
        # a writer reads the continuation before asking again, goes on from where the model
        # stopped (the server's prefix cache serves that), and starts a new manuscript now and then
        text = text + written if len(text) < 2000 and rng.random() < 0.7 else rng.choice(OPENINGS)
        if args.think > 0:
            await asyncio.sleep(args.think * (0.5 + rng.random()))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run(args, url: str, pid: int | None) -> int:
    stats = Stats(args.clients)
    limits = httpx.Limits(max_connections=args.clients + 10, max_keepalive_connections=args.clients + 10)
    rss: list[int] = []
    stop = asyncio.Event()

    async def sample():
        while not stop.is_set() and pid:
            rss.append(rss_kib(pid)[0])
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    rss_start = rss_kib(pid)[0] if pid else 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(120, connect=30)) as http:
        sampler = asyncio.create_task(sample())
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        await asyncio.gather(*(client(i, http, args, deadline, stats) for i in range(args.clients)))
        elapsed = time.monotonic() - t0
        stop.set()
        await sampler
        status = (await http.get("/api/status")).json()
    cur, peak = rss_kib(pid) if pid else (0, 0)
    requests = sum(stats.done)
    progressing = sum(1 for d in stats.done if d > 0)
    print(f"model {status.get('model')} ({status.get('family')}, {status.get('device')}); "
          f"max_batch {status.get('max_batch')}, max_queue {status.get('max_queue')}")
    print(f"clients {args.clients}, {elapsed:.1f} s, {args.length} chars per request, think time {args.think:g} s")
    print(f"requests        {requests}  ({requests / elapsed:.2f} /s)")
    print(f"chars           {stats.chars}  ({stats.chars / elapsed:.1f} /s)")
    print(f"first char      p50 {pct(stats.ttfc, 0.5) * 1000:.0f} ms, p99 {pct(stats.ttfc, 0.99) * 1000:.0f} ms")
    print(f"429 answers     {stats.rejected} (Retry-After missing on {stats.retry_after_missing})")
    print(f"errors          {len(stats.errors)}" + (f": {stats.errors[:3]}" if stats.errors else ""))
    print(f"clients served  {progressing}/{args.clients} (fewest continuations for one client: {min(stats.done)}, "
          f"most: {max(stats.done)})")
    print(f"server batches  largest {status.get('max_batch_seen')}, steps {status.get('steps')}, "
          f"prefix cache reused {status.get('reused_ids')} of {status.get('prompt_ids')} prompt ids")
    if pid:
        print(f"server RSS      start {rss_start / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB, end {cur / 1024:.0f} MiB, "
              f"samples {min(rss) / 1024 if rss else 0:.0f}..{max(rss) / 1024 if rss else 0:.0f} MiB")
    ok = not stats.errors and progressing == args.clients and stats.retry_after_missing == 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--length", type=int, default=64, help="chars per continuation (max_tokens)")
    p.add_argument("--think", type=float, default=1.0,
                   help="seconds a client reads before its next request, on average (0: at once)")
    p.add_argument("--url", help="a running server to test (else one is started on loopback)")
    p.add_argument("--model", help="model file for the started server (default: the embedded default model)")
    p.add_argument("--vocab")
    p.add_argument("--device")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=32)
    args = p.parse_args(argv)
    if args.url:
        return asyncio.run(run(args, args.url.rstrip("/"), None))
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args, Path(tmp) / "load.db")
        try:
            return asyncio.run(run(args, url, proc.pid))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
