"""`aiwriter eval`: nats per char over a text read as one stream, against direct float64 math."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

import aiwriter
from aiwriter.engine import Model
from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv7 import RWKV7
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer, Tokenizer, clean_context
from aiwriter.commands import eval as command
from aiwriter.training import evaluate as E

CHARS = ["\n", "却", "说", "那", "人", "走", "进", "门", "来", "，", "。", "天", "色", UNKNOWN_CHAR]
TEXT = "\u3000\u3000却说那人走进门来，天色已晚。\r\n\r\n那人说：进来。\n" * 6  # 已 and ： are unknown


def tiny_model(tmp_path, zero_head=False, seed=0):
    w = RWKV7.random_weights(len(CHARS), 2, 32, head_size=16, seed=seed)
    if zero_head:
        w["head.weight"].zero_()
    torch.save(w, tmp_path / "model.pth")
    (tmp_path / "vocab.json").write_text(CharTokenizer(dict(enumerate(CHARS))).to_json(), encoding="utf-8")
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path / "model.pth"


def run_eval(argv) -> int:
    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return command.run(p.parse_args(argv))


def direct_nats(net, ids) -> float:
    """One forward over the whole text from an empty state, cross-entropy in float64."""
    with torch.no_grad():
        logits, _ = net(torch.tensor([ids]), net.new_state(1), all_logits=True)
    logp = torch.log_softmax(logits[0, :-1].double(), -1)
    return -float(logp.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum())


def test_uniform_logits_give_ln_v(tmp_path, capsys):
    path = tiny_model(tmp_path, zero_head=True)
    assert run_eval(["--model", str(path), "--text", str(tmp_path / "text.txt"), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    r = json.loads(out)
    assert set(r) == {"nats_per_char", "bits_per_char", "chars"}
    assert r["nats_per_char"] == pytest.approx(math.log(len(CHARS)), rel=1e-9)
    assert r["bits_per_char"] == pytest.approx(math.log2(len(CHARS)), rel=1e-9)
    assert r["chars"] == len(clean_context(TEXT)) - 1  # every char after the leading "\n"


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_streamed_chunks_match_one_float64_pass(tmp_path, chunk):
    m = aiwriter.load_model(tiny_model(tmp_path))
    text = clean_context(TEXT)
    ids = m.tokenizer.encode(text)
    expected = direct_nats(m.net, ids) / (len(ids) - 1)
    r = E.evaluate_model(m, TEXT, chunk=chunk)
    assert r["chars"] == len(ids) - 1
    assert r["nats_per_char"] == pytest.approx(expected, rel=2e-5)
    assert r["bits_per_char"] == pytest.approx(expected / math.log(2), rel=2e-5)
    assert abs(r["nats_per_char"] - math.log(len(CHARS))) > 0.05  # a real model, not a uniform one


def test_max_chars_scores_a_prefix(tmp_path, capsys):
    path = tiny_model(tmp_path)
    m = aiwriter.load_model(path)
    r = E.evaluate_model(m, TEXT, max_chars=20, chunk=8)
    ids = m.tokenizer.encode(clean_context(TEXT)[:21])
    assert r["chars"] == 20
    assert r["nats_per_char"] == pytest.approx(direct_nats(m.net, ids) / 20, rel=2e-5)
    assert run_eval(["--model", str(path), "--text", str(tmp_path / "text.txt"), "--max-chars", "20"]) == 0
    assert f"{r['nats_per_char']:.4f} nats/char" in capsys.readouterr().out


class PairTokenizer(Tokenizer):
    """A token-level test tokenizer: each token spells two chars (a lone last char: one)."""

    name = "pairs"

    def __init__(self, text):
        self.pieces = sorted({text[i:i + 2] for i in range(0, len(text), 2)})
        self.vocab_size = len(self.pieces)
        self.ids = {p: i for i, p in enumerate(self.pieces)}

    def encode(self, text):
        return [self.ids[text[i:i + 2]] for i in range(0, len(text), 2)]

    def decode(self, ids):
        return "".join(self.pieces[i] for i in ids)


def test_token_level_loss_is_divided_by_chars():
    text = clean_context(TEXT)
    tok = PairTokenizer(text)
    net = RWKV7.from_weights(RWKV7.random_weights(tok.vocab_size, 1, 32, head_size=16, seed=3)).eval()
    m = Model(net=net, tokenizer=tok, device=torch.device("cpu"), dtype=torch.float32)
    ids = tok.encode(text)
    r = E.evaluate_model(m, TEXT, chunk=5)
    chars = len(tok.decode(ids[1:]))
    assert chars == len(text) - 2 and r["chars"] == chars  # the first token ("\n" + a char) is context
    assert r["nats_per_char"] == pytest.approx(direct_nats(net, ids) / chars, rel=2e-5)


def test_bad_input(tmp_path):
    path = tiny_model(tmp_path)
    with pytest.raises(AIWriterError):
        run_eval(["--model", str(path), "--text", str(tmp_path / "missing.txt")])
    (tmp_path / "blank.txt").write_text("\n\u3000\n", encoding="utf-8")
    with pytest.raises(AIWriterError):
        run_eval(["--model", str(path), "--text", str(tmp_path / "blank.txt")])
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02" * 10)
    with pytest.raises(AIWriterError):
        run_eval(["--model", str(path), "--text", str(tmp_path / "bin.txt")])
    with pytest.raises(AIWriterError):
        run_eval(["--model", str(path), "--text", str(tmp_path / "text.txt"), "--max-chars", "0"])


def test_cli_eval_prints_one_json_line(tmp_path, capsys):
    from aiwriter.commands import main

    path = tiny_model(tmp_path, zero_head=True)
    assert main(["eval", "--model", str(path), "--text", str(tmp_path / "text.txt"), "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["nats_per_char"] == pytest.approx(math.log(len(CHARS)))
