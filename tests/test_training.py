"""`aiwriter train`: data preparation, a tiny run that learns, exact resume, DDP == one process,
and clear errors for bad input. Models here are tiny (L1, C32) so each run takes about a second."""
from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer
from aiwriter.training import data as D
from aiwriter.training import train as T

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["却说那人走进门来，", "只见天色已晚。", "众人都笑道：“好！”", "他心中暗想：", "便回房去睡了。", "次日一早起来，"]


def make_text(n_lines: int = 300, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "\n".join("".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 4))) for _ in range(n_lines))


@pytest.fixture
def corpus(tmp_path):
    d = tmp_path / "books"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text(make_text(200, 1), encoding="utf-8")
    (d / "sub" / "b.txt").write_text("\u3000\u3000" + make_text(200, 2).replace("\n", "\r\n\r\n"), encoding="utf-8")
    (d / "notes.md").write_text("not training data", encoding="utf-8")
    return d


def tiny_args(data, out, *extra) -> list[str]:
    return ["--data", *map(str, data), "--out", str(out), "--layers", "1", "--embd", "32", "--head-size", "16",
            "--ctx-len", "16", "--batch-size", "4", "--lr", "3e-3", "--warmup", "2", "--eval-every", "1000",
            "--no-progress", "--seed", "1", *extra]


def train(argv) -> None:
    """The flags as `aiwriter train` parses them, run by the library function."""
    from aiwriter.commands import train as command

    p = __import__("argparse").ArgumentParser()
    command.add_arguments(p)
    assert T.train(command.settings(p.parse_args(argv))) == 0


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


# -- data ----------------------------------------------------------------------------------------

def test_collect_clean_vocab_and_pack(corpus, tmp_path):
    files = D.collect_files([corpus])
    assert [f.name for f in files] == ["a.txt", "b.txt"]  # recursive, .txt only
    texts = [t for _, t in D.load_texts([corpus])]
    assert texts[1].startswith("\n") and "\r" not in texts[1] and "\n\n" not in texts[1] and "\u3000" not in texts[1]
    tok = D.build_vocab(texts)
    assert "\n" in tok.stoi and tok.unknown_id is not None
    assert set("".join(SENTENCES)) <= set(tok.stoi)  # every char of this tiny corpus is frequent
    D.write_vocab(tok, tmp_path / "vocab.json")
    back = CharTokenizer.from_file(tmp_path / "vocab.json")
    assert back.itos == tok.itos

    path = D.pack(texts, tok, tmp_path / "out", progress=False)
    ids = D.open_packed(path)
    assert tok.decode(list(ids)) == "".join(texts)
    mtime = path.stat().st_mtime_ns
    assert D.pack(texts, tok, tmp_path / "out", progress=False) == path and path.stat().st_mtime_ns == mtime  # cached
    other = D.build_vocab(texts, min_count=10 ** 9)  # only "\n" and the unknown char
    assert D.pack(texts, other, tmp_path / "out", progress=False) != path  # the key includes the vocab


def test_vocab_coverage_and_unknown_chars():
    text = "甲" * 1000 + "乙" * 10 + "丙"
    tok = D.build_vocab([text], coverage=0.98)
    assert "甲" in tok.stoi and "乙" not in tok.stoi and "\n" in tok.stoi and UNKNOWN_CHAR in tok.stoi
    assert list(D.encode_fast("乙甲", tok)) == [tok.unknown_id, tok.stoi["甲"]]
    assert "乙" in D.build_vocab([text], coverage=0.9999).stoi


def test_gb18030_and_truncated_utf8(tmp_path, capsys):
    p = tmp_path / "gbk.txt"
    p.write_bytes("话说天下大势".encode("gb18030"))
    assert D.read_text(p) == "话说天下大势"
    assert "GB18030" in capsys.readouterr().err
    q = tmp_path / "cut.txt"
    q.write_bytes("话说天下".encode("utf-8")[:-1])  # cut inside the last char
    assert D.read_text(q) == "话说天"


