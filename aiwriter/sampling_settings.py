"""The one list of sampling settings (FIELDS) and the SamplingSettings made from it, without torch:
`aiwriter write --help` draws its flags from this list and must answer without loading torch.
aiwriter/sampling.py (the filters, which need torch) re-exports everything here; see its docstring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, make_dataclass

from aiwriter.errors import AIWriterError

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
