"""Fast CPU weight formats for any family: int8 (every nn.Linear becomes an Int8Linear) and
packed bf16 (every bf16 nn.Linear becomes a PackedBF16Linear).

Each output row of a weight matrix W is stored as int8 with its own scale (symmetric, per output
channel: W[o] ~ q[o] * scale[o], scale[o] = max|W[o]| / 127), a quarter of the float32 bytes.

On CPU the product runs through fbgemm's dynamic-quantized linear: the activations are quantized
per call to uint8 (one scale for the whole call), the products accumulate in int32. Decoding is
bound by reading the weights, so a quarter of the bytes is most of the speed-up: on a 2-core
AVX-512 Xeon a 3072x768 matvec ran 2.8x float32 MKL, against 1.7x for an int8 kernel with bf16
activations (torch._weight_int8pack_mm) and 1.2x for bf16 weights. Elsewhere (CUDA, a CPU build
without fbgemm) the weights are dequantized on the fly: the same int8 weights, less memory, no
speed-up. Because the activation scale is per call, a stream's logits move (within the int8
error) with the other streams batched beside it.

bf16 on CPU: torch's plain bf16 matmul for one row is barely faster than float32; oneDNN's linear
with the weight reordered once into its blocked layout ran 1.6x float32 in the same measurement.
Same products, same float32 accumulation: its results equal the plain bf16 matmul's.

The rest of the model (embedding, norms, decays, state, the small RWKV-7 LoRA matrices) stays as it
was, float32 when the model is float32.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F


def _fbgemm_ok() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


_FULL_RANGE = None


def _full_range_ok() -> bool:
    """Whether 8-bit activations are safe here. fbgemm's AVX2 kernel adds pairs of u8 x s8
    products in saturating int16 (255 * 127 * 2 > 32767), so it is used with 7-bit activations
    ("reduce_range"); VNNI CPUs (AVX512-VNNI, AVX-VNNI) accumulate in int32 and may use all 8
    bits, which halves the rounding of activations. Told by one probe that would saturate."""
    global _FULL_RANGE
    if _FULL_RANGE is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = torch._make_per_channel_quantized_tensor(torch.full((1, 64), 127, dtype=torch.int8),
                                                         torch.ones(1, dtype=torch.double), torch.zeros(1, dtype=torch.long), 0)
            packed = torch.ops.quantized.linear_prepack(w, None)
            y = torch.ops.quantized.linear_dynamic(torch.ones(1, 64), packed, False)
        _FULL_RANGE = bool(abs(float(y[0, 0]) - 64 * 127) < 1)
    return _FULL_RANGE


class Int8Linear(nn.Module):
    """y = x W^T (+ b) with W int8 per output channel. Input and output in float32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        W = linear.weight.detach().float()
        scale = (W.abs().amax(1) / 127).clamp(min=1e-12)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("qweight", torch.round(W / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self._packed = None  # fbgemm's prepacked weight (CPU only), built on first use

    @property
    def weight(self) -> torch.Tensor:
        """Families cast their input to `layer.weight.dtype` and ask its device: both are the
        compute side's, float32 on the weights' device. (The int8 matrix is `qweight`.)"""
        return self.scale

    def dequantized(self) -> torch.Tensor:
        return self.qweight.float() * self.scale[:, None]

    def _apply(self, fn, recurse=True):
        self._packed = None  # a device move (or any cast) invalidates the packed copy
        return super()._apply(fn, recurse)

    def _pack(self):
        with warnings.catch_warnings():  # torch marks quantized tensors deprecated; the kernels are current
            warnings.simplefilter("ignore")
            zeros = torch.zeros(self.out_features, dtype=torch.long)
            q = torch._make_per_channel_quantized_tensor(self.qweight.cpu(), self.scale.double().cpu(), zeros, 0)
            return torch.ops.quantized.linear_prepack(q, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.device.type == "cpu" and _fbgemm_ok():
            if self._packed is None:
                self._packed = self._pack()
            shape = x.shape
            y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).contiguous(), self._packed,
                                                    not _full_range_ok())
            return y.view(*shape[:-1], self.out_features)
        return F.linear(x, self.dequantized().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def quantize_int8(net: nn.Module) -> nn.Module:
    """Replace every nn.Linear of a float32 model by an Int8Linear, in place; returns the model."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
    return net


class PackedBF16Linear(nn.Module):
    """A bf16 nn.Linear with its weight reordered once for oneDNN (CPU only). The reordered
    weight replaces the original (no second copy); the module can no longer change device."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w.to(torch.bfloat16), 1)
        self.bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self._dtype_carrier = torch.empty(0, dtype=torch.bfloat16)

    @property
    def weight(self) -> torch.Tensor:
        """dtype and device for callers that cast their input to the weight's (bf16, CPU)."""
        return self._dtype_carrier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 oneDNN-packed"


_BF16_PACKING: bool | None = None


def bf16_packing_available() -> bool:
    """Whether oneDNN can reorder bf16 weights on this CPU (it needs AVX-512 BW/VL/DQ or
    AVX-NE-CONVERT: an AVX2-only CPU cannot). Told once by a probe."""
    global _BF16_PACKING
    if _BF16_PACKING is None:
        try:
            ok = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._reorder_linear_weight is not None
            if ok:
                torch.ops.mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 1)
            _BF16_PACKING = bool(ok)
        except (AttributeError, RuntimeError):
            _BF16_PACKING = False
    return _BF16_PACKING


def pack_bf16(net: nn.Module) -> nn.Module:
    """Replace every bf16 nn.Linear on the CPU by a PackedBF16Linear, in place; returns the model
    (unchanged where oneDNN is not available)."""
    if not bf16_packing_available():
        return net
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.weight.dtype == torch.bfloat16 and child.weight.device.type == "cpu":
                setattr(parent, name, PackedBF16Linear(child))
    return net
