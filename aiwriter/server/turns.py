"""Who may keep a slot of the batch: jobs out of the batch, paused, and when they come back.

It exists because the batch has max_batch slots and two kinds of job would otherwise hold them
forever: a job whose client stops reading its stream (a slow reader: paused once it has
max_backlog unread chars per stream, resumed when its client has read half of that, stopped
after stall_timeout seconds), and a very long job while others wait for room (after turn_after
seconds the one that has written the most pauses for the waiting one and gets its turn back
later, in the order turns were given up). Decisions only: the scheduler says who waits for room
and owns the batch these streams leave and rejoin. The clock is a parameter so that tests can
drive it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from aiwriter.server.jobs import Job
from aiwriter.server.replies import ApiError
from aiwriter.server.stats import SchedulerStats
from aiwriter.writer import Batch, Parked


@dataclass
class Paused:
    job: Job
    parked: Parked
    since: float  # when it was paused (a slow one is stopped stall_timeout after)
    slow: bool    # paused because its client stopped reading (else: to give another job a turn)


class Turns:
    """The paused jobs and when each job (re)joined the batch. The scheduler's thread alone
    calls it, except reader_caught_up (from a response)."""

    def __init__(self, stats: SchedulerStats, *, max_batch: int, max_backlog: int, stall_timeout: float,
                 turn_after: float, clock: Callable[[], float] = time.monotonic):
        self.stats = stats
        self.max_batch = max_batch
        # chars per stream a client may leave unread before its job is paused; how long a paused
        # job waits for its client before it is stopped
        self.max_backlog, self.stall_timeout = max_backlog, stall_timeout
        self.turn_after = turn_after  # seconds a job waits for room before a long-running one pauses for it
        self.clock = clock
        self.paused: dict[int, Paused] = {}        # id(job) -> its streams, out of the batch
        self.turn_started: dict[int, float] = {}   # id(job) -> when it (re)joined the batch

    # ------------------------------------------------------------------ what the scheduler asks

    def waiting_turns(self) -> list[Paused]:
        """Jobs paused to give others a turn, oldest first: they start again before the queue."""
        return sorted((p for p in self.paused.values() if not p.slow), key=lambda p: p.since)

    def fits(self, p: Paused, used: int) -> bool:
        """Whether a paused job may rejoin a batch with `used` slots taken."""
        if p.slow and p.job.backlog > self.max_backlog * p.job.n // 2:
            return False  # its client has not read enough yet
        return used + len(p.parked.streams) <= self.max_batch

    def reader_caught_up(self, job: Job) -> bool:
        """Whether a job paused for its slow client may resume now that the client read."""
        p = self.paused.get(id(job))
        return p is not None and p.slow and job.backlog <= self.max_backlog * job.n // 2

    def paused_streams(self) -> int:
        return sum(len(p.parked.streams) for p in list(self.paused.values()))

    # ------------------------------------------------------------------ bookkeeping

    def started(self, job: Job) -> None:
        """A job joined the batch: its turn starts now."""
        self.turn_started[id(job)] = self.clock()

    def forget(self, job: Job) -> None:
        """A job ended."""
        self.turn_started.pop(id(job), None)

    def prune(self) -> None:
        """Drop the paused jobs whose client left or that were aborted."""
        self.paused = {k: p for k, p in self.paused.items() if not p.job.cancelled.is_set()}

    def clear(self) -> None:
        self.paused = {}

    # ------------------------------------------------------------------ the decisions

    def pause(self, batch: Batch, job: Job, slow: bool) -> None:
        self.paused[id(job)] = Paused(job, batch.take(job), self.clock(), slow)
        if slow:
            self.stats.paused_jobs += 1
        else:
            self.stats.turns_given += 1

    def resume(self, batch: Batch, p: Paused, now: float) -> None:
        del self.paused[id(p.job)]
        batch.put(p.parked)
        self.turn_started[id(p.job)] = now

    def pause_slow_readers(self, batch: Batch) -> None:
        """A job whose client has not taken max_backlog chars per stream leaves the batch."""
        owners = {id(o): o for o in batch.owners}
        for job in owners.values():
            if job.backlog > self.max_backlog * job.n:
                self.pause(batch, job, slow=True)
        for p in self.paused.values():  # one paused for its turn may have a slow client too
            if not p.slow and p.job.backlog > self.max_backlog * p.job.n:
                p.slow, p.since = True, self.clock()

    def resume_or_stop(self, batch: Batch, other_slots: int) -> None:
        """Paused jobs that fit rejoin the batch (slow readers that caught up first, then turns in
        the order they were given up); a slow reader paused for stall_timeout is stopped.
        other_slots: slots held outside the batch (openings being read)."""
        now = self.clock()
        for p in sorted(self.paused.values(), key=lambda p: (not p.slow, p.since)):
            if self.fits(p, len(batch) + other_slots) and (p.slow or p is self.waiting_turns()[0]):
                self.resume(batch, p, now)
            elif p.slow and now - p.since > self.stall_timeout:
                del self.paused[id(p.job)]
                self.stats.dropped_slow += 1
                p.job.emit("error", ApiError(408, f"客户端 {self.stall_timeout:g} 秒没有读取，这次生成已停止",
                                             f"the client did not read for {self.stall_timeout:g} s; this generation "
                                             f"was stopped", kind="timeout"))
                p.job.cancel()

    def make_room(self, batch: Batch, other_slots: int, need: int, since: float) -> float | None:
        """A job that needs `need` slots has waited for room since `since`. Once it has waited
        turn_after seconds, the jobs in the batch that have written the most, among those whose
        turn has lasted turn_after seconds, pause (slow=False) until it fits: streams whose
        clients never read (or very long ones) cannot keep every slot while others wait.
        Returns when the room was made (the waiting job is to start then), or None."""
        now = self.clock()
        used = len(batch) + other_slots
        if now - since < self.turn_after or used + need <= self.max_batch:
            return None
        owners = {id(o): o for o in batch.owners}
        victims, room = [], self.max_batch - used
        for job in sorted((j for j in owners.values() if now - self.turn_started.get(id(j), now) >= self.turn_after),
                          key=lambda j: -sum(len(t) for t in j.texts)):
            if room >= need:
                break
            victims.append(job)
            room += job.n
        if room < need:
            return None  # not enough room yet: the jobs in the batch have not had their turn
        for job in victims:
            self.pause(batch, job, slow=False)
            self.paused[id(job)].since = now  # it waits behind the one it made room for
        return now
