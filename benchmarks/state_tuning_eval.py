"""A tuned state against the model's own start on the held-out tenth of the book it was tuned on.

    python benchmarks/state_tuning_eval.py STATE.pth BOOK.txt [--model M.pth] [--opening TEXT]

Prints nats/char over the held-out part (the last tenth, as `aiwriter train --state-only` holds
it out) cut into windows of 64, 256 and 1024 chars, each read from the start state, with and
without the tuned state; then one sample of 150 chars each way (same seed, same opening).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from aiwriter.engine import load_model
from aiwriter.sampling import SamplingSettings
from aiwriter.state_files import read_time_state
from aiwriter.tokenizer import clean_context
from aiwriter.training import data as D
from aiwriter.training.state_tuning import split_heldout, start_time_state, window_nats
from aiwriter.writer import Piece, Writer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("state")
    ap.add_argument("book")
    ap.add_argument("--model")
    ap.add_argument("--vocab")
    ap.add_argument("--opening", default="　　却说痴珠回到寓中，")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--windows", default="64,256,1024", help="window lengths to score, comma-separated ('' for none)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model, vocab=args.vocab)
    ts = read_time_state(args.state)
    ids = D.encode_fast(clean_context(D.read_text(args.book)), model.tokenizer).astype(np.int64)
    _, held = split_heldout([ids], 0.1)
    print(f"held-out: {len(held):,} chars")
    for ctx in [int(c) for c in args.windows.split(",") if c]:
        own, n = window_nats(model.net, held, start_time_state(model.net), ctx)
        tuned, _ = window_nats(model.net, held, ts, ctx)
        print(f"windows of {ctx}: own start {own:.4f}, tuned {tuned:.4f} nats/char ({tuned - own:+.4f}; {n:,} chars)")
    w = Writer(model)
    for name, start in (("without", None), ("with", model.state_from_file(args.state))):
        reading = w.read(args.opening, start=start)
        g = torch.Generator().manual_seed(args.seed)
        text = "".join(p.text for p in w.write(reading, 1, 150, SamplingSettings(), g) if isinstance(p, Piece))
        print(f"--- {name} the state: {args.opening.strip()}{text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
