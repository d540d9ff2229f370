"""Per-user folders: the one place that decides where AI-Writer keeps the user's files.

    config  settings (config.toml)        $XDG_CONFIG_HOME/aiwriter, else ~/.config/aiwriter
    data    manuscripts (aiwriter.db)     $XDG_DATA_HOME/aiwriter,   else ~/.local/share/aiwriter
    cache   rebuildable files (int4 ONNX  $XDG_CACHE_HOME/aiwriter,  else ~/.cache/aiwriter
            graphs, saved states)

On Windows the roots are %APPDATA% (config, data) and %LOCALAPPDATA% (cache). Environment
overrides for single files or folders win over all of this:

    AIWRITER_CONFIG  the settings file       AIWRITER_DB     the manuscript database
    AIWRITER_CACHE   the whole cache folder  AIWRITER_MODELS the models folder

Downloaded models (`aiwriter download`) live in the models folder, data/models; state files in a
"states" folder beside it (the server's default states folder is "states" beside its models folder).

Nothing here creates a folder: callers create what they write, when they write it.
"""
from __future__ import annotations

import os
from pathlib import Path

APP = "aiwriter"


def _root(xdg_var: str, posix_default: tuple[str, ...], windows_var: str) -> Path:
    if os.name == "nt" and os.environ.get(windows_var):
        return Path(os.environ[windows_var]) / APP
    base = os.environ.get(xdg_var)
    # the XDG spec: a relative path in these variables is invalid and must be ignored
    if base and Path(base).is_absolute():
        return Path(base) / APP
    return Path.home().joinpath(*posix_default) / APP


def config_dir() -> Path:
    return _root("XDG_CONFIG_HOME", (".config",), "APPDATA")


def data_dir() -> Path:
    return _root("XDG_DATA_HOME", (".local", "share"), "APPDATA")


def cache_dir() -> Path:
    """$AIWRITER_CACHE, else the per-user cache folder."""
    if os.environ.get("AIWRITER_CACHE"):
        return Path(os.environ["AIWRITER_CACHE"])
    return _root("XDG_CACHE_HOME", (".cache",), "LOCALAPPDATA")


def config_file() -> Path:
    """$AIWRITER_CONFIG, else config.toml in the config folder (which may not exist)."""
    if os.environ.get("AIWRITER_CONFIG"):
        return Path(os.environ["AIWRITER_CONFIG"])
    return config_dir() / "config.toml"


def db_path() -> Path:
    """$AIWRITER_DB, else aiwriter.db in the data folder."""
    if os.environ.get("AIWRITER_DB"):
        return Path(os.environ["AIWRITER_DB"])
    return data_dir() / "aiwriter.db"


def models_dir() -> Path:
    """$AIWRITER_MODELS, else "models" in the data folder: where `aiwriter download` puts models,
    where `--model NAME` looks and what the page's model picker lists (it may not exist)."""
    if os.environ.get("AIWRITER_MODELS"):
        return Path(os.environ["AIWRITER_MODELS"]).expanduser()
    return data_dir() / "models"
