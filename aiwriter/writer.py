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
from aiwriter.state_cache import DiskStateCache, PrefixKeys
from aiwriter.tokenizer import clean_context

PREFILL_CHUNK = 1024  # ids per prefill call: bounds memory on very long openings
MIN_FORK = 64  # a shared start shorter than this (ids) is not worth a saved state of its own
TAIL_KEEP = 1024  # ids before the end of a mostly new text whose state is kept (ReadingTask)


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
    disk: DiskStateCache | None = None  # states kept on disk across restarts (state_cache.py)
    last_reused: int = 0       # ids of the last reading that came from a cache (memory or disk)
    last_from_disk: int = 0    # of those, ids whose state came from disk

    def read(self, opening: str, clean: bool = True, progress: Callable[[int, int], None] | None = None,
             start: State | None = None) -> Reading:
        """Read an opening (cleaned as the seed did) once, from `start` (a state file's state) or
        the model's own start; later reads of text that extends it start from the cached state,
        in memory or on disk."""
        task = self.start_reading(opening, clean, start)
        if progress:
            progress(task.pos, len(task.ids))  # before the first chunk: where the cached prefix ends
        while not task.done:
            task.advance()
            if progress:
                progress(task.pos, len(task.ids))
        return task.reading()

    def start_reading(self, opening: str, clean: bool = True, start: State | None = None) -> "ReadingTask":
        """An opening to be read chunk by chunk (ReadingTask.advance), so a caller can do other
        work between chunks (the server steps its other streams)."""
        text = clean_context(opening) if clean else opening
        if not text.strip():
            raise AIWriterError("开头是空的，请输入开头", "the opening is empty: give some text to continue")
        return ReadingTask(self, text, self.model.tokenizer.encode(text), start)

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
        batch = Batch(self.model)
        batch.add(reading, [Stream(self.model, reading, length, settings, run=first_run + i) for i in range(n)],
                  generator=generator)
        while len(batch):
            step = batch.step()
            for _, error in step.failed:
                raise error
            for _, s, piece in step.pieces:
                if piece:
                    yield Piece(s.run, piece)
                if s.done:
                    yield s.result()


