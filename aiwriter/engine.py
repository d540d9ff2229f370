"""load_model(), Model and State: the one door from files to logits.

Model wraps a family module (aiwriter.models) with its tokenizer, device and dtype. State wraps the
family's state dict (tensors with a leading batch dim) so callers can copy, branch and batch it
without knowing the family.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aiwriter.errors import AIWriterError
from aiwriter.formats import WeightFile, detect_family, open_weights
from aiwriter.models import family_class
from aiwriter.speed.fast_decode import FastDecoder
from aiwriter.speed.quant import Int8Linear, PackedBF16Linear, bf16_packing_available, pack_bf16, quantize_int8
from aiwriter.tokenizer import Tokenizer, load_tokenizer, tokenizer_for_vocab_size

class State:
    """A model's recurrent state for B streams. copy() gives an independent branch.

    `start` names where the text read into it began: "" for the model's own start, else the
    digest of the state file it was started from (caches key states by it)."""

    def __init__(self, data: dict[str, torch.Tensor], start: str = ""):
        self.data = data
        self.start = start

    @property
    def batch(self) -> int:
        return next(iter(self.data.values())).shape[0] if self.data else 1

    def copy(self) -> "State":
        return State({k: v.clone() for k, v in self.data.items()}, self.start)

    def repeat(self, n: int) -> "State":
        """n copies of a single-stream state, batched: the runs of one opening branch from it."""
        return State({k: v.repeat_interleave(n, dim=0) for k, v in self.data.items()}, self.start)

    def select(self, index) -> "State":
        """The streams at `index` (an int keeps the batch dim)."""
        if isinstance(index, int):
            index = [index]
        idx = torch.as_tensor(index, dtype=torch.long)
        return State({k: v.index_select(0, idx.to(v.device)) for k, v in self.data.items()})

    @staticmethod
    def stack(states: list["State"]) -> "State":
        keys = states[0].data.keys()
        return State({k: torch.cat([s.data[k] for s in states], dim=0) for k in keys})

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.data.values())


DTYPE_NAMES = ("fp32", "fp16", "bf16", "int8", "int4")
_ALIASES = {"fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16", "bf16": "bf16",
            "bfloat16": "bf16", "int8": "int8", "int4": "int4",
            torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
BACKENDS = ("torch", "onnx")


def dtype_name(dtype) -> str:
    """The one spelling of a weight format: fp32, fp16, bf16, int8 or int4 (None: fp32)."""
    if dtype is None:
        return "fp32"
    name = _ALIASES.get(dtype)
    if name is None:
        raise AIWriterError(f"未知精度：{dtype}（可用 fp32、fp16、bf16、int8、int4）",
                            f"unknown dtype: {dtype} (use fp32, fp16, bf16, int8, int4)")
    return name


@dataclass
class Model:
    """A loaded model. `net` is the family module (backend "torch"), an Int4Net (dtype "int4") or
    an OnnxNet (backend "onnx"); all follow the family contract of aiwriter.models. `dtype` is the
    weight format actually in use (fp32, fp16, bf16, int8, int4); `compute_dtype` the torch dtype
    activations are handed over in. `decoder` is the lean one-token step kept beside the module
    (speed.fast_decode), used for one-id calls when it belongs to `net`."""

    net: Any
    tokenizer: Tokenizer
    device: torch.device
    dtype: str = "fp32"
    path: Path | None = None
    backend: str = "torch"
    decoder: FastDecoder | None = None

    def __post_init__(self):
        self.dtype = dtype_name(self.dtype)

    @property
    def family(self) -> str:
        return self.net.family

    @property
    def vocab_size(self) -> int:
        return self.net.vocab_size

    @property
    def ctx_len(self) -> int | None:
        return self.net.ctx_len

    def new_state(self, batch: int = 1) -> State:
        return State(self.net.new_state(batch))

    def state_from_file(self, path) -> State:
        """The start state of a state file (RWKV-Runner / ChatRWKV `blocks.N.att.time_state`, .pth or
        .safetensors, or a model file holding such keys), for one stream. A state made for another
        model is refused, naming both shapes."""
        from aiwriter.state_files import read_time_state

        return self.state_from_time_state(read_time_state(path), Path(path).name)

    def state_from_time_state(self, ts: torch.Tensor, name: str = "") -> State:
        from aiwriter.state_files import check_fits, state_dict_from_time_state, time_state_digest

        net = getattr(self.net, "torch_net", self.net)
        check_fits(net, ts, name)
        return State(state_dict_from_time_state(net, ts), start=time_state_digest(ts))

    def _ids_tensor(self, ids) -> torch.Tensor:
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
            raise AIWriterError(
                f"输入编号超出词表范围 [0, {self.vocab_size})", f"token id out of range [0, {self.vocab_size})"
            )
        return t

    def _run(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        d = self.decoder
        if all_logits:
            return self.net(ids, state, all_logits=True)
        if d is not None and ids.shape[1] == 1 and d.net is self.net:
            return d(ids, state)
        return self.net(ids, state)

    @torch.inference_mode()
    def forward(self, ids, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Consume ids (a prefill when several) for one stream: returns float32 logits [V] after
        the last id and the new state. The given state is left unchanged."""
        if state is None:
            state = self.new_state(1)
        if len(ids) == 0:
            raise AIWriterError("没有可读入的内容", "nothing to read: empty id list")
        logits, new = self._run(self._ids_tensor(ids), state.data)
        return logits[0].float(), State(new, state.start)

    @torch.inference_mode()
    def forward_batch(self, ids, state: State) -> tuple[torch.Tensor, State]:
        """One forward for B streams: ids [B] or [B, T] -> logits [B, V] and the new state."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if t.dim() == 1:
            t = t.unsqueeze(1)
        logits, new = self._run(t, state.data)
        return logits.float(), State(new)

    @torch.inference_mode()
    def logits(self, ids) -> np.ndarray:
        """Logits at every position from an empty state, float32 [n, V] (windowed families: the
        last ctx_len ids)."""
        ids = list(ids)
        if self.ctx_len is not None and len(ids) > self.ctx_len:
            ids = ids[-self.ctx_len:]
        out, _ = self._run(self._ids_tensor(ids), self.net.new_state(1), all_logits=True)
        return out[0].float().cpu().numpy()


def default_model_path() -> Path:
    return Path(__file__).parent / "default_model" / "model.pth"


def find_vocab(model_path: Path) -> Path | None:
    """The vocab file that belongs to a model file: NAME.json, else vocab.json beside it."""
    model_path = Path(model_path)
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "vocab.json"):
        if candidate.is_file():
            return candidate
    return None


def resolve_tokenizer(model_path: Path, vocab, vocab_size: int) -> Tokenizer:
    """The one vocab resolver: `vocab` if given, else find_vocab(model_path), else a known
    tokenizer by the model's vocab size. A vocab larger than the model's output is refused."""
    vocab_path = Path(vocab) if vocab is not None else find_vocab(model_path)
    tokenizer = (load_tokenizer(vocab_path) if vocab_path is not None
                 else tokenizer_for_vocab_size(vocab_size, near=Path(model_path).parent))
    if tokenizer.vocab_size > vocab_size:
        raise AIWriterError(
            f"词表有 {tokenizer.vocab_size} 项，但模型只有 {vocab_size} 个输出，词表与模型不配套",
            f"vocab has {tokenizer.vocab_size} entries but the model has {vocab_size} outputs: wrong vocab for this model",
        )
    return tokenizer


def _device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AIWriterError(f"未知设备：{device}（可用 cpu 或 cuda）", f"unknown device: {device} (use cpu or cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AIWriterError("这台机器没有可用的 CUDA GPU，请用 --device cpu", "no CUDA GPU available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise AIWriterError(f"不支持的设备：{device}（可用 cpu 或 cuda）", f"unsupported device: {device} (use cpu or cuda)")
    return dev


def load_model(path=None, vocab=None, device: str = "cpu", dtype=None, backend: str = "torch") -> Model:
    """Load any model file the project knows (family told by its keys), with its tokenizer
    (resolve_tokenizer). dtype: fp32 (default), fp16, bf16, int8 (int8 matrices, float32 the
    rest) or int4 (CPU: 4-bit matrices, onnxruntime decoding). backend "onnx": run the model's
    exported one-step graph through onnxruntime (`path` an exported .onnx, or a model file that is
    exported first, int8 when dtype is int8)."""
    path = Path(path) if path is not None else default_model_path()
    if backend not in BACKENDS:
        raise AIWriterError(f"未知后端：{backend}（可用 torch 或 onnx）", f"unknown backend: {backend} (use torch or onnx)")
    name = dtype_name(dtype)
    dev = _device(device)
    if backend == "onnx":
        return _load_onnx(path, vocab, name)
    if name == "int4" and dev.type != "cpu":
        raise AIWriterError("int4 只能在 CPU 上用；GPU 请用 fp16 或 bf16", "int4 is a CPU mode; on a GPU use fp16 or bf16")

    wf = open_weights(path)
    family = detect_family(wf)
    check_memory(wf, name, family)
    if family in STREAMED:
        net, from_cache = _build_streaming(wf, family, name, dev)
    else:  # the small windowed families: built from the whole file at once
        net = family_class(family).from_weights({k: wf[k] for k in wf})
        net = net.to(device=dev, dtype=TORCH_DTYPES.get(name, torch.float32)).eval()
        if name == "int8":
            quantize_int8(net)
        elif name == "bf16" and dev.type == "cpu":
            pack_bf16(net)
        from_cache = None
    del wf
    decoder = None
    if name == "int4":
        from aiwriter.speed.int4 import open_int4, to_int4

        try:
            net = open_int4(net, from_cache) if from_cache is not None else to_int4(net, path, progress=_prep_bar)
        except AIWriterError:
            if from_cache is None:
                raise
            net = to_int4(net, path, rebuild=True, progress=_prep_bar)  # the cached graph is damaged: write it again
    elif FastDecoder.supports(net):
        decoder = FastDecoder(net)  # lean one-token step, bit-equal to the family's forward
    tokenizer = resolve_tokenizer(path, vocab, net.vocab_size)
    return Model(net=net, tokenizer=tokenizer, device=dev, dtype=name, path=path, decoder=decoder)


def _prep_bar(total, desc):
    """The bar shown while the int4 mode prepares a model's cache entry (a bar on a terminal,
    plain lines elsewhere)."""
    from aiwriter.progress import progress

    return progress(total=total, desc=desc, unit="%", leave=False, delay=1.0,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")


TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
STREAMED = ("rwkv4", "rwkv5", "rwkv6", "rwkv7")  # families built tensor by tensor from the file


def _build_streaming(wf: WeightFile, family: str, name: str, dev: torch.device):
    """Build a family module on the meta device from the file's shapes (keys and shapes checked
    by the family's from_weights), then fill it tensor by tensor: each tensor is read, converted
    (and its Linear quantized) and the original dropped, so the peak is the resident model plus
    one tensor in flight. Returns (module, the int4 cache entry it was filled from, or None)."""
    cls = family_class(family)
    net = cls.from_weights({k: wf.meta(k) for k in wf}).eval()
    target = TORCH_DTYPES.get(name, torch.float32)
    first = {k: t.dtype for k, t in net.state_dict(keep_vars=True).items()}  # the dtypes from_weights chose
    net = net.to(dtype=target)  # on the meta device: the final dtype of every tensor (families keep some float32)
    from_cache = None
    cached = None  # int4: the mapped cache file whose tensors the module will view
    if name == "int4":
        from aiwriter.speed.int4 import CacheData, Int4Linear, cache_entry

        entry = cache_entry(wf.path)
        if entry.is_file() and Path(str(entry) + ".data").is_file():
            try:
                cached, from_cache = CacheData(entry), entry
            except (OSError, ValueError):  # a damaged entry: quantize from the file, write it again
                for f in (entry, Path(str(entry) + ".data")):
                    f.unlink(missing_ok=True)
        make_linear = None
    elif name == "int8":
        make_linear = Int8Linear
    elif name == "bf16" and dev.type == "cpu" and bf16_packing_available():
        make_linear = PackedBF16Linear
    else:
        make_linear = None
    from aiwriter.progress import progress as make_progress

    progress = make_progress(total=wf.nbytes(), desc="载入模型 / loading the model", unit="B", unit_scale=True,
                             delay=2.0, leave=False)  # a bar past 2 s on a terminal, plain lines elsewhere

    def skip(tname: str, like: torch.Tensor) -> bool:
        """int4 from the cache: this tensor will be a view of the cache file (not read here)."""
        if cached is None or not cached.matches(tname, like):
            return False
        t = wf.meta(tname)
        progress.update(t.numel() * t.element_size())
        return True

    def raw(tname: str, like: torch.Tensor) -> torch.Tensor:
        """The tensor in the file's dtype (converting is left to the caller)."""
        t = wf[tname]
        progress.update(t.numel() * t.element_size())
        return t.reshape(like.shape)

    def read(tname: str, like: torch.Tensor) -> torch.Tensor:
        """The tensor as the eager path made it: from_weights' dtype, then net.to(target)'s."""
        return raw(tname, like).to(first.get(tname, like.dtype)).to(device=dev, dtype=like.dtype)

    try:
        # names only: a list of the modules themselves would keep every replaced Linear (and its
        # float weight) alive until the end
        for mname in [n for n, _ in net.named_modules()]:
            module = net.get_submodule(mname)
            prefix = mname + "." if mname else ""
            if name == "int4" and isinstance(module, nn.Linear):
                if from_cache is not None:  # the 4-bit values come from the cache, filled below
                    new = Int4Linear(module.in_features, module.out_features, module.bias is not None, device="meta")
                    wf_names = [prefix + "weight"] + ([prefix + "bias"] if module.bias is not None else [])
                    progress.update(sum(wf.meta(n).numel() * wf.meta(n).element_size() for n in wf_names))
                else:
                    bias = read(prefix + "bias", module.bias) if module.bias is not None else None
                    # the file's own dtype: rows become float32 a slice at a time while quantized
                    # (a float32 copy of a 65536-row head would be the load's peak)
                    new = Int4Linear.from_weight(raw(prefix + "weight", module.weight), bias)
                net.set_submodule(mname, new)
                continue
            for pname, p in list(module._parameters.items()):
                if p is not None and not skip(prefix + pname, p):
                    module._parameters[pname] = nn.Parameter(read(prefix + pname, p), requires_grad=p.requires_grad)
            for bname, b in list(module._buffers.items()):
                if b is not None and b.is_meta and not skip(prefix + bname, b):
                    module._buffers[bname] = read(prefix + bname, b)
            if make_linear is not None and isinstance(module, nn.Linear):
                net.set_submodule(mname, make_linear(module))
        if cached is not None:
            try:
                cached.attach(net)
            except ValueError:  # a cache entry that does not fit this module: quantize from the file, write it again
                for f in (from_cache, Path(str(from_cache) + ".data")):
                    f.unlink(missing_ok=True)
                from_cache = None
                for mname, module in list(net.named_modules()):
                    prefix = mname + "." if mname else ""
                    if isinstance(module, Int4Linear) and (module.packed.is_meta or module.scales.is_meta):
                        w = read(prefix + "weight", wf.meta(prefix + "weight").float())
                        b = read(prefix + "bias", module.bias) if module.bias is not None and module.bias.is_meta else module.bias
                        net.set_submodule(mname, Int4Linear.from_weight(w, b))
                        continue
                    for pname, p in list(module._parameters.items()):
                        if p is not None and p.is_meta:
                            module._parameters[pname] = nn.Parameter(read(prefix + pname, p), requires_grad=p.requires_grad)
                    for bname, b in list(module._buffers.items()):
                        if b is not None and b.is_meta:
                            module._buffers[bname] = read(prefix + bname, b)
    finally:
        progress.close()
    ts = getattr(net, "time_state", None)
    if isinstance(ts, torch.Tensor) and ts.is_meta:  # RWKV-7's state-tuned start: a plain attribute
        net.time_state = torch.stack([wf[f"blocks.{i}.att.time_state"].float() for i in range(ts.shape[0])]).to(dev)
    left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if left:
        raise AIWriterError(f"模型文件缺少这些权重：{', '.join(left[:8])}", f"the model file lacks: {', '.join(left[:8])}")
    return net, from_cache


