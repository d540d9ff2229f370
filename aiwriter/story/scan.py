"""Finding many plain keys in a long text fast.

A key can only occur in a text if each of its chars (1-char keys) or each of its adjacent char pairs
is in the text. The set of a window's chars and pairs is made once with numpy and checked for every
key at once; only keys that pass are searched for with str.find (and 1- and 2-char keys that pass are
found by that check alone). Regex keys are searched for directly, under their time limit."""
from __future__ import annotations

import numpy as np

_PAIR = np.uint64(1 << 42)   # pairs live above every single char's code
_SHIFT = np.uint64(21)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)


def _grams(c: np.ndarray) -> np.ndarray:
    """Single chars if there is one, else the adjacent pairs."""
    if len(c) < 2:
        return c
    return _PAIR + (c[:-1] << _SHIFT) + c[1:]


class KeyIndex:
    """All plain (lower-cased) keys of a lorebook with their grams, made once per lorebook."""

    def __init__(self, plains: list[str]):
        self.slot = {}
        for p in plains:
            if p and p not in self.slot:
                self.slot[p] = len(self.slot)
        keys = list(self.slot)
        self.keys = keys
        lens = np.array([len(k) for k in keys], dtype=np.int64)
        c = _codes("".join(keys))
        owner = np.repeat(np.arange(len(keys), dtype=np.int64), lens)
        same = owner[:-1] == owner[1:] if len(c) > 1 else np.zeros(0, dtype=bool)
        pairs = (_PAIR + (c[:-1] << _SHIFT) + c[1:])[same] if len(c) > 1 else np.zeros(0, np.uint64)
        single = lens == 1
        starts = np.cumsum(lens) - lens
        self.grams = np.concatenate([pairs, c[starts[single]]])
        self.owner = np.concatenate([owner[:-1][same] if len(c) > 1 else np.zeros(0, np.int64),
                                     np.nonzero(single)[0]])

    def candidates(self, lowered: str) -> np.ndarray:
        """For every key: True if it may occur in `lowered` (certainly, for 1- and 2-char keys)."""
        if not self.keys:
            return np.zeros(0, dtype=bool)
        c = _codes(lowered)
        present = np.sort(np.concatenate([c, _grams(c)]) if len(c) >= 2 else c)
        if len(present) == 0:
            return np.zeros(len(self.keys), dtype=bool)
        at = np.minimum(np.searchsorted(present, self.grams), len(present) - 1)
        hit = present[at] == self.grams
        missing = np.bincount(self.owner[~hit], minlength=len(self.keys))
        return missing == 0