class ReadingTask:
    """An opening being read PREFILL_CHUNK ids at a time, from the longest cached prefix on.
    advance() reads one chunk and says whether it is all read; reading() is then the result
    (and the prefix cache holds it)."""

    def __init__(self, writer: Writer, text: str, ids: list[int], start: State | None = None):
        self.writer, self.text, self.ids = writer, text, ids
        origin = start.start if start is not None else ""
        self.reused, self.logits, state = writer.cache.longest_prefix(ids, origin)
        self.from_disk = 0
        disk = writer.disk if writer.disk is not None and writer.disk.enabled else None
        self.disk, self.keys = disk, None
        if disk is not None and self.reused < len(ids):
            n, logits, dstate = disk.longest_prefix(ids, origin, above=self.reused)
            if n:
                self.reused, self.logits, state, self.from_disk = n, logits, dstate, n
        if disk is not None:
            self.keys = PrefixKeys(disk.model_id, origin, ids, disk.every)
        writer.last_reused, writer.last_from_disk = self.reused, self.from_disk
        if state is None:
            state = start.copy() if start is not None else writer.model.new_state(1)
        self.state = state
        self.pos = self.reused
        # States kept on the way besides the one at the end (aiwriter.story inserts the author's note
        # and lorebook entries a few hundred chars before the end, KoboldAI Lite too, so a prompt is
        # rarely a prefix of the next one):
        # - where this text parts from one read before: the next one parts at about the same place
        #   (the story text before the inserted block), and reads only from there on;
        # - TAIL_KEEP ids before the end, when much of this text was new (a first read, or a story
        #   window that moved): the next continuation of it still agrees up to there.
        fork = writer.cache.longest_shared(ids, origin)
        keep = {fork} if self.reused + MIN_FORK <= fork < len(ids) else set()
        tail = len(ids) - TAIL_KEEP
        if tail >= max(fork, self.reused) + TAIL_KEEP:
            keep.add(tail)
        self.keep = sorted(keep)
        self.chunks = 0  # chunks read so far
        if self.done and self.from_disk:
            writer.cache.put(ids, self.logits, self.state)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.ids)

    def advance(self) -> bool:
        if not self.done:
            # chunks end on multiples of PREFILL_CHUNK and of the disk cache's spacing
            end = min(len(self.ids), (self.pos // PREFILL_CHUNK + 1) * PREFILL_CHUNK)
            if self.disk is not None:
                end = min(end, (self.pos // self.disk.every + 1) * self.disk.every)
            end = min([end] + [k for k in self.keep if k > self.pos])
            chunk = self.ids[self.pos:end]
            self.logits, self.state = self.writer.model.forward(chunk, self.state)
            self.pos += len(chunk)
            self.chunks += 1
            if self.pos in self.keep and not self.done:
                self.writer.cache.put(self.ids[:self.pos], self.logits, self.state)
            if self.disk is not None and (self.done or self.pos % self.disk.every == 0):
                self.disk.put(self.ids[:self.pos], self.logits, self.state, self.keys)
            if self.done:
                self.writer.cache.put(self.ids, self.logits, self.state)
        return self.done

    def reading(self) -> Reading:
        assert self.done
        return Reading(self.text, self.ids, self.logits, self.state)


@dataclass
class StepResult:
    """What one Batch.step did: (owner, stream, new text) for every stream that wrote text or
    ended (text may be ""; stream.done says it ended), in batch order; (owner, error) per group
    whose sampling failed (its streams left the batch)."""

    pieces: list = field(default_factory=list)
    failed: list = field(default_factory=list)


class Batch:
    """Streams written together: every step samples the next id of each stream, feeds it, drops
    the streams that ended, and runs ONE Model.forward_batch for the rest. Streams of one group
    (an owner: one request) share a generator, so a seed gives the same text whoever else is in
    the batch. Writer.write and the server's scheduler both step with it. Not thread-safe."""

    def __init__(self, model: Model):
        self.model = model
        self.streams: list[Stream] = []
        self.owners: list = []
        self.state: State | None = None
        self.logits: torch.Tensor | None = None
        self._generators: dict[int, torch.Generator | None] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, reading: Reading, streams: list[Stream], owner=None, generator: torch.Generator | None = None) -> None:
        """Join streams that all start from one reading."""
        n = len(streams)
        self.put(Parked(owner, streams, reading.state.repeat(n), reading.logits.unsqueeze(0).repeat(n, 1), generator))

    def put(self, parked: "Parked") -> None:
        """Join streams taken out with take() (or fresh ones), state and logits as they were."""
        self._generators[id(parked.owner)] = parked.generator
        self.streams += parked.streams
        self.owners += [parked.owner] * len(parked.streams)
        self.state = parked.state if self.state is None else State.stack([self.state, parked.state])
        self.logits = parked.logits if self.logits is None else torch.cat([self.logits, parked.logits])

    def take(self, owner) -> "Parked":
        """Take an owner's streams out of the batch, with their state, to put() back later."""
        rows = [i for i, o in enumerate(self.owners) if o is owner]
        index = torch.tensor(rows, device=self.logits.device)
        parked = Parked(owner, [self.streams[i] for i in rows], self.state.select(rows),
                        self.logits.index_select(0, index), self._generators.get(id(owner)))
        self.drop(lambda s, o: o is owner)
        return parked

    def owned_by(self, owner) -> list[Stream]:
        return [s for s, o in zip(self.streams, self.owners) if o is owner]

    def drop(self, drop: Callable[[Stream, object], bool]) -> None:
        """Remove the streams for which drop(stream, owner) is true."""
        keep = [i for i, (s, o) in enumerate(zip(self.streams, self.owners)) if not drop(s, o)]
        if len(keep) == len(self.streams):
            return
        self.streams = [self.streams[i] for i in keep]
        self.owners = [self.owners[i] for i in keep]
        live = {id(o) for o in self.owners}
        self._generators = {k: g for k, g in self._generators.items() if k in live}
        if keep:
            self.state = self.state.select(keep)
            self.logits = self.logits.index_select(0, torch.tensor(keep, device=self.logits.device))
        else:
            self.state = self.logits = None

    def step(self) -> StepResult:
        out = StepResult()
        if not self.streams:
            return out
        ids = [0] * len(self.streams)
        groups: dict[int, list[int]] = {}
        for i, o in enumerate(self.owners):
            groups.setdefault(id(o), []).append(i)
        failed: set[int] = set()
        for key, rows in groups.items():
            owner = self.owners[rows[0]]
            index = torch.tensor(rows, device=self.logits.device)
            try:
                logits = self.logits.index_select(0, index)
                streams = [self.streams[i] for i in rows]
                drawn = next_ids(logits, streams, self._generators.get(key))
                record_logprobs(logits, streams, drawn)
            except AIWriterError as e:  # e.g. NaN logits: this group stops, the others go on
                out.failed.append((owner, e))
                failed.add(key)
                continue
            for i, token in zip(rows, drawn):
                ids[i] = token
                s = self.streams[i]
                piece = s.feed(token)
                if piece or s.done:
                    out.pieces.append((owner, s, piece))
        alive = [i for i, (s, o) in enumerate(zip(self.streams, self.owners)) if not s.done and id(o) not in failed]
        self.drop(lambda s, o: s.done or id(o) in failed)
        if alive:
            self.logits, self.state = self.model.forward_batch([ids[i] for i in alive], self.state)
        return out


@dataclass
class Parked:
    """Streams out of a batch, with everything needed to put them back."""

    owner: object
    streams: list
    state: State
    logits: torch.Tensor
    generator: torch.Generator | None = None


SENTENCE_ENDS = frozenset("。！？!?…；;")
CLOSERS = frozenset("”’」』）)》】〕\"'")


class Stream:
    """One continuation being written: turns its sampled ids into whole chars, with its own
    penalties and stop strings, and ends at `length` chars. The batched loops (Writer.write,
    and a server stepping many requests together) share it, so text is made in one place."""

    def __init__(self, model: Model, reading: Reading, length: int, settings: SamplingSettings, run: int = 0,
                 finish_sentence: int = 0):
        if length <= 0:
            raise AIWriterError("每次写的字数必须大于 0", "length must be greater than 0")
        if finish_sentence < 0:
            raise AIWriterError("finish_sentence 不能小于 0", "finish_sentence must not be negative")
        # past `length`, write on to the end of the sentence, at most this many more chars
        self.extra = finish_sentence
        self._sentence_over = False  # the text ends with a sentence end (and any closing marks after it)
        self._full = False
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
        out = self._take(out)
        if out:
            self.text += out
            self.last_char = out[-1]
        if hit:
            self.stopped_by = "stop"
        elif self._full:
            self.stopped_by = "length"
        return out

    def _take(self, out: str) -> str:
        """The part of `out` that fits: up to `length` chars, then (finish_sentence) on to the
        end of the sentence: a sentence end and the closing marks right after it, or a line end."""
        if not self.extra:
            out = out[: self.length - len(self.text)]
            self._full = len(self.text) + len(out) >= self.length
            return out
        kept = []
        for c in out:
            n = len(self.text) + len(kept)
            if n >= self.length + self.extra:
                self._full = True
                break
            if n >= self.length and (c == "\n" or (self._sentence_over and c not in CLOSERS and c not in SENTENCE_ENDS)):
                self._full = True  # the sentence is over; this char starts the next one
                break
            kept.append(c)
            self._sentence_over = c in SENTENCE_ENDS or c == "\n" or (self._sentence_over and c in CLOSERS)
        n = len(self.text) + len(kept)
        if n >= self.length + self.extra or (n >= self.length and kept and kept[-1] == "\n"):
            self._full = True
        return "".join(kept)

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