# Bytes per parameter of each format, for matrices and for everything else (norms, decays, the
# embedding): what check_memory counts. int4: onnxruntime's packed 4-bit matrices (~0.66 byte a
# weight, mapped from its cache file) and one layer of the PyTorch side's in flight (its tensors
# are views of the cache file, given back after each layer), the rest float32 once.
_BYTES = {"fp32": (4, 4), "fp16": (2, 2), "bf16": (2, 2), "int8": (1.02, 4), "int4": (0.75, 4)}
OVERHEAD = 1.0 * 2**30  # Python, torch, onnxruntime and one tensor in flight


def memory_needed(wf: WeightFile, family: str) -> dict[str, int]:
    """Bytes a model needs resident in each format (estimated from its tensors' shapes)."""
    matrices = rest = 0
    for k in wf:
        n = wf.meta(k).numel()
        if wf.meta(k).dim() == 2 and k not in ("emb.weight", "tok_emb.weight") and n >= 65536:
            matrices += n
        else:
            rest += n
    return {d: int(matrices * m + rest * r + OVERHEAD) for d, (m, r) in _BYTES.items()}


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (not checked)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(wf: WeightFile, dtype: str, family: str) -> None:
    """Refuse, before allocating anything, a model that does not fit in this machine's free
    memory in the asked format, saying what each format needs and what would fit."""
    free = available_memory()
    if free is None or os.environ.get("AIWRITER_NO_MEMORY_CHECK"):
        return
    need = memory_needed(wf, family)
    if need[dtype] <= free:
        return
    gb = lambda n: f"{n / 2**30:.1f} GB"  # noqa: E731
    table = ", ".join(f"{d} {gb(n)}" for d, n in need.items())
    fits = [d for d in ("bf16", "int8", "int4") if need[d] <= free and (d != "bf16" or family in STREAMED)]
    hint_zh = f"请改用 --dtype {fits[0]}" if fits else "这台机器的内存放不下这个模型，请换小一些的模型"
    hint_en = f"try --dtype {fits[0]}" if fits else "this machine cannot hold this model: use a smaller one"
    raise AIWriterError(
        f"内存不够：这个模型用 {dtype} 需要约 {gb(need[dtype])}，可用内存只有 {gb(free)}（各精度所需：{table}）。{hint_zh}",
        f"not enough memory: this model needs about {gb(need[dtype])} as {dtype}, {gb(free)} is available "
        f"(per dtype: {table}); {hint_en}",
    )


