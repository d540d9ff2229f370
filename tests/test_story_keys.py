import time

import pytest

from aiwriter.errors import AIWriterError
from aiwriter.story.keys import KeyTimeout, parse_key, split_keys
from aiwriter.story.scan import KeyIndex


def test_split_plain_and_regex_keys():
    assert split_keys("王五, 张三 ,,李四", "e", "key") == ["王五", "张三", "李四"]
    # a regex key runs to its closing slash, commas included
    assert split_keys("/a{1,3}b/i, 王五", "e", "key") == ["/a{1,3}b/i", "王五"]
    assert split_keys(["王五", " "], "e", "keys") == ["王五"]
    assert split_keys(None, "e", "key") == []


def test_split_rejects_wrong_types_naming_the_entry():
    with pytest.raises(AIWriterError) as e:
        split_keys(["王五", 3], "#2 李四", "keys")
    assert "#2 李四" in e.value.zh and "#2 李四" in e.value.en
    with pytest.raises(AIWriterError):
        split_keys(5, "x", "key")


def test_plain_keys_are_case_insensitive_substrings():
    k = parse_key("Wang", "e")
    assert not k.is_regex
    assert k.find("said WANG wu", "said wang wu") == 5
    assert parse_key("王五", "e").find("那王五道", "那王五道") == 1


def test_regex_key_with_flags():
    k = parse_key("/张.丰/", "e")
    assert k.is_regex and k.find("见张三丰", "见张三丰") == 1
    assert parse_key("/abc/i", "e").find("xABC", "xabc") == 1
    # a key that only starts with a slash is plain
    assert not parse_key("/路径", "e").is_regex


def test_bad_regex_and_long_keys_name_the_entry():
    with pytest.raises(AIWriterError) as e:
        parse_key("/(unclosed/", "#7 王五")
    assert "#7 王五" in e.value.en and "regex" in e.value.en
    with pytest.raises(AIWriterError) as e:
        parse_key("长" * 10_000, "#3 张三")
    assert "#3 张三" in e.value.zh and "10,000" in e.value.en


def test_catastrophic_regex_times_out():
    k = parse_key("/(x+x+)+y/", "e")
    t = time.perf_counter()
    with pytest.raises(KeyTimeout):
        k.find("x" * 5000, "x" * 5000)
    assert time.perf_counter() - t < 2


def test_key_index_never_rules_out_a_present_key():
    keys = ["王五", "a", "张三丰", "b", "xyz", "王"]
    idx = KeyIndex(keys)
    text = "王五和张三丰说xy"
    cand = idx.candidates(text)
    for k in keys:
        if k in text:
            assert cand[idx.slot[k]], k
    assert not cand[idx.slot["b"]] and not cand[idx.slot["xyz"]]
    assert not idx.candidates("").any()
