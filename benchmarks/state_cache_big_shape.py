"""The disk state cache's own cost at a big model's shape, without the model's arithmetic.

    python benchmarks/state_cache_big_shape.py                    # RWKV-7 1.5B shape: L24 C2048 N64, V65536
    python benchmarks/state_cache_big_shape.py --layers 32 --embd 2560

A stand-in model with that shape's state stores the state after a 100k-id prompt (the files a
read writes every 4096 ids), then a fresh cache (as after a restart) finds the longest stored
prefix of the prompt plus 50 ids and loads it. Prints the bytes per stored state and the seconds
of the lookup and load; after a restart, the first char of a long manuscript costs this plus
reading the 50 new ids and one step of the real model.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from aiwriter.engine import State
from aiwriter.state_cache import EVERY, DiskStateCache, PrefixKeys


class StandIn(torch.nn.Module):
    family = "rwkv7"

    def __init__(self, L, C, N, V):
        super().__init__()
        self.L, self.C, self.N, self.vocab_size = L, C, N, V

    def new_state(self, batch=1):
        H = self.C // self.N
        return {"att_x": torch.zeros(batch, self.L, self.C), "wkv": torch.zeros(batch, self.L, H, self.N, self.N),
                "ffn_x": torch.zeros(batch, self.L, self.C)}


@dataclass
class StandInModel:
    net: StandIn
    path: Path
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    family = "rwkv7"

    @property
    def vocab_size(self):
        return self.net.vocab_size

    def new_state(self, batch=1):
        return State(self.net.new_state(batch))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--embd", type=int, default=2048)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--ids", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fake_file = Path(tmp) / "model.pth"
        fake_file.write_bytes(b"x")
        model = StandInModel(StandIn(args.layers, args.embd, args.head_size, args.vocab), fake_file)
        ids = torch.randint(0, args.vocab, (args.ids + 50,), generator=torch.Generator().manual_seed(0)).tolist()
        cache = DiskStateCache(model, Path(tmp) / "states")
        keys = PrefixKeys(cache.model_id, "", ids[: args.ids])
        g = torch.Generator().manual_seed(1)
        state = State({k: torch.randn(v.shape, generator=g) for k, v in model.net.new_state(1).items()})
        logits = torch.randn(args.vocab, generator=g)
        t0 = time.perf_counter()
        writes = list(range(EVERY, args.ids, EVERY)) + [args.ids]
        for n in writes:
            cache.put(ids[:n], logits, state, keys)
        t_put = (time.perf_counter() - t0) / len(writes)
        size = next((Path(tmp) / "states").iterdir()).stat().st_size
        fresh = DiskStateCache(model, Path(tmp) / "states")
        t0 = time.perf_counter()
        n, got_logits, got = fresh.longest_prefix(ids)
        t_load = time.perf_counter() - t0
        assert n == args.ids and torch.equal(got.data["wkv"], state.data["wkv"])
    print(f"shape: L{args.layers} C{args.embd} N{args.head_size} V{args.vocab}")
    print(f"bytes per stored state: {size / 2**20:.1f} MB; states stored for {args.ids} ids: {len(writes)} "
          f"({len(writes) * size / 2**20:.0f} MB)")
    print(f"store one state: {t_put:.3f} s")
    print(f"after restart, find + load the longest prefix of {args.ids + 50} ids: {t_load:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
