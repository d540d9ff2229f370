"""The disk state cache: reuse across restarts, edits invalidate only what follows, damaged and
foreign files are never trusted, LRU bound, keyed by model and start state."""
import os
import time
from pathlib import Path

import pytest
import torch

import aiwriter
from aiwriter.state_cache import DiskStateCache, PrefixKeys, model_identity
from aiwriter.writer import Writer

TEXT = ("　　却说那人走到山前，只见一座古庙，门上写着三个大字。他推门进去，里面黑洞洞的，"
        "什么也看不见。忽听得有人叫道：“来者何人？”那人吃了一惊，连忙答道：“在下姓李，"
        "名叫李四，路过此地，天色已晚，想借宿一宵。”里面那人笑道：“原来如此，请进请进。”") * 3
EVERY = 64


@pytest.fixture(scope="module")
def model():
    return aiwriter.load_model()


def fresh_writer(model, tmp_path, **kw):
    """A Writer as after a restart: empty memory cache, the same disk folder."""
    return Writer(model, disk=DiskStateCache(model, tmp_path / "states", every=EVERY, **kw))


def full_read(model, text, start=None):
    return Writer(model).read(text, start=start)


def close(a, b):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_restart_reads_only_the_new_text(model, tmp_path):
    w = fresh_writer(model, tmp_path)
    first = w.read(TEXT)
    assert w.last_reused == 0
    n = len(first.ids)
    stored = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "states").iterdir())
    assert stored == [k * EVERY for k in range(1, (n - 1) // EVERY + 1)] + [n]

    w2 = fresh_writer(model, tmp_path)
    calls = []
    orig = model.forward
    model.forward = lambda ids, state=None: (calls.append(len(ids)), orig(ids, state))[1]
    try:
        again = w2.read(TEXT + "那人进了庙门。")
    finally:
        model.forward = orig
    assert w2.last_from_disk == n and w2.last_reused == n
    assert sum(calls) == len(again.ids) - n  # only the new chars were read
    ref = full_read(model, TEXT + "那人进了庙门。")
    assert close(again.logits, ref.logits)
    for k in ref.state.data:
        assert close(again.state.data[k], ref.state.data[k])
    # the same text exactly: nothing read at all
    w3 = fresh_writer(model, tmp_path)
    same = w3.read(TEXT)
    assert w3.last_from_disk == n and torch.equal(same.logits, first.logits)


def test_an_early_edit_reuses_only_what_precedes_it(model, tmp_path):
    fresh_writer(model, tmp_path).read(TEXT)
    edited = TEXT[:150] + "庙" + TEXT[151:]
    w = fresh_writer(model, tmp_path)
    r = w.read(edited)
    p = next(i for i, (a, b) in enumerate(zip(r.ids, full_read(model, TEXT).ids)) if a != b)
    assert w.last_from_disk == p // EVERY * EVERY > 0
    assert close(r.logits, full_read(model, edited).logits)


def test_damaged_and_foreign_files_are_ignored_and_rebuilt(model, tmp_path):
    fresh_writer(model, tmp_path).read(TEXT)
    files = sorted((tmp_path / "states").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    last = files[-1]
    raw = bytearray(last.read_bytes())
    raw[-10] ^= 0xFF  # a flipped bit in the tensor data
    last.write_bytes(bytes(raw))
    files[-2].write_bytes(b"garbage")  # not safetensors at all
    w = fresh_writer(model, tmp_path)
    r = w.read(TEXT)
    assert w.disk.rejected == 2
    assert w.last_from_disk == int(files[-3].name.split("-")[1])
    assert close(r.logits, full_read(model, TEXT).logits)
    assert last.exists()  # rebuilt

    # a file under a matching name written for another start state (foreign header) is refused
    src = files[-3]
    n = int(src.name.split("-")[1])
    w4 = fresh_writer(model, tmp_path)
    ts = torch.zeros(4, 4, 64, 64)
    ts[0, 0, 0, 0] = 1.0
    start = model.state_from_time_state(ts)
    keys = PrefixKeys(w4.disk.model_id, start.start, r.ids, EVERY)
    fake = src.with_name(w4.disk._name(n, keys.key(n)))
    fake.write_bytes(src.read_bytes())
    assert w4.disk.longest_prefix(r.ids[:n], start.start) == (0, None, None)
    assert not fake.exists() and w4.disk.rejected == 1


def test_start_state_and_model_identity_are_part_of_the_key(model, tmp_path):
    fresh_writer(model, tmp_path).read(TEXT)
    ts = 0.1 * torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    start = model.state_from_file(_save_state(tmp_path, ts))
    w = fresh_writer(model, tmp_path)
    r = w.read(TEXT, start=start)
    assert w.last_reused == 0  # states read from the model's own start are not reused
    assert close(r.logits, full_read(model, TEXT, start=start).logits)
    w2 = fresh_writer(model, tmp_path)
    w2.read(TEXT, start=start)
    assert w2.last_from_disk == len(r.ids)

    for dtype in ("fp16", "int8"):  # int8 is float32 with quantized matrices: its module classes differ
        other = aiwriter.load_model(dtype=dtype)
        assert model_identity(other) != model_identity(model)
        assert DiskStateCache(other, tmp_path / "states", every=EVERY).longest_prefix(r.ids) == (0, None, None)


def test_lru_bound(model, tmp_path):
    w = fresh_writer(model, tmp_path)
    w.read(TEXT[:60])
    one = sum(p.stat().st_size for p in (tmp_path / "states").iterdir())
    w = fresh_writer(model, tmp_path, max_bytes=int(one * 3.5))
    w.read(TEXT[:60])
    first = next((tmp_path / "states").iterdir())
    later = time.time() + 1000
    os.utime(first, (later, later))  # as if used last
    for i in range(5):
        w.read(TEXT[10 * i + 5:10 * i + 45])
    files = list((tmp_path / "states").iterdir())
    assert sum(p.stat().st_size for p in files) <= one * 3.5 and len(files) == 3
    assert first in files
    assert not [p for p in (tmp_path / "states").iterdir() if p.name.startswith(".")]  # no temp files left


def test_models_without_a_file_have_no_disk_cache(cycle_model, tmp_path):
    w = Writer(cycle_model, disk=DiskStateCache(cycle_model, tmp_path))
    w.read("甲乙丙")
    assert not w.disk.enabled and not list(tmp_path.iterdir())


def _save_state(tmp_path: Path, ts) -> Path:
    from aiwriter.state_files import save_time_state

    return save_time_state(tmp_path / "style.pth", ts)
