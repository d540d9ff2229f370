"""One background thread owns the model and writes for every request at once.

Each request is a Job: an opening and n continuations. The worker reads a new job's opening
with Writer.read (so text that extends an earlier request starts from the prefix cache), gives
each continuation a writer.Stream, and joins them to the batch. Every step it samples the next
id of every active stream (writer.next_ids, per job so each job's seed stays its own), feeds the
streams, drops finished and cancelled ones, and runs ONE Model.forward_batch for all that remain.

Requests wait in a bounded queue (QueueFull -> the server answers 429). A job whose client left or
was aborted is dropped at the start of the next step. Requests naming another model wait until
the current model's streams are done, then the worker swaps models (one model in memory).
"""
from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from aiwriter.engine import Model, PrefixCache, State, load_model
from aiwriter.errors import AIWriterError
from aiwriter.sampling import SamplingSettings
from aiwriter.writer import Stream, Writer, next_ids, record_logprobs

_ids = itertools.count(1)


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after


class _Cancelled(Exception):
    """Raised inside a prefill when the job's client has gone."""


@dataclass
class Job:
    prompt: str
    n: int = 1
    length: int = 16
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None
    model: str | None = None  # a name ModelCatalog knows; None = the model loaded now
    origin: str = ""          # "openai", "kobold", ...: what an abort without a key stops
    key: str = ""             # a client's handle (KoboldAI genkey) for abort and polling
    id: str = field(default_factory=lambda: f"{next(_ids)}")
    logprobs: int | None = None  # OpenAI logprobs: None off, else how many alternatives per token

    def __post_init__(self):
        self.cancelled = threading.Event()
        self.texts = [""] * self.n          # what each run has written so far
        self.finish = [None] * self.n       # "length" | "stop" per run once done
        self.info: dict = {}                # filled when the job starts (model, seed, prompt size)
        self.done = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self.generator: torch.Generator | None = None
        self.logprob_lists: list = [None] * self.n  # per run: (id, logprob, top) per token, if asked

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._queue = loop, asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    def emit(self, kind: str, data=None) -> None:
        """From the worker thread to the request's event loop."""
        if kind in ("end", "error"):
            self.done = True
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, data))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel()

    async def next_event(self):
        """("start", info) once, then ("pieces", [(run, text), ...]) and ("finish", (run, reason))
        as they come, and ("end", None) or ("error", AIWriterError) last."""
        return await self._queue.get()


class ModelCatalog:
    """The models a request may name: the startup model and the *.pth / *.safetensors files in
    the models folder. Names are paths relative to that folder; nothing outside it is reachable."""

    EXTENSIONS = (".pth", ".safetensors")

    def __init__(self, default_path: str | Path | None, models_dir: str | Path | None, vocab: str | None = None,
                 default_name: str | None = None):
        self.default_path = Path(default_path) if default_path else None
        self.default_name = default_name or (self.default_path.name if self.default_path else "default")
        self.models_dir = Path(models_dir) if models_dir else None
        self.vocab = vocab  # for the startup model only

    def names(self) -> list[str]:
        out = [self.default_name]
        if self.models_dir is not None and self.models_dir.is_dir():
            found = []
            root = self.models_dir.resolve()
            for path in self.models_dir.rglob("*"):
                # a symlink leading out of the folder is not offered (resolve() refuses it too)
                if path.suffix.lower() in self.EXTENSIONS and _inside(path, root) and path.is_file():
                    found.append(path.relative_to(self.models_dir).as_posix())
                if len(found) >= 1000:
                    break
            out += sorted(n for n in found if n != self.default_name)
        return out

    def resolve(self, name: str) -> tuple[Path | None, str | None]:
        """(model path, vocab path or None) for a name; raises AIWriterError (with .status)."""
        if name == self.default_name:
            return self.default_path, self.vocab
        if (not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name
                or any(part in ("..", ".") for part in name.split("/"))):
            raise _err(400, "模型名不能含有 ..、/ 开头或盘符：只能指定模型文件夹里的文件",
                       "a model name may not contain '..', a leading '/' or a drive: only files in the models folder")
        if self.models_dir is not None:
            root = self.models_dir.resolve()
            path = root / name
            if _inside(path, root) and path.suffix.lower() in self.EXTENSIONS and path.resolve().is_file():
                return path.resolve(), None
        raise _err(404, "没有这个模型（GET /v1/models 列出可用的模型）", "unknown model (GET /v1/models lists them)")


