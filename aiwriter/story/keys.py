"""Lorebook keys: plain substrings (case-insensitive, so Chinese names work as typed) or `/pattern/flags`
regular expressions, matched with the `regex` package under a time limit so a catastrophic pattern
cannot hang a writer. `\\b` does not separate CJK chars: write plain keys for Chinese names."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import regex

from aiwriter.errors import AIWriterError

MAX_KEY_CHARS = 1000
MAX_PATTERN_CHARS = 500
REGEX_TIMEOUT_S = 0.05  # one search of one regex key
_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE, "u": 0}


class KeyTimeout(Exception):
    """A regex key ran past REGEX_TIMEOUT_S on the text it was given."""


@dataclass(frozen=True)
class Key:
    text: str                 # as the user wrote it
    plain: str | None = None  # lower-cased substring, for plain keys
    pattern: object = None    # compiled regex, for /.../ keys

    @property
    def is_regex(self) -> bool:
        return self.pattern is not None

    def find(self, text: str, lowered: str) -> int:
        """Position of the first match in text (lowered is text.lower()), or -1.
        Raises KeyTimeout if a regex ran past its time limit."""
        if self.pattern is None:
            return lowered.find(self.plain)
        try:
            m = self.pattern.search(text, timeout=REGEX_TIMEOUT_S)
        except TimeoutError:
            raise KeyTimeout(self.text) from None
        return -1 if m is None else m.start()


@functools.lru_cache(maxsize=4096)
def _compile(body: str, flags: int):
    return regex.compile(body, flags)


def parse_key(raw: str, entry_name: str) -> Key:
    """One key as written: `/pattern/flags` is a regular expression, anything else a plain substring."""
    if len(raw) > MAX_KEY_CHARS:
        raise AIWriterError(
            f"设定「{entry_name}」的关键词太长（{len(raw):,} 字，上限 {MAX_KEY_CHARS:,}）",
            f"entry '{entry_name}': a key is too long ({len(raw):,} chars, limit {MAX_KEY_CHARS:,})",
        )
    if len(raw) >= 3 and raw.startswith("/") and raw.rfind("/") > 0:
        end = raw.rfind("/")
        body, flags = raw[1:end], raw[end + 1:]
        if flags == "" or all(c in _FLAGS for c in flags):
            if len(body) > MAX_PATTERN_CHARS:
                raise AIWriterError(
                    f"设定「{entry_name}」的正则关键词太长（{len(body):,} 字，上限 {MAX_PATTERN_CHARS}）",
                    f"entry '{entry_name}': regex key too long ({len(body):,} chars, limit {MAX_PATTERN_CHARS})",
                )
            f = 0
            for c in flags:
                f |= _FLAGS[c]
            try:
                return Key(raw, pattern=_compile(body, f))
            except (regex.error, ValueError, OverflowError, RecursionError) as e:
                raise AIWriterError(
                    f"设定「{entry_name}」的正则关键词 {raw[:60]} 写错了：{e}",
                    f"entry '{entry_name}': bad regex key {raw[:60]}: {e}",
                ) from None
    return Key(raw, plain=raw.lower())


def split_keys(value: str | list | None, entry_name: str, field: str) -> list[str]:
    """Keys from a comma-separated string (a regex key may contain commas: it runs to its closing
    slash) or a list of strings. Blank keys are dropped."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        out = []
        for k in value:
            if not isinstance(k, str):
                raise AIWriterError(
                    f"设定「{entry_name}」的 {field} 里有不是文字的关键词（{type(k).__name__}）",
                    f"entry '{entry_name}': {field} holds a key that is not a string ({type(k).__name__})",
                )
            if k.strip():
                out.append(k.strip())
        return out
    if not isinstance(value, str):
        raise AIWriterError(
            f"设定「{entry_name}」的 {field} 应是文字或列表（收到 {type(value).__name__}）",
            f"entry '{entry_name}': {field} must be a string or a list (got {type(value).__name__})",
        )
    out, i, n = [], 0, len(value)
    while i < n:
        while i < n and value[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        if value[i] == "/":
            close = _regex_end(value, i)
            if close > 0:
                out.append(value[i:close].strip())
                i = close + 1  # past the comma (or end)
                continue
        j = value.find(",", i)
        j = n if j < 0 else j
        k = value[i:j].strip()
        if k:
            out.append(k)
        i = j + 1
    return out


def _regex_end(s: str, start: int) -> int:
    """If s[start:] begins `/body/flags` followed by a comma or the end, the index of that comma
    (or len(s)); else -1."""
    j = start + 1
    while True:
        j = s.find("/", j)
        if j < 0:
            return -1
        k = j + 1
        while k < len(s) and s[k] in _FLAGS:
            k += 1
        rest = k
        while rest < len(s) and s[rest] in " \t":
            rest += 1
        if j > start + 1 and (rest == len(s) or s[rest] == ","):
            return rest
        j += 1
