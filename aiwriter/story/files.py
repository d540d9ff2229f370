"""Lorebook files in and out: KoboldAI Lite saves (memory, author's note, world info), NovelAI
`.lorebook` files, and our own JSON form. Every problem is one AIWriterError naming the entry."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiwriter.errors import AIWriterError
from aiwriter.story.keys import split_keys
from aiwriter.story.lorebook import (
    DEFAULT_AN_DEPTH, LITE_AN_TEMPLATE, MAX_ENTRIES, Entry, Lorebook, from_dict, to_dict,
)

MAX_FILE_BYTES = 32 * 2**20
NOVELAI_SEARCH_RANGE = 1000  # NovelAI's default search range, in chars


@dataclass
class Loaded:
    book: Lorebook
    kind: str              # "lite" | "novelai" | "aiwriter"
    story: str | None = None  # a Lite save's prompt + actions, when it has any


def load_file(path: str | Path) -> Loaded:
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise AIWriterError(f"设定文件 {p} 太大（{size:,} 字节，上限 {MAX_FILE_BYTES:,}）",
                                f"lorebook file {p} is too big ({size:,} bytes, limit {MAX_FILE_BYTES:,})")
        raw = p.read_bytes()
    except OSError as e:
        raise AIWriterError(f"无法读取设定文件 {p}：{e.strerror}", f"cannot read lorebook file {p}: {e.strerror}") from None
    return loads(raw, str(p))


def loads(raw: bytes | str, name: str = "lorebook") -> Loaded:
    """Any of the three forms, told apart by their fields."""
    if isinstance(raw, bytes):
        if len(raw) > MAX_FILE_BYTES:
            raise AIWriterError(f"设定文件 {name} 太大", f"lorebook file {name} is too big")
        try:
            raw = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise AIWriterError(f"设定文件 {name} 不是 UTF-8 文本", f"lorebook file {name} is not UTF-8 text") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise AIWriterError(f"设定文件 {name} 不是有效的 JSON：{e}", f"lorebook file {name} is not valid JSON: {e}") from None
    return from_json(data, name)


def from_json(data, name: str = "lorebook") -> Loaded:
    if isinstance(data, list):
        return Loaded(_lite_entries(data, Lorebook()), "lite")
    if not isinstance(data, dict):
        raise AIWriterError(f"设定文件 {name} 应是 JSON 对象（收到 {type(data).__name__}）",
                            f"lorebook file {name} must hold a JSON object (got {type(data).__name__})")
    if "lorebookVersion" in data:
        return Loaded(from_novelai(data), "novelai")
    if any(k in data for k in ("worldinfo", "authorsnote", "anotetemplate", "gamestarted", "prompt", "wisearchdepth")):
        return from_lite(data)
    if "entries" in data or "memory" in data:
        return Loaded(from_dict(data), "aiwriter")
    raise AIWriterError(f"看不出 {name} 是哪种设定文件（KoboldAI Lite 存档、NovelAI .lorebook 或本程序的 JSON）",
                        f"{name} is none of the known forms (KoboldAI Lite save, NovelAI .lorebook, AI-Writer JSON)")


def _str(d: dict, k: str, label: str, default: str = "") -> str:
    v = d.get(k, default)
    if v is None:
        return default
    if not isinstance(v, str):
        raise AIWriterError(f"设定「{label}」的 {k} 应是文字（收到 {type(v).__name__}）",
                            f"entry '{label}': {k} must be a string (got {type(v).__name__})")
    return v


def _bool(d: dict, k: str, label: str, default: bool) -> bool:
    v = d.get(k, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise AIWriterError(f"设定「{label}」的 {k} 应是真或假（收到 {v!r:.40}）",
                            f"entry '{label}': {k} must be true or false (got {v!r:.40})")
    return v


def _int(d: dict, k: str, label: str, default):
    v = d.get(k, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise AIWriterError(f"设定「{label}」的 {k} 应是数字（收到 {v!r:.40}）",
                            f"entry '{label}': {k} must be a number (got {v!r:.40})")
    return v


def _ours(d: dict, label: str) -> dict:
    v = d.get("aiwriter")
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise AIWriterError(f"设定「{label}」的 aiwriter 字段应是 JSON 对象", f"entry '{label}': the aiwriter field must be a JSON object")
    return v


def _check_count(entries: list) -> None:
    if len(entries) > MAX_ENTRIES:
        raise AIWriterError(f"设定集条目太多（{len(entries):,} 条，上限 {MAX_ENTRIES:,}）",
                            f"too many lorebook entries ({len(entries):,}, limit {MAX_ENTRIES:,})")


# ---- KoboldAI Lite ------------------------------------------------------------------------------

def from_lite(d: dict) -> Loaded:
    top = "save"
    book = Lorebook(
        memory=_str(d, "memory", top), authors_note=_str(d, "authorsnote", top),
        an_template=_str(d, "anotetemplate", top, LITE_AN_TEMPLATE) or LITE_AN_TEMPLATE,
    )
    depth = d.get("wisearchdepth")
    if depth is None and isinstance(d.get("savedsettings"), dict):
        depth = d["savedsettings"].get("wisearchdepth")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise AIWriterError(f"wisearchdepth 应是不小于 0 的整数（收到 {depth!r:.40}）",
                                f"wisearchdepth must be a whole number ≥ 0 (got {depth!r:.40})")
        book.scan_depth = depth
    ours = _ours(d, top)
    for k in ("an_depth", "context_budget"):
        if k in ours:
            setattr(book, k, _int(ours, k, top, 0))
    wi = d.get("worldinfo", [])
    if wi is None:
        wi = []
    if not isinstance(wi, list):
        raise AIWriterError("worldinfo 应是列表", "worldinfo must be a list")
    _lite_entries(wi, book)
    story = None
    prompt, actions = d.get("prompt"), d.get("actions")
    if isinstance(prompt, str) or isinstance(actions, list):
        story = (prompt if isinstance(prompt, str) else "") + "".join(a for a in (actions or []) if isinstance(a, str))
    return Loaded(book, "lite", story)


def _lite_entries(wi: list, book: Lorebook) -> Lorebook:
    _check_count(wi)
    for i, r in enumerate(wi):
        if not isinstance(r, dict):
            raise AIWriterError(f"worldinfo 第 {i + 1} 条应是 JSON 对象", f"worldinfo entry #{i + 1} must be a JSON object")
        name = r.get("comment") if isinstance(r.get("comment"), str) else ""
        lab = f"#{i + 1} {name[:40]}".strip()
        prob = _int(r, "probability", lab, 100)
        if r.get("useprobability") is False:
            prob = 100
        ours = _ours(r, lab)  # what our own export keeps beside Lite's fields
        book.entries.append(Entry(
            keys=split_keys(r.get("key", ""), lab, "key"),
            secondary_keys=split_keys(r.get("keysecondary", ""), lab, "keysecondary"),
            anti_keys=split_keys(r.get("keyanti", ""), lab, "keyanti"),
            content=_str(r, "content", lab), name=name,
            selective=_bool(r, "selective", lab, False), constant=_bool(r, "constant", lab, False),
            enabled=not _bool(r, "widisabled", lab, False), probability=prob,
            **{k: _int(ours, k, lab, 0 if k != "order" else 100) for k in ("order", "scan_depth", "budget") if k in ours},
        ))
    book.compile()
    return book


def _join_keys(keys: list[str]) -> str:
    return ",".join(keys)


def to_lite(book: Lorebook, story: str = "") -> dict:
    """A KoboldAI Lite save holding the story as its prompt. Fields Lite has no place for (order,
    per-entry scan depth and budget) are kept under our own `aiwriter` field of each entry."""
    wi = []
    for e in book.entries:
        wi.append({
            "key": _join_keys(e.keys), "keysecondary": _join_keys(e.secondary_keys), "keyanti": _join_keys(e.anti_keys),
            "content": e.content, "comment": e.name, "folder": None, "selective": e.selective, "constant": e.constant,
            "probability": int(round(e.probability)), "useprobability": e.probability < 100, "widisabled": not e.enabled,
            "aiwriter": {"order": e.order, "scan_depth": e.scan_depth, "budget": e.budget},
        })
    return {
        "gamestarted": bool(story), "prompt": story, "memory": book.memory, "authorsnote": book.authors_note,
        "anotetemplate": book.an_template, "actions": [], "actions_metadata": {}, "worldinfo": wi,
        "wisearchdepth": book.scan_depth, "wiinsertlocation": 0,
        "aiwriter": {"an_depth": book.an_depth, "context_budget": book.context_budget},
    }


# ---- NovelAI ------------------------------------------------------------------------------------

def from_novelai(d: dict) -> Lorebook:
    entries = d.get("entries", [])
    if not isinstance(entries, list):
        raise AIWriterError("NovelAI 设定集的 entries 应是列表", "a NovelAI lorebook's entries must be a list")
    _check_count(entries)
    book = Lorebook()
    for i, r in enumerate(entries):
        if not isinstance(r, dict):
            raise AIWriterError(f"设定集第 {i + 1} 条应是 JSON 对象", f"lorebook entry #{i + 1} must be a JSON object")
        name = r.get("displayName") if isinstance(r.get("displayName"), str) else ""
        lab = f"#{i + 1} {name[:40]}".strip()
        keys = r.get("keys", [])
        if not isinstance(keys, list):
            raise AIWriterError(f"设定「{lab}」的 keys 应是列表", f"entry '{lab}': keys must be a list")
        cc = r.get("contextConfig") or {}
        if not isinstance(cc, dict):
            raise AIWriterError(f"设定「{lab}」的 contextConfig 应是 JSON 对象", f"entry '{lab}': contextConfig must be a JSON object")
        prefix, suffix = _str(cc, "prefix", lab), _str(cc, "suffix", lab)
        text = _str(r, "text", lab)
        content = (prefix + text + suffix).strip("\n") if (prefix or suffix) else text
        book.entries.append(Entry(
            keys=split_keys(keys, lab, "keys"), content=content, name=name,
            enabled=_bool(r, "enabled", lab, True), constant=_bool(r, "forceActivation", lab, False),
            scan_depth=int(_int(r, "searchRange", lab, NOVELAI_SEARCH_RANGE)),
            order=int(_int(cc, "budgetPriority", lab, 400)),
            budget=max(0, int(_int(cc, "tokenBudget", lab, 0))),  # tokens; about a char each for Chinese
        ))
    book.compile()
    return book


def to_novelai(book: Lorebook) -> dict:
    now = int(time.time() * 1000)
    entries = []
    for e in book.entries:
        entries.append({
            "text": e.content, "displayName": e.name or (e.keys[0] if e.keys else ""), "id": str(uuid.uuid4()),
            "keys": list(e.keys), "searchRange": e.scan_depth or NOVELAI_SEARCH_RANGE, "enabled": e.enabled,
            "forceActivation": e.constant, "keyRelative": False, "nonStoryActivatable": False,
            "lastUpdatedAt": now, "category": "", "loreBiasGroups": [],
            "contextConfig": {"prefix": "", "suffix": "\n", "tokenBudget": e.budget or 2048, "reservedTokens": 0,
                              "budgetPriority": e.order, "trimDirection": "trimBottom", "insertionType": "newline",
                              "maximumTrimType": "sentence", "insertionPosition": -1},
        })
    return {"lorebookVersion": 5, "entries": entries, "settings": {"orderByKeyLocations": False}, "categories": []}


def save_file(book: Lorebook, path: str | Path, kind: str = "", story: str = "") -> None:
    """kind: "lite", "novelai" or "aiwriter"; '' picks by the name (.lorebook: NovelAI)."""
    p = Path(path)
    kind = kind or ("novelai" if p.suffix == ".lorebook" else "aiwriter")
    data = {"lite": lambda: to_lite(book, story), "novelai": lambda: to_novelai(book), "aiwriter": lambda: to_dict(book)}[kind]()
    try:
        p.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    except OSError as e:
        raise AIWriterError(f"无法写入 {p}：{e.strerror}", f"cannot write {p}: {e.strerror}") from None


__all__ = ["Loaded", "load_file", "loads", "from_json", "from_lite", "to_lite", "from_novelai", "to_novelai",
           "save_file", "DEFAULT_AN_DEPTH"]
