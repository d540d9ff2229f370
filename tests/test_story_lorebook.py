import pytest

from aiwriter.errors import AIWriterError
from aiwriter.story import Entry, Lorebook, from_dict, to_dict


def test_round_trip_through_our_json():
    b = Lorebook(memory="记忆", authors_note="注", entries=[Entry(keys=["王五"], content="捕快", order=5, budget=10)])
    again = from_dict(to_dict(b))
    assert again == b


def test_keys_may_be_a_comma_string_in_our_json():
    b = from_dict({"entries": [{"keys": "王五,张三", "content": "x"}]})
    assert b.entries[0].keys == ["王五", "张三"]


def test_note_text_uses_the_template():
    assert Lorebook(authors_note="文风古典").note_text() == "[Author's note: 文风古典]"
    assert Lorebook(authors_note="x", an_template="（作者注：<|>）").note_text() == "（作者注：x）"
    assert Lorebook(authors_note="  ").note_text() == ""


@pytest.mark.parametrize("entry, field", [
    ({"keys": ["a"], "content": 5}, "content"),
    ({"keys": ["a"], "content": "x", "probability": "high"}, "probability"),
    ({"keys": ["a"], "content": "x", "probability": 150}, "probability"),
    ({"keys": ["a"], "content": "x", "constant": "yes"}, "constant"),
    ({"keys": ["a"], "content": "x", "order": 1.5}, "order"),
    ({"keys": ["a"], "content": "x", "colour": "red"}, "colour"),
])
def test_wrong_types_are_clear_errors_naming_the_entry(entry, field):
    with pytest.raises(AIWriterError) as e:
        from_dict({"entries": [{"keys": ["ok"], "content": "fine"}, entry]})
    assert "#2" in e.value.en and field in e.value.en and "#2" in e.value.zh


def test_too_many_entries():
    with pytest.raises(AIWriterError) as e:
        from_dict({"entries": [{"keys": ["a"], "content": "x"}] * 100_000})
    assert "100,000" in e.value.en and "10,000" in e.value.en
