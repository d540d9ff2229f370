"""The user's own defaults for `aiwriter write`, from a TOML file; command-line flags win.

Looked up at --config PATH, else $AIWRITER_CONFIG, else config.toml in the config folder
(aiwriter.paths: $XDG_CONFIG_HOME/aiwriter or ~/.config/aiwriter). Example:

    [write]
    runs = 5
    length = 300
    top_p = 0.8
    model = "/models/RWKV-x070-World-1.5B.pth"

Every sampling setting of aiwriter.sampling.FIELDS is a key, with the same name and default.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path

from aiwriter import paths
from aiwriter.errors import AIWriterError
from aiwriter.sampling_settings import FIELDS, SamplingSettings


@dataclass
class _WriteOptions:
    """What `aiwriter write` takes besides the sampling settings."""
    runs: int = 3
    length: int = 512
    stop: tuple[str, ...] = ()
    model: str | None = None
    vocab: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    seed: int | None = None
    batch: int = 8

    def sampling(self) -> SamplingSettings:
        """The SamplingSettings these settings ask for (validated)."""
        return SamplingSettings(**{f.name: getattr(self, f.name) for f in FIELDS}, stop_strings=self.stop)


# The options above plus every sampling field (aiwriter.sampling.FIELDS), each a key of [write].
WriteConfig = make_dataclass("WriteConfig", [(f.name, f.kind, field(default=f.default)) for f in FIELDS],
                             bases=(_WriteOptions,), namespace={"__module__": __name__})


def _expected_type(f) -> type | tuple | None:
    kind = f.type.split(" ")[0] if isinstance(f.type, str) else getattr(f.type, "__name__", "")
    return {"int": int, "float": (int, float), "bool": bool, "str": str}.get(kind)


def config_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get("AIWRITER_CONFIG"):
        return paths.config_file()  # named by the user: reading it reports it missing
    default = paths.config_file()
    return default if default.is_file() else None


def load_write_config(explicit: str | None = None, overrides: dict | None = None) -> WriteConfig:
    """Built-in defaults, then the TOML file's [write] table, then non-None overrides."""
    values: dict = {}
    path = config_path(explicit)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise AIWriterError(f"无法读取设置文件 {path}：{e.strerror}", f"cannot read settings file {path}: {e.strerror}")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise AIWriterError(f"设置文件 {path} 不是有效的 TOML：{e}", f"settings file {path} is not valid TOML: {e}")
        values.update(data.get("write", {}))
    known = {f.name: f for f in fields(WriteConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise AIWriterError(
            f"设置文件 {path} 中有未知的设置：{', '.join(unknown)}", f"unknown settings in {path}: {', '.join(unknown)}"
        )
    for name, value in (overrides or {}).items():
        if value is not None and name in known:
            values[name] = value
    if "stop" in values:
        stop = values["stop"]
        values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)
    cfg = WriteConfig(**values)
    for f in fields(WriteConfig):
        value = getattr(cfg, f.name)
        if value is None or f.name == "stop":
            continue
        expected = _expected_type(f)
        if expected and (not isinstance(value, expected) or (expected is int and isinstance(value, bool))):
            raise AIWriterError(f"设置 {f.name} 的类型不对：{value!r}", f"setting {f.name} has the wrong type: {value!r}")
    return cfg
