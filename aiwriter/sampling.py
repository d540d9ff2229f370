"""Turning logits into the next token: the seed's top-p (with a wider top-p after a newline),
top-p-x (allow_p), top-a, top-k, min-p, penalties, and stop strings.

Pure torch, device agnostic: logits may be [V] (one stream) or [B, V] (a batch), on CPU or CUDA.

The order, as the seed does it:
  1. logits - penalties (PenaltyState.apply), banned ids -> -inf
  2. softmax (float32, as the seed)
  3. cut on the probs: top-p (top_p_newline after "\\n"), widened by allow_p; top-k, top-a, min-p
  4. temperature on the kept probs: probs ** (1 / temperature), then renormalise
  5. draw with one uniform per row (inverse CDF), from a torch.Generator when given
Temperature comes AFTER the cut, so it reshapes the kept tokens but never changes which are kept.

FIELDS is the one list of these settings (default, accepted range, label and a line of help in
Chinese and English). SamplingSettings, the [write] keys of the settings file, the flags of
`aiwriter write`, the fields of every server API and /api/config's "sampling_fields" (which the
page draws its settings from) are all made from it: a new setting is one entry there.
"""
from __future__ import annotations

import math
from collections import deque

import torch

from aiwriter.errors import AIWriterError
# The list of settings and SamplingSettings live in sampling_settings.py (no torch there, for the
# command line's help); they are part of this module's surface.
from aiwriter.sampling_settings import (  # noqa: F401
    DEFAULTS, FIELD, FIELDS, TEMPERATURE_MAX, Field, SamplingSettings, _bad,
)

REPETITION_WINDOW = 512  # chars the repetition penalty walks back over (speed; see PenaltyState)
CJK_DECAY, OTHER_DECAY = 0.01, 0.05  # the browser 2022-04 per-distance decays


# ----------------------------------------------------------------------------- filters

def _rows(x: torch.Tensor) -> torch.Tensor:
    if x.dim() not in (1, 2):
        raise AIWriterError(f"logits 形状应为 [V] 或 [B, V]，实际为 {list(x.shape)}",
                            f"logits must be [V] or [B, V], got {list(x.shape)}")
    return x.unsqueeze(0) if x.dim() == 1 else x


def _newline_column(prev_is_newline, rows: int, device) -> torch.Tensor:
    nl = torch.as_tensor(prev_is_newline, dtype=torch.bool, device=device).reshape(-1, 1)
    if nl.shape[0] not in (1, rows):
        raise AIWriterError("prev_is_newline 的个数与批大小不符", "prev_is_newline does not match the batch size")
    return nl.expand(rows, 1)


def filter_probs(probs: torch.Tensor, settings: SamplingSettings, prev_is_newline=False) -> torch.Tensor:
    """The seed's cut and temperature on a probability vector [V] or [B, V]: returns the
    renormalised distribution the draw uses (same shape)."""
    squeeze = probs.dim() == 1
    p = _rows(probs).float()
    rows, vocab = p.shape
    p_max = p.max(dim=-1, keepdim=True).values

    # top-p: cutoff = the prob at which the sorted cumulative prob first exceeds top_p (strictly)
    nl = _newline_column(prev_is_newline, rows, p.device)
    top_p = torch.where(nl, settings.top_p_newline, settings.top_p).to(p.dtype)
    sorted_p = p.sort(dim=-1, descending=True).values
    over = sorted_p.cumsum(dim=-1) > top_p
    first = over.to(torch.uint8).argmax(dim=-1, keepdim=True)
    # the seed (np.argmax of all False = 0) kept only the top token when nothing exceeds top_p,
    # e.g. top_p = 1.0 under float rounding; we keep everything instead, as top_p = 1 means
    cutoff = torch.where(over.any(dim=-1, keepdim=True), sorted_p.gather(-1, first), 0.0)
    if settings.allow_p > 0:  # top-p-x: also every token at least this likely
        cutoff = torch.clamp(cutoff, max=settings.allow_p)
    keep = p >= cutoff

    if 0 < settings.top_k < vocab:
        kth = p.topk(settings.top_k, dim=-1).values[:, -1:]
        keep &= p >= kth
    if settings.top_a > 0:
        keep &= p >= settings.top_a * p_max * p_max
    if settings.min_p > 0:
        keep &= p >= settings.min_p * p_max
    # the top token always passes every filter above, so no row is left empty
    p = torch.where(keep, p, 0.0)

    if settings.temperature != 1.0:
        # (p / p_max) ** (1/T) equals p ** (1/T) after renormalising, but cannot underflow to
        # all zeros at low temperature (the top token stays 1)
        p = (p / p_max) ** (1.0 / settings.temperature)
    p = p / p.sum(dim=-1, keepdim=True)
    return p[0] if squeeze else p


