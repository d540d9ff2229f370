"""A manuscript's memory / author's note / lorebook saved in SQLite, lorebook import and export,
and the context viewer's endpoint."""
import json

import pytest
from fastapi.testclient import TestClient

from aiwriter.server.app import ServerSettings, create_app
from test_server_story_api import double_model


@pytest.fixture
def c(tmp_path):
    app = create_app(ServerSettings(db=str(tmp_path / "docs.db")), model=double_model(), model_name="cycle")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def new_doc(c, text):
    r = c.post("/api/docs", json={"title": "聊斋", "text": text})
    assert r.status_code in (200, 201), r.text
    return r.json()["id"]


STORY = {"memory": "宁采臣是书生。", "authors_note": "阴森", "entries": [
    {"keys": ["兰若寺"], "content": "兰若寺是荒寺。", "name": "寺"},
    {"keys": ["燕赤霞"], "content": "燕赤霞是剑客。", "name": "燕"}]}


def test_story_saved_with_the_manuscript_and_the_context(c, tmp_path):
    doc = new_doc(c, "那夜宁采臣走进兰若寺。" + "月色昏暗。" * 80)
    assert c.get(f"/api/docs/{doc}/story").json()["story"]["entries"] == []
    r = c.put(f"/api/docs/{doc}/story", json={"story": STORY})
    assert r.status_code == 200, r.text
    assert c.get(f"/api/docs/{doc}/story").json()["story"]["memory"] == "宁采臣是书生。"
    ctx = c.post(f"/api/docs/{doc}/context", json={"budget": 2000}).json()
    assert ctx["text"].startswith("宁采臣是书生。\n那夜") and "兰若寺是荒寺。" in ctx["text"] and "燕赤霞" not in ctx["text"]
    assert ctx["chars_used"] == len(ctx["text"]) <= 2000
    assert [e["label"] for e in ctx["entries"] if e["status"] == "inserted"] == ["#1 寺"]
    assert {p["kind"] for p in ctx["parts"]} == {"memory", "story", "entry", "note"}
    # the editor's unsaved text and settings
    ctx = c.post(f"/api/docs/{doc}/context", json={"text": "燕赤霞拔剑。", "story": STORY}).json()
    assert "燕赤霞是剑客。" in ctx["text"]
    c.delete(f"/api/docs/{doc}")
    assert c.get(f"/api/docs/{doc}/story").status_code == 404


def test_bad_story_is_400_naming_the_entry(c):
    doc = new_doc(c, "x")
    r = c.put(f"/api/docs/{doc}/story", json={"story": {"entries": [{"keys": ["k" * 10_000], "content": "x", "name": "长"}]}})
    assert r.status_code == 400 and "长" in r.json()["error"]["zh"]
    r = c.put(f"/api/docs/{doc}/story", json={"story": {"entries": [{"keys": ["/(a+)+$/"], "content": 5}]}})
    assert r.status_code == 400 and "#1" in r.json()["error"]["en"]


def test_import_and_export_lorebooks(c):
    doc = new_doc(c, "故事正文")
    lite = {"memory": "m", "authorsnote": "n", "worldinfo": [{"key": "a,b", "content": "x", "comment": "e"}]}
    r = c.post(f"/api/docs/{doc}/story/import", json={"file": lite}).json()
    assert r["kind"] == "lite" and r["story"]["entries"][0]["keys"] == ["a", "b"]
    c.put(f"/api/docs/{doc}/story", json={"story": r["story"]})
    out = c.get(f"/api/docs/{doc}/story/export?format=lite")
    assert "attachment" in out.headers["content-disposition"]
    data = json.loads(out.content)
    assert data["prompt"] == "故事正文" and data["worldinfo"][0]["key"] == "a,b"
    nai = json.loads(c.get(f"/api/docs/{doc}/story/export?format=novelai").content)
    assert nai["lorebookVersion"] and nai["entries"][0]["keys"] == ["a", "b"]
    assert c.post(f"/api/docs/{doc}/story/import", json={"file": "nope"}).status_code == 400
    assert c.get(f"/api/docs/{doc}/story/export?format=docx").status_code == 400


def test_book_export(c):
    doc = new_doc(c, "第一章 书生\n宁采臣赶路。\n第二章 古寺\n兰若寺荒凉。")
    t = c.get(f"/api/docs/{doc}/book?format=txt")
    assert t.status_code == 200 and "第二章 古寺" in t.text and "attachment" in t.headers["content-disposition"]
    e = c.get(f"/api/docs/{doc}/book?format=epub")
    assert e.headers["content-type"] == "application/epub+zip" and e.content[:2] == b"PK"
    d = c.get(f"/api/docs/{doc}/book?format=docx")
    assert d.status_code == 200 and d.content[:2] == b"PK"
    assert c.get(f"/api/docs/{doc}/book?format=pdf").status_code == 400
    assert c.get("/api/docs/999999/book").status_code == 404


