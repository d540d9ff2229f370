import json

import pytest

from aiwriter.errors import AIWriterError
from aiwriter.story import Entry, Lorebook, assemble, load_file, loads, save_file, to_lite, to_novelai

# small samples written from the documented fields of each format (not copied from anywhere)
LITE_SAVE = {
    "gamestarted": True, "prompt": "王五走进了庙门。", "actions": ["天色暗了。"],
    "memory": "主角：李四。", "authorsnote": "文风古典", "anotetemplate": "[Author's note: <|>]",
    "wisearchdepth": 2048,
    "worldinfo": [
        {"key": "王五,老王", "keysecondary": "", "keyanti": "", "content": "王五是捕快。", "comment": "王五",
         "folder": None, "selective": False, "constant": False, "probability": 100},
        {"key": "庙", "keysecondary": "夜,暗", "keyanti": "白天", "content": "庙里闹鬼。", "comment": "庙",
         "selective": True, "constant": False, "probability": 60, "useprobability": True},
        {"key": "", "content": "时代：嘉靖年间。", "comment": "时代", "constant": True},
    ],
}
NOVELAI = {
    "lorebookVersion": 5,
    "entries": [
        {"text": "张三是书生。", "displayName": "张三", "keys": ["张三", "/张.?生/i"], "searchRange": 1000,
         "enabled": True, "forceActivation": False,
         "contextConfig": {"prefix": "", "suffix": "\n", "tokenBudget": 200, "budgetPriority": 300,
                           "insertionPosition": -1}},
        {"text": "大明。", "displayName": "world", "keys": [], "enabled": True, "forceActivation": True},
    ],
    "settings": {}, "categories": [],
}


def test_import_a_kobold_lite_save(tmp_path):
    p = tmp_path / "save.json"
    p.write_text(json.dumps(LITE_SAVE, ensure_ascii=False), encoding="utf-8")
    got = load_file(p)
    b = got.book
    assert got.kind == "lite" and got.story == "王五走进了庙门。天色暗了。"
    assert (b.memory, b.authors_note, b.scan_depth) == ("主角：李四。", "文风古典", 2048)
    e0, e1, e2 = b.entries
    assert e0.keys == ["王五", "老王"] and e0.name == "王五"
    assert e1.selective and e1.secondary_keys == ["夜", "暗"] and e1.anti_keys == ["白天"] and e1.probability == 60
    assert e2.constant
    c = assemble(got.story, b)
    assert c.text.startswith("主角：李四。\n时代：嘉靖年间。\n") and "王五是捕快。" in c.text


def test_lite_round_trip_and_extra_fields_kept(tmp_path):
    b = loads(json.dumps(LITE_SAVE)).book
    b.entries[0].order, b.entries[0].budget = 7, 30
    p = tmp_path / "out.json"
    save_file(b, p, "lite", story="故事")
    data = json.loads(p.read_text(encoding="utf-8"))
    assert data["prompt"] == "故事" and data["worldinfo"][1]["keysecondary"] == "夜,暗"
    again = loads(p.read_bytes()).book
    assert again.memory == b.memory and [e.keys for e in again.entries] == [e.keys for e in b.entries]
    assert [e.probability for e in again.entries] == [100, 60, 100]


def test_lite_world_info_array_alone():
    b = loads(json.dumps(LITE_SAVE["worldinfo"])).book
    assert len(b.entries) == 3


def test_import_and_export_novelai(tmp_path):
    p = tmp_path / "book.lorebook"
    p.write_text(json.dumps(NOVELAI, ensure_ascii=False), encoding="utf-8")
    got = load_file(p)
    assert got.kind == "novelai"
    a, w = got.book.entries
    assert a.keys == ["张三", "/张.?生/i"] and a.scan_depth == 1000 and a.order == 300 and a.budget == 200
    assert a.content == "张三是书生。" and w.constant
    assert "张三是书生。" in assemble("那张生来了。", got.book).text  # the regex key fires
    out = tmp_path / "again.lorebook"
    save_file(got.book, out)
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["lorebookVersion"] and data["entries"][0]["keys"] == ["张三", "/张.?生/i"]
    assert loads(out.read_bytes()).book.entries[0].keys == a.keys


def test_own_format_round_trip(tmp_path):
    b = Lorebook(memory="m", entries=[Entry(keys=["a"], content="b", order=3)])
    save_file(b, tmp_path / "x.json")
    assert load_file(tmp_path / "x.json").book == b


@pytest.mark.parametrize("raw, words", [
    (b"not json {", ["JSON"]),
    (b"\xff\xfe\x00", ["UTF-8"]),
    (b"[1, 2]", ["#1"]),
    (b"42", ["JSON"]),
    (json.dumps({"worldinfo": [{"key": "a", "content": 5, "comment": "王五"}]}).encode(), ["王五", "content"]),
    (json.dumps({"worldinfo": [{"key": ["a", 3], "content": "x"}]}).encode(), ["#1", "key"]),
    (json.dumps({"worldinfo": "nope"}).encode(), ["worldinfo"]),
    (json.dumps({"worldinfo": [{"key": "k" * 10_000, "content": "x", "comment": "长"}]}).encode(), ["长", "10,000"]),
    (json.dumps({"worldinfo": [{"key": "/(a/", "content": "x", "comment": "re"}]}).encode(), ["re", "regex"]),
    (json.dumps({"lorebookVersion": 5, "entries": [{"keys": "张三", "text": "x", "displayName": "张"}]}).encode(), ["张", "keys"]),
    (json.dumps({"lorebookVersion": 5, "entries": [{"keys": ["a"], "text": "x", "searchRange": "far"}]}).encode(), ["#1", "searchRange"]),
    (json.dumps({"hello": 1}).encode(), ["KoboldAI Lite"]),
    (b"[" * 100_000 + b"]" * 100_000, ["JSON"]),
])
def test_bad_files_are_clear_bilingual_errors(raw, words):
    with pytest.raises(AIWriterError) as e:
        loads(raw, "f.json")
    for w in words:
        assert w in e.value.en or w in e.value.zh
    assert e.value.zh != e.value.en


def test_hundred_thousand_entries_refused():
    raw = json.dumps({"worldinfo": [{"key": "a", "content": "x"}] * 100_000})
    with pytest.raises(AIWriterError) as e:
        loads(raw)
    assert "100,000" in e.value.en


def test_export_formats_are_json_serialisable():
    b = loads(json.dumps(LITE_SAVE)).book
    json.dumps(to_lite(b, "s")), json.dumps(to_novelai(b))


def test_lite_export_keeps_our_fields_through_a_reimport():
    b = loads(json.dumps(LITE_SAVE)).book
    b.entries[0].order, b.entries[0].budget, b.entries[0].scan_depth = 7, 30, 500
    b.an_depth, b.context_budget = 100, 4000
    again = loads(json.dumps(to_lite(b, "故事"))).book
    assert [(e.order, e.budget, e.scan_depth) for e in again.entries] == [(7, 30, 500), (100, 0, 0), (100, 0, 0)]
    assert (again.an_depth, again.context_budget) == (100, 4000)
    bad = to_lite(b)
    bad["worldinfo"][1]["aiwriter"] = {"order": "high"}
    with pytest.raises(AIWriterError, match="#2 庙.*order"):
        loads(json.dumps(bad))


def test_context_budget_is_checked():
    from aiwriter.story import from_dict

    assert from_dict({"context_budget": 3000}).context_budget == 3000
    for bad in (-1, 1.5, "3000", True, 10**8):
        with pytest.raises(AIWriterError, match="context_budget"):
            from_dict({"context_budget": bad})
