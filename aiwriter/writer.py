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
        if length <= 0:
            raise AIWriterError("每次写的字数必须大于 0", "length must be greater than 0")
        if n <= 0:
            raise AIWriterError("写的遍数必须大于 0", "number of runs must be greater than 0")
        tok = self.model.tokenizer
        banned = tuple(settings.banned_ids) + ((tok.unknown_id,) if tok.unknown_id is not None else ())
        settings = dataclasses.replace(settings, banned_ids=banned)
        device = reading.logits.device

        state = reading.state.repeat(n)
        logits = reading.logits.unsqueeze(0).repeat(n, 1)
        decoders = [tok.stream_decoder() for _ in range(n)]
        stops = [StopMatcher(settings.stop_strings) for _ in range(n)]
        penalties = [PenaltyState(settings, self.model.vocab_size, _token_text(tok), device=device) for _ in range(n)]
        for p in penalties:
            p.prime(reading.ids)
        texts = [""] * n
        done = [False] * n
        last_char = [reading.text[-1:]] * n
        t0 = time.perf_counter()
        while True:
            logits = apply_penalties(logits, penalties)
            newline = torch.tensor([c == "\n" for c in last_char], device=device)
            ids = sample(logits, settings, generator=generator, prev_is_newline=newline).tolist()
            for i, token in enumerate(ids):
                if done[i]:
                    continue
                piece = decoders[i].feed(token)
                penalties[i].update(token)
                out, hit = stops[i].feed(piece)
                out = out[: length - len(texts[i])]
                if out:
                    texts[i] += out
                    last_char[i] = out[-1]
                    yield Piece(first_run + i, out)
                if hit or len(texts[i]) >= length:
                    done[i] = True
                    yield RunResult(first_run + i, texts[i], time.perf_counter() - t0, "stop" if hit else "length")
            if all(done):
                return
            logits, state = self.model.forward_batch(ids, state)


def _token_text(tok):
    """The text of one token, for the penalties' CJK and whitespace rules."""
    return lambda t: tok.id_bytes(t).decode("utf-8", "ignore")
