"""aiwriter.paths: the per-user folders, XDG variables and AIWRITER_* overrides."""
from pathlib import Path

import pytest

from aiwriter import paths, settings, store

VARS = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "AIWRITER_CONFIG", "AIWRITER_DB", "AIWRITER_CACHE",
        "APPDATA", "LOCALAPPDATA")


@pytest.fixture
def home(tmp_path, monkeypatch):
    for v in VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_defaults_under_home(home):
    assert paths.config_dir() == home / ".config" / "aiwriter"
    assert paths.data_dir() == home / ".local" / "share" / "aiwriter"
    assert paths.cache_dir() == home / ".cache" / "aiwriter"
    assert paths.config_file() == home / ".config" / "aiwriter" / "config.toml"
    assert paths.db_path() == home / ".local" / "share" / "aiwriter" / "aiwriter.db"
    assert store.default_db_path() == paths.db_path()


def test_xdg_variables(home, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "d"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "k"))
    assert paths.config_file() == home / "c" / "aiwriter" / "config.toml"
    assert paths.db_path() == home / "d" / "aiwriter" / "aiwriter.db"
    assert paths.cache_dir() == home / "k" / "aiwriter"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    assert paths.data_dir() == home / ".local" / "share" / "aiwriter"


def test_aiwriter_overrides_win(home, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "k"))
    monkeypatch.setenv("AIWRITER_CONFIG", "/x/my.toml")
    monkeypatch.setenv("AIWRITER_DB", "/x/my.db")
    monkeypatch.setenv("AIWRITER_CACHE", "/x/cache")
    assert paths.config_file() == Path("/x/my.toml")
    assert paths.db_path() == Path("/x/my.db")
    assert paths.cache_dir() == Path("/x/cache")


def test_settings_read_the_config_folder(home, monkeypatch):
    assert settings.config_path(None) is None  # no file: built-in defaults
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "c"))
    (home / "c" / "aiwriter").mkdir(parents=True)
    (home / "c" / "aiwriter" / "config.toml").write_text("[write]\nruns = 7\n", encoding="utf-8")
    assert settings.load_write_config().runs == 7


def test_nothing_is_created(home):
    paths.config_dir(), paths.data_dir(), paths.cache_dir(), paths.db_path(), paths.models_dir()
    assert list(home.iterdir()) == []
