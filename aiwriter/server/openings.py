"""Openings being read, one chunk at a time between two steps of the batch, and the streams a
read opening starts.

It exists so that a long opening stalls nobody: the streams already writing get a step after
every chunk, and the opening with the least left to read goes first, so a short request that
comes after a 400k-char one starts at once. A read opening gives its job n writer.Streams, one
per continuation asked, with the job's settings and one generator (its seed, or a random one).
"""
from __future__ import annotations

import random
from typing import Callable

import torch

from aiwriter.engine import Model
from aiwriter.server.jobs import Job
from aiwriter.writer import Reading, ReadingTask, Stream


class Openings:
    def __init__(self):
        self.tasks: list[tuple[Job, ReadingTask]] = []

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, job: Job, task: ReadingTask) -> None:
        self.tasks.append((job, task))

    def slots(self) -> int:
        """Batch slots promised to the jobs being read (n each)."""
        return sum(job.n for job, _ in self.tasks)

    def job_ids(self) -> set[int]:
        return {id(j) for j, _ in self.tasks}

    def prune(self) -> None:
        """Drop the openings of jobs whose client left or that were aborted."""
        self.tasks = [(j, t) for j, t in self.tasks if not j.cancelled.is_set()]

    def clear(self) -> None:
        self.tasks = []

    def read_a_chunk(self, join: Callable[[Job, ReadingTask], None]) -> None:
        """Read one chunk of the opening with the least left to read; join(job, task) each
        opening read to the end (also those found whole in the prefix cache), once."""
        for job, task in [r for r in self.tasks if r[1].done]:
            self._done(job, task, join)
        if self.tasks:
            job, task = min(self.tasks, key=lambda r: len(r[1].ids) - r[1].pos)
            if task.advance():
                self._done(job, task, join)

    def _done(self, job: Job, task: ReadingTask, join: Callable[[Job, ReadingTask], None]) -> None:
        self.tasks = [r for r in self.tasks if r[0] is not job]
        join(job, task)


def job_streams(job: Job, model: Model, reading: Reading) -> tuple[list[Stream], int, torch.Generator]:
    """The job's n streams from its read opening, the seed they draw with, and its generator."""
    streams = [Stream(model, reading, job.length, job.settings, run=i, finish_sentence=job.finish_sentence)
               for i in range(job.n)]
    if job.logprobs is not None:
        for s in streams:
            s.logprobs, s.top_logprobs = [], job.logprobs
    seed = job.seed if job.seed is not None else random.randrange(2**31)
    # a CPU generator: the same seed gives the same draws on any device (sampling.draw)
    return streams, seed, torch.Generator().manual_seed(seed)
