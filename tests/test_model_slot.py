"""server/model_slot.py: the model in memory. Switching loads the named file (the model handed in
is kept to switch back to without loading), a file that cannot be used is a 422 naming the file
as the request did (never its place on disk) and keeps the model held; start states are loaded
once per file version and model."""
from __future__ import annotations

import os

import pytest
import torch

from aiwriter.errors import AIWriterError
from aiwriter.server.catalog import ModelCatalog, StateCatalog
from aiwriter.server.model_slot import ModelSlot
from aiwriter.server.replies import ApiError


@pytest.fixture
def folders(tmp_path):
    models, states = tmp_path / "models", tmp_path / "states"
    (models / "sub").mkdir(parents=True)
    states.mkdir()
    for name in ("good.pth", "broken.pth", "sub/odd.pth"):
        (models / name).write_bytes(b"x")
    (states / "s.pth").write_bytes(b"x")
    return models, states


def test_switching_loads_the_named_model_and_back_to_the_given_one(cycle_model, folders):
    models, _ = folders
    loaded = []

    def loader(path, vocab=None, device=None, dtype=None):
        loaded.append((path.name, device, dtype))
        return other

    other = type(cycle_model)(net=cycle_model.net, tokenizer=cycle_model.tokenizer, device=cycle_model.device,
                              dtype=cycle_model.dtype)
    slot = ModelSlot(ModelCatalog(None, models, default_name="cycle"), cycle_model, loader=loader, dtype=torch.bfloat16)
    assert slot.name == "cycle" and slot.model is cycle_model and slot.holds(None) and slot.holds("cycle")
    first_writer = slot.writer
    slot.switch("good.pth")
    assert slot.name == "good.pth" and slot.model is other and not slot.holds("cycle")
    assert loaded == [("good.pth", "cpu", torch.bfloat16)] and slot.writer is not first_writer
    slot.switch("cycle")
    assert slot.model is cycle_model and len(loaded) == 1  # the given model: nothing loaded


def test_a_model_that_cannot_load_is_a_422_naming_it_as_asked(cycle_model, folders):
    models, _ = folders

    def loader(path, **kw):
        if path.name == "odd.pth":
            raise AIWriterError(f"坏文件：{path}", f"bad file: {path}")
        raise RuntimeError("torch said no")

    slot = ModelSlot(ModelCatalog(None, models, default_name="cycle"), cycle_model, loader=loader)
    with pytest.raises(ApiError) as e:
        slot.switch("sub/odd.pth")
    assert e.value.status == 422 and e.value.param == "model"
    assert "bad file: sub/odd.pth" in e.value.en and str(models) not in e.value.en + e.value.zh
    with pytest.raises(ApiError) as e:
        slot.switch("broken.pth")
    assert e.value.status == 422 and "RuntimeError" in e.value.en
    assert slot.name == "cycle" and slot.model is cycle_model


def test_start_states_are_loaded_once_per_file_version(cycle_model, folders):
    models, states = folders
    slot = ModelSlot(ModelCatalog(None, models, default_name="cycle"), cycle_model, states=StateCatalog(states))
    reads = []

    def state_from_file(path):
        reads.append(path.name)
        if path.name == "bad.pth":
            raise AIWriterError(f"形状不对：{path}", f"wrong shape: {path}")
        return object()

    cycle_model.state_from_file = state_from_file
    assert slot.start_state(None) is None and slot.start_state("") is None
    first = slot.start_state("s.pth")
    assert slot.start_state("s.pth") is first and reads == ["s.pth"]
    st = (states / "s.pth").stat()
    os.utime(states / "s.pth", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version of the file
    assert slot.start_state("s.pth") is not first and reads == ["s.pth", "s.pth"]
    with pytest.raises(ApiError) as e:
        slot.start_state("nope.pth")
    assert e.value.status == 404
    (states / "bad.pth").write_bytes(b"x")
    with pytest.raises(ApiError) as e:
        slot.start_state("bad.pth")
    assert e.value.status == 422 and "wrong shape: bad.pth" in e.value.en and str(states) not in e.value.en


def test_at_most_16_states_stay_loaded(cycle_model, tmp_path):
    for i in range(17):
        (tmp_path / f"s{i}.pth").write_bytes(b"x")
    slot = ModelSlot(ModelCatalog(None, None, default_name="cycle"), cycle_model, states=StateCatalog(tmp_path))
    reads = []
    cycle_model.state_from_file = lambda path: reads.append(path.name) or object()
    for i in range(17):
        slot.start_state(f"s{i}.pth")
    slot.start_state("s16.pth")
    assert len(reads) == 17
    slot.start_state("s0.pth")   # the oldest went
    assert len(reads) == 18
