"""Numbered migrations of the manuscript database: a database made by the code of before
migrations (the v1 fixture below, copied from store.py at commit f3f97b9) upgrades keeping every
manuscript, version and generation; each migration runs once, in one transaction."""
import sqlite3

import pytest

from aiwriter.errors import AIWriterError
from aiwriter.store import LATEST_VERSION, MIGRATIONS, Store, migrate
from aiwriter.store import migrations as mig

# The CREATE statements of aiwriter/store.py before migrations existed: FROZEN, do not update.
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id       INTEGER PRIMARY KEY,
    title    TEXT NOT NULL,
    text     TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created  REAL NOT NULL,
    updated  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    id       INTEGER PRIMARY KEY,
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    text     TEXT NOT NULL,
    reason   TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created  REAL NOT NULL,
    updated  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS versions_by_doc ON versions(doc_id, id);
CREATE TABLE IF NOT EXISTS generations (
    id       INTEGER PRIMARY KEY,
    doc_id   INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    text     TEXT NOT NULL,
    model    TEXT NOT NULL,
    settings TEXT NOT NULL,
    created  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_by_doc ON generations(doc_id, id);
"""
V1_COLUMNS = {
    "documents": "id, title, text, revision, created, updated",
    "versions": "id, doc_id, text, reason, revision, created, updated",
    "generations": "id, doc_id, text, model, settings, created",
}


def make_v1_database(path):
    """A database as the old code left it: its tables, user_version 0, some manuscripts."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V1_SCHEMA)
    for d in range(1, 4):
        db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)", (d, f"第{d}稿", f"正文{d}" * 50, 3, 1.5 * d, 2.5 * d))
        for r in range(1, 4):
            db.execute("INSERT INTO versions (doc_id, text, reason, revision, created, updated) VALUES (?, ?, ?, ?, ?, ?)",
                       (d, f"正文{d}" * (r * 10), ("create", "autosave", "generation")[r - 1], r, 1.0 + r, 1.1 + r))
        db.execute("INSERT INTO generations (doc_id, text, model, settings, created) VALUES (?, ?, ?, ?, ?)",
                   (d, "续写", "default", '{"top_p": 0.75}', 9.0))
    db.commit()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()


def dump(path) -> dict:
    db = sqlite3.connect(path)
    rows = {t: db.execute(f"SELECT {cols} FROM {t} ORDER BY id").fetchall() for t, cols in V1_COLUMNS.items()}
    db.close()
    return rows


def schema(path) -> list:
    db = sqlite3.connect(path)
    rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
    db.close()
    return rows


def test_migrations_are_numbered_one_by_one():
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert LATEST_VERSION == len(MIGRATIONS)
    assert all(m.summary for m in MIGRATIONS)


def test_upgrading_a_database_of_todays_code_keeps_every_manuscript(tmp_path):
    old = tmp_path / "old.db"
    make_v1_database(old)
    before = dump(old)
    assert sum(len(v) for v in before.values()) == 3 + 9 + 3

    s = Store(old)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert s._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert [d["id"] for d in s.list_documents()] == [3, 2, 1]
    assert s.get_document(2)["text"] == "正文2" * 50
    assert len(s.list_versions(1)) == 3 and s.list_generations(1)[0]["settings"] == {"top_p": 0.75}
    s.close()
    assert dump(old) == before  # every row, every column of the old schema, unchanged

    # the upgraded file has the same schema as a database made new by today's code
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    assert schema(old) == schema(fresh)

    # and it works as usual afterwards: edits, history, cascade delete
    s = Store(old)
    s.save_document(1, text="新的正文", reason="save")
    assert s.list_versions(1)[0]["reason"] == "save" and len(s.list_versions(1)) == 4
    s.delete_document(3)
    assert s._db.execute("SELECT count(*) FROM versions WHERE doc_id = 3").fetchone()[0] == 0
    s.close()


def test_each_migration_runs_once(tmp_path, monkeypatch):
    calls = []

    def add_notes(db):
        calls.append(1)
        mig.run_sql(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, doc_id INTEGER REFERENCES documents(id));")

    extra = [*MIGRATIONS, mig.Migration(LATEST_VERSION + 1, "notes", add_notes)]
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    assert migrate(db, extra) == LATEST_VERSION + 1
    assert migrate(db, extra) == LATEST_VERSION + 1
    assert calls == [1]
    db.close()


def test_a_failing_migration_changes_nothing(tmp_path):
    path = tmp_path / "old.db"
    make_v1_database(path)
    before = dump(path)

    def half_done(db):
        db.execute("ALTER TABLE documents ADD COLUMN words INTEGER")
        db.execute("DELETE FROM versions")
        raise sqlite3.OperationalError("disk I/O error")

    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, [*MIGRATIONS, mig.Migration(LATEST_VERSION + 1, "broken", half_done)])
    assert not db.in_transaction
    # the migrations before it are committed; the broken one left no trace
    assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert "words" not in [r[1] for r in db.execute("PRAGMA table_info(documents)")]
    db.close()
    assert dump(path) == before


def test_a_migration_that_breaks_foreign_keys_is_refused(tmp_path):
    path = tmp_path / "old.db"
    make_v1_database(path)

    def orphan(db):
        db.execute("DELETE FROM documents WHERE id = 1")  # foreign keys are off: the versions stay behind

    db = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(AIWriterError):
        migrate(db, [*MIGRATIONS, mig.Migration(LATEST_VERSION + 1, "orphans", orphan)])
    assert db.execute("SELECT count(*) FROM documents").fetchone()[0] == 3
    db.close()


def test_a_database_from_a_newer_aiwriter_is_refused_untouched(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    db.commit()
    db.close()
    with pytest.raises(AIWriterError) as e:
        Store(path)
    assert "升级" in e.value.zh and "upgrade" in e.value.en
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION + 5
    db.close()


def test_story_settings_round_trip_and_go_with_their_manuscript(tmp_path):
    s = Store(tmp_path / "m.db")
    doc = s.create_document("t", "x")["id"]
    assert s.get_story(doc) is None
    s.put_story(doc, {"memory": "记忆", "entries": []})
    s.put_story(doc, {"memory": "新记忆", "entries": []})
    assert s.get_story(doc)["data"]["memory"] == "新记忆"
    s.delete_document(doc)
    assert s._db.execute("SELECT count(*) FROM story_settings").fetchone()[0] == 0
    s.close()
