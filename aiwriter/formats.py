"""Model files -> tensors, without ever running pickle code from the file.

Plain state dicts (.pth) load with torch.load(weights_only=True); .safetensors with safetensors;
the 2021-22 AI-Writer F1 files (a pickled nn.Module) go through the restricted unpickler in
safe_pickle.py. The family is told apart by keys (see docs/FORMATS.md).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from aiwriter.errors import AIWriterError


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AIWriterError(f"找不到模型文件：{path}", f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise AIWriterError(f"模型文件是空的：{path}", f"model file is empty: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Not a plain state dict: an F1 whole-module pickle, or something we must not run.
        from aiwriter.safe_pickle import load_module_weights

        return load_module_weights(path)
    except Exception as e:  # garbage makes torch's unpickler fail in many ways (IndexError, KeyError, struct.error, …)
        raise AIWriterError(
            f"模型文件已损坏或不是 PyTorch 格式：{path}（{type(e).__name__}）",
            f"model file is corrupt or not a PyTorch checkpoint: {path} ({type(e).__name__}: {str(e)[:200]})",
        )
    return _as_state_dict(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AIWriterError(
            f"safetensors 文件已损坏：{path}", f"corrupt safetensors file: {path} ({str(e)[:200]})"
        )


def _as_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints sometimes wrap the weights.
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise AIWriterError(
            f"模型文件里没有权重表：{path}（找到 {type(obj).__name__}）",
            f"no weights found in {path} (found a {type(obj).__name__})",
        )
    weights = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not weights:
        raise AIWriterError(
            f"模型文件里没有张量：{path}", f"no tensors found in {path}: keys {describe_keys(obj)}"
        )
    return weights


def describe_keys(keys, limit: int = 12) -> str:
    keys = sorted(str(k) for k in keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def detect_family(weights: dict[str, torch.Tensor]) -> str:
    keys = set(weights)
    if "tok_emb.weight" in keys and "blocks.0.attn.time_w" in keys:
        return "aiwriter-v1"
    if "emb.weight" in keys and "copy_mask" in keys and "head_q.weight" in keys:
        return "aiwriter-v2"
    if "blocks.0.att.r_k" in keys:
        return "rwkv7"
    if "blocks.0.att.time_maa_x" in keys:
        return "rwkv6"
    if "blocks.0.att.time_faaaa" in keys and "blocks.0.att.time_mix_k" in keys:
        return "rwkv5"
    if "blocks.0.att.time_first" in keys and "blocks.0.att.time_mix_k" in keys and "blocks.0.ln0.weight" in keys:
        return "rwkv4"
    raise AIWriterError(
        "无法识别的模型格式（不是 AI-Writer 或 RWKV-4/5/6/7 模型）。文件中的键：" + describe_keys(keys),
        "unrecognized model format (not AI-Writer or RWKV-4/5/6/7). Keys found: " + describe_keys(keys),
    )


# ---------------------------------------------------------------------------------------------
# Reading tensor by tensor (the streaming load): a model of many gigabytes is never held twice.

_SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


class _Slot:
    """Where one tensor's bytes lie in the file: absolute offset of its storage, geometry."""

    __slots__ = ("offset", "nbytes", "dtype", "shape", "stride", "storage_offset")

    def __init__(self, offset, nbytes, dtype, shape, stride, storage_offset):
        self.offset, self.nbytes, self.dtype = offset, nbytes, dtype
        self.shape, self.stride, self.storage_offset = tuple(shape), tuple(stride), storage_offset


