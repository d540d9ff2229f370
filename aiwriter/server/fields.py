"""Typed access to a request's JSON fields: every error names the field and never echoes its value."""
from __future__ import annotations

import math
import re

from aiwriter.server.replies import ApiError

_SURROGATE = re.compile("[\ud800-\udfff]")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,60}")
MAX_STOPS, MAX_STOP_CHARS = 16, 200


class Fields:
    """Typed access to a JSON object's fields. Null counts as absent (clients send nulls)."""

    def __init__(self, data: dict):
        self.data = data

    def only(self, *allowed: str, ignored: frozenset = frozenset()) -> "Fields":
        """400 naming the first field that is neither read here nor a known field of the API
        that is accepted and ignored: a typo (max_token) must not pass silently."""
        for name in self.data:
            if name not in allowed and name not in ignored:
                shown = name if _FIELD_NAME.fullmatch(name) else "?"  # never echo odd text
                raise ApiError(400, f"未知字段 {shown}", f"unknown field '{shown}'", param=shown)
        return self

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _bad(self, name, zh, en):
        raise ApiError(400, f"字段 {name} {zh}", f"field '{name}' {en}", param=name)

    def int(self, name: str, default=None, lo: int | None = None, hi: int | None = None):
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            v = int(v)  # 100.0 from JavaScript
        if isinstance(v, bool) or not isinstance(v, int):
            self._bad(name, "应为整数", "must be an integer")
        self._range(name, v, lo, hi)
        return v

    def float(self, name: str, default=None, lo: float | None = None, hi: float | None = None):
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self._bad(name, "应为数字", "must be a number")
        v = float(v) if isinstance(v, float) or abs(v) < 2**53 else math.inf
        if not math.isfinite(v):
            self._bad(name, "应为有限的数字", "must be a finite number")
        self._range(name, v, lo, hi)
        return v

    def _range(self, name, v, lo, hi):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            lo_s = "-∞" if lo is None else f"{lo:g}"
            hi_s = "∞" if hi is None else f"{hi:g}"
            self._bad(name, f"应在 [{lo_s}, {hi_s}] 之间", f"must be in [{lo_s}, {hi_s}]")

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            self._bad(name, "应为 true 或 false", "must be true or false")
        return v

    def str(self, name: str, default=None, max_chars: int | None = None, required: bool = False,
            nonblank: bool = False):
        v = self.data.get(name)
        if v is None:
            if required:
                self._bad(name, "是必填的", "is required")
            return default
        if not isinstance(v, str):
            self._bad(name, "应为字符串", "must be a string")
        self._clean(name, v)
        if nonblank and not v.strip():
            self._bad(name, "是空的", "is empty")
        if max_chars is not None and len(v) > max_chars:
            self._bad(name, f"太长：最多 {max_chars} 个字符", f"is too long: at most {max_chars} characters")
        return v

    def _clean(self, name, v: str) -> None:
        if _SURROGATE.search(v):
            self._bad(name, "含有无效的 Unicode 字符（单独的代理项）", "contains invalid Unicode (a lone surrogate)")

    def prompt(self, name: str = "prompt") -> str:
        """A required, non-blank text; OpenAI clients may send a list holding one string."""
        v = self.data.get(name)
        if isinstance(v, list):
            if len(v) != 1:
                self._bad(name, "应为一个字符串（本服务器一次只续写一个开头）", "must be one string (one prompt per request here)")
            v = v[0]
        if v is None:
            self._bad(name, "是必填的：给出要续写的开头", "is required: give the text to continue")
        if not isinstance(v, str):
            self._bad(name, "应为字符串", "must be a string")
        self._clean(name, v)
        if not v.strip():
            self._bad(name, "是空的：给出要续写的开头", "is empty: give the text to continue")
        return v

    def strs(self, name: str) -> tuple[str, ...]:
        """A string or a list of strings (stop sequences)."""
        v = self.data.get(name)
        if v is None:
            return ()
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            self._bad(name, "应为字符串或字符串列表", "must be a string or a list of strings")
        if len(items) > MAX_STOPS:
            self._bad(name, f"最多 {MAX_STOPS} 项", f"may hold at most {MAX_STOPS} items")
        for s in items:
            self._clean(name, s)
            if len(s) > MAX_STOP_CHARS:
                self._bad(name, f"的每一项最多 {MAX_STOP_CHARS} 个字符", f"items may be at most {MAX_STOP_CHARS} characters")
        return tuple(s for s in items if s)
