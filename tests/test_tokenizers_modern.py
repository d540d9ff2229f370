"""World (RWKV) and GPT-NeoX tokenizers, the vocab-size rule, and loading vocab files."""
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aiwriter
import aiwriter.tokenizer as tokmod
from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv5 import RWKV5
from aiwriter.tokenizer import (CharTokenizer, NeoXTokenizer, NoTokenizer, WorldTokenizer, load_tokenizer,
                                tokenizer_for_vocab_size)

MIXED = ("第一章 风起\n\n\u3000\u3000林枫睁开眼睛，看着窗外的月光。“Hello, world!” he said, "
         "naïve café — ２０２４年 😀🎉👨‍👩‍👧 emoji\t\r\n  end ⚔️ 龘")


@pytest.fixture(scope="module")
def world():
    return WorldTokenizer.default()


@pytest.fixture(scope="module")
def reference_world():
    import rwkv
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

    return TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"))


def test_world_vocab_is_read_as_the_reference_reads_it(world, reference_world):
    assert world.vocab_size == 65536
    assert world.tokens == reference_world.idx2token   # every token's bytes, read without eval


def test_world_matches_reference_on_mixed_text(world, reference_world):
    ids = world.encode(MIXED)
    assert ids == reference_world.encode(MIXED)
    assert world.decode(ids) == MIXED
    assert len(ids) < len(MIXED.encode("utf-8")) / 2   # real merges happened, not byte by byte


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from(list("的一是了我不人在他有这个上们来到时大地为子中你说生国年着就那和要她出也得里后自以会家可下而过天去能对小多然于心学么之都好看起发当没成只如事把还用第样道想作种开美总从无情己面最女但现前些所同日手又行意动方期它头经长儿回位分爱老因很给名法间斯知世什两次使身者被高已亲其进此话常与活正感 ，。！？“”……——\n\u3000abcdefgHello world 0123456789😀🎉é"))))
def test_world_matches_reference_on_random_text(world, reference_world, text):
    ids = world.encode(text)
    assert ids == reference_world.encode(text)
    assert world.decode(ids) == text


def test_stream_decoder_never_emits_half_a_char(world):
    """Chinese text fed as single-byte tokens (the World ids 1..256 are the bytes 0..255): every
    piece is whole chars, nothing is U+FFFD, and the pieces add up to the text."""
    text = "林枫睁开眼睛，“你好！”😀"
    byte_ids = [b + 1 for b in text.encode("utf-8")]
    assert all(world.id_bytes(i) == bytes([i - 1]) for i in byte_ids)
    dec = world.stream_decoder()
    pieces = [dec.feed(i) for i in byte_ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[:3] == ["", "", "林"]   # held back until the third byte of 林 arrives
    # the normal encoding, one token at a time, streams the same text
    dec = world.stream_decoder()
    assert "".join(dec.feed(i) for i in world.encode(text)) + dec.flush() == text


def test_world_end_of_text_is_banned_and_silent(world):
    assert world.unknown_id == 0 and world.id_bytes(0) == b"" and world.decode([0]) == ""


def test_world_needs_the_rwkv_package(monkeypatch):
    monkeypatch.setattr(tokmod, "_DEFAULT_WORLD", None)   # read once per process: forget it here
    monkeypatch.setattr(tokmod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AIWriterError) as e:
        tokenizer_for_vocab_size(65536)
    assert "pip install rwkv" in e.value.en and "pip install rwkv" in e.value.zh


def test_world_vocab_file_loads_by_path_and_bad_ones_are_refused(tmp_path, world):
    import rwkv

    path = Path(rwkv.__file__).parent / "rwkv_vocab_v20230424.txt"
    tok = load_tokenizer(path)
    assert isinstance(tok, WorldTokenizer) and tok.encode(MIXED) == world.encode(MIXED)
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 '\\x00' 1\n2 __import__('os') 1\n", encoding="utf-8")
    with pytest.raises(AIWriterError, match="line 2"):
        load_tokenizer(bad)
    short = tmp_path / "short.txt"
    short.write_text("1 'a' 1\n2 'b' 1\n", encoding="utf-8")
    with pytest.raises(AIWriterError, match="256"):
        load_tokenizer(short)


def test_world_model_loads_with_the_world_tokenizer(tmp_path):
    path = tmp_path / "world.pth"
    torch.save(RWKV5.random_weights(65536, 1, 32, 16), path)
    model = aiwriter.load_model(path)
    assert isinstance(model.tokenizer, WorldTokenizer)
    logits, _ = model.forward(model.tokenizer.encode("林枫说：“走吧。”"))
    assert logits.shape == (65536,) and torch.isfinite(logits).all()


# ----------------------------------------------------------------------------------------------
# GPT-NeoX: the real 20B_tokenizer.json is not on this machine (the rwkv package does not ship
# it), so these tests train a small tokenizer of the same kind: byte-level BPE, <|endoftext|> at
# id 0, plus non-special added tokens for runs of spaces as NeoX has.

@pytest.fixture(scope="module")
def neox_file(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(["The quick brown fox jumps over the lazy dog. " * 20, "林枫睁开眼睛，看着窗外。" * 20], trainer)
    tk.add_tokens(["    ", "        "])
    path = tmp_path_factory.mktemp("neox") / "20B_tokenizer.json"
    tk.save(str(path))
    return path


def test_neox_file_loads_by_path_and_round_trips(neox_file):
    from tokenizers import Tokenizer

    tok = load_tokenizer(neox_file)
    assert isinstance(tok, NeoXTokenizer)
    ref = Tokenizer.from_file(str(neox_file))
    assert tok.vocab_size == ref.get_vocab_size()
    text = "The fox 林枫说：“走吧。”        😀 naïve"
    ids = tok.encode(text)
    assert ids == ref.encode(text).ids
    assert tok.decode(ids) == text == ref.decode(ids)
    assert tok.unknown_id == 0 and tok.id_bytes(0) == b""
    assert tok.id_bytes(ref.token_to_id("        ")) == b" " * 8   # added tokens are literal text


def test_neox_stream_decoder_never_emits_half_a_char(neox_file):
    tok = load_tokenizer(neox_file)
    text = "龘靐齉爩，😀🎉 林枫"   # rare chars: the small BPE spells them byte by byte
    ids = tok.encode(text)
    assert len(ids) > len(text)   # some chars really are split across tokens
    dec = tok.stream_decoder()
    pieces = [dec.feed(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)


def test_neox_vocab_sizes(tmp_path, neox_file):
    for size in (50277, 50304):
        tok = tokenizer_for_vocab_size(size)
        with pytest.raises(AIWriterError) as e:
            tok.encode("hello")
        assert "20B_tokenizer.json" in e.value.en and "20B_tokenizer.json" in e.value.zh
    tok = tokenizer_for_vocab_size(50277, near=neox_file.parent)
    assert isinstance(tok, NeoXTokenizer) and tok.decode(tok.encode("hello world")) == "hello world"


# ----------------------------------------------------------------------------------------------

def test_unknown_vocab_size_has_no_tokenizer():
    tok = tokenizer_for_vocab_size(1234)
    assert type(tok) is NoTokenizer and tok.vocab_size == 1234
    with pytest.raises(AIWriterError):
        tok.encode("abc")


def test_char_json_still_loads(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_bytes(json.dumps({"0": "\n", "1": "林", "2": "\ue083"}, ensure_ascii=False).encode("utf-16"))
    tok = load_tokenizer(path)
    assert isinstance(tok, CharTokenizer) and tok.encode("林x") == [1, 2]
