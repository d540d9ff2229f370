"""The F1 loader reads pickled modules without running pickle code, and refuses anything else."""
import builtins
import io
import os
import pickle
import sys
import types
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.formats import read_weights
from aiwriter.safe_pickle import load_module_weights

FIX = Path(__file__).parent / "fixtures"
F1 = FIX / "aiwriter-v1-tiny.pth"


@pytest.fixture
def fake_src_model(monkeypatch):
    """A stand-in `src.model` package (RWKV-LM v1's trainer module) so torch itself can pickle and
    unpickle whole modules: the trusted reference for what our walk must return."""
    mod = types.ModuleType("src.model")
    for name in ("GPT", "GPTConfig", "Block", "RWKV_TimeMix", "RWKV_ChannelMix"):
        base = object if name == "GPTConfig" else nn.Module
        setattr(mod, name, type(name, (base,), {"__module__": "src.model"}))
    pkg = types.ModuleType("src")
    pkg.model = mod
    monkeypatch.setitem(sys.modules, "src", pkg)
    monkeypatch.setitem(sys.modules, "src.model", mod)
    return mod


def small_module(src):
    """A tiny module tree shaped like an F1 GPT, built from the fake src.model classes."""
    torch.manual_seed(0)
    gpt = src.GPT()
    cfg = src.GPTConfig()
    cfg.vocab_size, cfg.ctx_len = 11, 4
    gpt.config = cfg
    gpt.tok_emb = nn.Embedding(11, 8)
    block = src.Block()
    block.ln1 = nn.LayerNorm(8)
    block.attn = src.RWKV_TimeMix()
    block.attn.time_w = nn.Parameter(torch.randn(2, 4))
    block.attn.key = nn.Linear(8, 8)
    block.attn.register_buffer("mask", torch.tril(torch.ones(4, 4)), persistent=False)
    gpt.blocks = nn.Sequential(block)
    gpt.head = nn.Linear(8, 11, bias=False)
    gpt.register_buffer("copy_mask", torch.tril(torch.ones(4, 4)))
    gpt.strided = nn.Parameter(torch.randn(3, 5).half()[:, 1:4])  # a strided view of a storage
    return gpt


def test_fixture_matches_trusted_torch_load(fake_src_model):
    ours = load_module_weights(F1)
    trusted = torch.load(F1, map_location="cpu", weights_only=False).state_dict()
    assert set(ours) == set(trusted)
    for k in trusted:
        assert ours[k].shape == trusted[k].shape and ours[k].dtype == trusted[k].dtype, k
        assert torch.equal(ours[k], trusted[k]), k
    assert {"tok_emb.weight", "blocks.0.attn.time_w", "blocks.1.mlp.weight.bias", "copy_mask", "head_q.bias"} <= set(ours)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_module_round_trip(fake_src_model, tmp_path, zip_format):
    net = small_module(fake_src_model)
    path = tmp_path / "m.pth"
    torch.save(net, path, _use_new_zipfile_serialization=zip_format)
    got = load_module_weights(path)
    want = net.state_dict()
    assert set(got) == set(want) and "blocks.0.attn.mask" not in got  # non-persistent buffer skipped
    for k in want:
        assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
    # and through the public door: torch.load(weights_only=True) refuses, we take over
    assert set(read_weights(path)) == set(want)


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


class _Open:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (str(self.marker), "w")


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w')",)


PAYLOADS = {"os.system": (_Shell, "system"), "open": (_Open, "open"), "eval": (_Eval, "eval")}


def _evil_module(fake_src, payload, tensors=True):
    net = fake_src.GPT()
    if tensors:  # (a plain pickle of tensors names torch.storage._load_from_bytes, refused first)
        net.tok_emb = nn.Embedding(3, 2)
    net.sneaky = payload  # pickled inside the module's __dict__
    return net


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("how", ["zip", "legacy", "raw-pickle"])
def test_malicious_file_is_refused_without_side_effect(fake_src_model, tmp_path, payload, how):
    cls, name = PAYLOADS[payload]
    marker = tmp_path / "pwned.txt"
    obj = _evil_module(fake_src_model, cls(marker), tensors=(how != "raw-pickle"))
    path = tmp_path / "evil.pth"
    if how == "raw-pickle":
        raw = pickle.dumps(obj, protocol=2)
        pickle.loads(raw)  # control: this payload is live when unpickled the usual way
        assert marker.exists()
        marker.unlink()
        path.write_bytes(raw)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=(how == "zip"))
    with pytest.raises(AIWriterError) as e:
        aiwriter.load_model(path)
    assert name in e.value.en and "refused" in e.value.en and "拒绝" in e.value.zh
    assert not marker.exists()


def test_build_on_a_non_module_object_is_refused(tmp_path):
    # OrderedDict() then BUILD {...}: setting state on anything but a module stub is not allowed
    raw = b"\x80\x02ccollections\nOrderedDict\nq\x00)R}X\x01\x00\x00\x00aK\x01sb."
    path = tmp_path / "build.pth"
    path.write_bytes(raw)
    with pytest.raises(AIWriterError, match="BUILD"):
        load_module_weights(path)


def test_unlisted_module_class_is_refused(tmp_path):
    raw = b"\x80\x02cnumpy\nndarray\nq\x00)\x81q\x01."
    path = tmp_path / "np.pth"
    path.write_bytes(raw)
    with pytest.raises(AIWriterError, match="numpy.ndarray"):
        load_module_weights(path)


def test_corrupt_inputs(tmp_path):
    data = F1.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "random": os.urandom(4096),
        "bad-pickle-in-zip": _zip_with_pickle(b"\x80\x02}q\x00(X\x01"),
        "no-magic": pickle.dumps({"a": 1}),
    }
    for name, raw in cases.items():
        path = tmp_path / f"{name}.pth"
        path.write_bytes(raw)
        with pytest.raises(AIWriterError, match="corrupt"):
            load_module_weights(path)


@pytest.mark.filterwarnings("ignore:Couldn't retrieve source code")
def test_truncated_legacy_file(fake_src_model, tmp_path):
    buf = io.BytesIO()
    torch.save(small_module(fake_src_model), buf, _use_new_zipfile_serialization=False)
    for cut in (20, len(buf.getvalue()) // 2, len(buf.getvalue()) - 3):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(buf.getvalue()[:cut])
        with pytest.raises(AIWriterError, match="corrupt"):
            load_module_weights(path)


def test_pickle_without_tensors(tmp_path):
    path = tmp_path / "cfg.pth"
    path.write_bytes(_zip_with_pickle(b"\x80\x02csrc.model\nGPTConfig\nq\x00)\x81q\x01}X\x01\x00\x00\x00aK\x01sb."))
    with pytest.raises(AIWriterError, match="no weights"):
        load_module_weights(path)


def _zip_with_pickle(pkl: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def test_module_cycle_is_an_error_not_a_hang(fake_src_model, tmp_path):
    net = fake_src_model.GPT()
    net.tok_emb = nn.Embedding(3, 2)
    net._modules["loop"] = net  # a real module tree never contains itself
    path = tmp_path / "cycle.pth"
    torch.save(net, path)
    with pytest.raises(AIWriterError, match="cycle"):
        load_module_weights(path)


def test_shared_submodule_is_listed_under_both_names(fake_src_model, tmp_path):
    net = fake_src_model.GPT()
    net.a = nn.Linear(2, 2)
    net.b = net.a
    path = tmp_path / "shared.pth"
    torch.save(net, path)
    assert set(load_module_weights(path)) == set(net.state_dict()) == {"a.weight", "a.bias", "b.weight", "b.bias"}
