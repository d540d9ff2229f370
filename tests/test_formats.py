"""Files -> weights -> family: the fixtures load, and every bad file is a clear AIWriterError."""
import io
import os
import pickle
import random
import zipfile
from pathlib import Path

import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.formats import detect_family, read_weights

FIX = Path(__file__).parent / "fixtures"
F1, F2 = FIX / "aiwriter-v1-tiny.pth", FIX / "aiwriter-v2-tiny.pth"


def test_f1_fixture_reads_through_the_safe_unpickler():
    with pytest.raises(pickle.UnpicklingError):  # a pickled module: torch.load(weights_only=True) refuses it
        torch.load(F1, weights_only=True)
    w = read_weights(F1)
    assert detect_family(w) == "aiwriter-v1"
    assert w["tok_emb.weight"].shape == (8849, 64) and w["blocks.0.attn.time_w"].shape == (2, 32)


def test_f2_fixture_is_a_plain_state_dict():
    w = read_weights(F2)
    assert detect_family(w) == "aiwriter-v2"
    assert w["copy_mask"].shape == (64, 64)


@pytest.mark.parametrize(
    "path, vocab, family, ctx_len, layers",
    [(F1, FIX / "aiwriter-v1-vocab.json", "aiwriter-v1", 32, 2), (F2, FIX / "aiwriter-v2-vocab.json", "aiwriter-v2", None, 3)],
)
def test_load_model(path, vocab, family, ctx_len, layers):
    m = aiwriter.load_model(path, vocab=vocab)
    assert (m.family, m.ctx_len, m.vocab_size, m.tokenizer.vocab_size) == (family, ctx_len, 8849, 8849)
    assert len(m.net.blocks) == layers


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(AIWriterError, match="not found"):
        aiwriter.load_model(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(AIWriterError, match="empty"):
        aiwriter.load_model(tmp_path / "empty.pth")


@pytest.mark.parametrize("which", ["f1", "f2"])
def test_truncated_files(tmp_path, which):
    data = (F1 if which == "f1" else F2).read_bytes()
    for cut in (100, len(data) // 2, len(data) - 10):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(data[:cut])
        with pytest.raises(AIWriterError):
            aiwriter.load_model(path)


def test_random_bytes(tmp_path):
    rng = random.Random(0)
    # garbage drives torch's and our unpicklers down many paths (bad opcodes, huge lengths, ...)
    for i in range(150):
        path = tmp_path / f"r{i}.pth"
        path.write_bytes(rng.randbytes(1000 + 37 * i))
        with pytest.raises(AIWriterError):
            aiwriter.load_model(path)
    path = tmp_path / "urandom.pth"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(AIWriterError):
        aiwriter.load_model(path)


def test_broken_pickle_inside_a_valid_zip(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02}q\x00(X\x01")  # cut inside a string length
        z.writestr("archive/version", "3\n")
    path = tmp_path / "cut-pickle.pth"
    path.write_bytes(buf.getvalue())
    with pytest.raises(AIWriterError):
        aiwriter.load_model(path)


def test_unknown_keys_are_listed(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(2), "decoder.bias": torch.zeros(3)}, path)
    with pytest.raises(AIWriterError) as e:
        aiwriter.load_model(path)
    assert "encoder.layer.0.weight" in e.value.en and "decoder.bias" in e.value.en
    assert "encoder.layer.0.weight" in e.value.zh


def test_state_dict_without_tensors(tmp_path):
    path = tmp_path / "cfg.pth"
    torch.save({"lr": 0.1, "epochs": 3}, path)
    with pytest.raises(AIWriterError):
        aiwriter.load_model(path)


def test_family_with_missing_weights(tmp_path):
    w = read_weights(F2)
    del w["blocks.1.att.key.weight"]
    path = tmp_path / "partial.pth"
    torch.save(w, path)
    with pytest.raises(AIWriterError, match="blocks.1.att.key.weight"):
        aiwriter.load_model(path)


def test_family_with_inconsistent_shapes(tmp_path):
    w = read_weights(F1)
    w["blocks.1.attn.key.weight"] = torch.zeros(64, 3)
    path = tmp_path / "bad-shape.pth"
    torch.save(w, path)
    with pytest.raises(AIWriterError, match="shape"):
        aiwriter.load_model(path)
