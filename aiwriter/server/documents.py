"""JSON endpoints for manuscripts (aiwriter.store): list, create, open, save, rename, delete,
export .txt, version history and restore, and the log of generations."""
from __future__ import annotations

import math
import sqlite3
import unicodedata
from typing import Annotated
from urllib.parse import quote

import anyio
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from aiwriter.server.bodies import read_json
from aiwriter.server.fields import Fields
from aiwriter.server.replies import ApiError, SafeJSON, dumps
from aiwriter.store import MAX_GENERATIONS, Conflict
from aiwriter.textmarks import BadMarks

router = APIRouter(prefix="/api/docs")

Id = Annotated[int, Path(ge=1, le=2**62)]
MAX_TITLE = 200


def _store(request: Request):
    return request.app.state.store


async def _call(fn, *args, **kw):
    """SQLite work off the event loop (a save waits for fsync). A database that cannot be
    written (disk full, read-only, I/O error) is a clear error, never a 500: the page keeps
    the text in the browser and shows the message."""
    try:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kw))
    except sqlite3.Error as e:
        msg = str(e).lower()
        if "full" in msg:
            raise ApiError(507, "磁盘已满，文稿没有保存：请腾出空间；文字仍保留在浏览器里",
                           "the disk is full; the manuscript was not saved. Free some space; the text is kept in the browser",
                           kind="storage_full")
        if "readonly" in msg or "read-only" in msg:
            zh, en = "文稿数据库是只读的，文稿没有保存", "the manuscript database is read-only; the manuscript was not saved"
        elif "locked" in msg or "busy" in msg:
            zh, en = "文稿数据库正忙（被其他程序占用？），请稍后再试", "the manuscript database is busy (used by another program?); retry"
        else:
            zh, en = "无法读写文稿数据库（磁盘错误？），文稿没有保存", "cannot read or write the manuscript database (disk error?); not saved"
        raise ApiError(503, zh, en, headers={"Retry-After": "5"}, kind="storage_error")


async def _json(fn, *args, status_code: int = 200, **kw) -> Response:
    """_call, with the answer rendered as JSON in the worker thread too (a manuscript may be
    megabytes: encoding it would hold up every other request)."""
    body = await _call(lambda: dumps(fn(*args, **kw)))
    return Response(body, media_type="application/json", status_code=status_code)


async def _body(request: Request) -> Fields:
    return Fields(await read_json(request, request.app.state.settings.max_body))


def _title(f: Fields):
    title = f.str("title", None, max_chars=MAX_TITLE)
    if title is not None and not title.strip():
        raise ApiError(400, "字段 title 是空的", "field 'title' is empty", param="title")
    if title is not None and any(unicodedata.category(c) == "Cc" for c in title):
        raise ApiError(400, "字段 title 含有控制字符", "field 'title' contains control characters", param="title")
    return title.strip() if title is not None else None


@router.get("")
async def list_documents(request: Request):
    return {"documents": await _call(_store(request).list_documents)}


@router.post("", status_code=201)
async def create_document(request: Request):
    f = (await _body(request)).only("title", "text")
    title = _title(f)
    text = f.str("text", "")
    return await _json(_store(request).create_document, title, text, status_code=201)


@router.get("/{doc_id}")
async def get_document(request: Request, doc_id: Id):
    return await _json(_store(request).get_document, doc_id)


@router.put("/{doc_id}")
async def save_document(request: Request, doc_id: Id):
    """Body: text and/or title; revision = the revision the text was based on (409 if the
    stored one differs: another tab saved meanwhile); reason = "autosave" | "save" | "generation";
    marks = {"ai": [[start, end], ...], "last": [start, end] | null} for the text (aiwriter.textmarks)."""
    f = (await _body(request)).only("text", "title", "revision", "reason", "marks")
    text = f.str("text", None)
    title = _title(f)
    revision = f.int("revision", None, 0, 2**62)
    reason = f.str("reason", "autosave", max_chars=20)
    if reason not in ("autosave", "save", "generation"):
        raise ApiError(400, "字段 reason 应为 autosave、save 或 generation", "field 'reason' must be autosave, save or generation",
                       param="reason")
    try:
        return await _json(_store(request).save_document, doc_id, text=text, title=title, reason=reason,
                           base_revision=revision, marks=f.data.get("marks"))
    except BadMarks as e:
        raise ApiError(400, e.zh, e.en, param="marks")
    except Conflict as e:
        return SafeJSON({"error": {"message": f"{e.en} / {e.zh}", "en": e.en, "zh": e.zh, "type": "conflict",
                                   "param": "revision", "code": 409}, "current": e.current}, status_code=409)


@router.delete("/{doc_id}")
async def delete_document(request: Request, doc_id: Id):
    await _call(_store(request).delete_document, doc_id)
    return {"deleted": doc_id}


@router.get("/{doc_id}/export")
async def export_document(request: Request, doc_id: Id):
    doc = await _call(_store(request).get_document, doc_id)
    name = "".join(c for c in doc["title"] if c not in '\\/:*?"<>|\r\n\t').strip() or "manuscript"
    disposition = f"attachment; filename=\"manuscript-{doc_id}.txt\"; filename*=UTF-8''{quote(name + '.txt')}"
    return Response(doc["text"].encode("utf-8"), media_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": disposition})


@router.get("/{doc_id}/versions")
async def list_versions(request: Request, doc_id: Id):
    return {"versions": await _call(_store(request).list_versions, doc_id)}


@router.get("/{doc_id}/versions/{version_id}")
async def get_version(request: Request, doc_id: Id, version_id: Id):
    return await _json(_store(request).get_version, doc_id, version_id)


@router.post("/{doc_id}/versions/{version_id}/restore")
async def restore_version(request: Request, doc_id: Id, version_id: Id):
    return await _json(_store(request).restore_version, doc_id, version_id)


@router.get("/{doc_id}/generations")
async def list_generations(request: Request, doc_id: Id):
    return {"generations": await _call(_store(request).list_generations, doc_id, MAX_GENERATIONS)}


@router.post("/{doc_id}/generations", status_code=201)
async def add_generation(request: Request, doc_id: Id):
    """Log a generation (the page calls this for every candidate it was shown)."""
    f = (await _body(request)).only("text", "model", "settings")
    text = f.str("text", required=True)
    model = f.str("model", "", max_chars=500)
    settings = f.data.get("settings") or {}
    if not isinstance(settings, dict) or len(settings) > 50:
        raise ApiError(400, "字段 settings 应为 JSON 对象", "field 'settings' must be a JSON object", param="settings")
    clean = {}  # plain values only: this is a log, not a second settings store
    for k, v in settings.items():
        key = Fields({"settings": k}).str("settings", max_chars=50)
        if v is None or isinstance(v, bool) or (isinstance(v, (int, float)) and math.isfinite(v)):
            clean[key] = v
        elif isinstance(v, str):
            clean[key] = Fields({"settings": v}).str("settings", max_chars=500)
    return await _call(_store(request).add_generation, doc_id, text, model, clean)