def test_batches_are_deterministic_and_in_range():
    a = D.batch_offsets(1000, 16, 8, seed=3, step=5)
    assert np.array_equal(a, D.batch_offsets(1000, 16, 8, seed=3, step=5))
    assert not np.array_equal(a, D.batch_offsets(1000, 16, 8, seed=3, step=6))
    assert a.min() >= 0 and a.max() <= 1000 - 17
    x, y = D.get_batch(np.arange(1000, dtype=np.uint16), a, 16)
    assert x.shape == (8, 16) and np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(x[:, 0], a)


@pytest.mark.parametrize("case", ["empty", "blank", "binary", "missing", "no_txt", "folder_of_empty"])
def test_bad_input_is_refused_clearly(tmp_path, case):
    if case == "empty":
        (tmp_path / "e.txt").write_bytes(b"")
        data = [tmp_path / "e.txt"]
    elif case == "blank":
        (tmp_path / "b.txt").write_text("\n \u3000\r\n\n", encoding="utf-8")
        data = [tmp_path / "b.txt"]
    elif case == "binary":
        (tmp_path / "x.txt").write_bytes(b"PK\x03\x04\x00\x00" + bytes(range(256)))
        data = [tmp_path / "x.txt"]
    elif case == "missing":
        data = [tmp_path / "nope.txt"]
    elif case == "no_txt":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "a.pdf").write_bytes(b"%PDF")
        data = [tmp_path / "d"]
    else:
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "a.txt").write_text("", encoding="utf-8")
        data = [tmp_path / "d"]
    with pytest.raises(AIWriterError) as e:
        train(tiny_args(data, tmp_path / "out", "--max-steps", "2"))
    assert e.value.zh and e.value.en and e.value.zh != e.value.en
    assert not (tmp_path / "out" / "model.pth").exists()


def test_bad_settings_are_refused(corpus, tmp_path):
    with pytest.raises(AIWriterError, match="max-steps"):
        train(tiny_args([corpus], tmp_path / "o"))  # neither --max-steps nor --max-minutes
    with pytest.raises(AIWriterError, match="head-size"):
        train(tiny_args([corpus], tmp_path / "o", "--max-steps", "1", "--embd", "40"))
    with pytest.raises(AIWriterError, match="resume"):
        train(tiny_args([corpus], tmp_path / "o", "--max-steps", "1", "--resume"))


# -- training ------------------------------------------------------------------------------------

def test_tiny_run_learns_and_writes_a_loadable_model(corpus, tmp_path):
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(make_text(40, 9), encoding="utf-8")
    out = tmp_path / "run"
    train(tiny_args([corpus], out, "--max-steps", "60", "--eval-file", str(heldout), "--eval-chars", "300",
                    "--eval-every", "30"))
    hist = json.loads((out / "history.json").read_text(encoding="utf-8"))
    first, last = hist["train"][0]["loss"], hist["train"][-1]["loss"]
    assert last < first - 1.0, (first, last)
    evals = [e["nats_per_char"] for e in hist["eval"]]
    assert [e["step"] for e in hist["eval"]] == [30, 60] and evals[1] < evals[0]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    facts = json.loads((out / "train.json").read_text(encoding="utf-8"))
    assert facts["steps"] == 60 and facts["tokens_seen"] == 60 * 4 * 16 and facts["final"] is True
    assert not list(out.glob("*.tmp"))

    # model.pth: a plain state dict in the official key layout, found with its vocab by load_model
    sd = weights(out / "model.pth")
    assert "blocks.0.att.r_k" in sd and "emb.weight" in sd and all(v.dtype == torch.float32 for v in sd.values())
    m = aiwriter.load_model(out / "model.pth")
    assert m.family == "rwkv7" and m.tokenizer.decode(m.tokenizer.encode("只见天色")) == "只见天色"
    # the held-out figure the trainer logged is what `aiwriter eval` computes for the saved model
    from aiwriter.training.evaluate import evaluate_model

    r = evaluate_model(m, heldout.read_text(encoding="utf-8"), max_chars=300)
    assert r["nats_per_char"] == pytest.approx(evals[-1], rel=1e-5)


