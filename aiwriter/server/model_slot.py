"""The one model the server holds in memory, and what belongs to it: its Writer (with the prefix
cache and, if asked, the disk state cache) and the start states loaded for it.

It exists because the server keeps one model at a time: a request naming another model has it
loaded here in place of the current one (the old model, its caches and its states go with it),
and the errors of loading a file a request named (a model or a state) must name the file as the
request did, never where it lives on disk. The scheduler decides when a switch may happen (when
nothing of the current model is in hand).
"""
from __future__ import annotations

from typing import Callable

from aiwriter.engine import Model, PrefixCache, State, load_model
from aiwriter.errors import AIWriterError
from aiwriter.server.catalog import ModelCatalog, StateCatalog
from aiwriter.server.replies import ApiError
from aiwriter.writer import Writer

MAX_LOADED_STATES = 16  # start states kept loaded (the oldest goes first)


def _as_named(e: AIWriterError, path, name: str) -> tuple[str, str]:
    """The error's two messages with the file's path replaced by the name the request gave."""
    return tuple(m.replace(str(path), name).replace(str(path.parent) + "/", "") for m in (e.zh, e.en))


class ModelSlot:
    def __init__(self, catalog: ModelCatalog, model: Model | None = None, *, device: str = "cpu", dtype=None,
                 cache_bytes: int = 256 * 2**20, loader: Callable[..., Model] | None = None,
                 states: StateCatalog | None = None, state_cache_bytes: int = 0):
        self.catalog = catalog
        self.states = states or StateCatalog(None)
        self.state_cache_bytes = state_cache_bytes  # disk state cache budget; 0 = off
        self.device, self.dtype, self.cache_bytes = device, dtype, cache_bytes
        self._load = loader or load_model
        self._loaded_states: dict[tuple, State] = {}
        self.name = catalog.default_name
        self._given = model  # a model handed in (tests, embedding) is kept to switch back to
        if model is None:
            path, vocab = catalog.resolve(self.name)
            model = self._load(path, vocab=vocab, device=device, dtype=dtype)
        self.use(model)

    @property
    def model(self) -> Model:
        return self.writer.model

    def use(self, model: Model) -> None:
        """Hold `model` with a fresh writer and caches (the old model and its caches go)."""
        disk = None
        if self.state_cache_bytes > 0:
            from aiwriter.state_cache import DiskStateCache

            disk = DiskStateCache(model, max_bytes=self.state_cache_bytes)
        self._loaded_states = {}
        self.writer = Writer(model, PrefixCache(self.cache_bytes), disk=disk)

    def holds(self, name: str | None) -> bool:
        """Whether a job naming `name` (None: whatever is loaded) can run on the model held now."""
        return name in (None, self.name)

    def switch(self, name: str) -> None:
        """Load the model a request named in place of this one; ApiError 422 if it cannot be
        used (the model held now stays)."""
        path, vocab = self.catalog.resolve(name)
        if name == self.catalog.default_name and self._given is not None:
            self.use(self._given)
            self.name = name
            return
        try:
            model = self._load(path, vocab=vocab, device=self.device, dtype=self.dtype)
            model.tokenizer.encode("\n")  # no usable vocab: refuse it now, keep the old model
        except AIWriterError as e:  # the message names the file as the request did, not where it lives on disk
            zh, en = _as_named(e, path, name)
            raise ApiError(422, f"无法载入模型：{zh}", f"cannot load the model: {en}", param="model")
        except Exception as e:  # a damaged file can fail anywhere in torch
            raise ApiError(422, f"无法载入模型（{type(e).__name__}）", f"cannot load the model ({type(e).__name__})",
                           param="model")
        self.use(model)
        self.name = name

    def start_state(self, name: str | None) -> State | None:
        """The start state a job names (loaded once per file version and model)."""
        if not name:
            return None
        path = self.states.resolve(name)
        try:
            st = path.stat()
        except OSError:
            raise ApiError(404, "没有这个状态文件", "unknown state", param="state")
        key = (str(path), st.st_size, st.st_mtime_ns)
        if key not in self._loaded_states:
            try:
                state = self.writer.model.state_from_file(path)
            except AIWriterError as e:
                zh, en = _as_named(e, path, name)
                raise ApiError(422, f"无法使用状态文件：{zh}", f"cannot use the state file: {en}", param="state")
            if len(self._loaded_states) >= MAX_LOADED_STATES:
                self._loaded_states.pop(next(iter(self._loaded_states)))
            self._loaded_states[key] = state
        return self._loaded_states[key]
