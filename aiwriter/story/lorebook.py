"""What a writer keeps beside the story: memory, the author's note and the lorebook (world info).

An entry fires when one of its keys is found in the last `scan_depth` chars of the story (its own, or
the lorebook's), unless an anti-key is found there too; a selective entry also needs all its secondary
keys; a constant entry is always on; `probability` (0-100) is rolled with the assembly's seed.
"""
from __future__ import annotations

import math

import numpy as np
from dataclasses import dataclass, field

from aiwriter.errors import AIWriterError
from aiwriter.story.keys import Key, parse_key, split_keys
from aiwriter.story.scan import KeyIndex

LITE_AN_TEMPLATE = "[Author's note: <|>]"
DEFAULT_AN_DEPTH = 320
MAX_ENTRIES = 10_000
MAX_KEYS_PER_ENTRY = 100
MAX_CONTENT_CHARS = 100_000
MAX_MEMORY_CHARS = 1_000_000
MAX_NAME_CHARS = 200
MAX_CONTEXT_BUDGET = 10_000_000  # as context.MAX_BUDGET


@dataclass
class Entry:
    keys: list[str] = field(default_factory=list)
    content: str = ""
    name: str = ""                       # comment / display name
    secondary_keys: list[str] = field(default_factory=list)
    anti_keys: list[str] = field(default_factory=list)
    selective: bool = False              # secondary keys must all match too
    constant: bool = False               # always on, read at the front
    enabled: bool = True
    probability: float = 100.0           # percent
    scan_depth: int = 0                  # chars of story scanned; 0: the lorebook's
    order: int = 100                     # higher: higher priority and nearer the end
    budget: int = 0                      # at most this many chars of content; 0: no limit

    def label(self, index: int) -> str:
        """How errors and reports name the entry: #index plus its name or first key."""
        tag = self.name or (self.keys[0] if self.keys else "")
        return f"#{index + 1} {tag[:40]}".strip()


@dataclass
class CompiledEntry:
    index: int
    entry: Entry
    keys: list[Key]
    secondary: list[Key]
    anti: list[Key]
    label: str


@dataclass
class CompiledBook:
    """A validated lorebook with its keys parsed and indexed; pass it to assemble() while unchanged."""
    entries: list[CompiledEntry]
    index: KeyIndex

    def __post_init__(self):
        # which entries a text may fire, from the index's candidates, without a Python loop
        owner, slot = [], []
        self.regex_primary = np.zeros(len(self.entries), dtype=bool)
        for ce in self.entries:
            for k in ce.keys:
                if k.is_regex:
                    self.regex_primary[ce.index] = True
                else:
                    owner.append(ce.index)
                    slot.append(self.index.slot[k.plain])
        self._owner = np.array(owner, dtype=np.int64)
        self._slot = np.array(slot, dtype=np.int64)

    def may_fire(self, candidates: np.ndarray) -> np.ndarray:
        """Per entry: could one of its primary keys be in the text these candidates came from?"""
        out = self.regex_primary.copy()
        if len(self._owner):
            out[self._owner[candidates[self._slot]]] = True
        return out


@dataclass
class Lorebook:
    memory: str = ""
    authors_note: str = ""
    an_template: str = LITE_AN_TEMPLATE  # "<|>" is replaced by the note
    an_depth: int = DEFAULT_AN_DEPTH     # chars before the end of the story
    scan_depth: int = 0                  # default scan depth in chars; 0: the budget
    context_budget: int = 0              # chars the model reads at most; 0: the reader's default (16,000)
    entries: list[Entry] = field(default_factory=list)

    def compile(self) -> CompiledBook:
        """Validate everything and parse the keys; any problem is an AIWriterError naming the entry."""
        validate(self)
        out = []
        for i, e in enumerate(self.entries):
            lab = e.label(i)
            out.append(CompiledEntry(
                i, e, [parse_key(k, lab) for k in e.keys], [parse_key(k, lab) for k in e.secondary_keys],
                [parse_key(k, lab) for k in e.anti_keys], lab,
            ))
        plains = [k.plain for ce in out for k in (*ce.keys, *ce.secondary, *ce.anti) if not k.is_regex]
        return CompiledBook(out, KeyIndex(plains))

    def note_text(self) -> str:
        """The author's note as the model reads it ('' if there is none)."""
        if not self.authors_note.strip():
            return ""
        t = self.an_template or "<|>"
        return t.replace("<|>", self.authors_note) if "<|>" in t else t + self.authors_note


def _bad(label: str, zh: str, en: str) -> AIWriterError:
    return AIWriterError(f"设定「{label}」：{zh}", f"entry '{label}': {en}")