def test_resume_continues_the_same_run(corpus, tmp_path, monkeypatch):
    train(tiny_args([corpus], tmp_path / "full", "--max-steps", "4"))

    # the same run, crashing after its step-2 checkpoint, then resumed
    real = D.batch_offsets

    def crash_at_2(n, ctx, batch, seed, step):
        if step == 2:
            raise KeyboardInterrupt
        return real(n, ctx, batch, seed, step)

    monkeypatch.setattr(D, "batch_offsets", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_args([corpus], tmp_path / "cut", "--max-steps", "4", "--save-every", "2"))
    monkeypatch.setattr(D, "batch_offsets", real)
    ck = torch.load(tmp_path / "cut" / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2
    train(tiny_args([corpus], tmp_path / "cut", "--max-steps", "4", "--resume"))

    a, b = weights(tmp_path / "full" / "model.pth"), weights(tmp_path / "cut" / "model.pth")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # steps 3 and 4 did change the weights after the checkpoint (output.weight starts at zero)
    k = "blocks.0.att.output.weight"
    assert ck["model"][k].abs().sum() > 0 and not torch.allclose(ck["model"][k], a[k], rtol=0, atol=1e-6)


def test_checkpoint_format_is_stable(corpus, tmp_path):
    """ckpt.pt is what a running `aiwriter train` resumes from, possibly with the next version of
    this code: its keys and their types stay as they are."""
    train(tiny_args([corpus], tmp_path / "o", "--max-steps", "3", "--save-every", "2"))
    ck = torch.load(tmp_path / "o" / "ckpt.pt", weights_only=True)
    assert set(ck) == {"model", "optimizer", "step", "tokens", "elapsed", "rng", "data_key", "history", "args"}
    assert ck["step"] == 3 and ck["tokens"] == 3 * 4 * 16 and isinstance(ck["elapsed"], float)
    assert ck["model"].keys() == weights(tmp_path / "o" / "model.pth").keys()
    assert all(v.device.type == "cpu" for v in ck["model"].values())
    assert set(ck["optimizer"]) == {"state", "param_groups"} and len(ck["optimizer"]["param_groups"]) == 2
    assert ck["rng"].dtype == torch.uint8 and isinstance(ck["data_key"], str)
    assert set(json.loads(ck["history"])) == {"train", "eval"} and json.loads(ck["args"])["max_steps"] == 3


def test_resume_refuses_other_data(corpus, tmp_path):
    train(tiny_args([corpus], tmp_path / "o", "--max-steps", "2"))
    other = tmp_path / "other.txt"
    other.write_text(make_text(100, 7) + "新字", encoding="utf-8")
    with pytest.raises(AIWriterError, match="resume"):
        train(tiny_args([other], tmp_path / "o", "--max-steps", "4", "--resume", "--vocab", str(tmp_path / "o" / "vocab.json")))


def test_init_fine_tunes_and_keeps_the_vocab(corpus, tmp_path):
    train(tiny_args([corpus], tmp_path / "base", "--max-steps", "2", "--save-dtype", "bf16"))
    assert all(v.dtype == torch.bfloat16 for v in weights(tmp_path / "base" / "model.pth").values())
    other = tmp_path / "other.txt"
    other.write_text(make_text(100, 7) + "新来的字", encoding="utf-8")
    train(["--data", str(other), "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "base" / "model.pth"),
           "--ctx-len", "16", "--batch-size", "2", "--max-steps", "2", "--no-progress"])
    assert (tmp_path / "ft" / "vocab.json").read_bytes() == (tmp_path / "base" / "vocab.json").read_bytes()
    a, b = weights(tmp_path / "base" / "model.pth"), weights(tmp_path / "ft" / "model.pth")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k].float(), b[k]) for k in a)


def test_ddp_two_processes_match_one(corpus, tmp_path):
    """2 gloo processes with 2 windows each == 1 process with the same 4 windows per step."""
    common = tiny_args([corpus], tmp_path / "x", "--max-steps", "3")
    train(common[:3] + [str(tmp_path / "one")] + common[4:])
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "aiwriter", "train", *common[:3], str(tmp_path / "two"), *common[4:]]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    facts = json.loads((tmp_path / "two" / "train.json").read_text(encoding="utf-8"))
    assert facts["world_size"] == 2 and facts["tokens_seen"] == 3 * 4 * 16
    a, b = weights(tmp_path / "one" / "model.pth"), weights(tmp_path / "two" / "model.pth")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    assert a["blocks.0.att.output.weight"].abs().sum() > 0  # zero at init: the runs did train


