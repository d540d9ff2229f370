"""Chapters (章节) of a manuscript, kept in its text as heading lines (第一章 …, 第12回 …, 楔子, …).

The manuscript's text stays the one place the words live (so its version history covers chapter
changes too: deleting a chapter can be undone by restoring a version). A manuscript without
headings is one chapter; text before the first heading is a chapter without a heading line.
Adding, renaming, moving and deleting chapters return the new text.
"""
from __future__ import annotations

from dataclasses import dataclass

from aiwriter.errors import AIWriterError
from aiwriter.story.book import HEADING, MAX_TITLE, Chapter

_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1 -> 一, 12 -> 十二, 105 -> 一百零五 (up to 9999)."""
    if n <= 0 or n > 9999:
        return str(n)
    out, units = "", [(1000, "千"), (100, "百"), (10, "十")]
    zero = False
    for value, name in units:
        d, n = divmod(n, value)
        if d:
            if zero:
                out += "零"
            out += ("" if (value == 10 and d == 1 and not out) else _DIGITS[d]) + name
            zero = False
        elif out:
            zero = True
    if n:
        out += ("零" if zero else "") + _DIGITS[n]
    return out


@dataclass
class Span:
    title: str        # the heading line as written ("" for text before the first heading)
    start: int        # where the chapter (its heading line) starts in the text
    body: int         # where its text starts
    end: int          # where the next chapter starts

    def info(self, text: str, index: int) -> dict:
        return {"index": index, "title": self.title, "start": self.start, "end": self.end,
                "chars": len(text[self.body:self.end].strip())}


def find(text: str) -> list[Span]:
    spans: list[Span] = []
    pos = 0
    lines = text.splitlines(keepends=True)
    starts = []
    for line in lines:
        bare = line.rstrip("\r\n")
        if len(bare) <= MAX_TITLE and HEADING.match(bare):
            starts.append((pos, pos + len(line), bare.strip(" \t\u3000")))
        pos += len(line)
    first = starts[0][0] if starts else len(text)
    if first > 0 and text[:first].strip():
        spans.append(Span("", 0, 0, first))
    for i, (s, b, title) in enumerate(starts):
        spans.append(Span(title, s, b, starts[i + 1][0] if i + 1 < len(starts) else len(text)))
    if not spans:
        spans.append(Span("", 0, 0, len(text)))
    return spans


def _check(spans: list[Span], i: int) -> Span:
    if not isinstance(i, int) or not 0 <= i < len(spans):
        raise AIWriterError(f"没有第 {i} 章（共 {len(spans)} 章，从 0 数起）", f"no chapter {i} (there are {len(spans)}, counted from 0)")
    return spans[i]


def heading(title: str, number: int) -> str:
    title = title.strip(" \t\u3000")
    if "\n" in title or "\r" in title or len(title) > MAX_TITLE:
        raise AIWriterError(f"章节标题应是一行、不超过 {MAX_TITLE} 字", f"a chapter title is one line of at most {MAX_TITLE} chars")
    if not title:
        raise AIWriterError("章节标题是空的", "the chapter title is empty")
    return title if HEADING.match(title) else f"第{chinese_number(number)}章 {title}"


def _piece(text: str, s: Span) -> str:
    p = text[s.start:s.end]
    return p if p.endswith("\n") else p + "\n"


def _join(pieces: list[str]) -> str:
    return "".join(pieces).rstrip("\n") + "\n" if pieces else ""


def add(text: str, title: str, body: str = "", position: int | None = None) -> str:
    spans = find(text) if text.strip() else []
    position = len(spans) if position is None else position
    if not 0 <= position <= len(spans):
        raise AIWriterError(f"章节位置应在 0 到 {len(spans)} 之间", f"the chapter position must be 0 to {len(spans)}")
    number = sum(1 for s in spans[:position] if s.title) + 1
    new = heading(title, number) + "\n" + (body.rstrip("\n") + "\n" if body.strip() else "")
    pieces = [_piece(text, s) for s in spans]
    pieces.insert(position, new)
    return _join(pieces)


def rename(text: str, i: int, title: str) -> str:
    spans = find(text)
    s = _check(spans, i)
    line = heading(title, sum(1 for x in spans[:i] if x.title) + 1)
    return text[:s.start] + line + "\n" + text[s.body:]


def move(text: str, i: int, j: int) -> str:
    spans = find(text)
    _check(spans, i)
    _check(spans, j)
    if not spans[0].title and (i == 0 or j == 0) and i != j:
        raise AIWriterError("第一个标题前的文字没有标题，不能移动，也不能把别的章移到它前面：请先给它起个标题",
                            "the text before the first heading has no title, so it cannot move and nothing can go "
                            "before it: give it a title first")
    pieces = [_piece(text, s) for s in spans]
    pieces.insert(j, pieces.pop(i))
    return _join(pieces)


def delete(text: str, i: int) -> str:
    spans = find(text)
    _check(spans, i)
    pieces = [_piece(text, s) for k, s in enumerate(spans) if k != i]
    return _join(pieces)


def chapter(text: str, i: int) -> Chapter:
    s = _check(find(text), i)
    return Chapter(s.title, text[s.body:s.end].strip("\n"))


def text_through(text: str, i: int) -> str:
    """What continuing chapter i reads from: the earlier chapters and this one (the assembly then
    keeps what its budget allows, from the end)."""
    return text[:_check(find(text), i).end].rstrip("\n")