def test_chapters_through_the_api(c):
    doc = new_doc(c, "宁采臣赶路。")
    got = c.get(f"/api/docs/{doc}/chapters").json()
    assert [x["title"] for x in got["chapters"]] == [""]  # an old manuscript is one chapter
    r = c.post(f"/api/docs/{doc}/chapters", json={"title": "古寺", "text": "兰若寺荒凉。", "base_revision": got["revision"]})
    assert r.status_code == 200, r.text
    assert [x["title"] for x in r.json()["chapters"]] == ["", "第一章 古寺"]
    stale = got["revision"]
    r = c.patch(f"/api/docs/{doc}/chapters/0", json={"title": "赶路", "base_revision": stale})
    assert r.status_code == 409  # another change came first: nothing written
    r = c.patch(f"/api/docs/{doc}/chapters/0", json={"title": "赶路"}).json()
    assert [x["title"] for x in r["chapters"]] == ["第一章 赶路", "第一章 古寺"]
    r = c.post(f"/api/docs/{doc}/chapters/1/move", json={"to": 0}).json()
    assert [x["title"] for x in r["chapters"]] == ["第一章 古寺", "第一章 赶路"]
    text = c.get(f"/api/docs/{doc}").json()["text"]
    assert text == "第一章 古寺\n兰若寺荒凉。\n第一章 赶路\n宁采臣赶路。\n"
    ctx = c.post(f"/api/docs/{doc}/context", json={"chapter": 0}).json()
    assert "宁采臣" not in ctx["text"] and "兰若寺荒凉。" in ctx["text"]
    e = c.get(f"/api/docs/{doc}/chapters/1/export?format=txt")
    assert e.status_code == 200 and "宁采臣赶路" in e.text and "兰若寺" not in e.text
    assert c.get(f"/api/docs/{doc}/chapters/5/export").status_code == 404
    r = c.delete(f"/api/docs/{doc}/chapters/0").json()
    assert [x["title"] for x in r["chapters"]] == ["第一章 赶路"]
    assert c.delete(f"/api/docs/{doc}/chapters/3").status_code == 400
    versions = c.get(f"/api/docs/{doc}/versions").json()["versions"]
    # the deleted chapter is still in the history
    assert any("兰若寺" in c.get(f"/api/docs/{doc}/versions/{v['id']}").json()["text"] for v in versions)


def test_the_manuscripts_context_budget_is_the_default(c):
    doc = new_doc(c, "月色昏暗。" * 1000)
    assert c.post(f"/api/docs/{doc}/context", json={}).json()["budget"] == 16_000
    c.put(f"/api/docs/{doc}/story", json={"story": {**STORY, "context_budget": 1000}})
    ctx = c.post(f"/api/docs/{doc}/context", json={}).json()
    assert ctx["budget"] == 1000 and ctx["chars_used"] <= 1000
    assert c.post(f"/api/docs/{doc}/context", json={"budget": 3000}).json()["budget"] == 3000  # asked for: wins
    ctx = c.post(f"/api/docs/{doc}/context", json={"story": {"memory": "x", "context_budget": 500}}).json()
    assert ctx["budget"] == 500  # unsaved settings carry their own


def test_import_takes_the_files_text_and_says_what_is_wrong(c):
    doc = new_doc(c, "x")
    r = c.post(f"/api/docs/{doc}/story/import", json={"file": json.dumps(STORY, ensure_ascii=False), "name": "聊斋.json"})
    assert r.status_code == 200 and [e["name"] for e in r.json()["story"]["entries"]] == ["寺", "燕"]
    r = c.post(f"/api/docs/{doc}/story/import", json={"file": "宁采臣是书生。", "name": "笔记.txt"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert "笔记.txt" in err["zh"] and "JSON" in err["zh"] and "not valid JSON" in err["en"]


def test_continuing_with_a_note_reads_only_the_end_again(c):
    """The page's flow (context, then completion, then the next context): with an author's note
    the text parts from the last prompt near its end. The second continuation reads from the state
    kept TAIL_KEEP ids before the first one's end, later ones only from about where the last one
    parted (engine.PrefixCache.longest_shared, writer.ReadingTask)."""
    doc = new_doc(c, "")
    c.put(f"/api/docs/{doc}/story", json={"story": {"memory": "丙乙甲。" * 50, "authors_note": "子丑"}})
    text, read = "甲乙丙。\n" * 600, []
    for _ in range(4):
        before = c.get("/api/status").json()
        prompt = c.post(f"/api/docs/{doc}/context", json={"text": text}).json()["text"]
        r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 60, "temperature": 0})
        after = c.get("/api/status").json()
        read.append((after["read_ids"] - before["read_ids"], after["prompt_ids"] - before["prompt_ids"]))
        text += r.json()["choices"][0]["text"]
    assert all(n > 3000 for _, n in read)
    assert read[0][0] == read[0][1] and read[1][0] < 1024 + 400 and all(r < 600 for r, _ in read[2:]), read
