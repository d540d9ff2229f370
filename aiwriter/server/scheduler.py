"""One background thread owns the model and writes for every request at once.

This module is the loop that ties the server's parts together, one tick at a time: the queue
(job_queue.py: admission, waiting, 429), the model held in memory (model_slot.py: switching
models, start states), the openings being read chunk by chunk (openings.py), and who keeps a
slot of the batch (turns.py: slow readers paused, resumed or stopped; long jobs taking turns).
Every step of the batch writes one id of every stream in ONE forward (writer.Batch, the same
loop as `aiwriter write`); a job whose client left or was aborted is dropped at the next step.
Requests naming another model wait until the current model has nothing in hand, then the
worker swaps models (one model in memory).
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

from aiwriter.engine import Model
from aiwriter.errors import AIWriterError
from aiwriter.server.catalog import ModelCatalog, StateCatalog
from aiwriter.server.job_queue import JobQueue
from aiwriter.server.jobs import Job, QueueFull
from aiwriter.server.model_slot import ModelSlot
from aiwriter.server.openings import Openings, job_streams
from aiwriter.server.replies import ApiError
from aiwriter.server.stats import SchedulerStats
from aiwriter.server.turns import Turns
from aiwriter.writer import Batch, ReadingTask

__all__ = ["Job", "ModelCatalog", "QueueFull", "Scheduler"]


class Scheduler:
    def __init__(self, catalog: ModelCatalog, model: Model | None = None, *, device: str = "cpu", dtype=None,
                 max_batch: int = 16, max_queue: int = 32, cache_bytes: int = 256 * 2**20,
                 loader: Callable[..., Model] | None = None, max_backlog: int = 1024, stall_timeout: float = 60.0,
                 turn_after: float = 2.0, states: StateCatalog | None = None, state_cache_bytes: int = 0):
        self.max_batch, self.max_queue = max_batch, max_queue
        # chars per stream a client may leave unread before its job is paused; how long a paused
        # job (and a response its client does not read) waits before it is stopped
        self.max_backlog, self.stall_timeout = max_backlog, stall_timeout
        self.slot = ModelSlot(catalog, model, device=device, dtype=dtype, cache_bytes=cache_bytes, loader=loader,
                              states=states, state_cache_bytes=state_cache_bytes)
        self._batch = Batch(self.slot.model)
        self.queue = JobQueue(max_batch=max_batch, max_queue=max_queue)
        self._openings = Openings()
        self.stats = SchedulerStats()  # the worker alone writes them (the cache is not thread-safe)
        self.turns = Turns(self.stats, max_batch=max_batch, max_backlog=max_backlog, stall_timeout=stall_timeout,
                           turn_after=turn_after)
        self._cond = self.queue.cond
        self._thread = threading.Thread(target=self._run, name="aiwriter-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ what the endpoints read

    @property
    def model(self) -> Model:
        return self.slot.model

    @property
    def writer(self):
        return self.slot.writer

    @property
    def model_name(self) -> str:
        return self.slot.name

    @property
    def catalog(self) -> ModelCatalog:
        return self.slot.catalog

    @property
    def states(self) -> StateCatalog:
        return self.slot.states

    # the queue's running list and average job length, under the names tests set them by
    @property
    def _running(self) -> list[Job]:
        return self.queue.running

    @_running.setter
    def _running(self, jobs: list[Job]) -> None:
        self.queue.running = jobs

    @property
    def _avg_job_s(self) -> float:
        return self.queue.avg_job_s

    @_avg_job_s.setter
    def _avg_job_s(self, seconds: float) -> None:
        self.queue.avg_job_s = seconds

    # ------------------------------------------------------------------ called from requests

    def submit(self, job: Job) -> Job:
        return self.queue.submit(job, on_taken=self._taken)

    def _taken(self, job: Job) -> None:
        """A response took text: wake the worker if that job is paused and may resume."""
        if self.turns.reader_caught_up(job):
            self.queue.wake()

    def retry_after(self) -> int:
        return self.queue.retry_after()

    def abort(self, origin: str | None = None, key: str | None = None) -> int:
        """Cancel waiting and running jobs that match; returns how many."""
        return self.queue.abort(origin, key)

    def find(self, key: str) -> Job | None:
        return self.queue.find(key)

    def status(self) -> dict:
        with self._cond:
            return {
                "model": self.model_name,
                "family": self.model.family,
                "device": str(self.model.device),
                "active_streams": len(self._batch),
                "running_jobs": len(self.queue.running),
                "waiting_jobs": len(self.queue.waiting),
                "reading_jobs": len(self._openings),
                "paused_streams": self.turns.paused_streams(),
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                **self.stats.as_dict(),
            }

    def close(self, timeout: float = 10.0) -> None:
        self.queue.close()
        self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self.queue.stopped and not self._has_work():
                    # paused jobs are looked at now and then: a turn or a stall may have run out
                    self._cond.wait(0.25 if self.turns.paused else None)
                    if self.turns.paused:
                        break
                if self.queue.stopped:
                    break
            try:
                self._tick()
            except Exception as e:  # a bug or a device error: fail what is running, keep serving
                traceback.print_exc()
                self._fail_all(ApiError(500, f"内部错误（{type(e).__name__}），这次生成已停止",
                                        f"internal error ({type(e).__name__}); this generation was stopped"))
        self._fail_all(ApiError(503, "服务器正在关闭", "the server is shutting down"), include_waiting=True)

    def _has_work(self) -> bool:
        head = self.queue.head()
        return bool(len(self._batch) or self._openings or (head is not None and self._can_start(head))
                    or self.queue.any_cancelled_waiting()
                    or any(p.job.cancelled.is_set() or self.turns.fits(p, self._slots_used())
                           for p in self.turns.paused.values()))

    def _tick(self) -> None:
        self._prune()
        self.turns.pause_slow_readers(self._batch)
        self.turns.resume_or_stop(self._batch, self._openings.slots())
        self._admit()
        self._take_turns()
        self._openings.read_a_chunk(self._join)
        if len(self._batch):
            self._step()
        self._finish_jobs()

    def _fail_all(self, error: ApiError, include_waiting: bool = False) -> None:
        jobs = self.queue.take_all(include_waiting)
        with self._cond:
            self._openings.clear()
            self.turns.clear()
            self._batch = Batch(self.model)
        for j in jobs:
            j.emit("error", error)

    def _slots_used(self) -> int:
        return len(self._batch) + self._openings.slots()

    def _can_start(self, job: Job) -> bool:
        if self.slot.holds(job.model):
            return not self.turns.waiting_turns() and self._slots_used() + job.n <= self.max_batch
        return not (len(self._batch) or self._openings or self.turns.paused)  # another model: when nothing is in hand

    def _prune(self) -> None:
        """Drop what belongs to jobs whose client left or that were aborted."""
        for j in self.queue.drop_cancelled():  # clients that left while queued free their place at once
            j.emit("end")
        self._openings.prune()
        self.turns.prune()
        self._batch.drop(lambda s, job: job.cancelled.is_set())

    def _admit(self) -> None:
        """Start the queue's head while it fits (FIFO: a big job is not overtaken)."""
        while True:
            with self._cond:
                head = self.queue.head()
                if head is None or not self._can_start(head):
                    return
                job = self.queue.admit_head()
            self._start(job)

    def _start(self, job: Job) -> None:
        """An admitted job: its model in memory, its opening about to be read."""
        try:
            if not self.slot.holds(job.model):
                self.slot.switch(job.model)
                self._batch = Batch(self.slot.model)  # empty: a switch waits until nothing is in hand
            start = self.slot.start_state(job.state)
            self._openings.add(job, self.writer.start_reading(job.prompt, start=start))
        except AIWriterError as e:
            self.queue.unrun(job)
            job.emit("error", ApiError.of(e))

    def _join(self, job: Job, task: ReadingTask) -> None:
        """A read opening: the job's streams join the batch."""
        reading = task.reading()
        streams, seed, generator = job_streams(job, self.writer.model, reading)
        job.logprob_lists = [s.logprobs for s in streams]
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
        self.turns.started(job)
        self._batch.add(reading, streams, owner=job, generator=generator)

    def _take_turns(self) -> None:
        """A job waiting for room (a paused one, else the queue's head if it runs on this model)
        gets it from the jobs in the batch once it has waited turn_after seconds (turns.py)."""
        turns = self.turns.waiting_turns()
        head = self.queue.head()
        if turns:
            need, since = len(turns[0].parked.streams), turns[0].since
        elif head is not None and self.slot.holds(head.model):
            need, since = head.n, self.queue.waited_since()
        else:
            return
        now = self.turns.make_room(self._batch, self._openings.slots(), need, since)
        if now is None:
            return
        if turns:
            self.turns.resume(self._batch, turns[0], now)
        else:
            self._start(self.queue.admit_head())

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
        live = {id(o) for o in self._batch.owners} | self._openings.job_ids() | set(self.turns.paused)
        for j in self.queue.end_running(live):
            self.turns.forget(j)
            if not j.done:
                j.emit("end")