def _inside(path: Path, root: Path) -> bool:
    """Whether path, symlinks followed, lies inside root (a symlink loop does not)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _err(status: int, zh: str, en: str, param: str = "model") -> AIWriterError:
    e = AIWriterError(zh, en)
    e.status, e.param = status, param
    return e


class _CountingCache(PrefixCache):
    """A PrefixCache that remembers how many ids its last lookup found, for the counters."""

    last_hit = 0

    def longest_prefix(self, ids):
        n, logits, state = super().longest_prefix(ids)
        self.last_hit = n
        return n, logits, state


@dataclass
class _Row:
    job: Job
    stream: Stream


class Scheduler:
    def __init__(self, catalog: ModelCatalog, model: Model | None = None, *, device: str = "cpu", dtype=None,
                 max_batch: int = 16, max_queue: int = 32, cache_bytes: int = 256 * 2**20,
                 loader: Callable[..., Model] | None = None):
        self.catalog = catalog
        self.device, self.dtype = device, dtype
        self.max_batch, self.max_queue, self.cache_bytes = max_batch, max_queue, cache_bytes
        self._load = loader or load_model
        self.model_name = catalog.default_name
        self._given = model  # a model handed in (tests, embedding) is kept to switch back to
        if model is None:
            path, vocab = catalog.resolve(self.model_name)
            model = self._load(path, vocab=vocab, device=device, dtype=dtype)
        self.writer = Writer(model, _CountingCache(cache_bytes))
        self._rows: list[_Row] = []
        self._state: State | None = None
        self._logits: torch.Tensor | None = None
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._prefilling: Job | None = None  # the job whose opening is being read now
        self._avg_job_s = 5.0
        # counters; the worker alone writes them (cache figures too: the cache is not thread-safe)
        self.stats = {"steps": 0, "jobs": 0, "prompt_ids": 0, "reused_ids": 0, "read_ids": 0, "written_chars": 0,
                      "max_batch_seen": 0, "cache_entries": 0, "cache_bytes": 0}
        self._thread = threading.Thread(target=self._run, name="aiwriter-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ called from requests

    @property
    def model(self) -> Model:
        return self.writer.model

    def submit(self, job: Job) -> Job:
        if job.n > self.max_batch:  # it could never start
            raise _err(400, f"字段 n 最多为 {self.max_batch}（本服务器一批最多写 {self.max_batch} 条）",
                       f"field 'n' may be at most {self.max_batch} (the most streams this server writes at once)", param="n")
        with self._cond:
            if self._stop:
                raise _err(503, "服务器正在关闭", "the server is shutting down", param="")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self.retry_after())
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: one frees each time a running job
        ends, and those end about every avg_job_s / running seconds. (The length of a whole job
        would be too long: clients told to wait that long lose every race for a free place to
        clients that just finished and ask again at once.)"""
        with self._cond:
            running = max(1, len(self._running))
        return int(min(60, max(1, math.ceil(self._avg_job_s / running))))

    def abort(self, origin: str | None = None, key: str | None = None) -> int:
        """Cancel waiting and running jobs that match; returns how many."""
        with self._cond:
            jobs = list(self._waiting) + list(self._running)
            hit = [j for j in jobs if not j.done and (key is None or j.key == key) and (origin is None or j.origin == origin)]
            for j in hit:
                j.cancel()
            self._cond.notify_all()
        return len(hit)

    def find(self, key: str) -> Job | None:
        with self._cond:
            for j in list(self._running) + list(self._waiting):
                if j.key == key:
                    return j
        return None

    def status(self) -> dict:
        with self._cond:
            return {
                "model": self.model_name,
                "family": self.model.family,
                "device": str(self.model.device),
                "active_streams": len(self._rows),
                "running_jobs": len(self._running),
                "waiting_jobs": len(self._waiting),
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                **self.stats,
            }

    def close(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            for j in list(self._waiting) + list(self._running):
                j.cancel()
            self._cond.notify_all()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._waiting and not self._rows:
                    self._cond.wait()
                if self._stop:
                    break
            try:
                self._admit()
                if self._rows:
                    self._step()
            except Exception as e:  # a bug or a device error: fail what is running, keep serving
                traceback.print_exc()
                self._fail_all(_err(500, f"内部错误（{type(e).__name__}），这次生成已停止",
                                    f"internal error ({type(e).__name__}); this generation was stopped", param=""))
        self._fail_all(_err(503, "服务器正在关闭", "the server is shutting down", param=""), include_waiting=True)

    def _fail_all(self, error: AIWriterError, include_waiting: bool = False) -> None:
        with self._cond:
            jobs = list(self._running) + (list(self._waiting) if include_waiting else [])
            self._running.clear()
            if include_waiting:
                self._waiting.clear()
            self._rows, self._state, self._logits = [], None, None
        for j in jobs:
            j.emit("error", error)

    def _next_job(self) -> Job | None:
        """The head of the queue if it can start now (FIFO: a big job is not overtaken)."""
        with self._cond:
            gone = [j for j in self._waiting if j.cancelled.is_set()]
            if gone:  # clients that left while queued free their place at once
                self._waiting = deque(j for j in self._waiting if not j.cancelled.is_set())
        for j in gone:
            j.emit("end")
        with self._cond:
            if not self._waiting:
                return None
            job = self._waiting[0]
            same_model = job.model in (None, self.model_name)
            if len(self._rows) + job.n > self.max_batch or (not same_model and self._rows):
                return None
            self._waiting.popleft()
            self._running.append(job)
            return job

    def _admit(self) -> None:
        while (job := self._next_job()) is not None:
            try:
                self._start(job)
            except (AIWriterError, _Cancelled) as e:
                with self._cond:
                    self._running.remove(job)
                self._drop_rows(lambda r: r.job is job)
                if isinstance(e, _Cancelled):
                    job.emit("end")
                else:
                    job.emit("error", e)

    def _switch_model(self, name: str) -> None:
        path, vocab = self.catalog.resolve(name)
        if name == self.catalog.default_name and self._given is not None:
            self.writer, self.model_name = Writer(self._given, _CountingCache(self.cache_bytes)), name
            return
        try:
            model = self._load(path, vocab=vocab, device=self.device, dtype=self.dtype)
            model.tokenizer.encode("\n")  # no usable vocab: refuse it now, keep the old model
        except AIWriterError as e:  # the message names the file as the request did, not where it lives on disk
            zh, en = (m.replace(str(path), name).replace(str(path.parent) + "/", "") for m in (e.zh, e.en))
            raise _err(422, f"无法载入模型：{zh}", f"cannot load the model: {en}")
        except Exception as e:  # a damaged file can fail anywhere in torch
            raise _err(422, f"无法载入模型（{type(e).__name__}）", f"cannot load the model ({type(e).__name__})")
        self.writer = Writer(model, _CountingCache(self.cache_bytes))  # the old model and its cache go
        self.model_name = name

    def _start(self, job: Job) -> None:
        if job.model not in (None, self.model_name):
            self._switch_model(job.model)

        def progress(done, total):
            if job.cancelled.is_set():
                raise _Cancelled()
            if self._rows:
                # a long opening is read chunk by chunk; the streams already writing take one
                # step between chunks instead of stalling until it is all read
                self._prefilling = job
                try:
                    self._step()
                finally:
                    self._prefilling = None

        reading = self.writer.read(job.prompt, progress=progress)
        model = self.writer.model
        streams = [Stream(model, reading, job.length, job.settings, run=i) for i in range(job.n)]
        if job.logprobs is not None:
            for s in streams:
                s.logprobs, s.top_logprobs = [], job.logprobs
        job.logprob_lists = [s.logprobs for s in streams]
        seed = job.seed if job.seed is not None else random.randrange(2**31)
        # a CPU generator: the same seed gives the same draws on any device (sampling.draw)
        job.generator = torch.Generator().manual_seed(seed)
        reused = self.writer.cache.last_hit
        self.stats["jobs"] += 1
        self.stats["prompt_ids"] += len(reading.ids)
        self.stats["reused_ids"] += reused
        self.stats["read_ids"] += len(reading.ids) - reused
        self.stats["cache_entries"], self.stats["cache_bytes"] = len(self.writer.cache), self.writer.cache.nbytes()
        job.info = {"model": self.model_name, "seed": seed, "prompt_ids": len(reading.ids), "reused_ids": reused,
                    "t0": time.perf_counter()}
        job.emit("start", job.info)
        state = reading.state.repeat(job.n)
        logits = reading.logits.unsqueeze(0).repeat(job.n, 1)
        with self._cond:
            self._rows += [_Row(job, s) for s in streams]
        self._state = state if self._state is None else State.stack([self._state, state])
        self._logits = logits if self._logits is None else torch.cat([self._logits, logits])

    def _drop_rows(self, drop: Callable[[_Row], bool]) -> None:
        keep = [i for i, r in enumerate(self._rows) if not drop(r)]
        if len(keep) == len(self._rows):
            return
        with self._cond:
            self._rows = [self._rows[i] for i in keep]
        if keep:
            self._state = self._state.select(keep)
            self._logits = self._logits.index_select(0, torch.tensor(keep, device=self._logits.device))
        else:
            self._state = self._logits = None

    def _step(self) -> None:
        self._drop_rows(lambda r: r.job.cancelled.is_set())
        self._finish_jobs()
        if not self._rows:
            return
        self.stats["steps"] += 1
        self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(self._rows))
        ids = [0] * len(self._rows)
        by_job: dict[int, list[int]] = {}
        for i, r in enumerate(self._rows):
            by_job.setdefault(id(r.job), []).append(i)
        for idx in by_job.values():
            job = self._rows[idx[0]].job
            rows = torch.tensor(idx, device=self._logits.device)
            try:
                group = self._logits.index_select(0, rows)
                drawn = next_ids(group, [self._rows[i].stream for i in idx], job.generator)
                record_logprobs(group, [self._rows[i].stream for i in idx], drawn)
            except AIWriterError as e:  # e.g. NaN logits: this job stops, the others go on
                job.emit("error", e)
                job.cancel()
                continue
            pieces = []
            for i, token in zip(idx, drawn):
                ids[i] = token
                s = self._rows[i].stream
                piece = s.feed(token)
                if piece:
                    job.texts[s.run] += piece
                    pieces.append((s.run, piece))
                    self.stats["written_chars"] += len(piece)
            if pieces:
                job.emit("pieces", pieces)
            for i in idx:
                s = self._rows[i].stream
                if s.done and job.finish[s.run] is None:
                    job.finish[s.run] = s.stopped_by
                    job.emit("finish", (s.run, s.stopped_by))
        alive = [i for i, r in enumerate(self._rows) if not r.stream.done and not r.job.cancelled.is_set()]
        self._drop_rows(lambda r: r.stream.done or r.job.cancelled.is_set())
        self._finish_jobs()
        if alive:
            self._logits, self._state = self.writer.model.forward_batch([ids[i] for i in alive], self._state)

    def _finish_jobs(self) -> None:
        """End the running jobs that have no rows left (all runs done, or cancelled)."""
        live = {id(r.job) for r in self._rows}
        if self._prefilling is not None:
            live.add(id(self._prefilling))  # being read: it has no rows yet, but it has not ended
        with self._cond:
            ended = [j for j in self._running if id(j) not in live]
            self._running = [j for j in self._running if id(j) in live]
        for j in ended:
            if "t0" in j.info and not j.cancelled.is_set():
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (time.perf_counter() - j.info["t0"])
            j.emit("end")