class WeightFile:
    """A model file's tensors, read one at a time on demand (`wf[name]` reads a fresh tensor from
    the file with plain reads: no pickle code runs, nothing stays mapped, so the pages a tensor
    came from are never counted in this process's memory after it is converted and dropped).
    `wf.meta(name)` is a meta-device tensor of the stored shape and dtype (no data).
    Files that cannot be read this way (F1 module pickles, torch's legacy format, big-endian
    archives) are read whole once and served from memory."""

    def __init__(self, path: Path, slots: dict[str, _Slot] | None = None, tensors: dict[str, torch.Tensor] | None = None):
        self.path, self._slots, self._tensors = path, slots, tensors

    @property
    def streaming(self) -> bool:
        return self._slots is not None

    def keys(self):
        return (self._slots if self._slots is not None else self._tensors).keys()

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, name) -> bool:
        return name in self.keys()

    def __len__(self) -> int:
        return len(self.keys())

    def meta(self, name: str) -> torch.Tensor:
        if self._slots is None:
            t = self._tensors[name]
            return torch.empty(t.shape, dtype=t.dtype, device="meta")
        s = self._slots[name]
        return torch.empty(s.shape, dtype=s.dtype, device="meta")

    def nbytes(self) -> int:
        if self._slots is None:
            return sum(t.numel() * t.element_size() for t in self._tensors.values())
        return sum(_numel(s.shape) * _itemsize(s.dtype) for s in self._slots.values())

    def __getitem__(self, name: str) -> torch.Tensor:
        if self._slots is None:
            return self._tensors[name]
        s = self._slots[name]
        size = _itemsize(s.dtype)
        n = _numel(s.shape)
        contiguous = s.stride == _contiguous_strides(s.shape)
        start = s.offset + (s.storage_offset * size if contiguous else 0)
        count = n * size if contiguous else s.nbytes
        buf = torch.empty(count, dtype=torch.uint8)
        if count:
            with open(self.path, "rb") as f:
                f.seek(start)
                got = f.readinto(memoryview(buf.numpy()))
            if got != count:
                raise AIWriterError(f"模型文件不完整（读到 {name} 时文件提前结束）：{self.path}",
                                    f"model file is truncated (it ends inside {name}): {self.path}")
        flat = buf.view(s.dtype) if count else torch.empty(0, dtype=s.dtype)
        if contiguous:
            return flat.view(s.shape)
        return flat.as_strided(s.shape, s.stride, s.storage_offset).clone()


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _contiguous_strides(shape) -> tuple:
    strides, acc = [], 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= int(d)
    return tuple(reversed(strides))


def open_weights(path: str | Path) -> WeightFile:
    """The model file at `path` as a WeightFile (see there); damaged or truncated files are a
    clear error before anything big is allocated."""
    path = Path(path)
    if not path.is_file():
        raise AIWriterError(f"找不到模型文件：{path}", f"model file not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise AIWriterError(f"模型文件是空的：{path}", f"model file is empty: {path}")
    if path.suffix == ".safetensors":
        slots = _safetensors_slots(path, size)
    else:
        slots = _zip_slots(path, size)
    if slots is None:
        return WeightFile(path, tensors=read_weights(path))
    if not slots:
        raise AIWriterError(f"模型文件里没有张量：{path}", f"no tensors found in {path}")
    return WeightFile(path, slots=slots)


def _damaged(path: Path, why: str) -> AIWriterError:
    return AIWriterError(f"模型文件已损坏或不完整（可能没下载完）：{path}（{why}）",
                         f"model file is damaged or truncated (an unfinished download?): {path} ({why})")


def _safetensors_slots(path: Path, size: int) -> dict[str, _Slot]:
    import json
    import struct

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, "no header")
        (n,) = struct.unpack("<Q", head)
        if n > min(size - 8, 100 * 2**20):
            raise _damaged(path, "header length past the end of the file")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError):
            raise _damaged(path, "unreadable header")
    if not isinstance(header, dict):
        raise _damaged(path, "unreadable header")
    base, slots = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = [int(d) for d in info["shape"]]
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _damaged(path, f"bad entry for {name}")
        if not 0 <= begin <= end or end - begin != _numel(shape) * _itemsize(dtype):
            raise _damaged(path, f"bad entry for {name}")
        if base + end > size:
            raise _damaged(path, f"{name} runs past the end of the file ({size:,} bytes)")
        slots[name] = _Slot(base + begin, end - begin, dtype, shape, _contiguous_strides(shape), 0)
    return slots