def _load_onnx(path: Path, vocab, dtype: str) -> Model:
    import tempfile

    from aiwriter.speed.onnx_export import export_onnx
    from aiwriter.speed.onnx_runtime import OnnxNet

    if dtype not in ("fp32", "int8"):
        raise AIWriterError("--backend onnx 用导出时的精度（fp32，或 int8 导出）；要 4 位请用 --dtype int4，或 export-onnx --int4",
                            "--backend onnx runs the precision it was exported with (fp32, or an int8 export); for "
                            "4-bit use --dtype int4, or export-onnx --int4")
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise AIWriterError(f"找不到 ONNX 模型 {path}", f"ONNX model not found: {path}")
        if dtype != "fp32":
            raise AIWriterError("ONNX 文件用导出时的精度，不能再加 --dtype", "an ONNX file runs the precision it was exported with; drop --dtype")
        net = OnnxNet(path)
    else:
        source = load_model(path, vocab=vocab)
        with tempfile.TemporaryDirectory(prefix="aiwriter-onnx-") as tmp:
            onnx_path = export_onnx(source.net, Path(tmp) / (path.stem + ".onnx"), int8=dtype == "int8")
            del source
            net = OnnxNet(onnx_path)  # the session holds the graph: the file may go
    return Model(net=net, tokenizer=resolve_tokenizer(path, vocab, net.vocab_size), device=torch.device("cpu"),
                 dtype=dtype, path=path, backend="onnx")


