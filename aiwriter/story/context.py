"""Context assembly under a budget in chars, laid out for an RNN.

What the model reads, in order:

    memory                      \\  the front: read once, its state reused from the prefix cache;
    constant entries            /  stable order (order, then position in the lorebook)
    story (its last chars)      <- the window's start moves in steps, so consecutive continuations
                                   share their prefix and the cache keeps working
    triggered entries           \\  inserted `an_depth` chars before the end (snapped to a nearby
    author's note               /  line or sentence end), so only the last few hundred chars are re-read
    story (its last an_depth chars)

Budget, in priority order: a share of the story (a quarter of the budget, or all of a shorter story),
then memory, the author's note, constant entries, triggered entries (higher `order` first), then the
rest of the story. Whatever does not fit is dropped and said so in the report.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

from aiwriter.errors import AIWriterError
from aiwriter.story.keys import Key, KeyTimeout
from aiwriter.story.lorebook import CompiledBook, CompiledEntry, Lorebook
from aiwriter.story.scan import KeyIndex

MAX_CASCADE = 5
MAX_BUDGET = 10_000_000
_BOUNDARIES = "\n。！？!?.…」』”"


@dataclass
class AssemblySettings:
    budget: int = 16_000            # chars the model reads at most
    cascade_depth: int = 0          # rounds in which fired entries' text may fire others (≤ MAX_CASCADE)
    seed: int = 0                   # probability rolls
    story_step: int = 0             # the story window starts on multiples of this; 0: budget // 16
    regex_budget_s: float = 0.5     # all regex keys together, per assembly
    strict: bool = False            # a regex that times out raises instead of being reported


@dataclass
class EntryReport:
    index: int
    label: str
    status: str        # "front" | "inserted" | "dropped" | "blocked" | "unlucky" | "error"
    reason: str        # Chinese / English
    chars: int = 0


@dataclass
class Part:
    kind: str          # "memory" | "constant" | "story" | "entry" | "note"
    label: str
    start: int
    end: int


@dataclass
class Context:
    text: str
    budget: int
    parts: list[Part] = field(default_factory=list)
    entries: list[EntryReport] = field(default_factory=list)  # every entry that fired or nearly did
    warnings: list[str] = field(default_factory=list)
    story_start: int = 0         # first story char the model reads
    story_chars: int = 0
    stable_prefix: int = 0       # chars that do not depend on triggered entries or the note
    unmatched: int = 0           # entries whose keys were not found

    @property
    def chars_used(self) -> int:
        return len(self.text)

    def fired(self) -> list[EntryReport]:
        return [r for r in self.entries if r.status in ("front", "inserted")]

    def describe(self) -> str:
        """The report `--show-context` and the page print."""
        lines = [f"上下文 {self.chars_used:,} / {self.budget:,} 字（稳定前缀 {self.stable_prefix:,} 字，故事从第 {self.story_start:,} 字起 {self.story_chars:,} 字）",
                 f"context {self.chars_used:,} / {self.budget:,} chars (stable prefix {self.stable_prefix:,}, story {self.story_chars:,} chars from char {self.story_start:,})"]
        for r in self.entries:
            lines.append(f"  [{r.status}] {r.label}: {r.reason}" + (f" ({r.chars} 字 / chars)" if r.chars else ""))
        if self.unmatched:
            lines.append(f"  未触发 {self.unmatched} 条 / {self.unmatched} entries not triggered")
        lines += [f"  ! {w}" for w in self.warnings]
        return "\n".join(lines)


def _reason(zh: str, en: str) -> str:
    return f"{zh} / {en}"


class _Scanner:
    """Finds keys in the last N chars of the story, with per-depth windows made once. Plain keys are
    first checked against the char pairs of the widest window (see scan.py)."""

    def __init__(self, story: str, settings: AssemblySettings, index: KeyIndex, widest: int):
        self.story, self.settings, self.index = story, settings, index
        self.windows: dict[int, tuple[str, str]] = {}
        self.regex_spent = 0.0
        self.widest = widest
        self.cand: dict[int, tuple] = {}  # id(lowered text) -> (candidates, the text, kept alive)

    def window(self, depth: int) -> tuple[str, str]:
        w = self.windows.get(depth)
        if w is None:
            t = self.story[-depth:] if depth < len(self.story) else self.story
            w = self.windows[depth] = (t, t.lower())
        return w

    def candidates(self, lowered: str):
        c = self.cand.get(id(lowered))
        if c is None:
            c = self.cand[id(lowered)] = (self.index.candidates(lowered), lowered)
        return c[0]

    def find(self, key: Key, text: str, lowered: str, in_story: bool) -> int:
        if not key.is_regex:
            slot = self.index.slot.get(key.plain)
            if slot is not None:
                # the widest story window's pairs rule out most keys for every narrower window
                src = self.window(self.widest)[1] if in_story else lowered
                if not self.candidates(src)[slot]:
                    return -1
                if len(key.plain) <= 2 and src is lowered:
                    return 0
            return lowered.rfind(key.plain)  # names are mostly found near the end: search from there
        if self.regex_spent > self.settings.regex_budget_s:
            raise KeyTimeout(key.text)
        t0 = time.perf_counter()
        try:
            return key.find(text, lowered)
        finally:
            self.regex_spent += time.perf_counter() - t0


def _check_settings(s: AssemblySettings) -> None:
    if isinstance(s.budget, bool) or not isinstance(s.budget, int) or not 1 <= s.budget <= MAX_BUDGET:
        raise AIWriterError(f"上下文预算应在 1 到 {MAX_BUDGET:,} 字之间（收到 {s.budget!r}）",
                            f"the context budget must be 1 to {MAX_BUDGET:,} chars (got {s.budget!r})")
    if not isinstance(s.cascade_depth, int) or not 0 <= s.cascade_depth <= MAX_CASCADE:
        raise AIWriterError(f"连锁触发的轮数应在 0 到 {MAX_CASCADE} 之间（收到 {s.cascade_depth!r}）",
                            f"cascade depth must be 0 to {MAX_CASCADE} (got {s.cascade_depth!r})")


def _match(ce: CompiledEntry, keys: list[Key], sc: _Scanner, texts: list[tuple[str, str, bool]], mode: str) -> tuple[bool, str]:
    """mode "any": the first key found in any text; "all": every key found somewhere."""
    found_one = ""
    for k in keys:
        hit = False
        for t, low, in_story in texts:
            if sc.find(k, t, low, in_story) >= 0:
                hit = True
                break
        if mode == "any" and hit:
            return True, k.text
        if mode == "all" and not hit:
            return False, k.text
        found_one = k.text
    return (mode == "all"), found_one


def _roll(seed: int, index: int) -> float:
    return random.Random(f"{seed}:{index}").random() * 100


def assemble(story: str, book: Lorebook, settings: AssemblySettings | None = None,
             compiled: CompiledBook | None = None) -> Context:
    """Everything the model reads for continuing `story`, and a report of how it was made.
    `compiled` (from book.compile()) may be passed to skip re-validating an unchanged lorebook."""
    s = settings or AssemblySettings()
    _check_settings(s)
    if not isinstance(story, str):
        raise AIWriterError("故事应是文字", "the story must be a string")
    cb = compiled if compiled is not None else book.compile()
    entries = cb.entries
    B = s.budget
    global_depth = book.scan_depth or B
    widest = max([ce.entry.scan_depth or global_depth for ce in entries] or [global_depth])
    sc = _Scanner(story, s, cb.index, widest)
    reports: dict[int, EntryReport] = {}
    warnings: list[str] = []
    fired: dict[int, str] = {}  # index -> reason
    unmatched = 0

    def timeout(ce: CompiledEntry, key: str) -> None:
        zh = f"设定「{ce.label}」的正则关键词 {key[:60]} 匹配超时，本次跳过这条"
        en = f"entry '{ce.label}': regex key {key[:60]} timed out; the entry is skipped this time"
        if s.strict:
            raise AIWriterError(zh, en)
        warnings.append(_reason(zh, en))
        reports[ce.index] = EntryReport(ce.index, ce.label, "error", _reason("正则超时", "regex timed out"))

    def consider(ce: CompiledEntry, extra: tuple[str, str] | None, how_zh: str, how_en: str) -> bool:
        e = ce.entry
        depth = e.scan_depth or global_depth
        extra3 = [(extra[0], extra[1], False)] if extra else []
        texts = [(*sc.window(depth), True)] + extra3
        try:
            ok, key = _match(ce, ce.keys, sc, extra3 or texts, "any")
            if not ok:
                return False
            if ce.anti:
                blocked, anti = _match(ce, ce.anti, sc, texts, "any")
                if blocked:
                    reports[ce.index] = EntryReport(ce.index, ce.label, "blocked",
                                                    _reason(f"关键词「{key}」，但排除词「{anti}」也在", f"key '{key}', but anti-key '{anti}' too"))
                    return True
            if e.selective and ce.secondary:
                ok2, missing = _match(ce, ce.secondary, sc, texts, "all")
                if not ok2:
                    reports[ce.index] = EntryReport(ce.index, ce.label, "blocked",
                                                    _reason(f"关键词「{key}」，但缺次要关键词「{missing}」", f"key '{key}', but secondary key '{missing}' missing"))
                    return True
        except KeyTimeout as t:
            timeout(ce, str(t))
            return True
        if e.probability < 100:
            roll = _roll(s.seed, ce.index)
            if roll >= e.probability:
                reports[ce.index] = EntryReport(ce.index, ce.label, "unlucky",
                                                _reason(f"关键词「{key}」，概率 {e.probability:g}% 未中（{roll:.1f}）",
                                                        f"key '{key}', probability {e.probability:g}% missed ({roll:.1f})"))
                return True
        fired[ce.index] = _reason(f"{how_zh}关键词「{key}」", f"{how_en}key '{key}'")
        return True

    pending = []
    maybe = cb.may_fire(sc.candidates(sc.window(widest)[1]))
    for ce in entries:
        e = ce.entry
        if not e.enabled or not e.content:
            continue
        if e.constant:
            fired[ce.index] = _reason("常驻", "constant")
            continue
        if not ce.keys:
            continue
        if not maybe[ce.index] or not consider(ce, None, "", ""):
            pending.append(ce)
    # cascading: the text of entries that fired may fire the others, a bounded number of rounds
    prev = set(fired)
    for rnd in range(s.cascade_depth):
        new_text = "\n".join(entries[i].entry.content for i in prev if not entries[i].entry.constant)
        if not new_text or not pending:
            break
        extra = (new_text, new_text.lower())
        maybe = cb.may_fire(sc.candidates(extra[1]))
        before = set(fired)
        still = []
        for ce in pending:
            if not maybe[ce.index] or not consider(ce, extra, f"连锁第 {rnd + 1} 轮：", f"cascade round {rnd + 1}: "):
                still.append(ce)
        pending = still
        prev = set(fired) - before
        if not prev:
            break
    unmatched = sum(1 for ce in entries if ce.entry.enabled and not ce.entry.constant and ce.keys and ce.entry.content
                    and ce.index not in fired and ce.index not in reports)

    # the budget
    story_reserve = min(len(story), B // 4)
    avail = B - story_reserve
    memory = book.memory
    if memory and not memory.endswith("\n"):
        memory += "\n"
    if len(memory) > avail:
        warnings.append(_reason(f"记忆太长，只读前 {avail:,} 字", f"memory too long: only its first {avail:,} chars are read"))
        memory = memory[:avail]
    avail -= len(memory)
    note = book.note_text()
    insert_overhead = 1  # the inserted block: items joined by newlines, one before and one after
    if note:
        if len(note) + 1 + insert_overhead > avail:
            warnings.append(_reason("作者注放不下，已略去", "the author's note does not fit the budget; left out"))
            note = ""
        else:
            avail -= len(note) + 1 + insert_overhead
            insert_overhead = 0

    def content_of(ce: CompiledEntry) -> tuple[str, bool]:
        c = ce.entry.content
        if ce.entry.budget and len(c) > ce.entry.budget:
            return c[:ce.entry.budget], True
        return c, False

    def place(group: list[CompiledEntry], status: str) -> list[tuple[CompiledEntry, str]]:
        nonlocal avail, insert_overhead
        kept = []
        for ce in sorted(group, key=lambda c: (-c.entry.order, c.index)):  # priority: higher order first
            c, cut = content_of(ce)
            need = len(c) + 1 + (insert_overhead if status == "inserted" else 0)
            why = fired[ce.index]
            if need > avail:
                reports[ce.index] = EntryReport(ce.index, ce.label, "dropped", _reason(f"{why.split(' / ')[0]}，但预算不够",
                                                                                        f"{why.split(' / ')[1]}, but over budget"), len(c))
                continue
            avail -= need
            if status == "inserted":
                insert_overhead = 0
            if cut:
                why = _reason(f"{why.split(' / ')[0]}（截到 {len(c)} 字）", f"{why.split(' / ')[1]} (cut to {len(c)} chars)")
            reports[ce.index] = EntryReport(ce.index, ce.label, status, why, len(c))
            kept.append((ce, c))
        kept.sort(key=lambda t: (t[0].entry.order, t[0].index))  # reading order: higher order nearer the end
        return kept

    constants = place([entries[i] for i in fired if entries[i].entry.constant], "front")
    triggered = place([entries[i] for i in fired if not entries[i].entry.constant], "inserted")

    # the text
    parts: list[Part] = []
    out: list[str] = []
    pos = 0

    def emit(kind: str, label: str, t: str) -> None:
        nonlocal pos
        if t:
            out.append(t)
            parts.append(Part(kind, label, pos, pos + len(t)))
            pos += len(t)

    emit("memory", "memory", memory)
    for ce, c in constants:
        emit("constant", ce.label, c + "\n")
    front = pos
    room = B - front - (sum(len(c) + 1 for _, c in triggered) + (len(note) + 1 if note else 0)
                        + (1 if (triggered or note) else 0))
    start = 0
    if len(story) > room:
        start = len(story) - max(room, 0)
        step = s.story_step or max(1, B // 16)
        start = min(len(story), math.ceil(start / step) * step)
        nl = story.find("\n", start, min(len(story), start + min(step, 200)))
        if nl >= 0:
            start = nl + 1
    block_items = [(ce.label, c, "entry") for ce, c in triggered] + ([("note", note, "note")] if note else [])
    if not block_items:
        emit("story", "story", story[start:])
        stable = pos
    else:
        ins = _insertion_point(story, start, book.an_depth)
        emit("story", "story", story[start:ins])
        stable = pos
        if out and not out[-1].endswith("\n"):
            emit("sep", "", "\n")
        for i, (label, c, kind) in enumerate(block_items):
            emit(kind, label, c if i == len(block_items) - 1 else c + "\n")
        if ins < len(story) and story[ins] != "\n":
            emit("sep", "", "\n")
        emit("story", "story", story[ins:])
    text = "".join(out)
    order = {"error": 0, "front": 1, "inserted": 2, "dropped": 3, "blocked": 4, "unlucky": 5}
    rep = sorted(reports.values(), key=lambda r: (order[r.status], r.index))
    return Context(text, B, [p for p in parts if p.kind != "sep"], rep, warnings, start, len(story) - start, stable, unmatched)


def _insertion_point(story: str, start: int, depth: int) -> int:
    """depth chars before the end, moved to just after a nearby line or sentence end (±32 chars),
    never before the story window's start."""
    n = len(story)
    ins = max(start, n - depth)
    if ins >= n or ins <= start:
        return ins
    best = None
    for d in range(0, 33):
        for p in (ins - d, ins + d):
            if start < p < n and story[p - 1] in _BOUNDARIES:
                best = p
                break
        if best is not None:
            break
    return best if best is not None else ins
