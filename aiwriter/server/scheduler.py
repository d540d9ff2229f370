"""One background thread owns the model and writes for every request at once.

Requests wait in a bounded queue (QueueFull -> the server answers 429). Each admitted job's
opening is read chunk by chunk (writer.ReadingTask), the shortest first, one chunk between two
steps of the batch: a long opening neither stalls the streams already writing nor the short
requests that come after it. A read opening gives the job n writer.Streams, which join the
writer.Batch; every step of the batch writes one id of every stream in ONE forward (the same
loop as `aiwriter write`). A job whose client left or was aborted is dropped at the next step;
a job whose client stops reading is paused (its streams leave the batch, freeing their slots)
and resumes when the client reads again, or is stopped after stall_timeout seconds. Requests
naming another model wait until the current model has nothing in hand, then the worker swaps
models (one model in memory).
"""
from __future__ import annotations

import math
import random
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from aiwriter.engine import Model, PrefixCache, State, load_model
from aiwriter.errors import AIWriterError
from aiwriter.server.catalog import ModelCatalog, StateCatalog
from aiwriter.server.jobs import Job, QueueFull
from aiwriter.server.replies import ApiError
from aiwriter.server.stats import SchedulerStats
from aiwriter.writer import Batch, Parked, ReadingTask, Stream, Writer

__all__ = ["Job", "ModelCatalog", "QueueFull", "Scheduler"]


@dataclass
class _Paused:
    job: Job
    parked: Parked
    since: float  # when it was paused (a slow one is stopped stall_timeout after)
    slow: bool    # paused because its client stopped reading (else: to give another job a turn)


