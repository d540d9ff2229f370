"""The streaming load (formats.open_weights + engine._build_streaming): tensor by tensor from
.pth (torch zip, read through the restricted unpickler) and .safetensors, bit-equal to building
from the whole file; damaged files and models too big for the machine are refused clearly."""
import json
import pickle
import zipfile

import pytest
import torch

import aiwriter
from aiwriter import engine
from aiwriter.errors import AIWriterError
from aiwriter.formats import open_weights, read_weights
from aiwriter.models import family_class
from aiwriter.models.rwkv4 import RWKV4
from aiwriter.models.rwkv6 import RWKV6
from aiwriter.models.rwkv7 import RWKV7

V = 90


def _files(tmp_path, cls, dtype=torch.bfloat16, C=64):
    from safetensors.torch import save_file

    w = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in cls.random_weights(V, 2, C, 32, seed=4).items()}
    pth, st = tmp_path / "m.pth", tmp_path / "m.safetensors"
    torch.save(w, pth)
    save_file({k: v.contiguous() for k, v in w.items()}, str(st))
    return w, pth, st


def _eager(w, mode):
    """What load_model built before streaming: the whole file, from_weights, .to(), the swaps."""
    from aiwriter.speed.quant import bf16_packing_available, pack_bf16, quantize_int8

    net = family_class(aiwriter.formats.detect_family(w)).from_weights(w)
    net = net.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16}.get(mode, torch.float32)).eval()
    if mode == "int8":
        quantize_int8(net)
    elif mode == "bf16" and bf16_packing_available():
        pack_bf16(net)
    return net


@pytest.mark.parametrize("cls", [RWKV4, RWKV6, RWKV7], ids=["rwkv4", "rwkv6", "rwkv7"])
def test_streamed_equals_whole_file(cls, tmp_path):
    w, pth, st = _files(tmp_path, cls)
    for path in (pth, st):
        wf = open_weights(path)
        assert wf.streaming and set(wf.keys()) == set(w)
        for k in w:
            assert torch.equal(wf[k], w[k]) and wf[k].dtype == w[k].dtype
    ids = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(1))
    for mode in ("fp32", "fp16", "bf16", "int8"):
        ref = _eager(w, mode)
        want = {k: v for k, v in ref.state_dict().items()}
        with torch.inference_mode():
            lw, _ = ref(ids, ref.new_state(1))
        for path in (pth, st):
            m = aiwriter.load_model(path, dtype=mode)
            assert m.dtype == mode
            got = m.net.state_dict()
            assert set(got) == set(want), mode
            for k in want:
                if isinstance(want[k], torch.Tensor):
                    assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), (mode, k)
            with torch.inference_mode():
                lg, _ = m.net(ids, m.net.new_state(1))
            assert torch.equal(lg, lw), (mode, path.suffix)


def test_noncontiguous_and_shared_storages(tmp_path):
    w = RWKV4.random_weights(V, 1, 32, 32, seed=2)
    w["blocks.0.att.key.weight"] = w["blocks.0.att.key.weight"].T.contiguous().T  # a transposed view
    torch.save(w, tmp_path / "m.pth")
    wf = open_weights(tmp_path / "m.pth")
    for k in w:
        assert torch.equal(wf[k], w[k]), k


def test_module_pickles_and_garbage_still_go_through_the_old_readers(tmp_path):
    from pathlib import Path

    f1 = Path(__file__).parent / "fixtures" / "aiwriter-v1-tiny.pth"
    wf = open_weights(f1)  # an F1 whole-module pickle: read whole by safe_pickle
    assert not wf.streaming and set(wf.keys()) == set(read_weights(f1))
    evil = tmp_path / "evil.pth"
    torch.save({"a": torch.zeros(2)}, evil)
    with zipfile.ZipFile(evil) as z:
        names = z.namelist()
        parts = {n: z.read(n) for n in names}
    pkl = next(n for n in names if n.endswith("data.pkl"))
    parts[pkl] = pickle.dumps(__import__("os").system)
    with zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as z:
        for n, b in parts.items():
            z.writestr(n, b)
    with pytest.raises(AIWriterError) as e:
        aiwriter.load_model(evil)
    assert "system" in e.value.en and "Nothing was executed" in e.value.en


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_file_is_a_clear_error(tmp_path, suffix):
    _, pth, st = _files(tmp_path, RWKV7)
    path = pth if suffix == ".pth" else st
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 100, 200):
        cut = tmp_path / f"cut{keep}{suffix}"
        cut.write_bytes(data[:keep])
        with pytest.raises(AIWriterError) as e:
            aiwriter.load_model(cut)
        assert ("truncated" in e.value.en or "damaged" in e.value.en or "corrupt" in e.value.en), e.value.en
        assert "损坏" in e.value.zh or "不完整" in e.value.zh


def test_safetensors_header_lies_are_refused(tmp_path):
    _, _, st = _files(tmp_path, RWKV4)
    data = bytearray(st.read_bytes())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] += 10**12
    text = json.dumps(header).encode().ljust(n)
    if len(text) == n:
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(bytes(data[:8]) + text + bytes(data[8 + n:]))
        with pytest.raises(AIWriterError, match="damaged"):
            aiwriter.load_model(bad)


def test_a_model_that_does_not_fit_is_refused_before_loading(tmp_path, monkeypatch):
    _, pth, _ = _files(tmp_path, RWKV7, C=512)
    need = engine.memory_needed(open_weights(pth), "rwkv7")
    assert need["fp32"] > need["bf16"] > need["int8"] > need["int4"] - engine.OVERHEAD > 0
    built = []
    monkeypatch.setattr(engine, "_build_streaming", lambda *a: built.append(a))
    monkeypatch.setattr(engine, "available_memory", lambda: (need["int8"] + need["bf16"]) // 2)
    with pytest.raises(AIWriterError) as e:
        aiwriter.load_model(pth)
    assert "--dtype int8" in e.value.en and "--dtype int8" in e.value.zh and "fp32" in e.value.en
    assert "内存" in e.value.zh and not built
    monkeypatch.setattr(engine, "available_memory", lambda: 1000)
    with pytest.raises(AIWriterError) as e:
        aiwriter.load_model(pth, dtype="int4")
    assert "smaller" in e.value.en and not built


def test_a_module_state_dict_with_its_metadata_streams(tmp_path):
    """torch.save(net.state_dict()): an OrderedDict with `_metadata`, set by BUILD in the pickle."""
    net = RWKV7.from_weights(RWKV7.random_weights(V, 1, 32, 32, seed=3))
    torch.save(net.state_dict(), tmp_path / "sd.pth")
    wf = open_weights(tmp_path / "sd.pth")
    assert wf.streaming and set(wf.keys()) == set(net.state_dict())
    assert torch.equal(aiwriter.load_model(tmp_path / "sd.pth").net.emb.weight, net.emb.weight)
