"""4-bit block quantization shared by the int4 mode (speed/int4.py) and the int4 ONNX export
(speed/onnx_export.py): each matrix B [K, N] (what a MatMul multiplies by: a Linear's weight
transposed, or an RWKV-7 LoRA matrix) is cut along K into blocks of BLOCK values per output column;
each block keeps one float32 scale, the value of largest magnitude maps to -8 and the rest round
to the nearest of -8..7 (symmetric, no zero point), packed as onnxruntime's MatMulNBits reads it.
"""
from __future__ import annotations

import torch

# Held-out loss of the default model vs float32: +0.0135 nats/char with blocks of 128, +0.0096 with
# 64 (the budget is 0.02); 128 decodes RWKV-7 0.1B 1.15x faster.
BLOCK = 128


def extreme_values(blocks: torch.Tensor) -> torch.Tensor:
    """The signed value of largest magnitude in each block (last dim), keepdim; on a tie between
    +m and -m, +m. (Two reductions: 3x faster than argmax of |x| + gather.)"""
    hi, lo = blocks.amax(-1, keepdim=True), blocks.amin(-1, keepdim=True)
    return torch.where(hi >= -lo, hi, lo)


def quantize_blocks(B: torch.Tensor, block: int = BLOCK):
    """B [K, N] float -> (packed uint8 [N, K/block, block/2], scales float32 [N * K/block],
    dequantized float32 [K, N]). K is zero-padded up to a multiple of the block. Packing as
    MatMulNBits reads it: element 2j in the low nibble, 2j+1 in the high, stored as q + 8."""
    K, N = B.shape
    Kp = -(-K // block) * block
    W = torch.zeros(N, Kp, dtype=torch.float32)
    W[:, :K] = B.detach().float().T
    blocks = W.view(N, Kp // block, block)
    extreme = extreme_values(blocks)
    scale = extreme / -8.0
    q = torch.round(blocks / torch.where(scale == 0, torch.ones_like(scale), scale)).clamp(-8, 7)
    u = (q + 8).to(torch.uint8)
    packed = u[..., 0::2] | (u[..., 1::2] << 4)
    deq = (q * scale).view(N, Kp)[:, :K].T.contiguous()
    return packed.contiguous(), scale.reshape(-1).contiguous(), deq
