"""server/openings.py: openings are read one chunk per call, the one with the least left first;
openings read to the end (or found whole in the prefix cache) join once, in order; a read
opening gives its job n streams drawing from one seeded generator."""
from __future__ import annotations

import torch

from aiwriter.sampling import SamplingSettings
from aiwriter.server.jobs import Job
from aiwriter.server.openings import Openings, job_streams
from aiwriter.writer import PrefixCache, Writer


class Task:
    """What Openings uses of writer.ReadingTask: ids, pos, done, advance()."""

    def __init__(self, n_ids: int, chunk: int = 10):
        self.ids, self.pos, self.chunk = [0] * n_ids, 0, chunk
        self.advanced = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.ids)

    def advance(self) -> bool:
        self.advanced += 1
        self.pos = min(len(self.ids), self.pos + self.chunk)
        return self.done


def test_the_opening_with_least_left_is_read_first_and_joins_once():
    o, joined = Openings(), []
    long_, short = Job("长", n=2), Job("短", n=3)
    o.add(long_, Task(100))
    o.add(short, Task(25))
    assert len(o) == 2 and o.slots() == 5 and o.job_ids() == {id(long_), id(short)}
    join = lambda job, task: joined.append(job)  # noqa: E731
    for _ in range(3):
        o.read_a_chunk(join)
    assert joined == [short] and o.tasks[0][0] is long_ and o.tasks[0][1].advanced == 0
    for _ in range(10):
        o.read_a_chunk(join)
    assert joined == [short, long_] and len(o) == 0 and o.slots() == 0


def test_openings_already_read_join_before_the_next_chunk_in_order():
    o, joined = Openings(), []
    a, b, c = Job("甲"), Job("乙"), Job("丙")
    ta, tb, tc = Task(0), Task(50), Task(0)
    for j, t in ((a, ta), (b, tb), (c, tc)):
        o.add(j, t)
    o.read_a_chunk(lambda job, task: joined.append((job, task)))
    assert joined == [(a, ta), (c, tc)] and tb.advanced == 1 and len(o) == 1


def test_prune_and_clear():
    o = Openings()
    a, b = Job("甲"), Job("乙")
    o.add(a, Task(10))
    o.add(b, Task(10))
    a.cancel()
    o.prune()
    assert [j for j, _ in o.tasks] == [b]
    o.clear()
    assert len(o) == 0


def test_job_streams_follow_the_job(cycle_model):
    reading = Writer(cycle_model, PrefixCache(1 << 20)).read("甲乙")
    job = Job("甲乙", n=3, length=7, seed=42, logprobs=2, finish_sentence=5, settings=SamplingSettings(top_p=0.3))
    streams, seed, gen = job_streams(job, cycle_model, reading)
    assert seed == 42 and [s.run for s in streams] == [0, 1, 2]
    assert all(s.length == 7 and s.extra == 5 and s.settings.top_p == 0.3 for s in streams)
    assert all(s.logprobs == [] and s.top_logprobs == 2 for s in streams)
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=torch.Generator().manual_seed(42)))
    plain, seed2, _ = job_streams(Job("甲乙", n=1), cycle_model, reading)
    assert 0 <= seed2 < 2**31 and plain[0].logprobs is None
