"""The sampling fields a completion request may carry, read into SamplingSettings with the same
defaults as `aiwriter write`."""
from __future__ import annotations

import dataclasses

from aiwriter.errors import AIWriterError
from aiwriter.sampling import FIELDS, SamplingSettings
from aiwriter.server.fields import Fields
from aiwriter.server.replies import ApiError
from aiwriter.settings import WriteConfig

DEFAULTS = WriteConfig()  # the same defaults as `aiwriter write`
SAMPLING_FIELDS = tuple(field.name for field in FIELDS)
BAN_BIAS = -100     # a logit_bias at or below this bans the token (OpenAI's and KoboldCpp's meaning of -100)
MAX_BIASES = 1024   # entries a logit_bias may hold


def sampling_from(f: Fields, stop_field: str, aliases: dict[str, str] | None = None) -> SamplingSettings:
    """SamplingSettings from a request: every field of aiwriter.sampling.FIELDS, absent ones at
    `aiwriter write`'s defaults. temperature 0 means greedy (as in OpenAI's API): the most likely
    char every time."""
    a = aliases or {}
    values = {}
    for field in FIELDS:
        read = f.int if field.kind is int else f.float
        default = field.default
        if field.name == "top_p_newline":  # a client that widens top_p keeps the newline top-p at least as wide
            default = max(default, values["top_p"])
        values[field.name] = read(a.get(field.name, field.name), default, field.low, field.high)
    if values["temperature"] == 0:
        values.update(temperature=1.0, top_p=0.0, top_p_newline=0.0)
    try:
        return SamplingSettings(**values, stop_strings=f.strs(stop_field))
    except AIWriterError as e:  # fields were checked above; this is a safety net
        raise ApiError.of(e)


def seed_from(f: Fields, name: str = "seed") -> int | None:
    """A seed (any 64-bit value torch accepts); KoboldAI's sampler_seed uses -1 for random."""
    seed = f.int(name, None, -(2**63), 2**64 - 1)
    if name == "sampler_seed" and seed is not None and seed < 0:
        return None
    return seed


def logit_bias_bans(f: Fields, vocab_size: int) -> tuple[int, ...]:
    """The ids a `logit_bias` ({"id": bias}, as OpenAI and KoboldCpp take it) bans: those at BAN_BIAS or
    below; 0 changes nothing. Any other bias would change what is written in a way this server cannot
    do: a 400 naming the field, never ignored."""
    bias = f.data.get("logit_bias")
    if bias is None:
        return ()
    if not isinstance(bias, dict) or len(bias) > MAX_BIASES:
        raise ApiError(400, f"字段 logit_bias 应为对象（最多 {MAX_BIASES} 项）：{{\"编号\": 偏置}}",
                       f"field 'logit_bias' must be an object of at most {MAX_BIASES} entries: {{\"id\": bias}}",
                       param="logit_bias")
    ids = []
    for key, value in bias.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and int(key) < vocab_size):
            raise ApiError(400, f"字段 logit_bias 的键应为 0 到 {vocab_size - 1} 的字编号",
                           f"field 'logit_bias' keys must be token ids from 0 to {vocab_size - 1}", param="logit_bias")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ApiError(400, "字段 logit_bias 的值应为数字", "field 'logit_bias' values must be numbers", param="logit_bias")
        if value <= BAN_BIAS:
            ids.append(int(key))
        elif value != 0:
            raise ApiError(400, f"字段 logit_bias 只支持 {BAN_BIAS}（禁用该字），不支持其他偏置",
                           f"field 'logit_bias' supports only {BAN_BIAS} (ban the token), not other biases",
                           param="logit_bias")
    return tuple(ids)


def with_bans(settings: SamplingSettings, ids) -> SamplingSettings:
    """settings with these ids banned too (never drawn)."""
    if not ids:
        return settings
    return dataclasses.replace(settings, banned_ids=tuple(dict.fromkeys(tuple(settings.banned_ids) + tuple(ids))))
