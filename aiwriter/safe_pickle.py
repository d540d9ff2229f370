"""Read the tensors out of an F1 file (a `torch.save` of a whole nn.Module) without running its code.

A pickle is a small program: GLOBAL loads any importable name and REDUCE calls it, so a `.pth`
can run `os.system` the moment it is unpickled. This unpickler never imports anything from the
file. `find_class` answers from a fixed table:

- torch's tensor rebuild functions and the `torch.*Storage` types -> our own small versions that
  only ever make a tensor view of bytes read from the file (bounds checked by torch);
- the module classes an RWKV-LM v1 trainer pickles (`src.model.*`, `torch.nn.modules.*`) ->
  inert stubs that just keep the state the pickle gives them;
- `collections.OrderedDict`, `set` -> the harmless builtins;
- anything else (os.system, builtins.eval, subprocess.Popen, ...) -> AIWriterError naming it.

BUILD (setting an object's state) is only allowed on those stubs. Then `_modules`,
`_parameters` and `_buffers` are walked into a flat state dict with the usual dotted keys.
Both torch's zip format (torch >= 1.6) and the older "legacy" stream format are read.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch

from aiwriter.errors import AIWriterError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_STUB_MODULES = ("src.model", "torch.nn.modules")  # module classes the v1 trainer pickles
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _Stub:
    """Stands in for a pickled class: created without running any of its code, keeps its state."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        # nn.Module pickles its __dict__; a (dict, slotstate) pair is also legal pickle.
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)


