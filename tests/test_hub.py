"""aiwriter.hub and `aiwriter models` / `aiwriter download`, against a local stand-in for the hub
(tests/fake_hub.py: 127.0.0.1, no internet)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from aiwriter import engine, paths
from aiwriter.commands import main
from aiwriter.errors import AIWriterError
from aiwriter.formats import open_weights
from aiwriter.hub import catalog, download, local, shapes
from aiwriter.hub.catalog import RELEASES, Release
from aiwriter.models.rwkv4 import RWKV4
from tests.fake_hub import COMMIT, FakeHub

ROOT = Path(__file__).resolve().parent.parent
G1 = catalog.find("rwkv7-g1-0.1b")
NOVEL = catalog.find("rwkv4-novel-3b-chn")
PAYLOAD = os.urandom(300_000)
CHUNK = 10_000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    h = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", h.endpoint)
    monkeypatch.setenv("AIWRITER_MODELS", str(tmp_path / "models"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub's pause before a retry
    # huggingface_hub writes what it receives in chunks of this size (10 MB by default): a cut loses
    # the unfinished chunk. Small chunks here, so a 300 kB file is written in pieces as a big one is.
    monkeypatch.setattr("huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE", CHUNK)
    yield h
    h.close()


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# ---------------------------------------------------------------------------------- catalogue

def test_catalogue_entries_are_well_formed():
    names = [r.name for r in RELEASES]
    assert len(set(names)) == len(names) and len({r.filename for r in RELEASES}) == len(RELEASES)
    for r in RELEASES:
        assert r.family in ("rwkv4", "rwkv7") and r.licence == "Apache-2.0"
        assert r.repo.startswith("BlinkDL/") and r.filename.endswith(".pth")
        assert r.source == f"https://huggingface.co/{r.repo}/blob/main/{r.filename}"
        assert r.sha256 is None or len(r.sha256) == 64
        assert (r.tokenizer is not None) == (r.family == "rwkv4")  # the rwkv package lacks NeoX's tokenizer
    for want in ("0.1b", "0.4b", "1.5b", "2.9b", "7.2b"):
        assert any(r.family == "rwkv7" and r.name.endswith(want) for r in RELEASES), want
    assert {r.name for r in RELEASES if r.family == "rwkv4"} >= {"rwkv4-novel-3b-chn", "rwkv4-novel-7b-chn"}


def test_find_by_name_or_file_name_and_close_names():
    assert catalog.find("RWKV7-G1-0.1B") is G1 and catalog.find(G1.filename) is G1
    assert catalog.find("nope") is None
    assert "rwkv7-g1a3-1.5b" in catalog.close_names("rwkv7-g1-1.5b")


def test_shapes_match_the_released_file_sizes():
    """The shape of each release, built as its family's module, has the bytes its file has (bf16):
    RWKV-4 to 0.01 % (the pickle around the tensors), RWKV-7 to 0.5 % (the released low-rank
    widths differ slightly from lora_dims' rule)."""
    checked = 0
    for r in RELEASES:
        if r.size:
            tolerance = 1e-4 if r.family == "rwkv4" else 5e-3
            assert abs(shapes.estimated_file_size(r) / r.size - 1) < tolerance, r.name
            checked += 1
    assert checked >= 6


def test_memory_is_the_engines_estimate_of_the_same_shape(tmp_path):
    """hub.shapes.memory_needed (from the shape) == engine.memory_needed (from a file of that shape)."""
    tiny = Release("tiny", "rwkv4", "tiny", 2, 64, 1000, "x/y", "tiny.pth", None, None, ("zh",), ("", ""))
    path = tmp_path / "tiny.pth"
    torch.save(RWKV4.random_weights(1000, 2, 64), path)
    assert shapes.memory_needed(tiny) == engine.memory_needed(open_weights(path), "rwkv4")
    assert shapes.parameters(tiny) == sum(t.numel() for t in RWKV4.random_weights(1000, 2, 64).values())
    big = shapes.memory_needed(catalog.find("rwkv4-novel-7b-chn"))
    assert big["fp32"] > big["bf16"] > big["int8"] and big["bf16"] > 14e9


# ---------------------------------------------------------------------------------- the models folder

def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIWRITER_MODELS", str(tmp_path / "m"))
    assert paths.models_dir() == tmp_path / "m"
    monkeypatch.delenv("AIWRITER_MODELS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    assert paths.models_dir() == tmp_path / "d" / "aiwriter" / "models"
    assert not (tmp_path / "d").exists()


def test_resolve_model(tmp_path):
    folder = tmp_path / "models"
    assert local.resolve_model(None, folder) is None
    with pytest.raises(AIWriterError) as e:
        local.resolve_model("rwkv7-g1-0.1b", folder)
    assert "aiwriter download rwkv7-g1-0.1b" in e.value.en and "aiwriter download rwkv7-g1-0.1b" in e.value.zh
    folder.mkdir()
    (folder / G1.filename).write_bytes(b"x")
    (folder / "mine.safetensors").write_bytes(b"x")
    assert local.resolve_model("rwkv7-g1-0.1b", folder) == str(folder / G1.filename)
    assert local.resolve_model("mine.safetensors", folder) == str(folder / "mine.safetensors")
    assert local.resolve_model("mine", folder) == str(folder / "mine.safetensors")
    assert local.resolve_model(str(tmp_path / "elsewhere.pth"), folder) == str(tmp_path / "elsewhere.pth")
    with pytest.raises(AIWriterError, match="did you mean"):
        local.resolve_model("rwkv7-g1-0.1", folder)
    assert local.other_files(folder) == ["mine.safetensors"]


# ---------------------------------------------------------------------------------- downloads

def test_a_download_lands_in_the_models_folder_and_is_listed(hub, capsys, tmp_path):
    hub.add(G1.repo, G1.filename, PAYLOAD)
    rc, out, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc == 0, err
    dest = tmp_path / "models" / G1.filename
    assert dest.read_bytes() == PAYLOAD and "downloaded and verified" in out
    assert not download.partial_files(dest)
    # one GET of the file at the commit the HEAD saw, redirected to the "CDN", which sent the bytes
    assert [p for p, _ in hub.gets()] == [f"/{G1.repo}/resolve/{COMMIT}/{G1.filename}", f"/lfs/{SHA}"]
    assert hub.served == [(f"/lfs/{SHA}", None)]
    (tmp_path / "models" / "my-own.pth").write_bytes(b"x")
    rc, out, _ = run(capsys, "models")
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("rwkv7-g1-0.1b "))
    assert "已下载" in line and "present" in line
    assert "名称 / name" in out and "my-own.pth" in out and hub.endpoint in out
    rc, out, _ = run(capsys, "download", "rwkv7-g1-0.1b")  # already here: nothing fetched
    assert rc == 0 and "already here" in out
    rc, out, err = run(capsys, "download", "rwkv7-g1-0.1b", "--verify")
    assert rc == 0, err


def test_a_cut_download_resumes_from_the_partial_file(hub, capsys, tmp_path):
    hub.add(G1.repo, G1.filename, PAYLOAD)
    hub.cut_after = 100_000
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc != 0 and "Traceback" not in err
    assert "run the same command again" in err and "再运行同一命令" in err
    dest = tmp_path / "models" / G1.filename
    parts = download.partial_files(dest)
    assert not dest.exists() and len(parts) == 1 and parts[0].stat().st_size == 100_000
    rc, out, _ = run(capsys, "models")
    assert "partial" in next(x for x in out.splitlines() if x.startswith("rwkv7-g1-0.1b "))
    hub.down = False
    hub.requests.clear()
    hub.served.clear()
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc == 0, err
    assert hub.served == [(f"/lfs/{SHA}", "bytes=100000-")]
    assert dest.read_bytes() == PAYLOAD and not download.partial_files(dest)


def test_a_checksum_mismatch_removes_the_file(hub, capsys, tmp_path):
    hub.add(G1.repo, G1.filename, PAYLOAD, sha256=hashlib.sha256(b"something else").hexdigest())
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc != 0 and "checksum" in err and "校验" in err and "removed" in err and "已删除" in err
    dest = tmp_path / "models" / G1.filename
    assert not dest.exists() and not download.partial_files(dest)


def test_too_little_free_disk_is_refused_before_downloading(hub, capsys, monkeypatch, tmp_path):
    hub.add(G1.repo, G1.filename, PAYLOAD)
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(download, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc != 0 and "not enough disk space" in err and "磁盘空间不够" in err
    assert not hub.gets() and not (tmp_path / "models").exists()  # nothing fetched, nothing created


class FullDisk:
    """The part file on a disk that fills up after `room` more bytes: what fits is written, then
    the write fails with ENOSPC, as a real write(2) would."""

    def __init__(self, path, room):
        self.f, self.room = open(path, "ab"), room

    def write(self, b):
        if len(b) > self.room:
            self.f.write(b[:self.room])
            self.f.flush()
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):  # fileno, tell, seek, truncate, close
        return getattr(self.f, name)


def test_a_full_disk_mid_download_keeps_the_partial_file(hub, capsys, monkeypatch, tmp_path):
    hub.add(G1.repo, G1.filename, PAYLOAD)
    monkeypatch.setattr(download, "_open_part", lambda p: FullDisk(p, 50_000))
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc != 0 and "disk is full" in err and "磁盘已满" in err and "Traceback" not in err
    dest = tmp_path / "models" / G1.filename
    (part,) = download.partial_files(dest)
    assert part.stat().st_size == 50_000 and part.name in err
    monkeypatch.setattr(download, "_open_part", lambda p: open(p, "ab"))  # the disk has room again
    hub.requests.clear()
    hub.served.clear()
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc == 0, err
    assert hub.served == [(f"/lfs/{SHA}", "bytes=50000-")] and dest.read_bytes() == PAYLOAD


def test_unknown_names_and_missing_files_are_clear_errors(hub, capsys):
    rc, _, err = run(capsys, "download", "rwkv7-g1-1.5b")
    assert rc == 2 and "did you mean" in err.lower() and "rwkv7-g1a3-1.5b" in err and "aiwriter models" in err
    rc, _, err = run(capsys, "download", "rwkv7-world-0.4b")  # not on this hub: a 404
    assert rc == 2 and "is not on" in err and "没有" in err and "Traceback" not in err


def test_an_unreachable_hub_is_a_clear_error(capsys, monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AIWRITER_MODELS", str(tmp_path / "models"))
    rc, _, err = run(capsys, "download", "rwkv7-g1-0.1b")
    assert rc == 2 and "cannot reach" in err and "连不上" in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()


def _neox_tokenizer_json() -> bytes:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["林枫睁开眼睛，看着窗外。" * 20, "The quick brown fox. " * 20], trainer)
    return tk.to_str().encode("utf-8")


def test_rwkv4_novel_comes_with_its_tokenizer_and_writes_by_name(hub, capsys, tmp_path):
    """A RWKV-4 Novel release (here a tiny random model of its vocab) and GPT-NeoX's tokenizer (a
    small file: checked by its git hash) land side by side; `write --model NAME` then runs."""
    import io

    buf = io.BytesIO()
    torch.save({k: v.bfloat16() for k, v in RWKV4.random_weights(50277, 1, 32).items()}, buf)
    hub.add(NOVEL.repo, NOVEL.filename, buf.getvalue())
    hub.add(NOVEL.tokenizer.repo, NOVEL.tokenizer.filename, _neox_tokenizer_json(), lfs=False)
    rc, out, err = run(capsys, "download", "rwkv4-novel-3b-chn")
    assert rc == 0, err
    folder = tmp_path / "models"
    assert (folder / "20B_tokenizer.json").read_bytes() == _neox_tokenizer_json()
    rc, out, err = run(capsys, "write", "--model", "rwkv4-novel-3b-chn", "-n", "1", "-l", "4", "--seed", "1", "林枫")
    assert rc == 0, err
    assert out.startswith("林枫")


def test_hf_endpoint_in_the_environment_of_a_fresh_process(hub, tmp_path):
    """A user's HF_ENDPOINT, set before Python starts (huggingface_hub reads its own copy at import)."""
    hub.add(G1.repo, G1.filename, PAYLOAD)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint + "/", "AIWRITER_MODELS": str(tmp_path / "fresh"),
           "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "aiwriter", "download", "rwkv7-g1-0.1b"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fresh" / G1.filename).read_bytes() == PAYLOAD
    assert [m for m, _, _ in hub.requests] == ["HEAD", "GET", "GET"]  # the file's own requests, nothing else