def _num(v, label, name, lo, hi, integer=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise _bad(label, f"{name} 应是数字（收到 {type(v).__name__}）", f"{name} must be a number (got {type(v).__name__})")
    if integer and v != int(v):
        raise _bad(label, f"{name} 应是整数（收到 {v}）", f"{name} must be a whole number (got {v})")
    if not lo <= v <= hi:
        raise _bad(label, f"{name} 应在 {lo} 到 {hi} 之间（收到 {v}）", f"{name} must be between {lo} and {hi} (got {v})")
    return int(v) if integer else float(v)


def validate(book: Lorebook) -> None:
    for name, v, limit in (("memory", book.memory, MAX_MEMORY_CHARS), ("authors_note", book.authors_note, MAX_CONTENT_CHARS),
                           ("an_template", book.an_template, MAX_CONTENT_CHARS)):
        if not isinstance(v, str):
            raise AIWriterError(f"{name} 应是文字（收到 {type(v).__name__}）", f"{name} must be a string (got {type(v).__name__})")
        if len(v) > limit:
            raise AIWriterError(f"{name} 太长（{len(v):,} 字，上限 {limit:,}）", f"{name} is too long ({len(v):,} chars, limit {limit:,})")
    for name, v in (("an_depth", book.an_depth), ("scan_depth", book.scan_depth)):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100_000_000:
            raise AIWriterError(f"{name} 应是不小于 0 的整数（收到 {v!r}）", f"{name} must be a whole number ≥ 0 (got {v!r})")
    v = book.context_budget
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_CONTEXT_BUDGET:
        raise AIWriterError(f"上下文预算应是 0 到 {MAX_CONTEXT_BUDGET:,} 的整数（0 = 默认；收到 {v!r}）",
                            f"context_budget must be a whole number from 0 to {MAX_CONTEXT_BUDGET:,} (0: the default; got {v!r})")
    if not isinstance(book.entries, list):
        raise AIWriterError("设定集应是条目列表", "the lorebook's entries must be a list")
    if len(book.entries) > MAX_ENTRIES:
        raise AIWriterError(
            f"设定集条目太多（{len(book.entries):,} 条，上限 {MAX_ENTRIES:,}）",
            f"too many lorebook entries ({len(book.entries):,}, limit {MAX_ENTRIES:,})",
        )
    for i, e in enumerate(book.entries):
        if not isinstance(e, Entry):
            raise AIWriterError(f"设定集第 {i + 1} 条不是条目", f"lorebook entry #{i + 1} is not an entry")
        lab = f"#{i + 1}"
        if not isinstance(e.name, str) or len(e.name) > MAX_NAME_CHARS:
            raise _bad(lab, f"名字应是不超过 {MAX_NAME_CHARS} 字的文字", f"name must be a string of at most {MAX_NAME_CHARS} chars")
        for fname in ("keys", "secondary_keys", "anti_keys"):
            ks = getattr(e, fname)
            if not isinstance(ks, list) or not all(isinstance(k, str) for k in ks):
                raise _bad(e.label(i) if fname != "keys" else lab, f"{fname} 应是文字列表", f"{fname} must be a list of strings")
            if len(ks) > MAX_KEYS_PER_ENTRY:
                raise _bad(e.label(i), f"{fname} 太多（{len(ks)} 个，上限 {MAX_KEYS_PER_ENTRY}）",
                           f"too many {fname} ({len(ks)}, limit {MAX_KEYS_PER_ENTRY})")
        lab = e.label(i)
        if not isinstance(e.content, str):
            raise _bad(lab, f"内容应是文字（收到 {type(e.content).__name__}）", f"content must be a string (got {type(e.content).__name__})")
        if len(e.content) > MAX_CONTENT_CHARS:
            raise _bad(lab, f"内容太长（{len(e.content):,} 字，上限 {MAX_CONTENT_CHARS:,}）",
                       f"content is too long ({len(e.content):,} chars, limit {MAX_CONTENT_CHARS:,})")
        for fname in ("selective", "constant", "enabled"):
            if not isinstance(getattr(e, fname), bool):
                raise _bad(lab, f"{fname} 应是真或假", f"{fname} must be true or false")
        e.probability = _num(e.probability, lab, "probability", 0, 100)
        e.scan_depth = _num(e.scan_depth, lab, "scan_depth", 0, 100_000_000, integer=True)
        e.order = _num(e.order, lab, "order", -1_000_000_000, 1_000_000_000, integer=True)
        e.budget = _num(e.budget, lab, "budget", 0, 100_000_000, integer=True)


def from_dict(d: dict) -> Lorebook:
    """Our own JSON form (as `to_dict` writes it and the page/API send it)."""
    if not isinstance(d, dict):
        raise AIWriterError("设定应是 JSON 对象", "the lorebook must be a JSON object")
    entries_raw = d.get("entries", [])
    if not isinstance(entries_raw, list):
        raise AIWriterError("entries 应是列表", "entries must be a list")
    if len(entries_raw) > MAX_ENTRIES:
        raise AIWriterError(
            f"设定集条目太多（{len(entries_raw):,} 条，上限 {MAX_ENTRIES:,}）",
            f"too many lorebook entries ({len(entries_raw):,}, limit {MAX_ENTRIES:,})",
        )
    entries = []
    for i, r in enumerate(entries_raw):
        if not isinstance(r, dict):
            raise AIWriterError(f"设定集第 {i + 1} 条应是 JSON 对象", f"lorebook entry #{i + 1} must be a JSON object")
        lab = f"#{i + 1} {str(r.get('name', ''))[:40]}".strip()
        unknown = set(r) - set(Entry.__dataclass_fields__)
        if unknown:
            raise _bad(lab, f"不认识的字段 {sorted(unknown)}", f"unknown fields {sorted(unknown)}")
        e = Entry(**r)
        for fname in ("keys", "secondary_keys", "anti_keys"):
            setattr(e, fname, split_keys(getattr(e, fname), lab, fname))
        entries.append(e)
    top = {k: v for k, v in d.items() if k != "entries"}
    unknown = set(top) - set(Lorebook.__dataclass_fields__)
    if unknown:
        raise AIWriterError(f"不认识的字段 {sorted(unknown)}", f"unknown fields {sorted(unknown)}")
    book = Lorebook(entries=entries, **top)
    book.compile()
    return book


def to_dict(book: Lorebook) -> dict:
    return {
        "memory": book.memory, "authors_note": book.authors_note, "an_template": book.an_template,
        "an_depth": book.an_depth, "scan_depth": book.scan_depth, "context_budget": book.context_budget,
        "entries": [dict(e.__dict__) for e in book.entries],
    }
