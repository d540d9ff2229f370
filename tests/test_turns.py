"""server/turns.py: which jobs leave the batch and when they come back, driven by a fake clock
and a fake batch (slots only): slow readers paused at max_backlog unread chars per stream,
resumed once they read half of it, stopped after stall_timeout; long jobs pausing for a job that
waited turn_after seconds, and getting their turn back in the order they gave it up."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from aiwriter.server.jobs import Job
from aiwriter.server.stats import SchedulerStats
from aiwriter.server.turns import Turns


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Slots:
    """What Turns uses of writer.Batch: its owners (one per stream), len, take and put."""

    def __init__(self):
        self.owners: list = []

    def __len__(self) -> int:
        return len(self.owners)

    def add(self, job: Job) -> Job:
        self.owners += [job] * job.n
        return job

    def take(self, job):
        n = sum(o is job for o in self.owners)
        self.owners = [o for o in self.owners if o is not job]
        return SimpleNamespace(owner=job, streams=[object()] * n)

    def put(self, parked) -> None:
        self.owners += [parked.owner] * len(parked.streams)

    def holds(self, job) -> bool:
        return any(o is job for o in self.owners)


def job(n=1, written=0, unread=0, name="甲") -> Job:
    j = Job(name, n=n)
    j.texts = ["字" * written] * n
    j.emitted, j.taken = unread, 0
    j.events = []
    j.emit = lambda kind, data=None: j.events.append((kind, data))
    return j


@pytest.fixture
def clock():
    return Clock()


def turns(clock, **kw) -> Turns:
    opts = dict(max_batch=4, max_backlog=100, stall_timeout=60.0, turn_after=2.0)
    opts.update(kw)
    return Turns(SchedulerStats(), clock=clock, **opts)


def test_a_slow_reader_is_paused_past_its_backlog_and_resumes_after_reading_half(clock):
    t, batch = turns(clock), Slots()
    fine = batch.add(job(n=2, unread=200))     # exactly max_backlog per stream: stays
    slow = batch.add(job(n=1, unread=101))
    t.pause_slow_readers(batch)
    assert batch.holds(fine) and not batch.holds(slow)
    assert t.paused[id(slow)].slow and t.stats.paused_jobs == 1 and t.paused_streams() == 1

    slow.taken = 50                            # 51 unread: more than half of 100
    assert not t.reader_caught_up(slow)
    t.resume_or_stop(batch, other_slots=0)
    assert not batch.holds(slow)
    slow.taken = 51                            # 50 unread: caught up
    assert t.reader_caught_up(slow)
    clock.t += 1
    t.resume_or_stop(batch, other_slots=0)
    assert batch.holds(slow) and not t.paused and t.turn_started[id(slow)] == clock.t
    assert not t.reader_caught_up(slow)        # not paused any more


def test_a_caught_up_reader_waits_for_room(clock):
    t, batch = turns(clock), Slots()
    slow = batch.add(job(n=2, unread=300))
    t.pause_slow_readers(batch)
    slow.taken = 300
    batch.add(job(n=2))
    t.resume_or_stop(batch, other_slots=1)     # 2 in the batch + 1 being read + 2 > 4
    assert not batch.holds(slow)
    t.resume_or_stop(batch, other_slots=0)
    assert batch.holds(slow)


def test_a_slow_reader_is_stopped_after_stall_timeout(clock):
    t, batch = turns(clock, stall_timeout=60.0), Slots()
    slow = batch.add(job(unread=500))
    t.pause_slow_readers(batch)
    clock.t += 60.0
    t.resume_or_stop(batch, other_slots=0)
    assert id(slow) in t.paused and not slow.events  # not past the timeout yet
    clock.t += 0.5
    t.resume_or_stop(batch, other_slots=0)
    assert not t.paused and slow.cancelled.is_set() and t.stats.dropped_slow == 1
    (kind, error), = slow.events
    assert kind == "error" and error.status == 408 and "60 s" in error.en


def test_the_job_that_wrote_most_makes_room_after_turn_after(clock):
    t, batch = turns(clock, max_batch=4, turn_after=2.0), Slots()
    short, long_ = batch.add(job(n=2, written=10)), batch.add(job(n=2, written=500))
    t.started(short), t.started(long_)
    waited_since = clock.t
    clock.t += 1.9
    assert t.make_room(batch, 0, need=2, since=waited_since) is None  # not waited long enough
    clock.t += 0.1
    assert t.make_room(batch, 0, need=2, since=waited_since) == clock.t
    assert batch.holds(short) and not batch.holds(long_)
    p = t.paused[id(long_)]
    assert not p.slow and p.since == clock.t and t.stats.turns_given == 1
    assert t.waiting_turns() == [p]


def test_no_room_is_made_when_it_fits_or_turns_are_too_young(clock):
    t, batch = turns(clock, max_batch=4, turn_after=2.0), Slots()
    a = batch.add(job(n=2, written=500))
    t.started(a)
    clock.t += 5
    assert t.make_room(batch, 0, need=2, since=0.0) is None      # 2 + 2 fit: nothing to do
    b = batch.add(job(n=2, written=900))
    t.started(b)                                                 # b's turn just began
    assert t.make_room(batch, 0, need=4, since=0.0) is None      # only a may go: room 2 < 4
    assert batch.holds(a) and batch.holds(b) and not t.paused
    clock.t += 2
    assert t.make_room(batch, 0, need=4, since=0.0) == clock.t   # now both go
    assert not len(batch)


def test_turns_come_back_in_the_order_they_were_given_up(clock):
    t, batch = turns(clock, max_batch=2, turn_after=1.0), Slots()
    first, second = batch.add(job(written=9)), batch.add(job(written=5))
    t.started(first), t.started(second)
    clock.t += 1
    assert t.make_room(batch, 0, need=1, since=0.0) is not None   # first (wrote more) pauses
    clock.t += 1
    newcomer = t.started(batch.add(job(written=50))) or batch.owners[-1]  # the one it made room for
    assert t.make_room(batch, 0, need=1, since=0.0) is not None      # second pauses: newcomer's turn is young
    assert batch.owners == [newcomer]
    assert [p.job for p in t.waiting_turns()] == [first, second]
    batch.owners = []                                                # everyone else finished
    t.resume_or_stop(batch, other_slots=0)
    assert batch.owners == [first, second] and not t.paused


def test_only_the_oldest_turn_may_come_back(clock):
    t, batch = turns(clock, max_batch=3, turn_after=0.0), Slots()
    big, small = batch.add(job(n=2, written=9)), batch.add(job(n=1, written=1))
    t.started(big), t.started(small)
    t.make_room(batch, 0, need=3, since=0.0)
    big_p, small_p = t.paused[id(big)], t.paused[id(small)]
    small_p.since = big_p.since + 1             # big gave its turn up first
    batch.add(job(n=2))                         # 1 slot free: small would fit, big would not
    t.resume_or_stop(batch, other_slots=0)
    assert not batch.holds(small) and not batch.holds(big)   # small does not jump the line


def test_a_turn_paused_job_whose_client_stops_reading_becomes_slow(clock):
    t, batch = turns(clock, turn_after=0.0), Slots()
    a = batch.add(job(n=4, written=9))
    t.started(a)
    t.make_room(batch, 0, need=1, since=0.0)
    assert not t.paused[id(a)].slow
    a.emitted = 401
    clock.t += 3
    t.pause_slow_readers(batch)
    assert t.paused[id(a)].slow and t.paused[id(a)].since == clock.t


def test_prune_forget_and_clear(clock):
    t, batch = turns(clock), Slots()
    a, b = batch.add(job(unread=500)), batch.add(job(unread=500))
    t.pause_slow_readers(batch)
    a.cancel()
    t.prune()
    assert list(t.paused) == [id(b)]
    t.started(a)
    t.forget(a)
    t.forget(a)
    assert id(a) not in t.turn_started
    t.clear()
    assert not t.paused
