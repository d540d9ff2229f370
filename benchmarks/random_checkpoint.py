"""Write a random RWKV-7 checkpoint of a released shape, for `aiwriter bench --model` and the
big-model benchmarks (no real weights can be downloaded here; speed and memory depend on the
shape, not the values).

    python benchmarks/random_checkpoint.py OUT.safetensors                       # 1.5B: L24 C2048
    python benchmarks/random_checkpoint.py OUT.safetensors --layers 32 --embd 2560   # 2.9B
    python benchmarks/random_checkpoint.py OUT.pth --dtype fp32                  # a torch zip file

Weights come from `RWKV7.random_weights` (stable activations) and are cast one tensor at a time.
"""
from __future__ import annotations

import argparse

import torch
from safetensors.torch import save_file

from aiwriter.models.rwkv7 import RWKV7


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--embd", type=int, default=2048)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    w = RWKV7.random_weights(a.vocab, a.layers, a.embd, a.head_size, seed=a.seed)
    for k in w:
        w[k] = w[k].to(dtype).contiguous()
    if a.out.endswith(".safetensors"):
        save_file(w, a.out)
    else:
        torch.save(w, a.out)
    print(f"{a.out}: {sum(t.numel() for t in w.values()) / 1e9:.2f}B params, {a.dtype}")


if __name__ == "__main__":
    main()
