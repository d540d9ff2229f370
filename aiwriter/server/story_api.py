"""A manuscript's memory, author's note and lorebook (saved with it in SQLite), lorebook import and
export (KoboldAI Lite saves, NovelAI .lorebook), and the context viewer: exactly what the model
reads to continue the manuscript, which entries fired and why, chars used of the budget."""
from __future__ import annotations

import json
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from aiwriter.errors import AIWriterError
from aiwriter.server.bodies import read_json
from aiwriter.server.fields import Fields
from aiwriter.server.replies import ApiError
from aiwriter.server.documents import _call
from aiwriter.story import AssemblySettings, Lorebook, assemble, from_dict, to_dict, to_lite, to_novelai
from aiwriter.story.context import MAX_BUDGET
from aiwriter.story.files import from_json, loads

router = APIRouter(prefix="/api/docs")

Id = Annotated[int, Path(ge=1, le=2**62)]
DEFAULT_BUDGET = 16_000


def _book(data: dict | None) -> Lorebook:
    return from_dict(data) if data else Lorebook()


async def _load(request: Request, doc_id: int) -> Lorebook:
    stored = await _call(request.app.state.store.get_story, doc_id)
    return _book(stored["data"] if stored else None)


def _bad(e: AIWriterError) -> ApiError:
    return ApiError(400, e.zh, e.en, param="story")


@router.get("/{doc_id}/story")
async def get_story(request: Request, doc_id: Id):
    return {"story": to_dict(await _load(request, doc_id))}


@router.put("/{doc_id}/story")
async def put_story(request: Request, doc_id: Id):
    data = await read_json(request, request.app.state.settings.max_body)
    try:
        book = from_dict(data.get("story", data))
    except AIWriterError as e:
        raise _bad(e)
    await _call(request.app.state.store.put_story, doc_id, to_dict(book))
    return {"story": to_dict(book)}


@router.post("/{doc_id}/story/import")
async def import_story(request: Request, doc_id: Id):
    """A Lite save, a NovelAI lorebook or our JSON (`file`: the parsed JSON or the file's text;
    `name`: for errors), turned into our form (not saved: the page shows it, then PUTs it). A Lite
    save's story text comes back as `text`."""
    data = await read_json(request, request.app.state.settings.max_body)
    name = data.get("name") if isinstance(data.get("name"), str) and data.get("name") else "file"
    try:
        # the file as parsed JSON, or as its text (then a file that is not JSON gets our error)
        loaded = loads(data["file"], name[:200]) if isinstance(data.get("file"), str) else from_json(data.get("file"), name[:200])
    except AIWriterError as e:
        raise ApiError(400, e.zh, e.en, param="file")
    return {"story": to_dict(loaded.book), "kind": loaded.kind, "text": loaded.story}