class Scheduler:
    def __init__(self, catalog: ModelCatalog, model: Model | None = None, *, device: str = "cpu", dtype=None,
                 max_batch: int = 16, max_queue: int = 32, cache_bytes: int = 256 * 2**20,
                 loader: Callable[..., Model] | None = None, max_backlog: int = 1024, stall_timeout: float = 60.0,
                 turn_after: float = 2.0, states: StateCatalog | None = None, state_cache_bytes: int = 0):
        self.catalog = catalog
        self.states = states or StateCatalog(None)
        self.state_cache_bytes = state_cache_bytes  # disk state cache budget; 0 = off
        self._loaded_states: dict[tuple, State] = {}
        self.device, self.dtype = device, dtype
        self.max_batch, self.max_queue, self.cache_bytes = max_batch, max_queue, cache_bytes
        # chars per stream a client may leave unread before its job is paused; how long a paused
        # job (and a response its client does not read) waits before it is stopped
        self.max_backlog, self.stall_timeout = max_backlog, stall_timeout
        self.turn_after = turn_after  # seconds a job waits for room before a long-running one pauses for it
        self._load = loader or load_model
        self.model_name = catalog.default_name
        self._given = model  # a model handed in (tests, embedding) is kept to switch back to
        if model is None:
            path, vocab = catalog.resolve(self.model_name)
            model = self._load(path, vocab=vocab, device=device, dtype=dtype)
        self._use(model)
        self._waiting: deque[Job] = deque()
        self._running: list[Job] = []                    # admitted: reading, in the batch or paused
        self._reading: list[tuple[Job, ReadingTask]] = []
        self._paused: dict[int, _Paused] = {}            # id(job) -> its streams, out of the batch
        self._turn_started: dict[int, float] = {}        # id(job) -> when it (re)joined the batch
        self._blocked_since: float | None = None         # since when the queue's head waits for room
        self._cond = threading.Condition()
        self._stop = False
        self._avg_job_s = 5.0
        self.stats = SchedulerStats()  # the worker alone writes them (the cache is not thread-safe)
        self._thread = threading.Thread(target=self._run, name="aiwriter-scheduler", daemon=True)
        self._thread.start()

    def _use(self, model: Model) -> None:
        disk = None
        if self.state_cache_bytes > 0:
            from aiwriter.state_cache import DiskStateCache

            disk = DiskStateCache(model, max_bytes=self.state_cache_bytes)
        self._loaded_states = {}
        self.writer = Writer(model, PrefixCache(self.cache_bytes), disk=disk)  # the old model and its cache go
        self._batch = Batch(model)

    # ------------------------------------------------------------------ called from requests

    @property
    def model(self) -> Model:
        return self.writer.model

    def submit(self, job: Job) -> Job:
        if job.n > self.max_batch:  # it could never start
            raise ApiError(400, f"字段 n 最多为 {self.max_batch}（本服务器一批最多写 {self.max_batch} 条）",
                           f"field 'n' may be at most {self.max_batch} (the most streams this server writes at once)",
                           param="n")
        with self._cond:
            if self._stop:
                raise ApiError(503, "服务器正在关闭", "the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self.retry_after())
            job._on_taken = self._taken
            self._waiting.append(job)
            self._cond.notify_all()
        return job

    def _taken(self, job: Job) -> None:
        """A response took text: wake the worker if that job is paused and may resume."""
        p = self._paused.get(id(job))
        if p is not None and p.slow and job.backlog <= self.max_backlog * job.n // 2:
            with self._cond:
                self._cond.notify_all()

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
                "active_streams": len(self._batch),
                "running_jobs": len(self._running),
                "waiting_jobs": len(self._waiting),
                "reading_jobs": len(self._reading),
                "paused_streams": sum(len(p.parked.streams) for p in list(self._paused.values())),
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                **self.stats.as_dict(),
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
                while not self._stop and not self._has_work():
                    # paused jobs are looked at now and then: a turn or a stall may have run out
                    self._cond.wait(0.25 if self._paused else None)
                    if self._paused:
                        break
                if self._stop:
                    break
            try:
                self._tick()
            except Exception as e:  # a bug or a device error: fail what is running, keep serving
                traceback.print_exc()
                self._fail_all(ApiError(500, f"内部错误（{type(e).__name__}），这次生成已停止",
                                        f"internal error ({type(e).__name__}); this generation was stopped"))
        self._fail_all(ApiError(503, "服务器正在关闭", "the server is shutting down"), include_waiting=True)

    def _has_work(self) -> bool:
        return bool(len(self._batch) or self._reading or (self._waiting and self._can_start(self._waiting[0]))
                    or any(j.cancelled.is_set() for j in self._waiting)
                    or any(p.job.cancelled.is_set() or self._fits(p) for p in self._paused.values()))

    def _tick(self) -> None:
        self._prune()
        self._pause_slow_readers()
        self._resume_or_stop_paused()
        self._admit()
        self._take_turns()
        self._read_a_chunk()
        if len(self._batch):
            self._step()
        self._finish_jobs()

    def _fail_all(self, error: ApiError, include_waiting: bool = False) -> None:
        with self._cond:
            jobs = list(self._running) + (list(self._waiting) if include_waiting else [])
            self._running.clear()
            if include_waiting:
                self._waiting.clear()
            self._reading, self._paused = [], {}
            self._batch = Batch(self.model)
        for j in jobs:
            j.emit("error", error)

    def _slots_used(self) -> int:
        return len(self._batch) + sum(job.n for job, _ in self._reading)

    def _turns_waiting(self) -> list["_Paused"]:
        """Jobs paused to give others a turn, oldest first: they start again before the queue."""
        return sorted((p for p in self._paused.values() if not p.slow), key=lambda p: p.since)

    def _can_start(self, job: Job) -> bool:
        if job.model in (None, self.model_name):
            return not self._turns_waiting() and self._slots_used() + job.n <= self.max_batch
        return not (len(self._batch) or self._reading or self._paused)  # another model: when nothing is in hand

    def _prune(self) -> None:
        """Drop what belongs to jobs whose client left or that were aborted."""
        with self._cond:
            gone = [j for j in self._waiting if j.cancelled.is_set()]
            if gone:  # clients that left while queued free their place at once
                self._waiting = deque(j for j in self._waiting if not j.cancelled.is_set())
                self._blocked_since = None
        for j in gone:
            j.emit("end")
        self._reading = [(j, t) for j, t in self._reading if not j.cancelled.is_set()]
        self._paused = {k: p for k, p in self._paused.items() if not p.job.cancelled.is_set()}
        self._batch.drop(lambda s, job: job.cancelled.is_set())

    def _admit(self) -> None:
        """Start the queue's head while it fits (FIFO: a big job is not overtaken)."""
        while True:
            with self._cond:
                if not self._waiting or not self._can_start(self._waiting[0]):
                    return
                job = self._waiting.popleft()
                self._running.append(job)
                self._blocked_since = None
            self._start(job)

    def _start(self, job: Job) -> None:
        """An admitted job: its model in memory, its opening about to be read."""
        try:
            if job.model not in (None, self.model_name):
                self._switch_model(job.model)
            start = self._start_state(job.state)
            self._reading.append((job, self.writer.start_reading(job.prompt, start=start)))
        except AIWriterError as e:
            with self._cond:
                self._running.remove(job)
            job.emit("error", ApiError.of(e))

    def _start_state(self, name: str | None) -> State | None:
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
                zh, en = (m.replace(str(path), name).replace(str(path.parent) + "/", "") for m in (e.zh, e.en))
                raise ApiError(422, f"无法使用状态文件：{zh}", f"cannot use the state file: {en}", param="state")
            if len(self._loaded_states) >= 16:
                self._loaded_states.pop(next(iter(self._loaded_states)))
            self._loaded_states[key] = state
        return self._loaded_states[key]

    def _read_a_chunk(self) -> None:
        """Read one chunk of the opening with the least left to read (short requests start at
        once); openings read to the end join the batch."""
        for job, task in [r for r in self._reading if r[1].done]:  # all in the prefix cache
            self._join(job, task)
        if self._reading:
            job, task = min(self._reading, key=lambda r: len(r[1].ids) - r[1].pos)
            if task.advance():
                self._join(job, task)

    def _join(self, job: Job, task: ReadingTask) -> None:
        self._reading = [r for r in self._reading if r[0] is not job]
        reading = task.reading()
        model = self.writer.model
        streams = [Stream(model, reading, job.length, job.settings, run=i, finish_sentence=job.finish_sentence)
                   for i in range(job.n)]
        if job.logprobs is not None:
            for s in streams:
                s.logprobs, s.top_logprobs = [], job.logprobs
        job.logprob_lists = [s.logprobs for s in streams]
        seed = job.seed if job.seed is not None else random.randrange(2**31)
        # a CPU generator: the same seed gives the same draws on any device (sampling.draw)
        generator = torch.Generator().manual_seed(seed)
        st = self.stats
        st.jobs += 1
        st.prompt_ids += len(reading.ids)
        st.reused_ids += task.reused
        st.read_ids += len(reading.ids) - task.reused
        st.cache_entries, st.cache_bytes = len(self.writer.cache), self.writer.cache.nbytes()
        st.disk_ids += task.from_disk
        job.info = {"model": self.model_name, "seed": seed, "prompt_ids": len(reading.ids), "reused_ids": task.reused,
                    "disk_ids": task.from_disk, "state": job.state,
                    "t0": time.perf_counter()}
        job.emit("start", job.info)
        self._turn_started[id(job)] = time.monotonic()
        self._batch.add(reading, streams, owner=job, generator=generator)

    def _switch_model(self, name: str) -> None:
        path, vocab = self.catalog.resolve(name)
        if name == self.catalog.default_name and self._given is not None:
            self._use(self._given)
            self.model_name = name
            return
        try:
            model = self._load(path, vocab=vocab, device=self.device, dtype=self.dtype)
            model.tokenizer.encode("\n")  # no usable vocab: refuse it now, keep the old model
        except AIWriterError as e:  # the message names the file as the request did, not where it lives on disk
            zh, en = (m.replace(str(path), name).replace(str(path.parent) + "/", "") for m in (e.zh, e.en))
            raise ApiError(422, f"无法载入模型：{zh}", f"cannot load the model: {en}", param="model")
        except Exception as e:  # a damaged file can fail anywhere in torch
            raise ApiError(422, f"无法载入模型（{type(e).__name__}）", f"cannot load the model ({type(e).__name__})",
                           param="model")
        self._use(model)
        self.model_name = name

    # ------------------------------------------------------------------ taking turns, slow readers

    def _pause(self, job: Job, slow: bool) -> None:
        self._paused[id(job)] = _Paused(job, self._batch.take(job), time.monotonic(), slow)
        if slow:
            self.stats.paused_jobs += 1
        else:
            self.stats.turns_given += 1

    def _fits(self, p: "_Paused") -> bool:
        if p.slow and p.job.backlog > self.max_backlog * p.job.n // 2:
            return False  # its client has not read enough yet
        return self._slots_used() + len(p.parked.streams) <= self.max_batch

    def _pause_slow_readers(self) -> None:
        """A job whose client has not taken max_backlog chars per stream leaves the batch."""
        owners = {id(o): o for o in self._batch.owners}
        for job in owners.values():
            if job.backlog > self.max_backlog * job.n:
                self._pause(job, slow=True)
        for p in self._paused.values():  # one paused for its turn may have a slow client too
            if not p.slow and p.job.backlog > self.max_backlog * p.job.n:
                p.slow, p.since = True, time.monotonic()

    def _resume_or_stop_paused(self) -> None:
        now = time.monotonic()
        for p in sorted(self._paused.values(), key=lambda p: (not p.slow, p.since)):
            if self._fits(p) and (p.slow or p is self._turns_waiting()[0]):  # turns in the order given up
                del self._paused[id(p.job)]
                self._batch.put(p.parked)
                self._turn_started[id(p.job)] = now
            elif p.slow and now - p.since > self.stall_timeout:
                del self._paused[id(p.job)]
                self.stats.dropped_slow += 1
                p.job.emit("error", ApiError(408, f"客户端 {self.stall_timeout:g} 秒没有读取，这次生成已停止",
                                             f"the client did not read for {self.stall_timeout:g} s; this generation "
                                             f"was stopped", kind="timeout"))
                p.job.cancel()

    def _take_turns(self) -> None:
        """When a job has waited turn_after seconds for room (a paused one, else the queue's
        head), the job in the batch that has written the most and had a turn of at least
        turn_after seconds makes room, until the waiting job fits: streams whose clients never
        read (or very long ones) cannot keep every slot while others wait."""
        turns = self._turns_waiting()
        if turns:
            need = len(turns[0].parked.streams)
            since = turns[0].since
        elif self._waiting and self._waiting[0].model in (None, self.model_name):
            need = self._waiting[0].n
            if self._blocked_since is None:
                self._blocked_since = time.monotonic()
            since = self._blocked_since
        else:
            return
        now = time.monotonic()
        if now - since < self.turn_after or self._slots_used() + need <= self.max_batch:
            return
        owners = {id(o): o for o in self._batch.owners}
        victims, room = [], self.max_batch - self._slots_used()
        for job in sorted((j for j in owners.values() if now - self._turn_started.get(id(j), now) >= self.turn_after),
                          key=lambda j: -sum(len(t) for t in j.texts)):
            if room >= need:
                break
            victims.append(job)
            room += job.n
        if room < need:
            return  # not enough room yet: the jobs in the batch have not had their turn
        for job in victims:
            self._pause(job, slow=False)
            self._paused[id(job)].since = now  # it waits behind the one it made room for
        if turns:
            p = turns[0]
            del self._paused[id(p.job)]
            self._batch.put(p.parked)
            self._turn_started[id(p.job)] = now
        else:
            with self._cond:
                job = self._waiting.popleft()
                self._running.append(job)
                self._blocked_since = None
            self._start(job)

    # ------------------------------------------------------------------ stepping

    def _step(self) -> None:
        st = self.stats
        st.steps += 1
        st.max_batch_seen = max(st.max_batch_seen, len(self._batch))
        out = self._batch.step()
        pieces: dict[int, list] = {}
        finished: dict[int, list] = {}
        jobs: dict[int, Job] = {}
        for job, s, text in out.pieces:
            jobs[id(job)] = job
            if text:
                job.texts[s.run] += text
                pieces.setdefault(id(job), []).append((s.run, text))
                st.written_chars += len(text)
            if s.done and job.finish[s.run] is None:
                job.finish[s.run] = s.stopped_by
                finished.setdefault(id(job), []).append((s.run, s.stopped_by))
        for key, job in jobs.items():
            if key in pieces:
                job.emit("pieces", pieces[key])
            for run_reason in finished.get(key, ()):
                job.emit("finish", run_reason)
        for job, error in out.failed:  # e.g. NaN logits: this job stops, the others go on
            job.emit("error", ApiError.of(error, status=500))
            job.cancel()

    def _finish_jobs(self) -> None:
        """End the running jobs with nothing left: all runs done, or cancelled."""
        live = {id(o) for o in self._batch.owners} | {id(j) for j, _ in self._reading} | set(self._paused)
        with self._cond:
            ended = [j for j in self._running if id(j) not in live]
            self._running = [j for j in self._running if id(j) in live]
        for j in ended:
            self._turn_started.pop(id(j), None)
            if "t0" in j.info and not j.cancelled.is_set():
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (time.perf_counter() - j.info["t0"])
            if not j.done:
                j.emit("end")