def _zip_slots(path: Path, size: int) -> dict[str, _Slot] | None:
    """Slots of a torch zip checkpoint holding a plain state dict, from its data.pkl read by the
    restricted unpickler; None when the file is not one (then it is read whole)."""
    import io
    import struct
    import zipfile

    from aiwriter import safe_pickle

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            if f.read(4) == b"PK\x03\x04":  # a zip whose directory (at the end) is missing: cut short
                raise _damaged(path, "the archive's directory is missing")
        return None
    try:
        with zipfile.ZipFile(path) as z, open(path, "rb") as raw:
            names = z.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                return None
            prefix = pkl[0][: -len("data.pkl")]
            if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() == b"big":
                return None
            infos = {i.filename: i for i in z.infolist()}
            storages: dict[str, tuple[int, int, torch.dtype]] = {}

            def load_storage(pid):
                if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                    raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
                _, stype, key, _location, numel = pid
                if not isinstance(stype, safe_pickle._StorageType) or not isinstance(numel, int) or numel < 0:
                    raise pickle.UnpicklingError("bad storage record")
                key = str(key)
                info = infos.get(f"{prefix}data/{key}")
                if info is None or info.compress_type != zipfile.ZIP_STORED:
                    raise pickle.UnpicklingError(f"storage {key} missing or compressed")
                raw.seek(info.header_offset)
                local = raw.read(30)
                if len(local) < 30 or local[:4] != b"PK\x03\x04":
                    raise pickle.UnpicklingError("bad local header")
                n_name, n_extra = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + n_name + n_extra
                nbytes = numel * _itemsize(stype.dtype)
                if nbytes > info.file_size or start + nbytes > size:
                    raise EOFError(f"storage {key} runs past the end of the file")
                storages[key] = (start, nbytes, stype.dtype)
                return _LazyStorage(key, start, nbytes, stype.dtype)

            obj = _LazyUnpickler(io.BytesIO(z.read(pkl[0])), load_storage).load()
    except (safe_pickle._Refused, pickle.UnpicklingError):
        return None  # a pickle that wants more than a plain state dict: the whole-file readers decide
    except (EOFError, zipfile.BadZipFile, KeyError, IndexError, ValueError, TypeError,
            AttributeError, OSError, struct.error, UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise _damaged(path, f"{type(e).__name__}: {str(e)[:160]}")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        return None
    slots = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, _Slot)}
    return slots or None


class _LazyStorage:
    def __init__(self, key, offset, nbytes, dtype):
        self.key, self.offset, self.nbytes, self.dtype = key, offset, nbytes, dtype


def _lazy_rebuild(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, _LazyStorage):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not isinstance(storage_offset, int) or not all(isinstance(n, int) and n >= 0 for n in (*size, *stride)):
        raise pickle.UnpicklingError("bad tensor geometry")
    itemsize = _itemsize(storage.dtype)
    last = storage_offset + sum((d - 1) * s for d, s in zip(size, stride)) if _numel(size) else storage_offset - 1
    if storage_offset < 0 or (last + 1) * itemsize > storage.nbytes:
        raise pickle.UnpicklingError("tensor outside its storage")
    return _Slot(storage.offset, storage.nbytes, storage.dtype, size, stride, storage_offset)


def _lazy_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, _Slot):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


def _make_lazy_unpickler():
    from aiwriter import safe_pickle

    class Lazy(safe_pickle._SafeUnpickler):
        TABLE = {("torch._utils", "_rebuild_tensor_v2"): _lazy_rebuild,
                 ("torch._utils", "_rebuild_tensor"): _lazy_rebuild,
                 ("torch._utils", "_rebuild_parameter"): _lazy_parameter}

        dispatch = dict(safe_pickle._SafeUnpickler.dispatch)

        def load_build(self):
            # state_dict() is an OrderedDict carrying `_metadata` (module versions), set by BUILD:
            # dropped here (loading never needs it); BUILD on anything else is refused as before
            if isinstance(self.stack[-2] if len(self.stack) > 1 else None, dict):
                self.stack.pop()
                return
            safe_pickle._SafeUnpickler.load_build(self)

        dispatch[pickle.BUILD[0]] = load_build

        def find_class(self, module, name):
            if (module, name) in self.TABLE:
                return self.TABLE[(module, name)]
            if module in ("src.model", "torch.nn.modules") or module.startswith(("src.model.", "torch.nn.modules.")):
                raise safe_pickle._Refused(f"{module}.{name}")  # a module pickle: the F1 reader's job
            return super().find_class(module, name)

    return Lazy


def _LazyUnpickler(f, loader):
    return _make_lazy_unpickler()(f, loader)
