"""The models a request may name: the startup model and the model files in the models folder.
Names are paths relative to that folder, written as /v1/models lists them; nothing outside the
folder is reachable, and a name that is not exactly a listed one is 404."""
from __future__ import annotations

from pathlib import Path, PurePosixPath

from aiwriter.server.replies import ApiError

MAX_NAME_BYTES = 1024   # a whole name (PATH_MAX is 4096; no model needs more)
MAX_PART_BYTES = 255    # one folder or file name (NAME_MAX on every common file system)


class ModelCatalog:
    EXTENSIONS = (".pth", ".safetensors")

    def __init__(self, default_path: str | Path | None, models_dir: str | Path | None, vocab: str | None = None,
                 default_name: str | None = None):
        self.default_path = Path(default_path) if default_path else None
        self.default_name = default_name or (self.default_path.name if self.default_path else "default")
        self.models_dir = Path(models_dir) if models_dir else None
        self.vocab = vocab  # for the startup model only

    def names(self) -> list[str]:
        return [self.default_name] + [n for n in _list_files(self.models_dir) if n != self.default_name]

    def resolve(self, name: str) -> tuple[Path | None, str | None]:
        """(model path, vocab path or None) for a name; raises ApiError naming the field `model`."""
        if name == self.default_name:
            return self.default_path, self.vocab
        path = _find_file(self.models_dir, name, "model", "模型", "models")
        if path is not None:
            return path, None
        raise ApiError(404, "没有这个模型（GET /v1/models 列出可用的模型）", "unknown model (GET /v1/models lists them)",
                       param="model")


class StateCatalog:
    """The state files a request may name (`state` field): *.pth / *.safetensors in the states
    folder (RWKV-Runner time_state files, aiwriter train --state-only). Names are paths relative
    to that folder, exactly as GET /api/states lists them; nothing outside it is reachable."""

    def __init__(self, states_dir: str | Path | None):
        self.dir = Path(states_dir) if states_dir else None

    def names(self) -> list[str]:
        return _list_files(self.dir)

    def resolve(self, name: str) -> Path:
        """The file of a state name; raises ApiError naming the field `state`."""
        path = _find_file(self.dir, name, "state", "状态", "states")
        if path is not None:
            return path
        raise ApiError(404, "没有这个状态文件（GET /api/states 列出可用的状态）", "unknown state (GET /api/states lists them)",
                       param="state")


EXTENSIONS = ModelCatalog.EXTENSIONS


def _list_files(folder: Path | None, limit: int = 1000) -> list[str]:
    """Model-like files under folder, as names relative to it (sorted; at most `limit` looked at).
    A symlink leading out of the folder is not offered (_find_file refuses it too)."""
    if folder is None or not folder.is_dir():
        return []
    root, found = folder.resolve(), []
    for path in folder.rglob("*"):
        if path.suffix.lower() in EXTENSIONS and _inside(path, root) and _is_file(path):
            found.append(path.relative_to(folder).as_posix())
        if len(found) >= limit:
            break
    return sorted(found)


def _find_file(folder: Path | None, name: str, field: str, what_zh: str, what_en: str) -> Path | None:
    """The file `name` names inside folder, or None; raises a 400 naming `field` for a name that
    tries to leave the folder or is too long for any file system."""
    if (not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name
            or any(part in ("..", ".") for part in name.split("/"))):
        raise ApiError(400, f"{what_zh}名不能含有 ..、/ 开头或盘符：只能指定{what_zh}文件夹里的文件",
                       f"a {field} name may not contain '..', a leading '/' or a drive: only files in the {what_en} folder",
                       param=field)
    encoded = name.encode("utf-8", "replace")
    if len(encoded) > MAX_NAME_BYTES or any(len(p) > MAX_PART_BYTES for p in encoded.split(b"/")):
        raise ApiError(400, f"字段 {field} 太长：文件名最多 {MAX_PART_BYTES} 字节，整个名字最多 {MAX_NAME_BYTES} 字节",
                       f"field '{field}' is too long: at most {MAX_PART_BYTES} bytes per file or folder name, "
                       f"{MAX_NAME_BYTES} in all", param=field)
    # only a name exactly as listed: "good.pth/" or "sub//good.pth" would reach the same file
    # under another name (and force a reload of a model already in memory)
    if folder is not None and PurePosixPath(name).as_posix() == name:
        root = folder.resolve()
        path = root / name
        if _inside(path, root) and path.suffix.lower() in EXTENSIONS and _is_file(path):
            return path.resolve()
    return None


def _inside(path: Path, root: Path) -> bool:
    """Whether path, symlinks followed, lies inside root (a symlink loop or a name the file
    system refuses does not)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.resolve().is_file()
    except (OSError, RuntimeError):
        return False
