"""A manuscript as a book: chapters found by their headings (第一章 …, 第12回 …, Chapter 3 …), and
export as .txt, .epub (ebooklib) and .docx (python-docx) with the chapter titles."""
from __future__ import annotations

import html
import io
import re
import uuid
from dataclasses import dataclass

HEADING = re.compile(r"^[ \t\u3000]*((?:第[0-9０-９一二三四五六七八九十百千万零〇两]+[章回节卷集部篇])(?:[ \t\u3000:：、.．-].*|\S.*)?"
                     r"|(?:Chapter|CHAPTER)\s+\w+.*|序章|序言|楔子|尾声|后记)[ \t\u3000]*$")
MAX_TITLE = 200


@dataclass
class Chapter:
    title: str
    text: str


def split_chapters(text: str, title: str = "") -> list[Chapter]:
    """Chapters by their heading lines; text before the first heading is a chapter of its own
    (titled with the book's title). A text without headings is one chapter."""
    chapters: list[Chapter] = []
    current_title, lines = title, []
    for line in text.splitlines():
        if len(line) <= MAX_TITLE and HEADING.match(line):
            if any(l.strip() for l in lines) or chapters:
                chapters.append(Chapter(current_title, "\n".join(lines).strip("\n")))
            current_title, lines = line.strip(" \t\u3000"), []
        else:
            lines.append(line)
    if any(l.strip() for l in lines) or not chapters or current_title != title:
        chapters.append(Chapter(current_title, "\n".join(lines).strip("\n")))
    return chapters


def _paragraphs(text: str) -> list[str]:
    return [p.strip(" \t\u3000") for p in text.splitlines() if p.strip(" \t\u3000")]


def to_txt(title: str, chapters: list[Chapter]) -> str:
    out = [title, ""] if title else []
    for ch in chapters:
        if ch.title and ch.title != title:
            out += [ch.title, ""]
        out += ["\u3000\u3000" + p for p in _paragraphs(ch.text)] + [""]
    return "\n".join(out).rstrip("\n") + "\n"


def to_epub(title: str, chapters: list[Chapter], author: str = "", language: str = "zh") -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier(f"urn:uuid:{uuid.uuid4()}")
    book.set_title(title or "未命名")
    book.set_language(language)
    if author:
        book.add_author(author)
    items = []
    for i, ch in enumerate(chapters, 1):
        name = ch.title or title or f"{i}"
        item = epub.EpubHtml(title=name, file_name=f"chapter_{i:04d}.xhtml", lang=language)
        body = "".join(f"<p>{html.escape(p)}</p>" for p in _paragraphs(ch.text))
        item.content = f"<h2>{html.escape(name)}</h2>{body}"
        book.add_item(item)
        items.append(item)
    book.toc = items
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    buf = io.BytesIO()
    epub.write_epub(buf, book)
    return buf.getvalue()


def to_docx(title: str, chapters: list[Chapter]) -> bytes:
    import docx

    d = docx.Document()
    if title:
        d.add_heading(title, level=0)
    for ch in chapters:
        if ch.title and ch.title != title:
            d.add_heading(ch.title, level=1)
        for p in _paragraphs(ch.text):
            d.add_paragraph(p)
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()
