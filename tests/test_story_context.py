import random

import pytest
from hypothesis import given, settings, strategies as st

from aiwriter.errors import AIWriterError
from aiwriter.story import AssemblySettings, Entry, Lorebook, assemble

STORY = "从前有座山，山里有座庙。" * 60 + "\n王五走进庙门。" + "天色渐渐暗了下来，" * 50


def test_layout_memory_constants_story_then_entries_and_note_near_the_end():
    b = Lorebook(memory="主角是李四。", authors_note="文风古典", entries=[
        Entry(keys=["王五"], content="王五：捕快。", name="王五"),
        Entry(constant=True, content="世界：大明。", name="world", order=2),
        Entry(constant=True, content="时代：嘉靖。", name="era", order=1),
        Entry(keys=["赵六"], content="赵六：不该出现。"),
    ])
    c = assemble(STORY, b, AssemblySettings(budget=100_000))
    t = c.text
    assert t.startswith("主角是李四。\n时代：嘉靖。\n世界：大明。\n")  # lower order first; higher nearer the end
    block = "王五：捕快。\n[Author's note: 文风古典]"
    assert block in t and "赵六" not in t
    tail = t[t.index(block) + len(block):].lstrip("\n")
    assert STORY.endswith(tail) and 288 <= len(tail) <= 352  # 320 chars before the end, snapped to a boundary
    assert "".join(t[p.start:p.end] for p in c.parts if p.kind == "story") == STORY  # all of it, in order
    kinds = [p.kind for p in c.parts]
    assert kinds == ["memory", "constant", "constant", "story", "entry", "note", "story"]
    for p in c.parts:
        assert 0 <= p.start < p.end <= len(t)
    fired = {r.label: r for r in c.fired()}
    assert "王五" in fired["#1 王五"].reason and fired["#2 world"].status == "front"
    assert c.unmatched == 1


def test_stays_within_budget_and_keeps_a_stable_prefix():
    b = Lorebook(memory="记忆。" * 20, authors_note="注", entries=[Entry(keys=["王五"], content="王五是捕快。" * 5)])
    s = AssemblySettings(budget=1200)
    c1 = assemble(STORY, b, s)
    assert len(c1.text) <= 1200 and "王五是捕快" in c1.text and c1.text.startswith("记忆。" * 20)
    grown = STORY + "他说"
    c2 = assemble(grown, b, s)
    assert c2.text[: c1.stable_prefix] == c1.text[: c1.stable_prefix]  # the cache keeps its prefix
    assert c1.stable_prefix > 500


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2000), st.text("王五张三天。\n", max_size=1500),
       st.lists(st.tuples(st.sampled_from(["王五", "张三", "天", "/张.?三/"]), st.integers(0, 300), st.booleans()), max_size=8),
       st.text("记忆", max_size=300), st.integers(0, 600))
def test_never_over_budget(budget, depth, story, specs, memory, an_depth):
    b = Lorebook(memory=memory, authors_note="注" * (depth % 50), an_depth=an_depth,
                 entries=[Entry(keys=[k], content="设" * n, constant=c) for k, n, c in specs])
    c = assemble(story, b, AssemblySettings(budget=budget))
    assert len(c.text) <= budget
    story_parts = "".join(c.text[p.start:p.end] for p in c.parts if p.kind == "story")
    assert story.endswith(story_parts)


def test_anti_keys_secondary_keys_and_probability():
    b = Lorebook(entries=[
        Entry(keys=["王五"], anti_keys=["庙门"], content="A"),
        Entry(keys=["王五"], secondary_keys=["天色", "山"], selective=True, content="B"),
        Entry(keys=["王五"], secondary_keys=["天色", "海"], selective=True, content="C"),
        Entry(keys=["王五"], probability=0, content="D"),
        Entry(keys=["王五"], probability=100, content="E"),
    ])
    c = assemble(STORY, b, AssemblySettings(budget=100_000))
    st_ = {r.index: r.status for r in c.entries}
    assert st_ == {0: "blocked", 1: "inserted", 2: "blocked", 3: "unlucky", 4: "inserted"}
    reasons = {r.index: r.reason for r in c.entries}
    assert "庙门" in reasons[0] and "海" in reasons[2]


def test_probability_is_repeatable_per_seed_and_roughly_right():
    b = Lorebook(entries=[Entry(keys=["王五"], probability=50, content=f"x{i}") for i in range(400)])
    a = assemble(STORY, b, AssemblySettings(budget=100_000, seed=3))
    assert [r.status for r in a.entries] == [r.status for r in assemble(STORY, b, AssemblySettings(budget=100_000, seed=3)).entries]
    n = len(a.fired())
    assert 140 < n < 260


