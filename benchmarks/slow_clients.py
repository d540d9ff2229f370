"""Slow, greedy and idle clients against a real `aiwriter serve` (the default model, CPU): the
figures of docs/reliability.md ("Slow and idle clients"). Loopback only; bounded; ~3 minutes.

    python benchmarks/slow_clients.py

1. POST /api/extra/tokencount with a 4 MB text, /api/status polled meanwhile: its worst latency
   and the size of the reply.
2. A 400k-char opening being read, then a short request: its time to first char.
3. 16 KoboldAI streams of 10,000 chars opened and never read, then a normal stream: its time to
   first char.
4. 1,100 idle sockets against a server under `ulimit -n 1024`: whether a request still gets in.
5. 100 concurrent 4 MB uploads: the server's RSS before and at peak.
"""
from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx


def start(db: Path, nofile: int | None = None):
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    err = open(db.with_suffix(".log"), "w")
    proc = subprocess.Popen([sys.executable, "-m", "aiwriter", "serve", "--no-browser", "--port", "0", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=limit)
    for line in proc.stdout:
        if "http://127.0.0.1:" in line:
            url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split("/")[0]
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, url
    raise SystemExit(db.with_suffix(".log").read_text())


def vm(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def raw(url: str, path: str, body: bytes) -> socket.socket:
    host, port = url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def first_char(url: str, body: dict, timeout: float = 120) -> float:
    t0 = time.perf_counter()
    with httpx.stream("POST", url + "/api/extra/generate/stream", json=body, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                return time.perf_counter() - t0
    return float("nan")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="aiwriter-slow-"))
    proc, url = start(tmp / "a.db")
    try:
        # 1. tokencount
        body = json.dumps({"prompt": "林黛玉笑道" * 270_000}, ensure_ascii=False).encode()
        out = {}
        t = threading.Thread(target=lambda: out.update(r=httpx.post(url + "/api/extra/tokencount", content=body,
                             headers={"content-type": "application/json"}, timeout=120)))
        t0 = time.perf_counter()
        t.start()
        worst = 0.0
        while t.is_alive():
            s = time.perf_counter()
            httpx.get(url + "/api/status", timeout=60)
            worst = max(worst, time.perf_counter() - s)
            time.sleep(0.05)
        r = out["r"]
        print(f"tokencount 4 MB ({len(body) / 2**20:.1f} MiB body): {r.status_code} in {time.perf_counter() - t0:.1f} s, "
              f"value {r.json()['value']}, reply {len(r.content) / 1024:.0f} KiB; worst /api/status latency {worst:.2f} s")

        # 2. a short request while a 400k-char opening is read
        long = raw(url, "/v1/completions", json.dumps({"prompt": "林黛玉笑道：“你们看。”\n" * 33_400, "max_tokens": 8},
                                                      ensure_ascii=False).encode())
        time.sleep(2)
        took = first_char(url, {"prompt": "宝玉", "max_length": 8})
        print(f"short request while a 400k-char opening is read: first char after {took:.2f} s")
        long.close()

        # 3. 16 unread streams
        unread = [raw(url, "/api/extra/generate/stream", json.dumps({"prompt": "林黛玉", "max_length": 10_000}).encode())
                  for _ in range(16)]
        deadline = time.time() + 60
        while httpx.get(url + "/api/status").json()["active_streams"] < 16 and time.time() < deadline:
            time.sleep(0.1)
        took = first_char(url, {"prompt": "宝玉", "max_length": 8})
        st = httpx.get(url + "/api/status").json()
        print(f"a stream while 16 unread streams hold the batch: first char after {took:.2f} s "
              f"(turns given {st['turns_given']})")
        for s in unread:
            s.close()

        # 5. 100 concurrent 4 MB uploads (each a 400 after it is read: max_tokens -1)
        big = json.dumps({"prompt": "林黛玉笑道" * 270_000, "max_tokens": -1}, ensure_ascii=False).encode()
        time.sleep(1)
        base = vm(proc.pid, "VmRSS")
        codes = []

        def upload():
            s = raw(url, "/v1/completions", big)
            s.settimeout(300)
            data = b""
            while b"\r\n" not in data and (chunk := s.recv(4096)):
                data += chunk
            codes.append(data.split(b" ", 2)[1].decode() if data else "closed")
            s.close()

        threads = [threading.Thread(target=upload) for _ in range(100)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(300)
        print(f"100 concurrent 4 MB uploads: {time.perf_counter() - t0:.1f} s, answers {sorted(set(codes))}, "
              f"RSS {base:.0f} -> peak {vm(proc.pid, 'VmHWM'):.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(30)

    # 4. idle sockets under ulimit -n 1024
    proc, url = start(tmp / "b.db", nofile=1024)
    try:
        port = int(url.rsplit(":", 1)[1])
        idle = []
        for _ in range(1100):
            s = socket.socket()
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            idle.append(s)
        t0 = time.perf_counter()
        try:
            code = httpx.get(url + "/api/status", timeout=30).status_code
        except httpx.HTTPError as e:
            code = type(e).__name__
        print(f"1,100 idle sockets, ulimit -n 1024: /api/status -> {code} in {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        closed = 0
        for s in idle:
            s.settimeout(30)
            try:
                closed += s.recv(1) == b""
            except OSError:
                pass
        print(f"  all {closed} idle sockets closed by the server within {time.perf_counter() - t0:.1f} s more")
        for s in idle:
            s.close()
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
