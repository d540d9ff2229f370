import pytest
from hypothesis import given, strategies as st

from aiwriter.errors import AIWriterError
from aiwriter.story import chapters as ch

BOOK = "前言。\n第一章 书生\n宁采臣赶路。\n第二章 古寺\n兰若寺荒凉。\n"


def titles(text):
    return [s.title for s in ch.find(text)]


def test_chinese_numbers():
    assert [ch.chinese_number(n) for n in (1, 10, 12, 20, 105, 110, 1001, 2024)] == \
        ["一", "十", "十二", "二十", "一百零五", "一百一十", "一千零一", "二千零二十四"]


def test_find_and_info():
    assert titles(BOOK) == ["", "第一章 书生", "第二章 古寺"]
    assert titles("只有正文") == [""]  # an old manuscript is one chapter
    assert titles("") == [""]
    infos = [s.info(BOOK, i) for i, s in enumerate(ch.find(BOOK))]
    assert [i["chars"] for i in infos] == [3, 6, 6]


def test_add_rename_move_delete():
    t = ch.add(BOOK, "雨夜")
    assert titles(t)[-1] == "第三章 雨夜" and t.endswith("第三章 雨夜\n")
    t = ch.add(t, "第十回 夜谈", body="燕赤霞说话。", position=1)
    assert titles(t) == ["", "第十回 夜谈", "第一章 书生", "第二章 古寺", "第三章 雨夜"]
    assert ch.chapter(t, 1).text == "燕赤霞说话。"
    t = ch.rename(t, 2, "赶路")
    assert titles(t)[2] == "第二章 赶路" and ch.chapter(t, 2).text == "宁采臣赶路。"
    with pytest.raises(AIWriterError):
        ch.move(t, 0, 2)
    t = ch.move(t, 4, 1)
    assert titles(t) == ["", "第三章 雨夜", "第十回 夜谈", "第二章 赶路", "第二章 古寺"]
    t = ch.delete(t, 2)
    assert "燕赤霞" not in t and len(ch.find(t)) == 4
    assert ch.text_through(BOOK, 1) == "前言。\n第一章 书生\n宁采臣赶路。"


def test_bad_indexes_and_titles():
    with pytest.raises(AIWriterError):
        ch.delete(BOOK, 9)
    with pytest.raises(AIWriterError):
        ch.rename(BOOK, 1, "两行\n标题")
    with pytest.raises(AIWriterError):
        ch.add(BOOK, "  ")


@given(st.lists(st.sampled_from(["第一章 甲", "第二章 乙", "正文一行。", "楔子", ""]), max_size=12),
       st.integers(0, 20), st.integers(0, 20))
def test_moving_keeps_every_line(lines, i, j):
    text = "\n".join(lines)
    n = len(ch.find(text))
    i, j = i % n, j % n
    if not ch.find(text)[0].title and (i == 0 or j == 0) and i != j:
        with pytest.raises(AIWriterError):
            ch.move(text, i, j)  # untitled text before the first heading stays first
        return
    moved = ch.move(text, i, j)
    assert sorted(l for l in moved.splitlines() if l) == sorted(l for l in text.splitlines() if l)
    assert len(ch.find(moved)) == n
