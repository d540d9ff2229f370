"""States of what was read, kept on disk, so a manuscript is not re-read after a restart.

While Writer.read reads a text it stores the state (and the logits) every EVERY ids and at the
end. A later read, in this process or another, starts from the longest stored prefix of its ids.

Keys. A prefix is named by a chained hash: h_0 = H(model identity, start state), h_k = H(h_{k-1},
ids of block k) for blocks of EVERY ids, and the key of ids[:n] is H(h_{n // EVERY}, the ids after
that block boundary, n). So an edit at position p leaves every stored state before p usable and
no state after it can match. The model identity is its file (resolved path, size, mtime), family,
dtype, device type and module classes (int8/int4 modes differ); the start state is "" or the
digest of the state file it began from.

Files are safetensors (no pickle): the tensors plus a JSON header naming format, model, start,
n and key, and a SHA-256 of the tensor bytes. A file that does not parse, whose header or digest
is wrong, or whose shapes do not fit the model is deleted and read again from text, never used.
Writes go to a temporary file renamed into place. The folder is kept under max_bytes by
deleting the least recently used files (a hit touches its file's mtime).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aiwriter.paths import cache_dir

FORMAT = "aiwriter-state-cache/1"
EVERY = 4096          # ids between stored states inside a text
DEFAULT_MAX_BYTES = 2 * 2**30
SUFFIX = ".safetensors"


def model_identity(model) -> str | None:
    """What must be equal for a stored state to be reused: None for a model without a file."""
    path = getattr(model, "path", None)
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return None
    net = getattr(model.net, "torch_net", model.net)
    classes = sorted({type(m).__name__ for m in net.modules()}) if hasattr(net, "modules") else [type(net).__name__]
    text = json.dumps([str(Path(path).resolve()), st.st_size, st.st_mtime_ns, model.family, str(model.dtype),
                       model.device.type, type(model.net).__name__, classes])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _ids_bytes(ids) -> bytes:
    return np.asarray(ids, dtype="<i4").tobytes()


class PrefixKeys:
    """The chained keys of one id sequence's prefixes."""

    def __init__(self, model_id: str, start: str, ids, every: int = EVERY):
        self.ids, self.every = list(ids), every
        h = hashlib.sha256(f"{FORMAT}|{model_id}|{start}".encode()).digest()
        self.blocks = [h]
        for k in range(len(self.ids) // every):
            h = hashlib.sha256(h + _ids_bytes(self.ids[k * every:(k + 1) * every])).digest()
            self.blocks.append(h)

    def key(self, n: int) -> str:
        b = n // self.every
        tail = _ids_bytes(self.ids[b * self.every:n])
        return hashlib.sha256(self.blocks[b] + tail + n.to_bytes(8, "little")).hexdigest()[:40]


class DiskStateCache:
    """Stored (logits, state) after prefixes of texts, for one model and dtype."""

    def __init__(self, model, directory: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                 every: int = EVERY):
        self.model = model
        self.model_id = model_identity(model)
        self.dir = Path(directory) if directory is not None else cache_dir() / "states"
        self.max_bytes, self.every = max_bytes, every
        self.enabled = self.model_id is not None
        self.rejected = 0  # damaged or foreign files found and deleted
        self._template = None

    # -- names

    def _name(self, n: int, key: str) -> str:
        return f"{self.model_id[:16]}-{n:010d}-{key}{SUFFIX}"

    def _stored(self) -> list[tuple[int, str, Path]]:
        """(n, key, path) of this model's files."""
        out = []
        prefix = self.model_id[:16] + "-"
        try:
            entries = list(os.scandir(self.dir))
        except OSError:
            return out
        for e in entries:
            if e.name.startswith(prefix) and e.name.endswith(SUFFIX):
                parts = e.name[: -len(SUFFIX)].split("-")
                if len(parts) == 3 and parts[1].isdigit():
                    out.append((int(parts[1]), parts[2], Path(e.path)))
        return out

    # -- lookup

    def longest_prefix(self, ids, start: str = "", above: int = 0):
        """(n, logits, State) for the longest stored prefix ids[:n] with n > above; (0, None, None)."""
        if not self.enabled or not ids:
            return 0, None, None
        keys = PrefixKeys(self.model_id, start, ids, self.every)
        for n, key, path in sorted(self._stored(), key=lambda c: -c[0]):
            if n <= above or n > len(ids) or keys.key(n) != key:
                continue
            got = self._load(path, n, key, start)
            if got is not None:
                try:
                    os.utime(path)  # recently used
                except OSError:
                    pass
                return (n, *got)
        return 0, None, None

    def _template_state(self):
        if self._template is None:
            st = self.model.new_state(1)
            self._template = {k: (tuple(v.shape), v.dtype) for k, v in st.data.items()}
        return self._template

    def _load(self, path: Path, n: int, key: str, start: str):
        from aiwriter.engine import State

        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            ok = (meta.get("format") == FORMAT and meta.get("model") == self.model_id and meta.get("start") == start
                  and meta.get("n") == str(n) and meta.get("key") == key and meta.get("digest") == _digest(tensors))
            logits = tensors.pop("logits", None)
            want = self._template_state()
            ok = ok and logits is not None and tuple(logits.shape) == (self.model.vocab_size,) and \
                set(tensors) == {f"state.{k}" for k in want} and \
                all((tuple(tensors[f"state.{k}"].shape), tensors[f"state.{k}"].dtype) == w for k, w in want.items())
        except Exception:  # safetensors raises several types for damaged files
            ok = False
        if not ok:
            self.rejected += 1
            try:
                path.unlink()
            except OSError:
                pass
            return None
        dev = self.model.device
        state = State({k[len("state."):]: v.to(dev) for k, v in tensors.items()}, start)
        return logits.to(dev), state

    # -- store

    def put(self, ids, logits: torch.Tensor, state, keys: PrefixKeys | None = None) -> None:
        """Store the state after all of `ids` (one stream). Failures (full disk, read-only folder)
        only cost the cache, never the read."""
        if not self.enabled or not ids:
            return
        n = len(ids)
        keys = keys or PrefixKeys(self.model_id, state.start, ids, self.every)
        key = keys.key(n)
        tensors = {f"state.{k}": v[:1].detach().cpu().contiguous() for k, v in state.data.items()}
        tensors["logits"] = logits.detach().float().cpu().contiguous()
        meta = {"format": FORMAT, "model": self.model_id, "start": state.start, "n": str(n), "key": key,
                "digest": _digest(tensors), "written": str(int(time.time()))}
        path = self.dir / self._name(n, key)
        tmp = None
        try:
            from safetensors.torch import save_file

            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-", suffix=SUFFIX)
            os.close(fd)
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
            tmp = None
            self.evict()
        except OSError:
            pass
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    def evict(self) -> None:
        """Delete least recently used files (any model's) until the folder fits max_bytes."""
        files = []
        try:
            for e in os.scandir(self.dir):
                if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                    st = e.stat()
                    files.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            return
        total = sum(s for _, s, _ in files)
        for _, size, p in sorted(files):
            if total <= self.max_bytes:
                break
            try:
                os.unlink(p)
                total -= size
            except OSError:
                pass

    def nbytes(self) -> int:
        return sum(p.stat().st_size for _, _, p in self._stored() if p.exists())


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(k.encode() + str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
