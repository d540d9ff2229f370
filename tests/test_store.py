import sqlite3
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiwriter.store import manuscripts as store_mod
from aiwriter.store import Conflict, NotFound, Store


@pytest.fixture
def db(tmp_path):
    s = Store(tmp_path / "m.db")
    yield s
    s.close()


def newest_version_text(s: Store, doc_id: int) -> str:
    newest = s.list_versions(doc_id)[0]
    return s.get_version(doc_id, newest["id"])["text"]


def test_create_open_list_rename_delete(db):
    a = db.create_document("甲", "林黛玉进了贾府。")
    b = db.create_document(None, "")
    assert a["revision"] == 1 and a["text"] == "林黛玉进了贾府。" and a["chars"] == 8
    assert b["title"] == store_mod.DEFAULT_TITLE
    assert db.get_document(a["id"])["text"] == "林黛玉进了贾府。"
    db.save_document(a["id"], title="乙")
    listed = db.list_documents()
    assert [d["id"] for d in listed] == [a["id"], b["id"]]  # most recently changed first
    assert listed[0]["title"] == "乙" and "text" not in listed[0]
    db.delete_document(a["id"])
    with pytest.raises(NotFound) as e:
        db.get_document(a["id"])
    assert e.value.zh and e.value.en
    assert db._db.execute("SELECT count(*) FROM versions WHERE doc_id = ?", (a["id"],)).fetchone()[0] == 0


def test_text_survives_reopening_and_uses_wal(tmp_path):
    path = tmp_path / "m.db"
    s = Store(path)
    doc = s.create_document("t", "第一句")
    s.save_document(doc["id"], text="第一句。第二句。", base_revision=1)
    assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()
    s2 = Store(path)
    got = s2.get_document(doc["id"])
    assert got["text"] == "第一句。第二句。" and got["revision"] == 2
    s2.close()


def test_autosaves_of_one_session_share_a_version_but_generations_do_not(db):
    doc = db.create_document("t", "a")
    rev = doc["revision"]
    for text in ("ab", "abc", "abcd"):
        rev = db.save_document(doc["id"], text=text, base_revision=rev)["revision"]
    versions = db.list_versions(doc["id"])
    assert [v["reason"] for v in versions] == ["autosave", "create"]
    assert newest_version_text(db, doc["id"]) == "abcd"
    rev = db.save_document(doc["id"], text="abcd续写", reason="generation", base_revision=rev)["revision"]
    db.save_document(doc["id"], text="abcd续写。", base_revision=rev)
    assert [v["reason"] for v in db.list_versions(doc["id"])] == ["autosave", "generation", "autosave", "create"]


def test_autosave_window_closes(db, monkeypatch):
    monkeypatch.setattr(store_mod, "VERSION_WINDOW", 0.0)
    doc = db.create_document("t", "a")
    r = db.save_document(doc["id"], text="ab", base_revision=1)["revision"]
    db.save_document(doc["id"], text="abc", base_revision=r)
    assert len(db.list_versions(doc["id"])) == 3


def test_stale_revision_is_a_conflict_and_writes_nothing(db):
    doc = db.create_document("t", "原文")
    db.save_document(doc["id"], text="另一个标签页的改动", base_revision=1)
    with pytest.raises(Conflict) as e:
        db.save_document(doc["id"], text="这个标签页的改动", base_revision=1)
    assert e.value.current["revision"] == 2
    assert db.get_document(doc["id"])["text"] == "另一个标签页的改动"
    # a forced save (no revision) goes through and keeps the overwritten text as a version
    db.save_document(doc["id"], text="这个标签页的改动")
    texts = [db.get_version(doc["id"], v["id"])["text"] for v in db.list_versions(doc["id"])]
    assert texts == ["这个标签页的改动", "另一个标签页的改动", "原文"]


def test_restore_keeps_what_it_replaces(db):
    doc = db.create_document("t", "v1")
    r = db.save_document(doc["id"], text="v2", reason="save")["revision"]
    db.save_document(doc["id"], text="v3", base_revision=r)
    first = db.list_versions(doc["id"])[-1]
    restored = db.restore_version(doc["id"], first["id"])
    assert restored["text"] == "v1"
    texts = [db.get_version(doc["id"], v["id"])["text"] for v in db.list_versions(doc["id"])]
    assert texts == ["v1", "v3", "v2", "v1"]
    with pytest.raises(NotFound):
        db.restore_version(doc["id"], 10**6)


def test_failed_transaction_leaves_nothing_behind(db, monkeypatch):
    doc = db.create_document("t", "安全")

    def boom(*a, **k):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(Store, "_record_version", boom)
    with pytest.raises(sqlite3.OperationalError):
        db.save_document(doc["id"], text="写了一半")
    monkeypatch.undo()
    got = db.get_document(doc["id"])
    assert got["text"] == "安全" and got["revision"] == 1  # the UPDATE before the failure was rolled back
    assert db.save_document(doc["id"], text="之后照常")["revision"] == 2


def test_old_versions_are_pruned_autosaves_first_newest_kept(db, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_VERSIONS", 4)
    monkeypatch.setattr(store_mod, "VERSION_WINDOW", 0.0)
    doc = db.create_document("t", "0")
    db.save_document(doc["id"], text="g", reason="generation")
    for i in range(6):
        db.save_document(doc["id"], text=f"a{i}")
    versions = db.list_versions(doc["id"])
    assert len(versions) == 4
    assert newest_version_text(db, doc["id"]) == "a5"
    assert "generation" in [v["reason"] for v in versions]


def test_generation_log(db, monkeypatch):
    monkeypatch.setattr(store_mod, "MAX_GENERATIONS", 3)
    doc = db.create_document("t", "")
    for i in range(5):
        db.add_generation(doc["id"], f"续写{i}", model="m.pth", settings={"top_p": 0.75})
    log = db.list_generations(doc["id"])
    assert [g["text"] for g in log] == ["续写4", "续写3", "续写2"]
    assert log[0]["settings"] == {"top_p": 0.75} and log[0]["model"] == "m.pth"
    with pytest.raises(NotFound):
        db.add_generation(10**6, "x")


def test_concurrent_saves_from_threads_all_land(db):
    doc = db.create_document("t", "")
    errors = []

    def worker(k):
        try:
            for i in range(10):
                db.save_document(doc["id"], text=f"{k}-{i}", reason="save")
        except Exception as e:  # pragma: no cover - the assertion below reports it
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert db.get_document(doc["id"])["revision"] == 41
    assert newest_version_text(db, doc["id"]) == db.get_document(doc["id"])["text"]


def test_unopenable_database_is_a_bilingual_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(store_mod.AIWriterError) as e:
        Store(tmp_path / "dir.db")
    assert "数据库" in e.value.zh and "database" in e.value.en


ops = st.lists(st.one_of(
    st.tuples(st.just("save"), st.text(max_size=8), st.sampled_from(["autosave", "save", "generation"]), st.booleans()),
    st.tuples(st.just("restore"), st.integers(0, 10)),
), max_size=12)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_newest_version_always_holds_the_current_text(sequence):
    s = Store(":memory:")
    doc = s.create_document("t", "起")
    for op in sequence:
        if op[0] == "save":
            _, text, reason, with_rev = op
            rev = s.get_document(doc["id"])["revision"] if with_rev else None
            s.save_document(doc["id"], text=text, reason=reason, base_revision=rev)
        else:
            versions = s.list_versions(doc["id"])
            s.restore_version(doc["id"], versions[op[1] % len(versions)]["id"])
        assert newest_version_text(s, doc["id"]) == s.get_document(doc["id"])["text"]
    s.close()
