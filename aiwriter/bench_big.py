"""`aiwriter bench --model FILE`: a real-size model file, one process per measurement, as a user
meets it: first load (int4: quantizing + writing its cache), later load, peak RSS, decode tok/s,
reading a long opening, and this machine's streaming read bandwidth measured in the same run, so
int4 decode can be put against its limit (bandwidth / bytes read per token).

The bandwidth is probed twice: once at the start of the run (its own process) and once in the
later load's process right after its decode (after its peak RSS is taken), so that on a shared
machine the limit a decode is put against is that of the same minute. Decode is reported as the
mean rate and as the rate of the median step (one slow step, another process's burst, moves the
mean more than the median)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def bandwidth_gbs(mb: int = 1024, repeats: int = 5) -> float:
    """Streaming read bandwidth: the best of `repeats` sums over a buffer far above the caches,
    with torch's threads (what a decode step has)."""
    import torch

    x = torch.ones(mb * 2**20 // 4)
    x.sum()
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best = max(best, x.numel() * 4 / (time.perf_counter() - t) / 1e9)
    return best


def bytes_per_token(model) -> int:
    """Bytes a one-token step must read: every matrix (int4: packed + scales), every other tensor
    but the embedding (one row of it)."""
    net = getattr(model.net, "torch_net", model.net)
    total = 0
    for name, t in list(net.named_parameters()) + list(net.named_buffers()):
        if name in ("emb.weight", "tok_emb.weight"):
            total += t.shape[1] * t.element_size()
        else:
            total += t.numel() * t.element_size()
    return total


def measure_one(path: str, dtype: str, prompt: int, seconds: float, probe: bool = False) -> dict:
    """One load of `path` in this process: load time, RSS, decode (mean and median-step rate),
    the prompt; probe: then this machine's bandwidth (after the peak RSS is taken)."""
    import resource
    import statistics

    import torch

    from aiwriter.engine import load_model

    t = time.perf_counter()
    m = load_model(path, dtype=dtype)
    load_s = time.perf_counter() - t
    out = {"dtype": dtype, "load_s": load_s, "rss_after_load_mb": _rss_mb(),
           "rss_file_after_load_mb": _rss_mb("RssFile:")}  # of it, file-backed pages (mapped, shareable)
    state = m.new_state(1)
    logits, state = m.forward_batch([1], state)
    steps, t = [], time.perf_counter()
    while time.perf_counter() - t < seconds or len(steps) < 3:
        s = time.perf_counter()
        logits, state = m.forward_batch([int(logits.argmax())], state)
        steps.append(time.perf_counter() - s)
    out["decode_tok_s"] = len(steps) / (time.perf_counter() - t)
    out["decode_median_tok_s"] = 1 / statistics.median(steps)
    onnx_net = getattr(m.net, "onnx_net", None)
    if onnx_net is not None:  # how its threads waited at the end of the decode (speed/spin.py)
        out["ort_spinning"] = onnx_net.spinning
    out["bytes_per_token"] = bytes_per_token(m)
    if prompt:
        ids = torch.randint(0, m.vocab_size, (prompt,), generator=torch.Generator().manual_seed(0)).tolist()
        t = time.perf_counter()
        m.forward(ids)
        out["prompt_tokens"], out["prompt_s"] = prompt, time.perf_counter() - t
    out["rss_end_mb"], out["rss_file_end_mb"] = _rss_mb(), _rss_mb("RssFile:")
    # the peak counts file-backed pages (mapped files: the int4 cache) as well as private memory
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if probe:
        del m, logits, state
        out["bandwidth_gbs"] = bandwidth_gbs()
    return out


def _rss_mb(key: str = "VmRSS:") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def _sub(code: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return {"error": " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])}


def bench_model(path: str, dtypes: list[str], prompt: int = 0, seconds: float = 6.0, cache: str | None = None) -> dict:
    """Each dtype: a first load (empty int4 cache) and a later load, each in its own process."""
    scratch = None if cache else tempfile.TemporaryDirectory(prefix="aiwriter-bench-")  # int4 caches are GBs
    try:
        return _bench(path, dtypes, prompt, seconds, cache or scratch.name)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _bench(path: str, dtypes: list[str], prompt: int, seconds: float, cache: str) -> dict:
    env = dict(os.environ, AIWRITER_CACHE=cache)
    code = ("import json; from aiwriter.bench_big import measure_one; "
            "print('@@' + json.dumps(measure_one({!r}, {!r}, {}, {}, {})))")
    results = {"model": path, "file_bytes": os.path.getsize(path),
               "bandwidth_gbs": _sub("import json; from aiwriter.bench_big import bandwidth_gbs; "
                                     "print('@@' + json.dumps(bandwidth_gbs()))", env), "runs": []}
    for dtype in dtypes:
        first = _sub(code.format(path, dtype, 0, 1.0, False), env)
        later = _sub(code.format(path, dtype, prompt, seconds, True), env)
        results["runs"].append({"dtype": dtype, "first": first, "later": later})
    return results


def table(res: dict) -> str:
    """Markdown table; the limit is the bandwidth probed right after the decode (else the run's)."""
    bw = res["bandwidth_gbs"]
    lines = [f"{res['model']} ({res['file_bytes'] / 2**30:.2f} GiB); streaming read bandwidth at the start {bw:.1f} GB/s",
             "| dtype | first load s | later load s | peak RSS MB (first / later) | decode tok/s mean / median step "
             "| bytes/token MB | bandwidth GB/s after decode | limit tok/s | % of limit mean / median | prompt tok/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        f, l = r["first"], r["later"]
        if "error" in f or "error" in l:
            lines.append(f"| {r['dtype']} | error: {f.get('error') or l.get('error')} |")
            continue
        near = l.get("bandwidth_gbs", bw)
        limit = near * 1e9 / l["bytes_per_token"]
        med = l.get("decode_median_tok_s", l["decode_tok_s"])
        prompt = f"{l['prompt_tokens'] / l['prompt_s']:.1f}" if "prompt_s" in l else "—"
        dtype = r["dtype"] + {True: " (threads spinning)", False: " (threads sleeping)"}.get(l.get("ort_spinning"), "")
        lines.append(f"| {dtype} | {f['load_s']:.1f} | {l['load_s']:.1f} | {f['peak_rss_mb']:,.0f} / "
                     f"{l['peak_rss_mb']:,.0f} | {l['decode_tok_s']:.2f} / {med:.2f} | {l['bytes_per_token'] / 1e6:,.0f} | "
                     f"{near:.1f} | {limit:.1f} | {100 * l['decode_tok_s'] / limit:.0f} % / {100 * med / limit:.0f} % | "
                     f"{prompt} |")
    return "\n".join(lines)