def test_warns_when_the_eval_file_is_training_data(corpus, tmp_path, capsys):
    train(tiny_args([corpus], tmp_path / "o", "--max-steps", "1", "--eval-file", str(corpus / "a.txt"),
                    "--eval-chars", "50"))
    assert "warning: the eval file" in capsys.readouterr().err


def test_cli_train_reports_bad_input_without_traceback(tmp_path, capsys):
    from aiwriter.commands import main

    code = main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--max-steps", "1"])
    err = capsys.readouterr().err
    assert code != 0 and "training data not found" in err and "找不到训练数据" in err and "Traceback" not in err


def test_remap_vocab_carries_rows_by_char_and_starts_new_chars_from_the_mean():
    from aiwriter.models.rwkv7 import RWKV7

    old = CharTokenizer({0: "甲", 1: "乙", 2: "\n", 3: UNKNOWN_CHAR})
    new = CharTokenizer({0: "乙", 1: "丙", 2: "甲", 3: "\n", 4: UNKNOWN_CHAR, 5: "丁"})
    net = RWKV7.from_weights(RWKV7.init_weights(4, 1, 32, head_size=16, seed=3))
    torch.nn.init.normal_(net.head.weight)
    emb, head = net.emb.weight.detach().clone(), net.head.weight.detach().clone()
    x = torch.tensor([[0, 1, 2, 0]])
    before, _ = net(x, net.new_state(1), all_logits=True)

    assert T.remap_vocab(net, old, new) == 2
    assert net.emb.weight.shape == (6, 32) and net.head.weight.shape == (6, 32)
    for ch, i in old.stoi.items():
        j = new.stoi[ch]
        assert torch.equal(net.emb.weight[j], emb[i]) and torch.equal(net.head.weight[j], head[i]), ch
    for ch in "丙丁":
        assert torch.allclose(net.emb.weight[new.stoi[ch]], emb.mean(0))
        assert torch.allclose(net.head.weight[new.stoi[ch]], head.mean(0))
    # the same text through the remapped model gives the same logits for every old char
    after, _ = net(torch.tensor([[new.stoi[old.itos[int(i)]] for i in x[0]]]), net.new_state(1), all_logits=True)
    idx = [new.stoi[old.itos[i]] for i in range(4)]
    torch.testing.assert_close(after[..., idx], before, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in net.parameters())


def test_init_with_a_new_vocab_trains_the_extended_model(corpus, tmp_path):
    train(tiny_args([corpus], tmp_path / "base", "--max-steps", "2"))
    base = CharTokenizer.from_file(tmp_path / "base" / "vocab.json")
    itos = dict(base.itos)
    itos[base.vocab_size], itos[base.vocab_size + 1] = "新", "字"
    (tmp_path / "v2.json").write_text(json.dumps({str(k): v for k, v in itos.items()}, ensure_ascii=False), encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text(make_text(100, 7) + "新字新字", encoding="utf-8")
    train(["--data", str(other), "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "base" / "model.pth"),
           "--vocab", str(tmp_path / "v2.json"), "--ctx-len", "16", "--batch-size", "2", "--max-steps", "2", "--no-progress"])
    m = aiwriter.load_model(tmp_path / "ft" / "model.pth")
    assert m.vocab_size == base.vocab_size + 2 and m.tokenizer.encode("新字") == [base.vocab_size, base.vocab_size + 1]


def test_bf16_autocast_trains_a_two_layer_model(corpus, tmp_path):
    """--dtype bf16 on CPU: the second layer's value mix (lerp with v_first) and the group norm
    met float32 weights with bf16 input and refused (RuntimeError) before they were cast."""
    train(tiny_args([corpus], tmp_path / "o", "--max-steps", "2", "--layers", "2", "--dtype", "bf16"))
    facts = json.loads((tmp_path / "o" / "train.json").read_text(encoding="utf-8"))
    assert facts["steps"] == 2 and facts["args"]["dtype"] == "bf16" and math.isfinite(facts["last_train_loss"])
