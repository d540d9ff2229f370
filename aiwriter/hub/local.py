"""The models folder as the catalogue sees it: which releases are there (or half there), which
other model files it holds, and what a `--model` value names."""
from __future__ import annotations

from pathlib import Path

from aiwriter.errors import AIWriterError
from aiwriter.hub.catalog import RELEASES, Release, close_names, find
from aiwriter.hub.download import partial_files

MODEL_SUFFIXES = (".pth", ".safetensors")  # what the server's model picker lists too
MAX_LISTED = 1000


def status(release: Release, folder: Path) -> tuple[str, str]:
    """(zh, en): present, partly downloaded (with how much), or nothing."""
    path = folder / release.filename
    if path.is_file():
        missing = release.tokenizer is not None and not (folder / release.tokenizer.save_as).is_file()
        return ("已下载（缺分词器）", "present (tokenizer missing)") if missing else ("已下载", "present")
    parts = partial_files(path)
    if parts:
        have = max(p.stat().st_size for p in parts)
        if release.size:
            pct = f"{100 * have / release.size:.0f}%"
            return f"下载了 {pct}", f"partial {pct}"
        return f"下载了 {have / 1e9:.2f} GB", f"partial {have / 1e9:.2f} GB"
    return "", ""


def other_files(folder: Path) -> list[str]:
    """Model files in folder (names relative to it) that are not catalogue releases."""
    if not folder.is_dir():
        return []
    known = {r.filename for r in RELEASES}
    found = []
    for p in folder.rglob("*"):
        if p.suffix.lower() in MODEL_SUFFIXES and p.is_file():
            rel = p.relative_to(folder).as_posix()
            if rel not in known:
                found.append(rel)
        if len(found) >= MAX_LISTED:
            break
    return sorted(found)


def resolve_model(value: str | None, folder: Path) -> str | None:
    """What `--model VALUE` means: a path that exists; else a catalogue name (or release file
    name), which must be downloaded into folder; else a file name in folder. Anything else is
    returned unchanged, for the loader to report in its own words."""
    if value is None or Path(value).expanduser().exists():
        return value
    release = find(value)
    if release is not None:
        path = folder / release.filename
        if path.is_file():
            return str(path)
        raise AIWriterError(
            f"模型 {release.name} 还没有下载（应在 {path}）。请先运行：aiwriter download {release.name}",
            f"model {release.name} is not downloaded yet (expected at {path}); run: aiwriter download {release.name}")
    if "/" not in value and "\\" not in value:
        for candidate in (folder / value, *(folder / (value + s) for s in MODEL_SUFFIXES)):
            if candidate.is_file():
                return str(candidate)
        if value.lower().startswith("rwkv") and Path(value).suffix.lower() not in (*MODEL_SUFFIXES, ".onnx", ".pt", ".bin"):
            hint = close_names(value)
            if hint:
                names = "、".join(hint)
                raise AIWriterError(f"没有名为 {value} 的模型文件或已知模型。你是不是要找：{names}？（aiwriter models 列出全部）",
                                    f"no model file or known model named {value}; did you mean: {', '.join(hint)}? "
                                    f"(aiwriter models lists them)")
    return value
