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
from dataclasses import dataclass, field, make_dataclass

import torch

from aiwriter.errors import AIWriterError

REPETITION_WINDOW = 512  # chars the repetition penalty walks back over (speed; see PenaltyState)
CJK_DECAY, OTHER_DECAY = 0.01, 0.05  # the browser 2022-04 per-distance decays
TEMPERATURE_MAX = 10.0  # above this every kept token is near-uniform; larger values are typos


# ----------------------------------------------------------------------------- the list of settings

@dataclass(frozen=True)
class Field:
    """One sampling setting. Its name is the SamplingSettings attribute, the TOML key under
    [write], the JSON field of every API and the page's setting; the CLI flag is --NAME-WITH-DASHES."""
    name: str
    kind: type            # float or int
    default: float
    low: float            # smallest accepted value (excluded when low_open)
    high: float           # largest accepted value
    label: tuple[str, str]  # (zh, en), a few words
    help: tuple[str, str]   # (zh, en), one line for a writer: what it does to the text
    step: float = 0.01      # the page's step
    page_max: float | None = None  # the page's slider ends here (values up to `high` are still accepted)
    basic: bool = True      # shown on the page without opening "more"
    low_open: bool = False
    short_flag: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def range_text(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def to_json(self) -> dict:
        return {"name": self.name, "type": self.kind.__name__, "default": self.default, "min": self.low,
                "max": self.high, "min_exclusive": self.low_open, "step": self.step,
                "page_max": self.page_max if self.page_max is not None else self.high, "basic": self.basic,
                "label": {"zh": self.label[0], "en": self.label[1]}, "help": {"zh": self.help[0], "en": self.help[1]}}


FIELDS: tuple[Field, ...] = (
    Field("temperature", float, 1.0, 0.0, TEMPERATURE_MAX, ("温度", "Temperature"), (
        "大于 1 让入选的字机会更平均、文字更跳脱；小于 1 更偏向最可能的字、更稳。只改轻重，不改哪些字入选",
        "Above 1 evens out the chances of the chars still in the running, so the prose gets bolder; below 1 "
        "favours the likeliest, so it gets safer. It reweighs the candidates, never changes which are allowed"),
        step=0.05, page_max=2.0, low_open=True, short_flag="-t"),
    Field("top_p", float, 0.75, 0.0, 1.0, ("top-p", "top-p"), (
        "只在最可能的一批字里挑，这批字的概率合计到这个值：越小越稳、越套路，越大越多变（0 = 总选最可能的字）",
        "Picks only among the likeliest chars whose chances add up to this: lower is safer and more predictable, "
        "higher more varied (0 = always the likeliest char)")),
    Field("top_p_newline", float, 0.9, 0.0, 1.0, ("换行后的 top-p", "top-p after a newline"), (
        "新段落第一个字用的 top-p：通常比 top-p 大，让每段的开头更多变",
        "The top-p for the first char of a paragraph: usually wider than top-p, so paragraphs open in more varied ways")),
    Field("allow_p", float, 0.0, 0.0, 1.0, ("总保留概率 ≥", "Always keep prob ≥"), (
        "概率不低于它的字总能入选（2022 版的 top-p-x），给少见而合适的字留门；0 = 关",
        "Any char at least this likely can always be picked (the 2022 top-p-x), a door left open for rare but "
        "fitting words; 0 = off"), step=0.001, page_max=0.1),
    Field("top_k", int, 0, 0, 2**31, ("top-k", "top-k"), (
        "只在最可能的 k 个字里挑：越小越保守；0 = 不限",
        "Picks only among the k likeliest chars: smaller is more conservative; 0 = no limit"), step=1, page_max=200),
    Field("top_a", float, 0.0, 0.0, 1.0, ("top-a", "top-a"), (
        "去掉比最可能的字差太多的字，门槛随最高概率的平方升高：模型越有把握删得越多；0 = 关",
        "Drops chars far less likely than the best one, with a bar that rises with the square of its chance: the "
        "surer the model, the more it cuts; 0 = off"), basic=False),
    Field("min_p", float, 0.0, 0.0, 1.0, ("min-p", "min-p"), (
        "去掉概率不到最可能字这个比例的字：挡住离谱的字，又不限定候选的个数；0 = 关",
        "Drops chars less likely than this fraction of the best one: keeps out the absurd without capping how many "
        "candidates remain; 0 = off"), basic=False),
    Field("repetition_penalty", float, 1.0, 0.0, 100.0, ("重复惩罚（2022 网页版）", "Repetition penalty (2022)"), (
        "2022 网页版的重复惩罚：近处反复出现的字被压低，出现越多、离得越近压得越重，少写车轱辘话；1 = 原版强度，0 = 关",
        "The 2022 browser version's penalty: chars that keep coming back nearby are pushed down, the more often and "
        "the closer the more, so the text loops less; 1 = as the original, 0 = off"), step=0.1, page_max=3.0),
    Field("presence_penalty", float, 0.0, 0.0, 2.0, ("出现惩罚", "Presence penalty"), (
        "写过的字都被压低一点，不论写过几次：鼓励换新词；0 = 关",
        "Every char already written is pushed down a little, however often it appeared: encourages fresh words; "
        "0 = off"), step=0.05),
    Field("frequency_penalty", float, 0.0, 0.0, 2.0, ("频率惩罚", "Frequency penalty"), (
        "写得越多的字压得越低：抑制口头禅和用滥的字；0 = 关",
        "The more often a char was written, the more it is pushed down: curbs pet phrases and overused chars; "
        "0 = off"), step=0.05),
    Field("penalty_decay", float, 0.996, 0.0, 1.0, ("惩罚的记性", "Penalty memory"), (
        "出现惩罚和频率惩罚记得多久：每写一个字，以往的计数乘以它；越接近 1 记得越久",
        "How long the presence and frequency penalties remember: each new char multiplies the past counts by this; "
        "closer to 1 remembers longer"), step=0.001, basic=False),
)
FIELD = {f.name: f for f in FIELDS}
DEFAULTS = {f.name: f.default for f in FIELDS}


def _validate(self) -> None:
    """Raise AIWriterError (naming the field) for any value out of range."""
    for f in FIELDS:
        v = getattr(self, f.name)
        if f.kind is int:
            if not isinstance(v, int) or isinstance(v, bool) or not f.low <= v <= f.high:
                _bad(f.name, v, f"应为 {f.range_text()} 之间的整数（0 表示不用）",
                     f"must be an integer in {f.range_text()} (0 = off)")
            continue
        if isinstance(v, bool) and f.name != "repetition_penalty":  # True/False: the 2022 page's on/off
            _bad(f.name, v, "应为数字", "must be a number")
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            _bad(f.name, v, "应为有限的数字", "must be a finite number")
        if v < f.low or (f.low_open and v == f.low) or v > f.high:
            _bad(f.name, v, f"应在 {f.range_text()} 之间", f"must be in {f.range_text()}")
    if not isinstance(self.banned_ids, tuple) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.banned_ids):
        _bad("banned_ids", self.banned_ids, "应为非负整数列表", "must be a list of non-negative integers")
    if not isinstance(self.stop_strings, tuple) or not all(isinstance(s, str) and s for s in self.stop_strings):
        _bad("stop_strings", self.stop_strings, "应为非空字符串列表", "must be a list of non-empty strings")


def _post_init(self) -> None:
    # accept lists (JSON, CLI) but keep the dataclass hashable and immutable
    for name in ("banned_ids", "stop_strings"):
        value = getattr(self, name)
        if isinstance(value, (list, set, frozenset)):
            object.__setattr__(self, name, tuple(value))
    self.validate()


SamplingSettings = make_dataclass(
    "SamplingSettings",
    [(f.name, f.kind, field(default=f.default)) for f in FIELDS] + [
        ("banned_ids", tuple[int, ...], field(default=())),    # never drawn (the unknown char goes here)
        ("stop_strings", tuple[str, ...], field(default=())),  # generation ends before the first one
    ],
    frozen=True,
    namespace={"__post_init__": _post_init, "validate": _validate, "__module__": __name__, "__doc__":
               "How to turn logits into the next token: every field of FIELDS, plus banned_ids and stop_strings."},
)


def _bad(name, value, zh, en):
    raise AIWriterError(f"采样参数 {name}={value!r} 无效：{zh}", f"invalid sampling setting {name}={value!r}: {en}")


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
