"""The one place that turns logits into text: read an opening once, then write N continuations
branching from its state, batched, streamed whole char by whole char, lengths counted in chars."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from aiwriter.engine import Model, PrefixCache, State
from aiwriter.errors import AIWriterError
from aiwriter.sampling import PenaltyState, SamplingSettings, StopMatcher, apply_penalties, sample
from aiwriter.tokenizer import clean_context

PREFILL_CHUNK = 1024  # ids per prefill call: bounds memory on very long openings


@dataclass
class Reading:
    """An opening read into the model: its text, ids, and the logits/state after it."""

    text: str
    ids: list[int]
    logits: torch.Tensor
    state: State


@dataclass
class Piece:
    """Text a run produced since its last piece (whole chars only)."""

    run: int
    text: str


@dataclass
class RunResult:
    run: int
    text: str
    seconds: float
    stopped_by: str = "length"  # "length" | "stop" (a stop string) | "interrupt"

    @property
    def chars(self) -> int:
        return len(self.text)


@dataclass
class Writer:
    model: Model
    cache: PrefixCache = field(default_factory=PrefixCache)

    def read(self, opening: str, clean: bool = True, progress: Callable[[int, int], None] | None = None) -> Reading:
        """Read an opening (cleaned as the seed did) once; later reads of text that extends it
        start from the cached state."""
        text = clean_context(opening) if clean else opening
        if not text.strip():
            raise AIWriterError("开头是空的，请输入开头", "the opening is empty: give some text to continue")
        ids = self.model.tokenizer.encode(text)
        n, logits, state = self.cache.longest_prefix(ids)
        if state is None:
            state = self.model.new_state(1)
        if n == len(ids):
            return Reading(text, ids, logits, state)
        for start in range(n, len(ids), PREFILL_CHUNK):
            logits, state = self.model.forward(ids[start:start + PREFILL_CHUNK], state)
            if progress:
                progress(min(start + PREFILL_CHUNK, len(ids)), len(ids))
        self.cache.put(ids, logits, state)
        return Reading(text, ids, logits, state)

    def write(
        self,
        reading: Reading,
        n: int,
        length: int,
        settings: SamplingSettings,
        generator: torch.Generator | None = None,
        first_run: int = 0,
    ) -> Iterator[Piece | RunResult]:
        """Write n continuations of `length` chars from one reading, stepping all n in one
        batched forward per step. Yields Pieces as text appears and a RunResult per run."""
        if n <= 0:
            raise AIWriterError("写的遍数必须大于 0", "number of runs must be greater than 0")
        streams = [Stream(self.model, reading, length, settings, run=first_run + i) for i in range(n)]
        state = reading.state.repeat(n)
        logits = reading.logits.unsqueeze(0).repeat(n, 1)
        while True:
            ids = next_ids(logits, streams, generator)
            for s, token in zip(streams, ids):
                if s.done:
                    continue
                piece = s.feed(token)
                if piece:
                    yield Piece(s.run, piece)
                if s.done:
                    yield s.result()
            if all(s.done for s in streams):
                return
            logits, state = self.model.forward_batch(ids, state)


class Stream:
    """One continuation being written: turns its sampled ids into whole chars, with its own
    penalties and stop strings, and ends at `length` chars. The batched loops (Writer.write,
    and a server stepping many requests together) share it, so text is made in one place."""

    def __init__(self, model: Model, reading: Reading, length: int, settings: SamplingSettings, run: int = 0):
        if length <= 0:
            raise AIWriterError("每次写的字数必须大于 0", "length must be greater than 0")
        tok = model.tokenizer
        if tok.unknown_id is not None and tok.unknown_id not in settings.banned_ids:
            settings = dataclasses.replace(settings, banned_ids=settings.banned_ids + (tok.unknown_id,))
        self.settings, self.length, self.run = settings, length, run
        self.decoder = tok.stream_decoder()
        self.stop = StopMatcher(settings.stop_strings)
        self.penalty = PenaltyState(settings, model.vocab_size, _token_text(tok), device=reading.logits.device)
        self.penalty.prime(reading.ids)
        self.text = ""
        self.last_char = reading.text[-1:]
        self.stopped_by = ""
        self.t0 = time.perf_counter()
        self.logprobs: list | None = None  # a list to fill (record_logprobs) when a client asks for them
        self.top_logprobs = 0

    @property
    def done(self) -> bool:
        return bool(self.stopped_by)

    def feed(self, token: int) -> str:
        """Take the sampled id; return the whole chars it completes (may be "")."""
        self.penalty.update(token)
        out, hit = self.stop.feed(self.decoder.feed(token))
        out = out[: self.length - len(self.text)]
        if out:
            self.text += out
            self.last_char = out[-1]
        if hit:
            self.stopped_by = "stop"
        elif len(self.text) >= self.length:
            self.stopped_by = "length"
        return out

    def result(self) -> RunResult:
        return RunResult(self.run, self.text, time.perf_counter() - self.t0, self.stopped_by or "interrupt")


def record_logprobs(logits: torch.Tensor, streams: list[Stream], drawn: list[int]) -> None:
    """For the streams that asked (stream.logprobs is a list): (id, log-probability, top) of each drawn
    id, from the model's own distribution (before penalties and sampling filters), with the
    stream.top_logprobs most likely ids and theirs."""
    rows = [i for i, s in enumerate(streams) if s.logprobs is not None]
    if not rows:
        return
    lp = torch.log_softmax(logits[rows].float(), dim=-1).cpu()
    for r, i in enumerate(rows):
        s = streams[i]
        top = None
        if s.top_logprobs:
            v, ix = lp[r].topk(min(s.top_logprobs, lp.shape[-1]))
            top = list(zip(ix.tolist(), v.tolist()))
        s.logprobs.append((drawn[i], float(lp[r, drawn[i]]), top))


def next_ids(logits: torch.Tensor, streams: list[Stream], generator: torch.Generator | None = None) -> list[int]:
    """Sample one id per stream from batched logits [B, V] (penalties, then the filters)."""
    logits = apply_penalties(logits, [s.penalty for s in streams])
    newline = [s.last_char == "\n" for s in streams]
    first = streams[0].settings
    if all(s.settings == first for s in streams):
        return sample(logits, first, generator=generator, prev_is_newline=torch.tensor(newline)).tolist()
    return [int(sample(row, s.settings, generator=generator, prev_is_newline=nl)) for row, s, nl in zip(logits, streams, newline)]


def _token_text(tok):
    """The text of one token, for the penalties' CJK and whitespace rules."""
    return lambda t: tok.id_bytes(t).decode("utf-8", "ignore")
