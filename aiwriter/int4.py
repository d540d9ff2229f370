"""The int4 CPU mode (`load_model(path, dtype="int4")`): 4-bit matrices, the fastest way to write
on a CPU.

Decoding one token reads every weight once, so its speed is the memory bandwidth divided by the
bytes of the weights; 4-bit blocks are an eighth of float32's. Each matrix B [K, N] (what a MatMul
multiplies by: a Linear's weight transposed, or an RWKV-7 LoRA matrix) is cut along K into blocks
of BLOCK values per output column; each block keeps one float32 scale, the value of largest
magnitude maps to -8 and the rest round to the nearest of -8..7 (symmetric, no zero point).

One token per stream (decoding) runs as the model's exported ONNX step with every MatMul replaced
by onnxruntime's MatMulNBits (int8 products of the quantized activations and the 4-bit weights,
accuracy_level 4), whose per-node overhead is far below PyTorch's per-op overhead. Reading a prompt
(several tokens, or all logits) runs the PyTorch module with the same 4-bit weights, dequantized and
held in bf16 for oneDNN's GEMMs, so both paths use the same weights up to bf16's rounding; they differ
by that and the activation rounding inside MatMulNBits (the tests bound it).

The exported graph is cached (by the model file's path, size and mtime) in aiwriter.paths.cache_dir()
($AIWRITER_CACHE, else $XDG_CACHE_HOME/aiwriter or ~/.cache/aiwriter): the first load of a model
exports it (seconds to a minute), later loads read the cache.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from aiwriter import paths
from aiwriter.errors import AIWriterError

# Held-out loss of the default model vs float32: +0.0135 nats/char with blocks of 128, +0.0096 with
# 64 (the budget is 0.02); 128 decodes RWKV-7 0.1B 1.15x faster.
BLOCK = 128
SCHEME = "int4-sym-b128-v2"  # changes whenever the quantization or the graph does (cache key)
META_FIELD = "int4_params"  # metadata aiwriter/onnx_export.py writes: the (name, transposed) quantized


def quantize_blocks(B: torch.Tensor, block: int = BLOCK):
    """B [K, N] float -> (packed uint8 [N, K/block, block/2], scales float32 [N * K/block],
    dequantized float32 [K, N]). K is zero-padded up to a multiple of the block. Packing as
    MatMulNBits reads it: element 2j in the low nibble, 2j+1 in the high, stored as q + 8."""
    K, N = B.shape
    Kp = -(-K // block) * block
    W = torch.zeros(N, Kp, dtype=torch.float32)
    W[:, :K] = B.detach().float().T
    blocks = W.view(N, Kp // block, block)
    extreme = blocks.gather(-1, blocks.abs().argmax(-1, keepdim=True))  # signed value of max |x|
    scale = extreme / -8.0
    q = torch.round(blocks / torch.where(scale == 0, torch.ones_like(scale), scale)).clamp(-8, 7)
    u = (q + 8).to(torch.uint8)
    packed = u[..., 0::2] | (u[..., 1::2] << 4)
    deq = (q * scale).view(N, Kp)[:, :K].T.contiguous()
    return packed.contiguous(), scale.reshape(-1).contiguous(), deq


def quantize_graph(model, tensors: dict[str, torch.Tensor], block: int = BLOCK,
                   accuracy_level: int = 4) -> list[tuple[str, bool]]:
    """Complete, in place, an onnx ModelProto exported without its parameters (they are graph
    inputs named as in `tensors`): every MatMul by a parameter P (a LoRA matrix) or by
    Transpose(P) (a Linear's weight) becomes a MatMulNBits holding P in 4-bit blocks; every other
    parameter it uses becomes a float32 initializer. Returns the (name, transposed) quantized.
    One matrix is copied at a time: no second float32 copy of the model is ever made."""
    from onnx import helper, numpy_helper

    graph = model.graph
    made = {out: node for node in graph.node for out in node.output}
    nodes, inits, done = [], [], []
    for node in graph.node:
        target = None
        if node.op_type == "MatMul":
            b, src = node.input[1], made.get(node.input[1])
            if b in tensors and tensors[b].dim() == 2:
                target = (b, False)
            elif (src is not None and src.op_type == "Transpose" and src.input[0] in tensors
                  and tensors[src.input[0]].dim() == 2):
                target = (src.input[0], True)
        if target is None:
            nodes.append(node)
            continue
        name, transposed = target
        B = tensors[name].detach().float()
        packed, scales, _ = quantize_blocks(B.T if transposed else B, block)
        K, N = (B.shape[1], B.shape[0]) if transposed else B.shape
        q = f"{node.name or node.output[0]}_int4"
        inits += [numpy_helper.from_array(packed.numpy(), q + "_B"), numpy_helper.from_array(scales.numpy(), q + "_scales")]
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], q + "_B", q + "_scales"], list(node.output),
                                      name=q, domain="com.microsoft", K=int(K), N=int(N), bits=4, block_size=block,
                                      accuracy_level=accuracy_level))
        done.append((name, transposed))
    while True:  # drop what no longer feeds anything (the Transposes of quantized weights)
        used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    clash = sorted({n for n, _ in done} & used)
    if clash:  # a quantized matrix also used as itself: the two engines would differ
        raise AIWriterError("int4 导出失败：这些矩阵还有别的用途：" + ", ".join(clash),
                            "int4 export failed: these matrices have other uses too: " + ", ".join(clash))
    for name in sorted(used & set(tensors)):
        inits.append(numpy_helper.from_array(tensors[name].detach().float().cpu().numpy(), name))
    kept_inputs = [i for i in graph.input if i.name not in tensors]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def apply_to_torch(net: torch.nn.Module, tensors: list[tuple[str, bool]], block: int = BLOCK) -> None:
    """Give the module the same 4-bit weights as the graph (dequantized, float32), in place."""
    named = dict(net.named_parameters()) | dict(net.named_buffers())
    with torch.no_grad():
        for name, transposed in tensors:
            p = named[name]
            B = p.T if transposed else p
            deq = quantize_blocks(B, block)[2]
            p.copy_(deq.T if transposed else deq)


def _cache_key(path: Path) -> str:
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SCHEME}|{torch.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Int4Net:
    """The family contract over two engines with the same 4-bit weights: onnxruntime for one
    token per stream, the PyTorch module for prompts and all-logits calls."""

    def __init__(self, torch_net: torch.nn.Module, onnx_net):
        self.torch_net, self.onnx_net = torch_net, onnx_net
        self.family, self.vocab_size, self.ctx_len = torch_net.family, torch_net.vocab_size, torch_net.ctx_len

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        return self.torch_net.new_state(batch)

    def __call__(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        if ids.shape[1] == 1 and not all_logits:
            return self.onnx_net(ids, state)
        return self.torch_net(ids, state, all_logits)


class _BF16Prompts(torch.nn.Module):
    """A Linear for the prompts path: its (4-bit) weight in bf16, reordered once for oneDNN, float32
    in and out. Reading a prompt is GEMM-bound: bf16 runs it 1.4-1.9x float32 here, in half the
    memory; the 4-bit values keep 8 significant bits (bf16 mode's own cost: -0.00006 nats/char)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        from aiwriter.models.quant import PackedBF16Linear

        self.inner = PackedBF16Linear(linear.to(torch.bfloat16))
        self._dtype_carrier = torch.empty(0)

    @property
    def weight(self) -> torch.Tensor:
        """Callers cast their input to this dtype: float32 (the inner layer casts to bf16)."""
        return self._dtype_carrier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).float()


def _bf16_prompts(net: torch.nn.Module) -> None:
    from aiwriter.models.fast_decode import enable_fast_decode
    from aiwriter.models.quant import bf16_packing_available

    if not bf16_packing_available():
        return
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, _BF16Prompts(child))
    if getattr(net, "fast_decode", False):
        enable_fast_decode(net)  # its one-token step holds the old layers


