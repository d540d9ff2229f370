"""The int4 CPU mode (`load_model(path, dtype="int4")`): 4-bit matrices, the fastest way to write
on a CPU, and the one in which models of several billion parameters fit in a few GB.

Decoding one token reads every weight once, so its speed is the memory bandwidth divided by the
bytes of the weights; 4-bit blocks (speed/int4_blocks.py) are an eighth of float32's. Every
nn.Linear of the model becomes an Int4Linear holding its weight packed as onnxruntime's
MatMulNBits reads it (the embedding, norms, decays, RWKV-7's small LoRA matrices and the state
stay float32).

Two engines, one set of 4-bit values:
- one token per stream (decoding) runs the model's exported ONNX step, in which every Int4Linear
  is a MatMulNBits node (int8 products of the quantized activations and the 4-bit weights,
  accuracy_level 4): onnxruntime's per-node overhead is far below PyTorch's per-op overhead and
  its 4-bit kernels stream the weights at the memory's speed (benchmarks/int4_gemv.py, AVX2 EPYC,
  one row: MatMulNBits 21-24 GB/s where torch.sum read 20-34; torch's own int4 CPU kernel,
  _weight_int4pack_mm_for_cpu, 0.2-0.8 GB/s with float32 activations, 7-9 with bf16);
  onnxruntime's threads: torch's count, or AIWRITER_ORT_THREADS, spinning while they wait as
  long as no other program competes for the cores (speed/spin.py);
- several tokens (reading an opening) or all logits run the PyTorch module: each Int4Linear
  unpacks its blocks (a slice of rows at a time) and multiplies in float32 (bf16 where oneDNN has
  native bf16), so prompts get PyTorch's parallel GEMMs.

The step graph is cached in aiwriter.paths.cache_dir() ($AIWRITER_CACHE, else
$XDG_CACHE_HOME/aiwriter or ~/.cache/aiwriter), keyed by the model file's path, size and mtime:
NAME.int4.onnx (the graph, a few MB) and NAME.int4.onnx.data (every tensor, raw, 64 KiB-aligned),
plus, for this CPU and onnxruntime version, NAME.int4.<key>.ort.onnx(.data): the graph as
onnxruntime optimized it with its prepacked 4-bit weights. The first load quantizes the model
tensor by tensor while it streams it from the file and writes them all. Later loads read only the
model file's header (and any tensor the step does not use): the PyTorch side's tensors are views
of a mapping of NAME.int4.onnx.data (copy-on-write, never written) and onnxruntime maps its
prepacked weights, so neither engine holds a private copy of the matrices or the embedding: the decoding engine's
packed weights are page-cache pages, the PyTorch side touches the embedding's looked-up rows and,
while it reads a prompt, one layer's matrices at a time (given back after each layer).
A cache file must not be overwritten in place while a model using it is loaded (a mapped file
that shrinks faults the process): the mode itself only ever replaces files (write + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter import paths
from aiwriter.errors import AIWriterError
from aiwriter.speed.int4_blocks import BLOCK, extreme_values

SCHEME = "int4-sym-b128-v4"  # changes whenever the quantization or the graph does (cache key)
ALIGN = 64 * 1024  # offsets of the tensors in the .data file
ROWS = 4096  # output rows quantized / unpacked at a time (bounds the temporaries of a big head)


def _quantize_rows(W: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W [n, K] float -> (packed uint8 [n, nb, block/2], scales float32 [n, nb]), as
    int4_blocks.quantize_blocks(W.T) packs them."""
    n, K = W.shape
    Kp = -(-K // block) * block
    Wp = W.float() if Kp == K else F.pad(W.float(), (0, Kp - K))
    blocks = Wp.view(n, Kp // block, block)
    scale = extreme_values(blocks) / -8.0
    q = blocks.div(torch.where(scale == 0, torch.ones_like(scale), scale)).round_().clamp_(-8, 7).add_(8)
    u = q.to(torch.uint8)
    return (u[..., 0::2] | (u[..., 1::2] << 4)).contiguous(), scale.view(n, -1).contiguous()


class _MatMulNBits(torch.autograd.Function):
    """Traced as onnxruntime's com.microsoft::MatMulNBits; while tracing it returns zeros of the
    right shape (the values of a trace do not matter, and unpacking a big model would take seconds)."""

    @staticmethod
    def forward(ctx, x, packed, scales, K: int, N: int, block: int):
        return x.new_zeros(*x.shape[:-1], N)

    @staticmethod
    def symbolic(g, x, packed, scales, K, N, block):
        y = g.op("com.microsoft::MatMulNBits", x, packed, scales, K_i=K, N_i=N, bits_i=4, block_size_i=block,
                 accuracy_level_i=4)
        sizes = x.type().varyingSizes() if hasattr(x.type(), "varyingSizes") else None
        if sizes is not None:  # tell the exporter the output's shape (else it warns once per node)
            y.setType(x.type().with_sizes(list(sizes[:-1]) + [N]))
        return y


def _prompt_dtype() -> torch.dtype:
    from aiwriter.speed.quant import bf16_packing_available

    return torch.bfloat16 if bf16_packing_available() else torch.float32  # native bf16 GEMMs or not


class Int4Linear(nn.Module):
    """y = x W^T (+ b) with W [N, K] in 4-bit blocks of `block` along K. Input and output float32."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, block: int = BLOCK,
                 device=None):
        super().__init__()
        nb = -(-in_features // block)
        self.in_features, self.out_features, self.block = in_features, out_features, block
        self.register_buffer("packed", torch.empty(out_features, nb, block // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.empty(out_features * nb, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.empty(out_features, device=device) if bias else None)
        self._carrier = torch.empty(0)
        self._pages = None  # (CacheData, its byte ranges) when the blocks are views of a cache file

    @classmethod
    def from_weight(cls, W: torch.Tensor, bias: torch.Tensor | None = None, block: int = BLOCK) -> "Int4Linear":
        N, K = W.shape
        layer = cls(K, N, bias is not None, block)
        scales = layer.scales.view(N, -1)
        with torch.no_grad():
            for r in range(0, N, ROWS):
                p, s = _quantize_rows(W[r:r + ROWS], block)
                layer.packed[r:r + ROWS] = p
                scales[r:r + ROWS] = s
            if bias is not None:
                layer.bias.copy_(bias.float())
        _trim()  # glibc keeps the freed float temporaries of quantizing (1.5B first load: 3.2 -> 2.0 GB peak)
        return layer

    @property
    def weight(self) -> torch.Tensor:
        """dtype and device for callers that cast their input to the weight's: float32, CPU."""
        return self._carrier

    def dequantized(self, dtype=torch.float32, rows: slice = slice(None)) -> torch.Tensor:
        """W [N, K] (or the given rows) as `dtype`: the exact 4-bit values times their scales."""
        p = self.packed[rows]
        n, nb = p.shape[0], p.shape[1]
        q = torch.stack([p & 15, p >> 4], -1).view(n, nb, self.block).to(torch.float32).sub_(8)
        W = q.mul_(self.scales.view(-1, nb)[rows].unsqueeze(-1)).view(n, -1)[:, :self.in_features]
        return W.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            y = _MatMulNBits.apply(x.float(), self.packed, self.scales, self.in_features, self.out_features, self.block)
            return y + self.bias if self.bias is not None else y
        dtype = _prompt_dtype()
        xd = x.to(dtype)
        N = self.out_features
        if N <= ROWS:
            y = F.linear(xd, self.dequantized(dtype))
        else:  # a big head: a slice of rows at a time, so no float copy of the whole matrix exists
            y = torch.cat([F.linear(xd, self.dequantized(dtype, slice(r, r + ROWS))) for r in range(0, N, ROWS)], -1)
        y = y.float()
        if self._pages is not None:  # read once per call: give the file's pages back until the next
            self._pages[0].release(self._pages[1])
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int4 blocks of {self.block}"


def quantize_int4(net: nn.Module) -> nn.Module:
    """Replace every nn.Linear of a CPU module by an Int4Linear, in place; returns the module."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int4Linear.from_weight(child.weight.detach(), child.bias))
    return net


def cache_entry(path: Path) -> Path:
    """The cache file of a model file (its .data lies beside it)."""
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SCHEME}|{torch.__version__}"
    return paths.cache_dir() / f"{path.stem[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:24]}.int4.onnx"


class Int4Net:
    """The family contract over two engines with the same 4-bit weights: onnxruntime for one
    token per stream, the PyTorch module for prompts and all-logits calls."""

    def __init__(self, torch_net: nn.Module, onnx_net):
        self.torch_net, self.onnx_net = torch_net, onnx_net
        self.data = getattr(torch_net, "_int4_data", None)  # the mapped cache file, if the tensors are views of it
        self.family, self.vocab_size, self.ctx_len = torch_net.family, torch_net.vocab_size, torch_net.ctx_len

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        return self.torch_net.new_state(batch)

    # Short runs of ids go through the decoding step one id at a time: the PyTorch side unpacks
    # every matrix on each call, a cost that only long openings repay (1.5B, busy AVX2 EPYC: 11-25 s
    # for 4-64 ids that way against ~0.1 s per id stepwise; 1,024 ids: ~50 s against ~100 s).
    STEPWISE = 32

    def __call__(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        if ids.shape[1] <= self.STEPWISE and not all_logits:
            return self.onnx_net(ids, state)
        try:
            return self.torch_net(ids, state, all_logits)
        finally:
            if self.data is not None:
                self.data.release()


# ----------------------------------------------------------------------------------------------
# The step graph: traced without its tensors, which are then written one at a time, raw, into the
# .data file (never through protobuf: no 2 GB limit, no second copy of the model in memory).

def write_step(net: nn.Module, out: Path, bar=None) -> Path:
    """Write the one-token step of a module whose Linears are Int4Linears to `out` (+ `out`.data),
    atomically. Returns `out`. bar: a progress bar of 100 steps, advanced to 20 by tracing and
    to 60 by writing (the rest is onnxruntime's)."""
    import onnx
    from onnx import TensorProto

    from aiwriter.speed.onnx_export import META_PREFIX, trace_step

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model, step, names = trace_step(net, export_params=False, fast=os.environ.get("AIWRITER_INT4_SHAPES") != "1")
    tensors = {k: v for k, v in (dict(step.named_parameters()) | dict(step.named_buffers())).items()}
    wanted = {i.name for i in model.graph.input} & set(tensors)
    if bar is not None:
        bar.set_postfix_str("写入 / writing")
        bar.update(20)
    total, done, shown = max(1, sum(tensors[n].numel() * tensors[n].element_size() for n in wanted)), 0, 0
    data_name = out.name + ".data"
    staged_data = out.with_name(data_name + ".partial")
    inits, index = [], {}
    with open(staged_data, "wb") as f:
        for name in sorted(wanted):
            t = tensors[name].detach()
            if t.dtype not in (torch.uint8, torch.float32):
                t = t.float()
            arr = t.contiguous().cpu().numpy()
            pad = -f.tell() % ALIGN
            f.write(b"\0" * pad)
            offset = f.tell()
            f.write(memoryview(arr).cast("B"))
            proto = TensorProto(name=name, dims=list(arr.shape),
                                data_type=TensorProto.UINT8 if arr.dtype.kind == "u" else TensorProto.FLOAT)
            proto.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(arr.nbytes))):
                e = proto.external_data.add()
                e.key, e.value = k, v
            inits.append(proto)
            done += arr.nbytes
            if bar is not None and 40 * done // total > shown:
                bar.update(40 * done // total - shown)
                shown = 40 * done // total
            index[name.removeprefix("net.")] = [offset, arr.nbytes, arr.dtype.str, list(arr.shape)]
        f.flush()
        os.fsync(f.fileno())
    kept = [i for i in model.graph.input if i.name not in wanted]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    model.graph.initializer.extend(inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    entry = model.metadata_props.add()
    entry.key, entry.value = META_PREFIX + "int4_index", json.dumps(index)
    staged = out.with_name(out.name + ".partial")
    onnx.save(model, str(staged))
    os.replace(staged_data, out.with_name(data_name))
    os.replace(staged, out)
    return out


def read_index(onnx_path: Path) -> dict:
    """{tensor name (module's): [offset, nbytes, numpy dtype str, shape]} of a cached step."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    from aiwriter.speed.onnx_export import META_PREFIX

    meta = {p.key: p.value for p in model.metadata_props}
    return json.loads(meta[META_PREFIX + "int4_index"])


class CacheData:
    """A cache entry's .data file mapped into memory (copy-on-write, never written), so the
    PyTorch side's tensors are views of the file: their pages belong to the page cache, only
    those a call touches are resident (the embedding: the rows looked up; the 4-bit matrices:
    while a prompt is read), and `release()` hands them back after a prompt. Raises ValueError
    if the file does not hold every tensor its index names."""

    RELEASE_ABOVE = 256 * 2**20  # bytes of mapping above which release() gives pages back

    def __init__(self, onnx_path: Path):
        import mmap

        try:
            self.index = read_index(onnx_path)
        except Exception as e:  # onnx's decode errors, a missing key, bad JSON
            raise ValueError(f"damaged int4 cache entry {onnx_path}: {type(e).__name__}: {e}")
        path = Path(str(onnx_path) + ".data")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            for name, (offset, nbytes, _, _) in self.index.items():
                if offset < 0 or offset + nbytes > size:
                    raise ValueError(f"damaged int4 cache entry {onnx_path}: {name} lies past the end of its .data")
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        self.size = size

    def matches(self, name: str, like: torch.Tensor) -> bool:
        entry = self.index.get(name)
        if entry is None:
            return False
        _, nbytes, dtype, shape = entry
        want = {"<f4": torch.float32, "|u1": torch.uint8}.get(dtype)
        return want == like.dtype and list(like.shape) == list(shape) and like.numel() * like.element_size() == nbytes

    def tensor(self, name: str) -> torch.Tensor:
        offset, nbytes, dtype, shape = self.index[name]
        tdtype = {"<f4": torch.float32, "|u1": torch.uint8}[dtype]
        if nbytes == 0:
            return torch.empty(shape, dtype=tdtype)
        return torch.frombuffer(self.map, dtype=tdtype, count=nbytes // torch.empty(0, dtype=tdtype).element_size(),
                                offset=offset).view(shape)

    def attach(self, net: nn.Module, replace: bool = False) -> int:
        """Make the module's tensors views of the file: those still on the meta device (or all of
        them with `replace`, after the file was written from them) that the index holds with the
        same dtype and shape. Every Int4Linear must be covered. Returns the bytes mapped."""
        mapped = 0
        for mname, module in net.named_modules():
            prefix = mname + "." if mname else ""
            for kind in ("_parameters", "_buffers"):
                slots = getattr(module, kind)
                for tname, t in list(slots.items()):
                    if t is None or not (replace or t.is_meta) or not self.matches(prefix + tname, t):
                        continue
                    view = self.tensor(prefix + tname)
                    slots[tname] = nn.Parameter(view, requires_grad=False) if kind == "_parameters" else view
                    mapped += view.numel() * view.element_size()
            if isinstance(module, Int4Linear):
                if module.packed.is_meta or module.scales.is_meta:
                    raise ValueError(f"int4 cache entry lacks {mname}")
                ranges = [self.index[prefix + part][:2] for part in ("packed", "scales") if prefix + part in self.index
                          and getattr(module, part).data_ptr() == self._address(prefix + part)]
                module._pages = (self, ranges) if len(ranges) == 2 else None
        self.mapped = mapped
        net._int4_data = self  # kept alive with the module (a plain attribute)
        return mapped

    def _address(self, name: str) -> int:
        import ctypes

        base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        return base + self.index[name][0]

    def release(self, ranges: list | None = None) -> None:
        """Give back the pages the last call touched (all, or the given (offset, nbytes) ranges; they
        stay in the page cache and come back on the next touch), so that a prompt does not leave a
        resident copy of the matrices on the PyTorch side. Small models keep theirs."""
        import mmap

        if self.map is None or self.size < self.RELEASE_ABOVE or not hasattr(mmap, "MADV_DONTNEED"):
            return
        try:
            if ranges is None:  # after a prompt: also the heap its activations fragmented (1.2 GB at 1.5B, 1,024 ids)
                _trim()
                self.map.madvise(mmap.MADV_DONTNEED)
            else:
                for offset, nbytes in ranges:  # offsets are ALIGN-aligned, so page-aligned
                    self.map.madvise(mmap.MADV_DONTNEED, offset, min(nbytes, self.size - offset))
        except (OSError, ValueError):
            pass


def fill_from_cache(net: nn.Module, onnx_path: Path) -> None:
    """Give the Int4Linears of a module (built on the meta device), and every other tensor still
    on the meta device, views of a cached step's .data file. Raises ValueError if it does not
    hold them all."""
    CacheData(onnx_path).attach(net)


def _announce(target: Path) -> None:
    print(f"int4：首次载入这个模型，正在量化并导出（只需一次，存于 {target.parent}）/ int4: first load of this model, "
          f"quantizing and exporting (once; cached in {target.parent})", file=sys.stderr, flush=True)


def cpu_key() -> str:
    """What onnxruntime's prepacked weights depend on: its version and this CPU (model, flags)."""
    import platform

    try:
        import onnxruntime
        version = onnxruntime.__version__
    except ImportError:
        version = "none"
    cpu = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f.read(65536).splitlines() if line.startswith(("model name", "flags"))]
        cpu += "|".join(lines[:2])
    except OSError:
        pass
    return hashlib.sha256(f"{version}|{cpu}".encode()).hexdigest()[:12]


def optimized_entry(onnx_path: Path) -> Path:
    """Where the graph as onnxruntime optimized it, with its prepacked weights, is kept for this
    machine: NAME.int4.<key>.ort.onnx (+ .data)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name.removesuffix(".onnx") + f".{cpu_key()}.ort.onnx")


def _optimized_session(onnx_path: Path):
    """The decoding session of a cache entry: from its optimized, prepacked form when present
    (mapped from disk: a later load neither optimizes nor packs, and the packed weights are
    page-cache pages), written first when not."""
    from aiwriter.speed.onnx_runtime import OnnxNet

    opt = optimized_entry(onnx_path)
    opt_data = Path(str(opt) + ".data")
    if opt.is_file() and opt_data.is_file():
        try:
            return OnnxNet(opt, optimized=True)
        except AIWriterError:  # damaged: written again below
            pass
    staged = opt.with_name(opt.name + ".partial")
    try:
        for f in (opt, opt_data, staged):
            f.unlink(missing_ok=True)  # never overwrite in place a file another process may have mapped
        # the graph names its data file: onnxruntime writes the data under its final name and the
        # graph under a staged one, renamed last (a graph present means its data is complete)
        session = OnnxNet(onnx_path, save_optimized=staged, save_data_name=opt_data.name)
        os.replace(staged, opt)
        del session  # its packed weights are anonymous memory; the mapped ones are shared
        _trim()
        return OnnxNet(opt, optimized=True)
    except (OSError, AIWriterError):
        for f in (staged, opt_data):
            try:
                f.unlink(missing_ok=True)
            except OSError:
                pass
        return OnnxNet(onnx_path)


def open_int4(net: nn.Module, onnx_path: Path, optimize: bool = True) -> Int4Net:
    from aiwriter.speed.onnx_runtime import OnnxNet, ort_threads
    from aiwriter.speed.spin import spin_setting

    ort_threads(), spin_setting()  # a bad setting is refused here, not taken for a damaged cache entry below
    onnx_net = _optimized_session(onnx_path) if optimize else OnnxNet(onnx_path)
    return Int4Net(net, onnx_net)


def _trim() -> None:
    """Hand freed heap memory back to the system (glibc keeps what the quantized copies and
    onnxruntime's packing freed, and the process would look that much bigger)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def to_int4(net: nn.Module, path: Path | None, rebuild: bool = False, progress=None) -> Int4Net:
    """The int4 mode of a CPU module whose Linears are already Int4Linears (or float: they are
    quantized here), loaded from `path` (None: not cached); its cache entry is written if missing
    (or if `rebuild`). progress: a callable(total, desc) giving a progress bar (update,
    set_postfix_str, close) shown while the entry is prepared."""
    from aiwriter.speed.onnx_export import SUPPORTED
    from aiwriter.speed.onnx_runtime import ort_threads
    from aiwriter.speed.spin import spin_setting

    ort_threads(), spin_setting()  # a bad setting is refused before the (long) first preparation
    if net.family not in SUPPORTED:
        raise AIWriterError(f"int4 只支持 RWKV-4/5/6/7 模型，这是 {net.family}",
                            f"int4 supports RWKV-4/5/6/7 models only; this is {net.family}")
    quantize_int4(net)
    if path is not None:
        target = cache_entry(Path(path))
        try:
            if rebuild or not target.is_file() or not Path(str(target) + ".data").is_file():
                _announce(target)
                bar = progress(100, "准备 int4 / preparing int4") if progress is not None else None
                try:
                    if bar is not None:
                        bar.set_postfix_str("导出计算图 / tracing the step")
                    write_step(net, target, bar)
                    # the PyTorch side's tensors become views of the file just written: the copies
                    # quantized in memory are dropped, so the first load holds what a later one does
                    CacheData(target).attach(net, replace=True)
                    _trim()
                    if bar is not None:
                        bar.set_postfix_str("onnxruntime 优化与打包 / onnxruntime optimizing and packing")
                    return open_int4(net, target)
                finally:
                    if bar is not None:
                        if bar.n < bar.total:
                            bar.update(bar.total - bar.n)
                        bar.close()
            return open_int4(net, target)
        except (OSError, ValueError, AIWriterError):  # the cache folder is not writable, or a damaged entry
            pass
    with tempfile.TemporaryDirectory(prefix="aiwriter-int4-") as tmp:
        target = write_step(net, Path(tmp) / "step.int4.onnx")
        return open_int4(net, target, optimize=False)


__all__ = ["Int4Linear", "Int4Net", "CacheData", "quantize_int4", "to_int4", "write_step", "fill_from_cache",
           "cache_entry", "optimized_entry", "BLOCK"]
