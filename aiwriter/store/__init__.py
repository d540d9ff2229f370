"""Manuscripts on disk: SQLite (standard library), documents, their version history and the log
of generations.

    manuscripts.py  Store: documents, versions, generations (the API the server uses)
    migrations.py   the numbered schema changes; opening a database applies the missing ones

Where the database lives: aiwriter.paths.db_path() ($AIWRITER_DB, else the per-user data folder).
"""
from aiwriter.paths import db_path as default_db_path
from aiwriter.store.manuscripts import DEFAULT_TITLE, MAX_GENERATIONS, MAX_VERSIONS, REASONS, Conflict, NotFound, Store
from aiwriter.store.migrations import LATEST_VERSION, MIGRATIONS, migrate

__all__ = ["Store", "NotFound", "Conflict", "default_db_path", "migrate", "MIGRATIONS", "LATEST_VERSION",
           "DEFAULT_TITLE", "MAX_GENERATIONS", "MAX_VERSIONS", "REASONS"]