@router.get("/{doc_id}/story/export")
async def export_story(request: Request, doc_id: Id, format: str = "lite"):
    if format not in ("lite", "novelai", "aiwriter"):
        raise ApiError(400, "format 应为 lite、novelai 或 aiwriter", "format must be lite, novelai or aiwriter", param="format")
    book = await _load(request, doc_id)
    doc = await _call(request.app.state.store.get_document, doc_id)
    data = {"lite": lambda: to_lite(book, doc["text"]), "novelai": lambda: to_novelai(book), "aiwriter": lambda: to_dict(book)}[format]()
    name = f"{doc['title']}.{'lorebook' if format == 'novelai' else 'json'}"
    return Response(json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"), media_type="application/json",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})


@router.post("/{doc_id}/context")
async def context(request: Request, doc_id: Id):
    """What the model reads to continue this manuscript. Body (all optional): budget (chars; default
    the story's context_budget, else 16,000),
    text (the editor's text, if newer than the saved one), story (unsaved settings), cascade_depth,
    seed, chapter (continue that chapter: the earlier chapters and it)."""
    f = Fields(await read_json(request, request.app.state.settings.max_body))
    f.only("budget", "text", "story", "cascade_depth", "seed", "chapter")
    budget = f.int("budget", None, 1, MAX_BUDGET)  # default: the manuscript's own, else DEFAULT_BUDGET
    text = f.str("text", None)
    if text is None:
        text = (await _call(request.app.state.store.get_document, doc_id))["text"]
    chapter = f.int("chapter", None, 0, 100_000)
    if chapter is not None:  # continuing a chapter: the earlier chapters and this one
        from aiwriter.story import chapters as ch

        try:
            text = ch.text_through(text, chapter)
        except AIWriterError as e:
            raise ApiError(400, e.zh, e.en, param="chapter")
    if f.has("story"):
        try:
            book = from_dict(f.data["story"])
        except AIWriterError as e:
            raise _bad(e)
    else:
        book = await _load(request, doc_id)
    if budget is None:
        budget = book.context_budget or DEFAULT_BUDGET
    settings = AssemblySettings(budget=budget, cascade_depth=f.int("cascade_depth", 0, 0, 5), seed=f.int("seed", 0, 0, 2**31))
    try:
        ctx = await _call(assemble, text, book, settings)
    except AIWriterError as e:
        raise _bad(e)
    return {
        "text": ctx.text, "budget": ctx.budget, "chars_used": ctx.chars_used, "stable_prefix": ctx.stable_prefix,
        "story_start": ctx.story_start, "story_chars": ctx.story_chars, "unmatched": ctx.unmatched,
        "parts": [p.__dict__ for p in ctx.parts], "entries": [r.__dict__ for r in ctx.entries],
        "warnings": ctx.warnings, "report": ctx.describe(),
    }


BOOK_TYPES = {
    "txt": "text/plain; charset=utf-8",
    "epub": "application/epub+zip",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@router.get("/{doc_id}/book")
async def book(request: Request, doc_id: Id, format: str = "epub"):
    """The whole manuscript as a book, one chapter per heading line (第一章 …), with the titles."""
    from aiwriter.story.book import split_chapters, to_docx, to_epub, to_txt

    if format not in BOOK_TYPES:
        raise ApiError(400, "format 应为 txt、epub 或 docx", "format must be txt, epub or docx", param="format")
    doc = await _call(request.app.state.store.get_document, doc_id)
    chapters = split_chapters(doc["text"], doc["title"])
    make = {"txt": lambda: to_txt(doc["title"], chapters).encode("utf-8"),
            "epub": lambda: to_epub(doc["title"], chapters), "docx": lambda: to_docx(doc["title"], chapters)}[format]
    data = await _call(make)
    return Response(data, media_type=BOOK_TYPES[format],
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(doc['title'] + '.' + format)}"})


# ---------------------------------------------------------------------------- chapters
# Chapters are heading lines in the manuscript's text (aiwriter.story.chapters): every change is a
# save of the text, so it is in the version history and can be undone by restoring a version.

def _chapters(doc: dict) -> dict:
    from aiwriter.story import chapters as ch

    return {"revision": doc["revision"], "chapters": [s.info(doc["text"], i) for i, s in enumerate(ch.find(doc["text"]))]}


async def _change(request: Request, doc_id: int, change, base_revision: int | None):
    from aiwriter.store import Conflict

    doc = await _call(request.app.state.store.get_document, doc_id)
    try:
        new = change(doc["text"])
    except AIWriterError as e:
        raise ApiError(400, e.zh, e.en, param="chapter")
    try:
        doc = await _call(request.app.state.store.save_document, doc_id, text=new, reason="save", base_revision=base_revision)
    except Conflict as e:
        raise ApiError(409, e.zh, e.en, param="revision", kind="conflict")
    return _chapters(doc)


async def _fields(request: Request, *names: str) -> Fields:
    return Fields(await read_json(request, request.app.state.settings.max_body)).only(*names, "base_revision")


@router.get("/{doc_id}/chapters")
async def list_chapters(request: Request, doc_id: Id):
    return _chapters(await _call(request.app.state.store.get_document, doc_id))


@router.post("/{doc_id}/chapters")
async def add_chapter(request: Request, doc_id: Id):
    from aiwriter.story import chapters as ch

    f = await _fields(request, "title", "text", "position")
    title, body = f.str("title", required=True, max_chars=200), f.str("text", "")
    position = f.int("position", None, 0, 100_000)
    return await _change(request, doc_id, lambda t: ch.add(t, title, body, position), f.int("base_revision", None, 0))


@router.patch("/{doc_id}/chapters/{index}")
async def rename_chapter(request: Request, doc_id: Id, index: int):
    from aiwriter.story import chapters as ch

    f = await _fields(request, "title")
    title = f.str("title", required=True, max_chars=200)
    return await _change(request, doc_id, lambda t: ch.rename(t, index, title), f.int("base_revision", None, 0))


@router.post("/{doc_id}/chapters/{index}/move")
async def move_chapter(request: Request, doc_id: Id, index: int):
    from aiwriter.story import chapters as ch

    f = await _fields(request, "to")
    to = f.int("to", None, 0, 100_000)
    if to is None:
        raise ApiError(400, "字段 to 是必填的", "field 'to' is required", param="to")
    return await _change(request, doc_id, lambda t: ch.move(t, index, to), f.int("base_revision", None, 0))


@router.delete("/{doc_id}/chapters/{index}")
async def delete_chapter(request: Request, doc_id: Id, index: int, base_revision: int | None = None):
    from aiwriter.story import chapters as ch

    return await _change(request, doc_id, lambda t: ch.delete(t, index), base_revision)


@router.get("/{doc_id}/chapters/{index}/export")
async def export_chapter(request: Request, doc_id: Id, index: int, format: str = "txt"):
    from aiwriter.story import chapters as ch
    from aiwriter.story.book import to_docx, to_epub, to_txt

    if format not in BOOK_TYPES:
        raise ApiError(400, "format 应为 txt、epub 或 docx", "format must be txt, epub or docx", param="format")
    doc = await _call(request.app.state.store.get_document, doc_id)
    try:
        one = ch.chapter(doc["text"], index)
    except AIWriterError as e:
        raise ApiError(404, e.zh, e.en, param="index", kind="not_found")
    name = one.title or doc["title"]
    make = {"txt": lambda: to_txt(name, [one]).encode("utf-8"), "epub": lambda: to_epub(name, [one]),
            "docx": lambda: to_docx(name, [one])}[format]
    data = await _call(make)
    return Response(data, media_type=BOOK_TYPES[format],
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name + '.' + format)}"})
