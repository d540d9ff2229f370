"""The sampling fields a completion request may carry, read into SamplingSettings with the same
defaults as `aiwriter write`."""
from __future__ import annotations

from aiwriter.errors import AIWriterError
from aiwriter.sampling import FIELDS, SamplingSettings
from aiwriter.server.fields import Fields
from aiwriter.server.replies import ApiError
from aiwriter.settings import WriteConfig

DEFAULTS = WriteConfig()  # the same defaults as `aiwriter write`
SAMPLING_FIELDS = tuple(field.name for field in FIELDS)


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
