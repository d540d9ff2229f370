"""finish_sentence: past the asked length a continuation writes on to the end of its sentence
(a sentence end and the closing marks right after it, or a line end), at most that many more
chars. In the writer's Stream, through /v1/completions, and off by default for API clients."""
import pytest
import torch
from conftest import CycleNet
from test_server_api import GREEDY, server_with

from aiwriter.engine import Model
from aiwriter.errors import AIWriterError
from aiwriter.sampling import SamplingSettings
from aiwriter.tokenizer import CharTokenizer
from aiwriter.writer import Reading, Stream

CHARS = ["\n", "甲", "乙", "丙", "。", "”", "」", "他", "说", "：", "“", "好", "！"]


def stream(length, extra):
    tok = CharTokenizer(dict(enumerate(CHARS)))
    model = Model(net=CycleNet(list(range(len(CHARS)))), tokenizer=tok, device=torch.device("cpu"), dtype=torch.float32)
    reading = Reading(text="\n", ids=[0], logits=torch.zeros(len(CHARS)), state=None)
    return Stream(model, reading, length, SamplingSettings(), finish_sentence=extra), tok


def write(text, length, extra):
    """Feed `text` char by char as if sampled; what the stream keeps, and why it stopped."""
    s, tok = stream(length, extra)
    for i in tok.encode(text):
        s.feed(i)
        if s.done:
            break
    return s.text, s.stopped_by


def test_without_it_a_run_ends_at_the_length():
    assert write("甲乙丙。甲乙", 2, 0) == ("甲乙", "length")


def test_it_writes_on_to_the_sentence_end():
    assert write("甲乙丙。甲乙丙。", 2, 10) == ("甲乙丙。", "length")
    assert write("甲乙丙。甲乙丙。", 4, 10) == ("甲乙丙。", "length")  # already at the end: nothing more
    assert write("甲乙\n甲乙丙。", 2, 10) == ("甲乙", "length")        # a line end ends it too (not kept)


def test_closing_marks_after_the_end_are_kept():
    assert write("他说：“好！”他说", 5, 10) == ("他说：“好！”", "length")
    assert write("好。」」甲", 1, 10) == ("好。」」", "length")


def test_it_is_bounded():
    assert write("甲乙丙甲乙丙甲乙丙甲乙丙。", 2, 5) == ("甲乙丙甲乙丙甲", "length")  # 2 + 5 chars at most
    with pytest.raises(AIWriterError):
        stream(2, -1)


def test_the_api_field(tmp_path):
    with server_with(tmp_path) as c:
        body = {"prompt": "甲", "max_tokens": 2, **GREEDY}
        assert c.post("/v1/completions", json=body).json()["choices"][0]["text"] == "乙丙"  # off by default
        r = c.post("/v1/completions", json={**body, "finish_sentence": 40}).json()
        assert r["choices"][0]["text"] == "乙丙。" and r["choices"][0]["finish_reason"] == "length"
        r = c.post("/v1/completions", json={**body, "max_tokens": 1, "finish_sentence": 1}).json()
        assert r["choices"][0]["text"] == "乙丙"  # bounded: 1 + 1 chars
        bad = c.post("/v1/completions", json={**body, "finish_sentence": 100000})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "finish_sentence"
