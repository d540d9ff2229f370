"""Write a random RWKV-7 checkpoint of a released shape, for `aiwriter bench --model` and the
big-model benchmarks (no real weights can be downloaded here; speed and memory depend on the
shape, not the values).

    python benchmarks/random_checkpoint.py OUT.safetensors                            # 1.5B: L24 C2048
    python benchmarks/random_checkpoint.py OUT.safetensors --layers 32 --embd 2560    # 2.9B
    python benchmarks/random_checkpoint.py OUT.safetensors --layers 32 --embd 4096    # 7.2B
    python benchmarks/random_checkpoint.py OUT.pth --layers 12 --embd 768 --dtype fp32   # a torch zip

A .safetensors file is written one tensor at a time (header first, from the shapes), so a 7B
shape needs no more memory than its largest tensor; a .pth is built in memory.
"""
from __future__ import annotations

import argparse
import json
import struct

import torch

from aiwriter.models.rwkv7 import RWKV7

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "fp16": (torch.float16, "F16"), "fp32": (torch.float32, "F32")}


def write_safetensors(out: str, shapes: dict[str, list[int]], tensors, dtype: str) -> None:
    tdtype, tag = DTYPES[dtype]
    size = torch.empty(0, dtype=tdtype).element_size()
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": tag, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, t in tensors:  # the same order as the header's offsets
            assert list(t.shape) == shapes[name], name
            f.write(t.to(tdtype).contiguous().view(torch.uint8).numpy().tobytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--embd", type=int, default=2048)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65536)
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    args = (a.vocab, a.layers, a.embd, a.head_size)
    with torch.device("meta"):
        shapes = {n: list(t.shape) for n, t in RWKV7(*args).state_dict().items()}
    tensors = RWKV7.iter_random_weights(*args, seed=a.seed)
    if a.out.endswith(".safetensors"):
        write_safetensors(a.out, shapes, tensors, a.dtype)
    else:
        torch.save({n: t.to(DTYPES[a.dtype][0]) for n, t in tensors}, a.out)
    print(f"{a.out}: {sum(torch.Size(s).numel() for s in shapes.values()) / 1e9:.2f}B params, {a.dtype}")


if __name__ == "__main__":
    main()
