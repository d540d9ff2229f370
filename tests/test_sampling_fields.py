"""The one list of sampling settings (aiwriter.sampling.FIELDS): the dataclass, the TOML keys, the
`aiwriter write` flags, the API fields and /api/config all come from it and agree on defaults."""
import argparse
import dataclasses
import re

import pytest
from fastapi.testclient import TestClient

from aiwriter.commands import write as write_command
from aiwriter.errors import AIWriterError
from aiwriter.sampling import DEFAULTS, FIELD, FIELDS, SamplingSettings
from aiwriter.server.app import ServerSettings, create_app
from aiwriter.server.fields import Fields
from aiwriter.server.replies import ApiError
from aiwriter.server.sampling_fields import SAMPLING_FIELDS, sampling_from
from aiwriter.settings import WriteConfig, load_write_config

NAMES = [f.name for f in FIELDS]
CJK = re.compile("[\u4e00-\u9fff]")


def parser():
    p = argparse.ArgumentParser()
    write_command.add_arguments(p)
    return p


def test_the_list_is_well_formed():
    assert len(set(NAMES)) == len(NAMES)
    for f in FIELDS:
        assert f.kind in (int, float) and isinstance(f.default, f.kind)
        assert f.low <= f.default <= f.high and (not f.low_open or f.default > f.low)
        lo = f.low if not f.low_open else f.low + f.step
        assert lo <= (f.page_max if f.page_max is not None else f.high) <= f.high and f.step > 0
        for zh, en in (f.label, f.help):
            assert CJK.search(zh) or zh == en, f.name
            assert en.isascii() or "≥" in en, f.name
            assert not CJK.search(en)
        assert 20 <= len(f.help[1]) <= 240 and "\n" not in f.help[0] + f.help[1]


def test_dataclass_fields_and_defaults_come_from_the_list():
    s = SamplingSettings()
    assert [x.name for x in dataclasses.fields(s)] == NAMES + ["banned_ids", "stop_strings"]
    assert {n: getattr(s, n) for n in NAMES} == DEFAULTS
    assert s.repetition_penalty == 1.0  # the CLI's documented default, now the default everywhere


@pytest.mark.parametrize("name", NAMES)
def test_range_edges_follow_the_list(name):
    f = FIELD[name]
    SamplingSettings(**{name: f.kind(f.high)})  # the top is accepted
    with pytest.raises(AIWriterError) as e:
        SamplingSettings(**{name: f.kind(f.high + (1 if f.kind is int else 0.5))})
    assert name in e.value.en
    with pytest.raises(AIWriterError):
        SamplingSettings(**{name: f.kind(f.low - 1)})
    with pytest.raises(ApiError) as e:
        sampling_from(Fields({name: f.high + 1}), "stop")
    assert e.value.param == name


def test_cli_flags_toml_keys_and_write_config():
    p = parser()
    for f in FIELDS:
        action = next(a for a in p._actions if f.flag in a.option_strings)
        assert action.type is f.kind and action.default is None  # None: the TOML file or the default decides
        assert f.help[0] in action.help and f.help[1] in action.help and f"{f.default:g}" in action.help
    assert "-t" in next(a for a in p._actions if "--temperature" in a.option_strings).option_strings
    cfg = WriteConfig()
    assert {n: getattr(cfg, n) for n in NAMES} == DEFAULTS
    assert cfg.sampling() == SamplingSettings()
    args = p.parse_args(["开头", "--penalty-decay", "0.9", "--top-k", "5", "--stop", "。"])
    got = write_command._config(args).sampling()
    assert got == SamplingSettings(penalty_decay=0.9, top_k=5, stop_strings=("。",))


def test_toml_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[write]\n" + "\n".join(f"{f.name} = {f.kind(f.high)!r}" for f in FIELDS), encoding="utf-8")
    cfg = load_write_config(str(path))
    assert cfg.sampling() == SamplingSettings(**{f.name: f.kind(f.high) for f in FIELDS})
    path.write_text("[write]\ntop_k = 0.5\n", encoding="utf-8")
    with pytest.raises(AIWriterError):
        load_write_config(str(path))


def test_api_fields_and_config_come_from_the_list(tmp_path, cycle_model):
    assert list(SAMPLING_FIELDS) == NAMES
    assert sampling_from(Fields({}), "stop") == SamplingSettings()  # same defaults as `aiwriter write`
    app = create_app(ServerSettings(db=str(tmp_path / "d.db")), model=cycle_model, model_name="cycle")
    with TestClient(app) as c:
        cfg = c.get("/api/config", headers={"host": "localhost"}).json()
    assert [f["name"] for f in cfg["sampling_fields"]] == NAMES
    for got, f in zip(cfg["sampling_fields"], FIELDS):
        assert got["default"] == f.default == cfg["defaults"][f.name]
        assert (got["min"], got["max"], got["type"]) == (f.low, f.high, f.kind.__name__)
        assert got["help"] == {"zh": f.help[0], "en": f.help[1]} and got["label"]["zh"] == f.label[0]
