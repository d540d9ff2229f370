"""What a manuscript keeps beside its text: marks (which ranges the model wrote, and where the
last continuation is, so that 换个写法 can replace it after a reload), and the one rule for
counting its chars.

Ranges are [start, end) in UTF-16 code units, the way the page's JavaScript indexes strings.
"""
from __future__ import annotations

from aiwriter.errors import AIWriterError

# Counting rule shared by the page (web/text.js), the manuscript list and the versions: every
# character except spaces, tabs, line breaks and the ideographic space.
BLANKS = (" ", "\t", "\r", "\n", "\u3000")
MAX_RANGES = 20000

EMPTY_MARKS: dict = {"ai": [], "last": None}


def count_chars(text: str) -> int:
    return len(text) - sum(text.count(b) for b in BLANKS)


def chars_sql(column: str = "text") -> str:
    """The same count as an SQLite expression (length() counts characters)."""
    expr = column
    for b in BLANKS:
        expr = f"replace({expr}, {_sql_char(b)}, '')"
    return f"length({expr})"


def _sql_char(c: str) -> str:
    return f"char({ord(c)})"


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


class BadMarks(AIWriterError):
    """Marks that do not fit their text (the API answers 400 naming the field `marks`)."""


def _bad(zh: str, en: str) -> BadMarks:
    return BadMarks(f"字段 marks {zh}", f"field 'marks' {en}")


def _range(r, size: int):
    if (not isinstance(r, list) or len(r) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in r)
            or not 0 <= r[0] < r[1] <= size):
        raise _bad(f"里的范围应为 [起, 止]，0 ≤ 起 < 止 ≤ {size}（正文长度，UTF-16）",
                   f"ranges must be [start, end] with 0 <= start < end <= {size} (the text's length in UTF-16 units)")
    return [r[0], r[1]]


def normalize_marks(marks, text: str) -> dict:
    """Checked, sorted and merged marks for `text`: {"ai": [[start, end], ...], "last": [start, end] | None}."""
    if marks is None:
        return {"ai": [], "last": None}
    if not isinstance(marks, dict) or set(marks) - {"ai", "last"}:
        raise _bad("应为 {\"ai\": [...], \"last\": [...]}", "must be {\"ai\": [...], \"last\": [...]}")
    size = utf16_len(text)
    ai = marks.get("ai") or []
    if not isinstance(ai, list) or len(ai) > MAX_RANGES:
        raise _bad(f"的 ai 应为最多 {MAX_RANGES} 个范围的列表", f"'ai' must be a list of at most {MAX_RANGES} ranges")
    merged: list[list[int]] = []
    for a, b in sorted(_range(r, size) for r in ai):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    last = marks.get("last")
    return {"ai": merged, "last": None if last is None else _range(last, size)}