SMALL_MODEL = 30_000_000  # parameters


def configure_threads(model: Model | None, requested: int | None) -> int:
    """Set torch's thread count for a job (onnxruntime sessions made later follow it): `requested`
    if given; else one thread for small models, whose one-token steps are too short for a second
    thread to repay waking it (the embedded model decoded 557 chars/s on one thread against 135
    on two, 2-core Xeon, passive OpenMP waiting); else torch's default. Returns the count."""
    if requested:
        torch.set_num_threads(requested)
    elif model is not None:
        net = getattr(model.net, "torch_net", model.net)
        if hasattr(net, "parameters") and sum(p.numel() for p in net.parameters()) < SMALL_MODEL:
            torch.set_num_threads(1)
    return torch.get_num_threads()


class PrefixCache:
    """Saved (logits, state) after reading some ids, so text that extends earlier text starts
    from the longest saved prefix instead of re-reading everything. Keyed by the state the text
    was read from (State.start) and the ids. Bounded by total bytes; least recently used
    entries go first."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self._entries: dict[tuple[str, tuple[int, ...]], tuple[torch.Tensor, State]] = {}
        self._arrays: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}  # the ids as arrays (longest_shared)

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids, logits: torch.Tensor, state: State) -> None:
        key = (state.start, tuple(ids))
        self._entries.pop(key, None)
        self._entries[key] = (logits.clone(), state.copy())
        self._arrays[key] = np.asarray(key[1], dtype=np.int64)
        while len(self._entries) > 1 and self.nbytes() > self.max_bytes:
            oldest = next(iter(self._entries))
            self._entries.pop(oldest)
            self._arrays.pop(oldest, None)

    def longest_prefix(self, ids, start: str = "") -> tuple[int, torch.Tensor | None, State | None]:
        """(n, logits, state) for the longest saved prefix ids[:n] read from the start state
        `start`; (0, None, None) if none. Returns copies: the caller may advance them freely."""
        ids = tuple(ids)
        best = None
        for key in self._entries:
            s, k = key
            if s == start and len(k) <= len(ids) and (best is None or len(k) > len(best[1])) and ids[: len(k)] == k:
                best = key
        if best is None:
            return 0, None, None
        logits, state = self._entries.pop(best)
        self._entries[best] = (logits, state)  # mark as recently used
        return len(best[1]), logits.clone(), state.copy()

    def longest_shared(self, ids, start: str = "") -> int:
        """How many leading ids `ids` shares with the saved text that shares the most, whether or
        not all of that text is a prefix of `ids`. A text read after an earlier one that differs
        near its end (a lorebook entry or an author's note inserted a few hundred chars before the
        end, as KoboldAI Lite and aiwriter.story do) shares everything before that point: the
        reader keeps its state there (ReadingTask), so the next such text starts from it."""
        q = np.asarray(ids, dtype=np.int64)
        best = 0
        for (s, k), a in self._arrays.items():
            m = min(len(a), len(q))
            if s != start or m <= best or a[best] != q[best]:  # cannot share more than best
                continue
            differ = np.flatnonzero(a[:m] != q[:m])
            best = max(best, int(differ[0]) if len(differ) else m)
        return best

    def nbytes(self) -> int:
        return sum(s.nbytes() + l.numel() * l.element_size() for l, s in self._entries.values())
