"""A Job: one request's opening and its n continuations, and the events that carry its text from
the scheduler thread to the request's event loop."""
from __future__ import annotations

import asyncio
import itertools
import threading
from dataclasses import dataclass, field

import torch

from aiwriter.sampling import SamplingSettings

_ids = itertools.count(1)


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        self.retry_after = retry_after


@dataclass
class Job:
    prompt: str
    n: int = 1
    length: int = 16
    settings: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None
    model: str | None = None  # a name ModelCatalog knows; None = the model loaded now
    state: str | None = None  # a state file StateCatalog knows; None = the model's own start
    origin: str = ""          # "openai", "kobold", ...: what an abort without a key stops
    key: str = ""             # a client's handle (KoboldAI genkey) for abort and polling
    finish_sentence: int = 0  # past `length`, up to this many more chars to end the sentence
    id: str = field(default_factory=lambda: f"{next(_ids)}")
    logprobs: int | None = None  # OpenAI logprobs: None off, else how many alternatives per token

    def __post_init__(self):
        self.cancelled = threading.Event()
        self.texts = [""] * self.n          # what each run has written so far
        self.finish = [None] * self.n       # "length" | "stop" per run once done
        self.info: dict = {}                # filled when the job starts (model, seed, prompt size)
        self.logprob_lists: list = [None] * self.n  # per run: (id, logprob, top) per token, if asked
        self.done = False
        self.emitted = 0                    # chars sent to the event loop (the scheduler counts)
        self.taken = 0                      # chars the response has taken (the event loop counts)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue | None = None
        self._on_taken = None               # the scheduler's wake-up for a job paused for a slow reader

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._queue = loop, asyncio.Queue()

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def backlog(self) -> int:
        """Chars written for this job that its response has not taken yet: a client that stops
        reading stops its response taking them (its socket's buffers are full)."""
        return self.emitted - self.taken

    def emit(self, kind: str, data=None) -> None:
        """From the worker thread to the request's event loop."""
        if kind in ("end", "error"):
            self.done = True
        if kind == "pieces":
            self.emitted += sum(len(t) for _, t in data)
        if self._loop is None:
            self.taken = self.emitted  # nobody reads events: nothing can pile up
            return
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, data))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel()

    async def next_event(self):
        """("start", info) once, then ("pieces", [(run, text), ...]) and ("finish", (run, reason))
        as they come, and ("end", None) or ("error", ApiError | AIWriterError) last."""
        kind, data = await self._queue.get()
        if kind == "pieces":
            self.taken += sum(len(t) for _, t in data)
            if self._on_taken is not None:
                self._on_taken(self)
        return kind, data
