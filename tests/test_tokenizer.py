"""AI-Writer's char vocab files (UTF-16 JSON) and the seed's context cleaning."""
import codecs
import json
from pathlib import Path

import numpy as np
import pytest

from aiwriter.errors import AIWriterError
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer, clean_context, load_tokenizer

FIX = Path(__file__).parent / "fixtures"
VOCABS = [FIX / "aiwriter-v1-vocab.json", FIX / "aiwriter-v2-vocab.json"]


@pytest.mark.parametrize("path", VOCABS)
def test_utf16_vocab(path):
    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF16_LE)  # the original files really are UTF-16
    tok = load_tokenizer(path)
    assert tok.vocab_size == 8849 and len(tok.itos) == 8849
    assert tok.itos == {int(k): v for k, v in json.loads(raw.decode("utf-16")).items()}
    assert tok.unknown_id is not None and tok.itos[tok.unknown_id] == UNKNOWN_CHAR


@pytest.mark.parametrize("path", VOCABS)
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be"])
def test_other_encodings_give_the_same_tokenizer(tmp_path, path, encoding):
    ref = load_tokenizer(path)
    copy = tmp_path / "vocab.json"
    copy.write_bytes(path.read_bytes().decode("utf-16").encode(encoding))
    tok = load_tokenizer(copy)
    assert tok.itos == ref.itos and tok.stoi == ref.stoi and tok.unknown_id == ref.unknown_id


def test_fixture_texts_encode_to_fixture_ids():
    v1 = load_tokenizer(VOCABS[0])
    d = np.load(FIX / "aiwriter-v1-tiny.expected.npz")
    assert v1.encode(str(d["short_text"])) == d["short_ids"].tolist()
    assert v1.encode(str(d["full_text"]))[-32:] == d["full_ids"].tolist()
    v2 = load_tokenizer(VOCABS[1])
    d = np.load(FIX / "aiwriter-v2-tiny.expected.npz")
    assert v2.encode(str(d["text"])) == d["ids"].tolist()
    assert v2.decode(d["ids"].tolist()) == str(d["text"])


def test_the_two_vocabs_differ_in_order():
    v1, v2 = (load_tokenizer(p) for p in VOCABS)
    assert v1.encode("魔皇") != v2.encode("魔皇")
    assert v1.decode(v1.encode("魔皇")) == v2.decode(v2.encode("魔皇")) == "魔皇"


@pytest.mark.parametrize("path", VOCABS)
def test_chars_outside_the_vocab_map_to_the_unknown_char(path):
    tok = load_tokenizer(path)
    outside = ["😀", "\u0378", "𠀀"]
    assert all(ch not in tok.stoi for ch in outside)
    ids = tok.encode("他😀说\u0378𠀀")
    assert ids[0] == tok.stoi["他"] and ids[2] == tok.stoi["说"]
    assert ids[1] == ids[3] == ids[4] == tok.unknown_id
    assert tok.decode(ids) == "他" + UNKNOWN_CHAR + "说" + UNKNOWN_CHAR * 2


def test_bad_vocab_files(tmp_path):
    cases = {"not-json": b"\xff\xfe{\x00", "list": json.dumps(["a", "b"]).encode(),
             "multi-char": json.dumps({"0": "ab"}).encode(), "empty-object": b"{}"}
    for name, raw in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_bytes(raw)
        with pytest.raises(AIWriterError):
            CharTokenizer.from_file(path)
    with pytest.raises(AIWriterError):
        CharTokenizer.from_file(tmp_path / "missing.json")


def test_clean_context():
    raw = "\u3000\u3000第一章 开始\r\n\n   \n\u3000他说：“走吧。”  \r\n\u3000\u3000\n结尾\u3000"
    assert clean_context(raw) == "\n第一章 开始\n他说：“走吧。”\n结尾"
    assert clean_context("") == "\n"
    assert clean_context("一行") == "\n一行"
    assert clean_context(clean_context(raw)) == clean_context(raw)  # idempotent
