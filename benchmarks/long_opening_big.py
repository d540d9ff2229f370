"""Reading a long opening with a big model on the CPU: this project's int4 mode against the `rwkv`
package (issue 14, item 4), each case in its own process, one run.

    python benchmarks/long_opening_big.py rwkv7-1.5b.safetensors --pth rwkv7-1.5b.pth \
        --tokens 2000,20000 --package-tokens 256 --strategies "cpu bf16,cpu fp32"

Ours: `load_model(FILE, dtype="int4")` (its cache prepared beforehand, as a user's second run),
then the opening read as `aiwriter write` reads it (Writer.read: chunks of PREFILL_CHUNK ids).
The package: `RWKV_x070(PTH, strategy).forward(ids, None)` on `--package-tokens` ids (its speed
per token hardly depends on the length; a 20,000-id opening would take it hours on an AVX2 CPU
with emulated bf16). Random ids of the model's vocab; prints seconds, ids/s, peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _ids(n: int, vocab: int) -> list[int]:
    import torch

    return torch.randint(1, vocab, (n,), generator=torch.Generator().manual_seed(0)).tolist()


def ours(path: str, n: int) -> dict:
    from aiwriter.engine import load_model
    from aiwriter.writer import PREFILL_CHUNK

    m = load_model(path, dtype="int4")
    ids = _ids(n, m.vocab_size)
    t = time.perf_counter()
    state = None
    for i in range(0, n, PREFILL_CHUNK):
        _, state = m.forward(ids[i:i + PREFILL_CHUNK], state)
    return {"seconds": time.perf_counter() - t}


def package(pth: str, strategy: str, n: int) -> dict:
    import contextlib
    import io

    import torch

    from aiwriter.bench import _private_rwkv

    module = _private_rwkv(7, jit=True)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = module.RWKV_x070(pth.removesuffix(".pth"), strategy)
    vocab = ref.z["emb.weight"].shape[0] if hasattr(ref, "z") else 65536
    ids = _ids(n, vocab)
    t = time.perf_counter()
    with torch.no_grad():
        ref.forward(ids, None)
    return {"seconds": time.perf_counter() - t}


def one(spec: dict) -> dict:
    out = ours(spec["path"], spec["n"]) if spec["engine"] == "int4" else package(spec["pth"], spec["engine"], spec["n"])
    out.update(spec, ids_per_s=spec["n"] / out["seconds"],
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--pth", help="the same weights as a .pth file, for the rwkv package")
    ap.add_argument("--tokens", default="2000,20000")
    ap.add_argument("--package-tokens", type=int, default=256)
    ap.add_argument("--strategies", default="cpu bf16,cpu fp32")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("@@" + json.dumps(one(json.loads(a.one))))
        return
    specs = [{"engine": "int4", "path": a.model, "n": int(n)} for n in a.tokens.split(",")]
    if a.pth:
        specs += [{"engine": s.strip(), "pth": a.pth, "n": a.package_tokens} for s in a.strategies.split(",")]
    print(f"load average at the start: {os.getloadavg()[0]:.1f}", flush=True)
    for spec in specs:
        p = subprocess.run([sys.executable, __file__, a.model, "--one", json.dumps(spec)], capture_output=True, text=True)
        line = next((x for x in p.stdout.splitlines() if x.startswith("@@")), None)
        if line is None:
            print(spec["engine"], spec["n"], "failed:", (p.stderr or p.stdout).strip().splitlines()[-3:], flush=True)
            continue
        r = json.loads(line[2:])
        print(f"{r['engine']:>9} {r['n']:>6} ids: {r['seconds']:8.1f} s, {r['ids_per_s']:7.2f} ids/s, "
              f"peak RSS {r['peak_rss_mb']:,.0f} MB (load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
