"""Does long writing loop? 20 runs of 2,000 chars from openings taken from held-out text, with the
writer's default settings; prints the share of chars inside a 10-char string already written
earlier in the same run, per setting compared.

    python benchmarks/degeneration.py [--model M] [--text ../shared/corpus/heldout/儒林外史.txt]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from aiwriter import load_model
from aiwriter.sampling import SamplingSettings
from aiwriter.writer import RunResult, Writer
from quality import repeated_share  # benchmarks/quality.py (a script's folder is on sys.path)

HELDOUT = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "heldout" / "儒林外史.txt"


def openings(path: Path, count: int, chars: int = 200) -> list[str]:
    """`count` openings of about `chars` chars, spread evenly through the text, each starting at a
    paragraph."""
    lines = [l for l in path.read_text(encoding="utf-8").split("\n") if l.strip()]
    out = []
    for k in range(count):
        i = k * len(lines) // count
        text = ""
        while len(text) < chars and i < len(lines):
            text += lines[i] + "\n"
            i += 1
        out.append(text[:chars])
    return out


def self_nll(model, opening_ids, text) -> float:
    """Mean nats/char the model gives its own continuation (lower = more predictable)."""
    ids = opening_ids + model.tokenizer.encode(text)
    logits = torch.from_numpy(model.logits(ids)) if model.ctx_len is None else None
    if logits is None:
        return math.nan
    logp = torch.log_softmax(logits[len(opening_ids) - 1:-1], dim=-1)
    tgt = torch.tensor(ids[len(opening_ids):])
    return float(-logp.gather(1, tgt[:, None]).mean())


def measure(model, writer, opens, length, settings, seed) -> dict:
    gen = torch.Generator(device=model.device).manual_seed(seed)
    shares, nlls = [], []
    t0 = time.perf_counter()
    for op in opens:
        reading = writer.read(op)
        for ev in writer.write(reading, 1, length, settings, gen):
            if isinstance(ev, RunResult):
                shares.append(repeated_share(ev.text))
                nlls.append(self_nll(model, reading.ids, ev.text))
    return {
        "repeated_share": sum(shares) / len(shares),
        "worst_run": max(shares),
        "self_nats_per_char": sum(nlls) / len(nlls),
        "seconds": time.perf_counter() - t0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model")
    ap.add_argument("--text", default=str(HELDOUT))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--length", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    model = load_model(args.model)
    writer = Writer(model)
    opens = openings(Path(args.text), args.runs)
    default = SamplingSettings()  # `aiwriter write`'s defaults (aiwriter.sampling.FIELDS)
    variants = {
        "defaults": default,
        "seed (no penalty)": dataclasses.replace(default, repetition_penalty=0.0, presence_penalty=0.0, frequency_penalty=0.0),
    }
    results = {name: measure(model, writer, opens, args.length, s, args.seed) for name, s in variants.items()}
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
        return 0
    print(f"{args.runs} runs × {args.length} chars, model {model.path}")
    print(f"{'settings':<20} {'repeated 10-gram share':>24} {'worst run':>10} {'self nats/char':>15} {'seconds':>8}")
    for name, r in results.items():
        print(f"{name:<20} {r['repeated_share']:>24.2%} {r['worst_run']:>10.2%} {r['self_nats_per_char']:>15.3f} {r['seconds']:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