def test_scan_depth_limits_where_keys_are_looked_for():
    b = Lorebook(entries=[Entry(keys=["王五"], content="near", scan_depth=100),
                          Entry(keys=["王五"], content="far", scan_depth=1000)])
    c = assemble(STORY, b, AssemblySettings(budget=100_000))
    assert [r.index for r in c.fired()] == [1]
    b.scan_depth = 50  # the lorebook's default applies to entries without their own
    b.entries[1].scan_depth = 0
    assert assemble(STORY, b, AssemblySettings(budget=100_000)).fired() == []


def test_case_insensitive_plain_keys():
    c = assemble("Then WANG came.", Lorebook(entries=[Entry(keys=["wang"], content="x")]))
    assert len(c.fired()) == 1


def test_per_entry_budget_and_priority_under_a_tight_budget():
    b = Lorebook(entries=[Entry(keys=["王五"], content="甲" * 50, budget=10, order=1),
                          Entry(keys=["王五"], content="乙" * 250, order=9),
                          Entry(keys=["王五"], content="丙" * 250, order=5)])
    c = assemble(STORY, b, AssemblySettings(budget=600))
    st_ = {r.index: r for r in c.entries}
    assert st_[0].status == "inserted" and st_[0].chars == 10 and "甲" * 11 not in c.text
    assert st_[1].status == "inserted" and st_[2].status == "dropped"  # higher order wins the room
    assert len(c.text) <= 600


def test_cascading_is_bounded():
    b = Lorebook(entries=[Entry(keys=["王五"], content="王五认识张三。"),
                          Entry(keys=["张三"], content="张三认识赵六。"),
                          Entry(keys=["赵六"], content="赵六是掌柜。")])
    fired = lambda d: sorted(r.index for r in assemble(STORY, b, AssemblySettings(budget=100_000, cascade_depth=d)).fired())
    assert fired(0) == [0] and fired(1) == [0, 1] and fired(2) == [0, 1, 2]
    assert "连锁" in assemble(STORY, b, AssemblySettings(budget=100_000, cascade_depth=1)).entries[1].reason
    with pytest.raises(AIWriterError):
        assemble(STORY, b, AssemblySettings(cascade_depth=99))


def test_catastrophic_regex_is_reported_by_name_and_the_rest_still_works():
    story = "x" * 5000
    b = Lorebook(entries=[Entry(keys=["/(x+x+)+y/"], content="bad", name="坏正则"), Entry(keys=["xx"], content="good")])
    c = assemble(story, b, AssemblySettings(budget=6000))
    assert "good" in c.text and "bad" not in c.text
    assert any("坏正则" in w for w in c.warnings)
    assert c.entries[0].status == "error"
    with pytest.raises(AIWriterError) as e:
        assemble(story, b, AssemblySettings(budget=6000, strict=True))
    assert "坏正则" in e.value.zh


def test_memory_too_long_is_cut_and_said_so():
    c = assemble("故事" * 10, Lorebook(memory="忆" * 1000), AssemblySettings(budget=100))
    assert len(c.text) <= 100 and c.text.endswith("故事" * 10) and c.warnings


def test_no_lorebook_is_just_the_story_tail():
    story = "".join(random.Random(1).choice("山水天地人\n") for _ in range(5000))
    c = assemble(story, Lorebook(), AssemblySettings(budget=1000))
    assert story.endswith(c.text) and len(c.text) <= 1000 and c.stable_prefix == len(c.text)


def test_describe_is_bilingual():
    d = assemble(STORY, Lorebook(entries=[Entry(keys=["王五"], content="x")])).describe()
    assert "上下文" in d and "context" in d and "王五" in d


@settings(max_examples=80, deadline=None)
@given(st.text("王五张三天地Aa。\n", max_size=400),
       st.lists(st.tuples(st.lists(st.text("王五张三天地Aa", min_size=1, max_size=3), min_size=1, max_size=3),
                          st.integers(0, 300)), max_size=12),
       st.integers(0, 500))
def test_fired_entries_match_a_plain_reference(story, specs, depth):
    """The pair index only speeds things up: what fires is what a plain substring search finds."""
    b = Lorebook(scan_depth=depth, entries=[Entry(keys=keys, content="x", scan_depth=d) for keys, d in specs])
    c = assemble(story, b, AssemblySettings(budget=100_000))
    want = set()
    for i, (keys, d) in enumerate(specs):
        window = story[-(d or depth or 100_000):].lower()
        if any(k.lower() in window for k in keys):
            want.add(i)
    assert {r.index for r in c.fired()} == want