def _open(net: torch.nn.Module, path: Path) -> Int4Net:
    from aiwriter.onnx_backend import OnnxNet

    onnx_net = OnnxNet(path)  # the session holds the graph: the file may go afterwards
    apply_to_torch(net, [tuple(t) for t in json.loads(onnx_net.meta[META_FIELD])])
    _bf16_prompts(net)
    return Int4Net(net, onnx_net)


def _announce(target: Path) -> None:
    """The first int4 load of a model exports it (a 0.1B model: ~8 s): say so, once."""
    print(f"int4：首次载入这个模型，正在导出并量化（只需一次，存于 {target.parent}）/ int4: first load of this model, "
          f"exporting and quantizing (once; cached in {target.parent})", file=sys.stderr, flush=True)


def to_int4(net: torch.nn.Module, path: Path | None) -> Int4Net:
    """The int4 mode of a float32 CPU module loaded from `path` (None: not cached)."""
    from aiwriter.onnx_export import SUPPORTED, export_onnx

    if net.family not in SUPPORTED:
        raise AIWriterError(f"int4 只支持 RWKV-4/5/6/7 模型，这是 {net.family}",
                            f"int4 supports RWKV-4/5/6/7 models only; this is {net.family}")
    if path is not None:
        target = paths.cache_dir() / f"{Path(path).stem[:40]}-{_cache_key(Path(path))}.int4.onnx"
        if target.is_file():
            try:
                return _open(net, target)
            except Exception:  # a damaged cache entry: build it again
                pass
        try:
            _announce(target)
            export_onnx(net, target, int4=True)
            return _open(net, target)
        except OSError:  # the cache folder is not writable: build in a temporary folder
            pass
    with tempfile.TemporaryDirectory(prefix="aiwriter-int4-") as tmp:
        target = Path(tmp) / "step.int4.onnx"
        export_onnx(net, target, int4=True)
        return _open(net, target)