class _StorageType:
    """What `torch.FloatStorage` & co. resolve to: just a dtype, not callable."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    if not isinstance(storage_offset, int) or not all(isinstance(n, int) for n in (*size, *stride)):
        raise pickle.UnpicklingError("bad tensor geometry")
    return storage.as_strided(tuple(size), tuple(stride), storage_offset)  # torch checks the bounds


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


def _reconstructor(cls, base, state=None):
    # copyreg._reconstructor, used by protocols 0/1 for new-style objects: only for stubs.
    if not (isinstance(cls, type) and issubclass(cls, _Stub)):
        raise pickle.UnpicklingError("copyreg._reconstructor for a non-module class")
    return cls.__new__(cls)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("__builtin__", "set"): set,
    ("builtins", "set"): set,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
}


class _Refused(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


# The pure-Python unpickler lets us replace single opcodes (BUILD) -- the C one does not.
class _SafeUnpickler(pickle._Unpickler):
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, storage_loader):
        super().__init__(file)
        self._storage_loader = storage_loader
        self._stubs: dict[tuple[str, str], type] = {}

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if any(module == m or module.startswith(m + ".") for m in _STUB_MODULES) and name.isidentifier():
            key = (module, name)
            if key not in self._stubs:
                self._stubs[key] = type(name, (_Stub,), {"__module__": module, "__qualname__": name})
            return self._stubs[key]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        return self._storage_loader(pid)

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _Stub):
            raise pickle.UnpicklingError(f"BUILD on a {type(inst).__name__} is not allowed")
        inst.__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build


class _Bounded:
    """A file whose reads past its end fail at once: a garbage length field in a pickle must not
    make the unpickler allocate gigabytes before it finds the file too short."""

    def __init__(self, f, size: int):
        self._f, self._size = f, size

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self._size - self._f.tell():
            raise EOFError(f"a record of {n} bytes runs past the end of the file")
        return self._f.read(n)

    def readline(self) -> bytes:
        return self._f.readline()

    def readinto(self, b) -> int:
        return self._f.readinto(b)

    def __getattr__(self, name):
        return getattr(self._f, name)


def load_module_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a pickled RWKV-LM v1 module, as a flat state dict (`tok_emb.weight`, ...)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            root = _load_zip(path)
        else:
            with open(path, "rb") as f:
                root = _load_legacy(_Bounded(f, path.stat().st_size), path.stat().st_size)
        weights = module_state_dict(root)
    except _Refused as e:
        raise AIWriterError(
            f"拒绝加载 {path}：文件中的 pickle 要调用 {e.name}，这不是模型权重，可能是恶意文件。没有执行任何代码。",
            f"refused to load {path}: its pickle wants to call {e.name}, which is not model data "
            f"(possibly malicious). Nothing was executed.",
        )
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, KeyError, IndexError, ValueError, TypeError,
            AttributeError, RuntimeError, OSError, struct.error, UnicodeDecodeError, MemoryError, OverflowError) as e:
        # (RecursionError is a RuntimeError: absurdly deep module trees land here too)
        raise AIWriterError(
            f"模型文件已损坏或不是 PyTorch 格式：{path}",
            f"model file is corrupt or not a PyTorch checkpoint: {path} ({type(e).__name__}: {str(e)[:200]})",
        )
    if not weights:
        raise AIWriterError(
            f"模型文件里没有找到权重：{path}（找到 {type(root).__name__}）",
            f"no weights found in {path} (found a {type(root).__name__})",
        )
    return weights


def module_state_dict(obj, prefix: str = "", _parents=()) -> dict[str, torch.Tensor]:
    """Walk a (stub) module tree like nn.Module.state_dict(): parameters, persistent buffers, children."""
    if isinstance(obj, dict):  # a plain state dict pickled with module classes around it
        return {prefix + k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if id(obj) in _parents:  # a pickle can make cycles; a real module tree has none
        raise pickle.UnpicklingError("module tree has a cycle")
    out: dict[str, torch.Tensor] = {}
    d = getattr(obj, "__dict__", {})
    skip = d.get("_non_persistent_buffers_set") or set()
    for table in ("_parameters", "_buffers"):
        for name, t in (d.get(table) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t
    for name, child in (d.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}.", (*_parents, id(obj))))
    return out


def _storage_from_bytes(data: bytes, dtype: torch.dtype, big_endian: bool = False) -> torch.Tensor:
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if big_endian and itemsize > 1:
        flat = flat.view(-1, itemsize).flip(1).reshape(-1)
    return flat.view(dtype) if len(data) else torch.empty(0, dtype=dtype)


def _load_zip(path: Path):
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise pickle.UnpicklingError("no data.pkl in the archive")
        prefix = pkl[0][: -len("data.pkl")]
        names = set(z.namelist())
        big = prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() == b"big"
        storages: dict[str, torch.Tensor] = {}

        def load_storage(pid):
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
            _, stype, key, _location, numel = pid
            if not isinstance(stype, _StorageType):
                raise pickle.UnpicklingError("storage of an unknown type")
            key = str(key)
            if key not in storages:
                storages[key] = _storage_from_bytes(z.read(f"{prefix}data/{key}"), stype.dtype, big)
            return storages[key]

        return _SafeUnpickler(io.BytesIO(z.read(pkl[0])), load_storage).load()


def _load_legacy(f, file_size: int):
    """torch < 1.6 stream: magic, protocol, sys_info, the object pickle, storage keys, raw storages."""
    def plain():
        return _SafeUnpickler(f, _no_storage).load()

    if plain() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file (bad magic number)")
    plain()  # protocol version
    sys_info = plain()
    little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
    storages: dict[str, torch.Tensor] = {}

    def load_storage(pid):
        if isinstance(pid, tuple) and len(pid) == 4 and pid[0] == "module":
            # legacy files name each module class once, with its source; we keep the stub only
            if not (isinstance(pid[1], type) and issubclass(pid[1], _Stub)):
                raise pickle.UnpicklingError("module record for a non-module class")
            return pid[1]
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        _, stype, key, _location, numel, view = pid
        # its bytes follow in the file, so a storage larger than the file is a lie (or a memory bomb)
        if not isinstance(stype, _StorageType) or not isinstance(numel, int) or not 0 <= numel <= file_size:
            raise pickle.UnpicklingError("bad storage record")
        key = str(key)
        if key not in storages:  # filled in place once the raw bytes follow the pickle
            storages[key] = torch.empty(numel, dtype=stype.dtype)
        if view is not None:  # (view_key, offset, size): a slice of the root storage
            view_key, offset, size = view
            return storages[key][offset: offset + size]
        return storages[key]

    root = _SafeUnpickler(f, load_storage).load()
    keys = plain()
    for key in keys:
        buf = storages[str(key)]
        (numel,) = struct.unpack("<q", f.read(8))
        nbytes = numel * buf.element_size()
        data = f.read(nbytes)
        if numel != buf.numel() or len(data) != nbytes:
            raise EOFError("storage data truncated")
        buf.copy_(_storage_from_bytes(data, buf.dtype, big_endian=not little))
    return root


def _no_storage(pid):
    raise pickle.UnpicklingError("unexpected persistent id")
