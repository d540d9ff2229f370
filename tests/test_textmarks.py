"""Marks kept with a manuscript (AI-written ranges, the last continuation) and the one rule for
counting chars, in Python, in SQLite and through the documents API."""
import sqlite3

import pytest
from test_server_api import server_with

from aiwriter.errors import AIWriterError
from aiwriter.store import Store
from aiwriter.textmarks import chars_sql, count_chars, normalize_marks

SAMPLES = ["", "林黛玉进了贾府。", "甲 乙\t丙\r\n\n　　丁", "𠀀𠀁 a b", "  \n\n  "]


def test_count_in_python_and_sqlite_agree():
    db = sqlite3.connect(":memory:")
    for s in SAMPLES:
        assert db.execute(f"SELECT {chars_sql('?')}", (s,)).fetchone()[0] == count_chars(s)
    assert count_chars("甲 乙\t丙\r\n\n　　丁") == 4 and count_chars("𠀀𠀁 a b") == 4


def test_marks_are_checked_sorted_and_merged():
    text = "甲乙丙𠀀丁"  # 6 UTF-16 units (the astral char is two, as the page's JavaScript counts)
    assert normalize_marks(None, text) == {"ai": [], "last": None}
    assert normalize_marks({"ai": [[4, 6], [0, 2], [2, 3]], "last": [3, 6]}, text) == {"ai": [[0, 3], [4, 6]], "last": [3, 6]}
    for bad in ({"ai": [[0, 7]]}, {"ai": [[2, 2]]}, {"ai": [[True, 2]]}, {"ai": "x"}, {"last": [1]}, {"other": 1}, [1, 2]):
        with pytest.raises(AIWriterError):
            normalize_marks(bad, text)


def test_the_store_keeps_marks_with_the_text_and_its_versions(tmp_path):
    store = Store(tmp_path / "m.db")
    doc = store.create_document("t", "甲")
    assert doc["marks"] == {"ai": [], "last": None}
    doc = store.save_document(doc["id"], text="甲乙丙。", marks={"ai": [[1, 4]], "last": [1, 4]}, reason="generation",
                              base_revision=doc["revision"])
    assert doc["marks"] == {"ai": [[1, 4]], "last": [1, 4]} and doc["chars"] == 4
    marked = doc
    # marks alone change: a new revision, no new version (the newest version holds them)
    n = len(store.list_versions(doc["id"]))
    doc = store.save_document(doc["id"], marks={"ai": [[1, 3]], "last": None}, base_revision=doc["revision"])
    assert doc["revision"] == marked["revision"] + 1 and doc["marks"] == {"ai": [[1, 3]], "last": None}
    assert len(store.list_versions(doc["id"])) == n
    # new text without marks (another client): no marks, rather than wrong ones
    doc = store.save_document(doc["id"], text="我自己写的。", reason="save")
    assert doc["marks"] == {"ai": [], "last": None}
    # restoring a version brings its marks back
    v = [v for v in store.list_versions(doc["id"]) if v["reason"] == "generation"][0]
    assert store.get_version(doc["id"], v["id"])["marks"] == {"ai": [[1, 3]], "last": None}
    doc = store.restore_version(doc["id"], v["id"])
    assert doc["text"] == "甲乙丙。" and doc["marks"] == {"ai": [[1, 3]], "last": None}
    with pytest.raises(AIWriterError):
        store.save_document(doc["id"], marks={"ai": [[0, 99]]})
    assert store.list_documents()[0]["chars"] == 4


def test_a_database_from_before_marks_opens_and_keeps_everything(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
CREATE TABLE documents (id INTEGER PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, revision INTEGER NOT NULL,
                        created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE versions (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                       text TEXT NOT NULL, reason TEXT NOT NULL, revision INTEGER NOT NULL, created REAL NOT NULL,
                       updated REAL NOT NULL);
CREATE TABLE generations (id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
                          text TEXT NOT NULL, model TEXT NOT NULL, settings TEXT NOT NULL, created REAL NOT NULL);
INSERT INTO documents VALUES (1, '旧稿', '甲乙 丙', 3, 0, 0);
INSERT INTO versions VALUES (1, 1, '甲乙 丙', 'save', 3, 0, 0);
""")
    db.commit()
    db.close()
    store = Store(path)
    doc = store.get_document(1)
    assert doc["text"] == "甲乙 丙" and doc["marks"] == {"ai": [], "last": None} and doc["chars"] == 3
    doc = store.save_document(1, text="甲乙 丙丁", marks={"ai": [[4, 5]], "last": [4, 5]}, base_revision=3)
    assert store.get_document(1)["marks"] == {"ai": [[4, 5]], "last": [4, 5]}


def test_the_documents_api_takes_and_gives_marks(tmp_path):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "t"}).json()
        r = c.put(f"/api/docs/{doc['id']}", json={"text": "甲乙", "marks": {"ai": [[1, 2]], "last": [1, 2]},
                                                  "revision": doc["revision"]})
        assert r.status_code == 200 and r.json()["marks"] == {"ai": [[1, 2]], "last": [1, 2]}
        assert c.get(f"/api/docs/{doc['id']}").json()["marks"] == {"ai": [[1, 2]], "last": [1, 2]}
        bad = c.put(f"/api/docs/{doc['id']}", json={"text": "甲", "marks": {"ai": [[0, 5]]}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "marks"
        assert c.get(f"/api/docs/{doc['id']}").json()["text"] == "甲乙"  # nothing written
