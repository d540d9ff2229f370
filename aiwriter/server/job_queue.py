"""The jobs the server has taken on: those waiting for room (a bounded FIFO queue) and those
running (admitted: reading their opening, writing, or paused).

It exists because these two lists are the only state that request threads and the scheduler's
thread share: every change to them happens under one lock, here, with the answers a request gets
from them (400 for an n that could never start, 429 with Retry-After when the queue is full,
503 while closing, abort, find). Which job starts when is the scheduler's call; the queue only
keeps the order (first in, first out: a big job is not overtaken).
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

from aiwriter.server.jobs import Job, QueueFull
from aiwriter.server.replies import ApiError


class JobQueue:
    def __init__(self, *, max_batch: int, max_queue: int, clock: Callable[[], float] = time.monotonic):
        self.max_batch, self.max_queue = max_batch, max_queue
        self.clock = clock
        self.cond = threading.Condition()  # guards waiting, running, stopped; the worker waits on it
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.stopped = False
        self.blocked_since: float | None = None  # since when the head has waited for room
        self.avg_job_s = 5.0                     # how long a job runs, on average (for Retry-After)

    # ------------------------------------------------------------------ called from requests

    def submit(self, job: Job, on_taken: Callable[[Job], None] | None = None) -> Job:
        if job.n > self.max_batch:  # it could never start
            raise ApiError(400, f"字段 n 最多为 {self.max_batch}（本服务器一批最多写 {self.max_batch} 条）",
                           f"field 'n' may be at most {self.max_batch} (the most streams this server writes at once)",
                           param="n")
        with self.cond:
            if self.stopped:
                raise ApiError(503, "服务器正在关闭", "the server is shutting down")
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(self.retry_after())
            job._on_taken = on_taken
            self.waiting.append(job)
            self.cond.notify_all()
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: one frees each time a running job
        ends, and those end about every avg_job_s / running seconds. (The length of a whole job
        would be too long: clients told to wait that long lose every race for a free place to
        clients that just finished and ask again at once.)"""
        with self.cond:
            running = max(1, len(self.running))
        return int(min(60, max(1, math.ceil(self.avg_job_s / running))))

    def abort(self, origin: str | None = None, key: str | None = None) -> int:
        """Cancel waiting and running jobs that match; returns how many."""
        with self.cond:
            jobs = list(self.waiting) + list(self.running)
            hit = [j for j in jobs if not j.done and (key is None or j.key == key) and (origin is None or j.origin == origin)]
            for j in hit:
                j.cancel()
            self.cond.notify_all()
        return len(hit)

    def find(self, key: str) -> Job | None:
        with self.cond:
            for j in list(self.running) + list(self.waiting):
                if j.key == key:
                    return j
        return None

    def close(self) -> None:
        """No more jobs; every one taken on is cancelled."""
        with self.cond:
            self.stopped = True
            for j in list(self.waiting) + list(self.running):
                j.cancel()
            self.cond.notify_all()

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    # ------------------------------------------------------------------ called by the scheduler

    def head(self) -> Job | None:
        return self.waiting[0] if self.waiting else None

    def any_cancelled_waiting(self) -> bool:
        return any(j.cancelled.is_set() for j in self.waiting)

    def waited_since(self) -> float:
        """Since when the head has waited for room (from now, the first time this is asked)."""
        if self.blocked_since is None:
            self.blocked_since = self.clock()
        return self.blocked_since

    def admit_head(self) -> Job:
        """The head leaves the queue and runs."""
        with self.cond:
            job = self.waiting.popleft()
            self.running.append(job)
            self.blocked_since = None
        return job

    def drop_cancelled(self) -> list[Job]:
        """Waiting jobs whose client left free their place at once; returns them."""
        with self.cond:
            gone = [j for j in self.waiting if j.cancelled.is_set()]
            if gone:
                self.waiting = deque(j for j in self.waiting if not j.cancelled.is_set())
                self.blocked_since = None
        return gone

    def unrun(self, job: Job) -> None:
        """A job that could not start after all (its model or state failed to load)."""
        with self.cond:
            self.running.remove(job)

    def end_running(self, live: set[int]) -> list[Job]:
        """The running jobs whose id is not in `live` end: returned, and counted in avg_job_s
        (those that ran to the end)."""
        with self.cond:
            ended = [j for j in self.running if id(j) not in live]
            self.running = [j for j in self.running if id(j) in live]
        for j in ended:
            if "t0" in j.info and not j.cancelled.is_set():
                self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * (time.perf_counter() - j.info["t0"])
        return ended

    def take_all(self, include_waiting: bool = False) -> list[Job]:
        """Empty the running list (and the queue): for failing them all at once."""
        with self.cond:
            jobs = list(self.running) + (list(self.waiting) if include_waiting else [])
            self.running.clear()
            if include_waiting:
                self.waiting.clear()
        return jobs