def probs_after_filters(logits: torch.Tensor, settings: SamplingSettings | None = None,
                        prev_is_newline=False) -> torch.Tensor:
    """Banned ids masked, softmax, the seed's cut and temperature: the exact distribution
    sample() draws from. logits [V] or [B, V] -> float32 probs of the same shape."""
    settings = settings or SamplingSettings()
    squeeze = logits.dim() == 1
    x = _rows(logits).float()
    if settings.banned_ids:
        if max(settings.banned_ids) >= x.shape[-1]:
            raise AIWriterError(f"禁用编号超出词表大小 {x.shape[-1]}",
                                f"banned id out of range for vocab size {x.shape[-1]}")
        x = x.clone()
        x[:, list(settings.banned_ids)] = -math.inf
    p = torch.softmax(x, dim=-1)
    # NaN/inf logits or every token banned leave nothing to draw
    if not bool(torch.isfinite(p).all()):
        raise AIWriterError("无法选字：模型输出含 NaN/inf，或所有字都被禁用",
                            "nothing can be drawn: the logits hold NaN/inf, or every token is banned")
    p = filter_probs(p, settings, prev_is_newline)
    return p[0] if squeeze else p


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row by inverse CDF, one float64 uniform per row. The uniforms come from
    `generator` on its own device (a CPU generator works for CUDA probs too), so a seed gives
    the same draws whatever the batch size or device."""
    squeeze = probs.dim() == 1
    p = _rows(probs)
    device = generator.device if generator is not None else p.device
    u = torch.rand(p.shape[0], 1, generator=generator, dtype=torch.float64, device=device).to(p.device)
    cdf = p.double().cumsum(dim=-1)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # first cdf > u * total
    # u * total can round up to total: fall back to the last token with nonzero prob
    last = p.shape[-1] - 1 - (p > 0).flip(-1).to(torch.uint8).argmax(dim=-1, keepdim=True)
    idx = torch.minimum(idx, last).squeeze(-1)
    return idx[0] if squeeze else idx


def sample(logits: torch.Tensor, settings: SamplingSettings | None = None,
           generator: torch.Generator | None = None, prev_is_newline=False) -> torch.Tensor:
    """Next token ids: logits [V] -> a 0-dim long tensor, [B, V] -> [B]. Apply penalties to
    the logits first (PenaltyState.apply). prev_is_newline: a bool or one per row."""
    return draw(probs_after_filters(logits, settings, prev_is_newline), generator)


# ----------------------------------------------------------------------------- penalties

def is_cjk_ideograph(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF
            or 0x20000 <= o <= 0x2EBEF or 0x30000 <= o <= 0x323AF)


class PenaltyState:
    """Penalties for one stream, subtracted from its logits before softmax.

    - ChatRWKV presence/frequency: each generated token t has a count; before every draw
      logit[t] -= presence + frequency * count[t]; after it all counts *= penalty_decay and the
      drawn token's count += 1 (0 for whitespace/digit tokens, as the rwkv package does, which
      still get the presence penalty). Only generated tokens count.
    - Browser 2022-04 repetition penalty: walk back over the text (context and generated) from
      the last token, d = 1, 2, ...; the token c at distance d, the count_c-th seen so far,
      adds max(0, count_c - 1 - d * decay_c), decay_c = 0.01 for CJK ideographs and 0.05
      otherwise; logit[c] -= repetition_penalty * total. The walk covers the last `window`
      tokens only (a Python loop per step); a very frequent char far back loses the part of its
      penalty that lies beyond the window.

    token_text: the text of each id (a list, or a callable id -> str) for the CJK decay and the
    whitespace rule; without it every token decays at 0.05 and counts 1.
    """

    def __init__(self, settings: SamplingSettings, vocab_size: int, token_text=None,
                 device="cpu", window: int = REPETITION_WINDOW):
        self.settings, self.vocab_size = settings, vocab_size
        self._text = token_text if token_text is None or callable(token_text) else token_text.__getitem__
        self._decay: dict[int, float] = {}
        self.history: deque[int] = deque(maxlen=window)
        self.counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)

    def _check(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.vocab_size:
            raise AIWriterError(f"编号 {t} 超出词表范围", f"token id {t} out of vocab range")
        return t

    def prime(self, ids) -> None:
        """The context's ids: they join the repetition walk, not the presence/frequency counts."""
        self.history.extend(self._check(t) for t in ids)

    def update(self, token_id) -> None:
        """Record a generated token (after it is drawn)."""
        t = self._check(token_id)
        self.history.append(t)
        s = self.settings
        if s.presence_penalty or s.frequency_penalty:
            self.counts.mul_(s.penalty_decay)
            text = self._text(t) if self._text else "x"
            weight = 0.0 if text and all(c in " \t0123456789" for c in text) else 1.0
            self.counts[t] += weight
            self.seen[t] = True

    def _decay_of(self, t: int) -> float:
        if t not in self._decay:
            text = self._text(t) if self._text else ""
            cjk = bool(text) and all(is_cjk_ideograph(c) for c in text)
            self._decay[t] = CJK_DECAY if cjk else OTHER_DECAY
        return self._decay[t]

    def repetition(self) -> dict[int, float]:
        """The browser penalty per token id (before the strength factor), nonzero entries only."""
        count: dict[int, int] = {}
        total: dict[int, float] = {}
        for d, t in enumerate(reversed(self.history), start=1):
            count[t] = count.get(t, 0) + 1
            amount = count[t] - 1 - d * self._decay_of(t)
            if amount > 0:
                total[t] = total.get(t, 0.0) + amount
        return total

    def penalties(self) -> torch.Tensor:
        """The amount subtracted from each logit, float32 [V]."""
        s = self.settings
        out = torch.zeros_like(self.counts)
        if s.presence_penalty or s.frequency_penalty:
            out += s.presence_penalty * self.seen + s.frequency_penalty * self.counts
        if s.repetition_penalty:
            rep = self.repetition()
            if rep:
                idx = torch.tensor(list(rep.keys()), dtype=torch.long, device=out.device)
                val = torch.tensor(list(rep.values()), dtype=torch.float32, device=out.device)
                out.index_add_(0, idx, float(s.repetition_penalty) * val)
        return out

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [V] (or [1, V]) minus the penalties, float32; the input is left unchanged."""
        s = self.settings
        if not (s.presence_penalty or s.frequency_penalty or s.repetition_penalty):
            return logits.float()
        return logits.float() - self.penalties().to(logits.device)


def apply_penalties(logits: torch.Tensor, states: list[PenaltyState]) -> torch.Tensor:
    """Batched logits [B, V] with one PenaltyState per row."""
    if logits.dim() != 2 or logits.shape[0] != len(states):
        raise AIWriterError("惩罚状态个数与批大小不符", "one PenaltyState per batch row is needed")
    return torch.stack([st.apply(row) for st, row in zip(states, logits)])


# ----------------------------------------------------------------------------- stop strings

class StopMatcher:
    """Fed decoded text piece by piece, says when a stop string appears. feed() returns the text
    safe to show now: text that could be the start of a stop string is held back until the next
    piece settles it; the stop string and anything after it are never returned."""

    def __init__(self, stop_strings=()):
        self.stops = tuple(s for s in stop_strings if s)
        self.held = ""
        self.stopped = False

    def feed(self, text: str) -> tuple[str, bool]:
        """-> (text to emit, whether a stop string has now been seen)."""
        if self.stopped:
            return "", True
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.held, self.stopped = "", True
            return buf[:min(hits)], True
        keep = self._partial(buf)
        self.held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def _partial(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of some stop string."""
        longest = max((len(s) for s in self.stops), default=1) - 1
        for n in range(min(longest, len(buf)), 0, -1):
            tail = buf[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0

    def flush(self) -> str:
        """At the end of generation: the held-back text (it never became a stop string)."""
        out, self.held = ("" if self.stopped else self.held), ""
        return out
