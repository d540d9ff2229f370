"""Numbered schema changes of the manuscript database.

The database's `PRAGMA user_version` is the number of the last migration applied (0: a new file,
or one written before migrations existed). Opening a database applies every migration above that
number, in order, each in its own transaction together with the new user_version: a migration is
applied completely and exactly once, or not at all (a crash or a full disk leaves the previous
version, and the next start tries again).

To change the schema, APPEND a migration with the next number; never edit or renumber one that
has shipped, since users' databases already ran it. tests/test_store_migrations.py upgrades a
database made by the first released schema and checks that every manuscript and version survives.
A migration that rebuilds a table follows SQLite's recipe (create new, copy, drop old, rename):
foreign keys are not enforced while migrations run, and are checked before each one commits.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Callable

from aiwriter.errors import AIWriterError


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def run_sql(db: sqlite3.Connection, script: str) -> None:
    """Run the statements of a script one by one inside the open transaction (executescript
    would commit it first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement: {statement!r}")


def _v1_manuscripts(db: sqlite3.Connection) -> None:
    # The schema store.py created before migrations existed (IF NOT EXISTS: those databases
    # already have it and only get user_version 1).
    run_sql(db, """
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
""")


def _v2_story_settings(db: sqlite3.Connection) -> None:
    # A manuscript's memory, author's note and lorebook (issue 15), as aiwriter.story.to_dict writes
    # them (JSON); one row per manuscript, none until it has any.
    run_sql(db, """
CREATE TABLE story_settings (
    doc_id  INTEGER PRIMARY KEY REFERENCES documents(id) ON DELETE CASCADE,
    data    TEXT NOT NULL,
    updated REAL NOT NULL
);
""")


def _v3_marks(db: sqlite3.Connection) -> None:
    # A manuscript's marks beside its text, and each version's (aiwriter.textmarks): which ranges
    # the model wrote and where the last continuation is, as JSON; '{}' for text from before.
    run_sql(db, """
ALTER TABLE documents ADD COLUMN marks TEXT NOT NULL DEFAULT '{}';
ALTER TABLE versions ADD COLUMN marks TEXT NOT NULL DEFAULT '{}';
""")


MIGRATIONS: list[Migration] = [
    Migration(1, "documents, versions, generations", _v1_manuscripts),
    Migration(2, "story settings: memory, author's note, lorebook", _v2_story_settings),
    Migration(3, "marks: AI-written ranges and the last continuation", _v3_marks),
]
LATEST_VERSION = MIGRATIONS[-1].version


def user_version(db: sqlite3.Connection) -> int:
    return db.execute("PRAGMA user_version").fetchone()[0]


def migrate(db: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Bring an open database (autocommit connection, no transaction open) up to the newest
    schema. Returns the version it is at."""
    migrations = MIGRATIONS if migrations is None else migrations
    latest = migrations[-1].version
    current = user_version(db)
    if current > latest:
        raise AIWriterError(
            f"文稿数据库的格式（第 {current} 版）比这个 AI-Writer 认识的（第 {latest} 版）新：请升级 AI-Writer",
            f"the manuscript database has schema version {current}, newer than this AI-Writer knows ({latest}): "
            "please upgrade AI-Writer",
        )
    for m in migrations:
        if m.version <= current:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            current = user_version(db)  # another process may have migrated while we waited for the lock
            if m.version > current:
                m.apply(db)
                broken = db.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise AIWriterError(f"数据库迁移 {m.version} 破坏了外键：{broken[:3]}",
                                        f"database migration {m.version} broke foreign keys: {broken[:3]}")
                db.execute(f"PRAGMA user_version = {int(m.version)}")
                current = m.version
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    return current
