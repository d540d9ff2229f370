"""Store: documents, their version history and the log of generations, in SQLite.

The invariant that keeps text safe: the newest version of a document always holds its current
text. Saves while typing (reason "autosave") from the same editing session update the newest
version in place for a while instead of piling up rows; anything else (a generation, a restore,
a save made without knowing the current revision, or a save after the window) adds a version.
So restoring an old version, or a save from another tab, never loses what was there before.
Each change is one transaction; WAL mode lets readers go on while a save is written. The schema
is in migrations.py.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from aiwriter.errors import AIWriterError
from aiwriter.store.migrations import migrate
from aiwriter.textmarks import chars_sql, normalize_marks

VERSION_WINDOW = 300.0  # seconds an autosave version keeps absorbing later autosaves
MAX_VERSIONS = 200      # per document; the oldest autosaves go first beyond this
MAX_GENERATIONS = 500   # per document, in the generation log
DEFAULT_TITLE = "未命名文稿"
REASONS = ("autosave", "save", "generation", "restore", "create")


class NotFound(AIWriterError):
    pass


class Conflict(AIWriterError):
    """A save based on an older revision than the stored one (another tab saved meanwhile)."""

    def __init__(self, zh: str, en: str, current: dict):
        super().__init__(zh, en)
        self.current = current


CHARS = chars_sql("text")  # one counting rule with the page (aiwriter.textmarks)


def _marks(raw: str | None, text: str) -> dict:
    try:
        return normalize_marks(json.loads(raw or "{}") or None, text)
    except (ValueError, AIWriterError):
        return normalize_marks(None, text)


def _doc_summary(row) -> dict:
    return {"id": row["id"], "title": row["title"], "chars": row["chars"], "revision": row["revision"],
            "created": row["created"], "updated": row["updated"]}


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # one connection guarded by a lock: FastAPI runs sync handlers on a thread pool
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a confirmed save survives a power cut
            self._db.execute("PRAGMA busy_timeout=5000")
            migrate(self._db)  # before foreign_keys=ON: a migration may rebuild tables
            self._db.execute("PRAGMA foreign_keys=ON")
        except BaseException as e:
            if self._db is not None:
                self._db.close()
            if not isinstance(e, (OSError, sqlite3.Error)):
                raise
            raise AIWriterError(f"无法打开文稿数据库 {self.path}：{e}", f"cannot open the manuscript database {self.path}: {e}")
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self):
        """One atomic transaction: all of it is written, or none of it."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")  # a failed COMMIT (disk full) must not leave the transaction open
            except BaseException:
                if self._db.in_transaction:
                    try:
                        self._db.execute("ROLLBACK")
                    except sqlite3.Error:  # nothing more to undo; the next save starts clean
                        pass
                raise

    # ------------------------------------------------------------------ documents

    def list_documents(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, title, {CHARS} AS chars, revision, created, updated FROM documents ORDER BY updated DESC, id DESC"
            ).fetchall()
        return [_doc_summary(r) for r in rows]

    def create_document(self, title: str | None = None, text: str = "") -> dict:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO documents (title, text, revision, created, updated) VALUES (?, ?, 1, ?, ?)",
                (title or DEFAULT_TITLE, text, now, now),
            )
            doc_id = cur.lastrowid
            db.execute(
                "INSERT INTO versions (doc_id, text, reason, revision, created, updated) VALUES (?, ?, 'create', 1, ?, ?)",
                (doc_id, text, now, now),
            )
            return self._get(db, doc_id)

    def get_document(self, doc_id: int) -> dict:
        with self._lock:
            return self._get(self._db, doc_id)

    def _get(self, db, doc_id: int) -> dict:
        row = db.execute(f"SELECT *, {CHARS} AS chars FROM documents WHERE id = ?", (doc_id,)).fetchone()
        if row is None:
            raise NotFound(f"没有编号为 {doc_id} 的文稿", f"no document with id {doc_id}")
        return {**_doc_summary(row), "text": row["text"], "marks": _marks(row["marks"], row["text"])}

    def save_document(self, doc_id: int, text: str | None = None, title: str | None = None,
                      reason: str = "autosave", base_revision: int | None = None, marks: dict | None = None) -> dict:
        """Change a document's text, title and/or marks. base_revision: the revision the client's
        text started from; a different stored revision raises Conflict (nothing is written).
        marks (see aiwriter.textmarks) belong to the new text; new text without them has none."""
        if reason not in REASONS:
            raise AIWriterError(f"未知的保存原因 {reason!r}", f"unknown save reason {reason!r}")
        now = time.time()
        with self._tx() as db:
            doc = self._get(db, doc_id)
            if base_revision is not None and base_revision != doc["revision"]:
                raise Conflict(
                    "文稿已在别处修改（可能是另一个标签页），这次保存没有写入",
                    "the document was changed elsewhere (another tab?); this save was not written",
                    {k: v for k, v in doc.items() if k not in ("text", "marks")},
                )
            text_changed = text is not None and text != doc["text"]
            title_changed = title is not None and title != doc["title"]
            new_text = text if text_changed else doc["text"]
            if marks is not None or text_changed:
                new_marks = normalize_marks(marks, new_text)
            else:
                new_marks = doc["marks"]
            marks_changed = new_marks != doc["marks"]
            if not (text_changed or title_changed or marks_changed):
                return doc
            revision = doc["revision"] + 1
            marks_json = json.dumps(new_marks, separators=(",", ":"))
            db.execute(
                "UPDATE documents SET text = ?, title = ?, marks = ?, revision = ?, updated = ? WHERE id = ?",
                (new_text, title if title_changed else doc["title"], marks_json, revision, now, doc_id),
            )
            if text_changed:
                self._record_version(db, doc_id, text, reason, revision, now, same_session=base_revision is not None,
                                     marks_json=marks_json)
            elif marks_changed:  # the newest version holds the current text: and its marks
                db.execute("UPDATE versions SET marks = ? WHERE id = (SELECT max(id) FROM versions WHERE doc_id = ?)",
                           (marks_json, doc_id))
            return self._get(db, doc_id)

    def _record_version(self, db, doc_id, text, reason, revision, now, same_session: bool, marks_json: str = "{}") -> None:
        last = db.execute(
            "SELECT id, reason, created FROM versions WHERE doc_id = ? ORDER BY id DESC LIMIT 1", (doc_id,)
        ).fetchone()
        if (same_session and reason == "autosave" and last is not None and last["reason"] == "autosave"
                and now - last["created"] < VERSION_WINDOW):
            db.execute("UPDATE versions SET text = ?, marks = ?, revision = ?, updated = ? WHERE id = ?",
                       (text, marks_json, revision, now, last["id"]))
            return
        db.execute(
            "INSERT INTO versions (doc_id, text, marks, reason, revision, created, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (doc_id, text, marks_json, reason, revision, now, now),
        )
        excess = db.execute("SELECT count(*) FROM versions WHERE doc_id = ?", (doc_id,)).fetchone()[0] - MAX_VERSIONS
        if excess > 0:
            # oldest first, autosaves before the rest; the newest version is never dropped
            db.execute(
                "DELETE FROM versions WHERE id IN (SELECT id FROM versions WHERE doc_id = ? AND id < "
                "(SELECT max(id) FROM versions WHERE doc_id = ?) ORDER BY reason != 'autosave', id LIMIT ?)",
                (doc_id, doc_id, excess),
            )

    def delete_document(self, doc_id: int) -> None:
        with self._tx() as db:
            self._get(db, doc_id)
            db.execute("DELETE FROM documents WHERE id = ?", (doc_id,))

    # ------------------------------------------------------------------ story settings

    def get_story(self, doc_id: int) -> dict | None:
        """{"data": …, "updated": …} of a manuscript's memory / author's note / lorebook, or None."""
        with self._lock:
            self._get(self._db, doc_id)
            row = self._db.execute("SELECT data, updated FROM story_settings WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else {"data": json.loads(row["data"]), "updated": row["updated"]}

    def put_story(self, doc_id: int, data: dict) -> dict:
        """Replace a manuscript's story settings (validated by the caller: aiwriter.story.from_dict)."""
        now = time.time()
        raw = json.dumps(data, ensure_ascii=False)
        with self._tx() as db:
            self._get(db, doc_id)
            db.execute("INSERT INTO story_settings (doc_id, data, updated) VALUES (?, ?, ?) "
                       "ON CONFLICT(doc_id) DO UPDATE SET data = excluded.data, updated = excluded.updated", (doc_id, raw, now))
        return {"data": data, "updated": now}

    # ------------------------------------------------------------------ versions

    def list_versions(self, doc_id: int) -> list[dict]:
        with self._lock:
            self._get(self._db, doc_id)
            rows = self._db.execute(
                f"SELECT id, reason, revision, created, updated, {CHARS} AS chars, substr(text, -40) AS tail "
                "FROM versions WHERE doc_id = ? ORDER BY id DESC",
                (doc_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def get_version(self, doc_id: int, version_id: int) -> dict:
        with self._lock:
            row = self._db.execute(
                f"SELECT id, reason, revision, created, updated, text, marks, {CHARS} AS chars FROM versions "
                "WHERE doc_id = ? AND id = ?",
                (doc_id, version_id),
            ).fetchone()
        if row is None:
            raise NotFound(f"文稿 {doc_id} 没有版本 {version_id}", f"document {doc_id} has no version {version_id}")
        return {**dict(row), "marks": _marks(row["marks"], row["text"])}

    def restore_version(self, doc_id: int, version_id: int) -> dict:
        """Make an old version the current text; the text it replaces stays in the history."""
        v = self.get_version(doc_id, version_id)
        return self.save_document(doc_id, text=v["text"], reason="restore", marks=v["marks"])

    # ------------------------------------------------------------------ generation log

    def add_generation(self, doc_id: int, text: str, model: str = "", settings: dict | None = None) -> dict:
        now = time.time()
        with self._tx() as db:
            self._get(db, doc_id)
            cur = db.execute(
                "INSERT INTO generations (doc_id, text, model, settings, created) VALUES (?, ?, ?, ?, ?)",
                (doc_id, text, model, json.dumps(settings or {}, ensure_ascii=False), now),
            )
            db.execute(
                "DELETE FROM generations WHERE doc_id = ? AND id <= (SELECT id FROM generations WHERE doc_id = ? "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (doc_id, doc_id, MAX_GENERATIONS),
            )
            return {"id": cur.lastrowid, "doc_id": doc_id, "text": text, "model": model, "settings": settings or {}, "created": now}

    def list_generations(self, doc_id: int, limit: int = MAX_GENERATIONS) -> list[dict]:
        with self._lock:
            self._get(self._db, doc_id)
            rows = self._db.execute(
                "SELECT id, doc_id, text, model, settings, created FROM generations WHERE doc_id = ? ORDER BY id DESC LIMIT ?",
                (doc_id, limit),
            ).fetchall()
        return [{**dict(r), "settings": json.loads(r["settings"])} for r in rows]
