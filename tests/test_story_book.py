import io
import zipfile

import docx
from ebooklib import epub

from aiwriter.story.book import Chapter, split_chapters, to_docx, to_epub, to_txt

NOVEL = "楔子\n天下大乱。\n第一章 书生\n宁采臣赶路。\n　　天黑了。\n第二回：古寺\n兰若寺荒凉。\n"


def test_split_by_headings():
    chs = split_chapters(NOVEL, "聊斋")
    assert [c.title for c in chs] == ["楔子", "第一章 书生", "第二回：古寺"]
    assert chs[1].text == "宁采臣赶路。\n　　天黑了。"
    # text before the first heading keeps the book's title; no heading: one chapter
    assert [c.title for c in split_chapters("开头。\n第1章\n正文", "书")] == ["书", "第1章"]
    assert split_chapters("只有一段。", "书") == [Chapter("书", "只有一段。")]
    # a sentence that merely starts like a heading inside prose is a heading only on its own line
    assert len(split_chapters("他说第一章写得好，可惜太长了。", "书")) == 1


def test_txt_has_titles_and_paragraphs():
    t = to_txt("聊斋", split_chapters(NOVEL, "聊斋"))
    assert t.startswith("聊斋\n\n楔子\n\n\u3000\u3000天下大乱。") and "第二回：古寺\n\n\u3000\u3000兰若寺荒凉。" in t


def test_epub_is_a_valid_book_with_a_chapter_per_heading(tmp_path):
    data = to_epub("聊斋", split_chapters(NOVEL, "聊斋"), author="蒲松龄")
    z = zipfile.ZipFile(io.BytesIO(data))
    assert z.read("mimetype") == b"application/epub+zip"
    p = tmp_path / "b.epub"
    p.write_bytes(data)
    book = epub.read_epub(str(p))
    assert book.get_metadata("DC", "title")[0][0] == "聊斋"
    docs = [i for i in book.get_items() if isinstance(i, epub.EpubHtml) and i.file_name.startswith("chapter_")]
    assert len(docs) == 3 and "宁采臣赶路。" in docs[1].get_content().decode()


def test_docx_has_headings_and_text():
    d = docx.Document(io.BytesIO(to_docx("聊斋", split_chapters(NOVEL, "聊斋"))))
    heads = [p.text for p in d.paragraphs if p.style.name.startswith("Heading") or p.style.name == "Title"]
    assert heads == ["聊斋", "楔子", "第一章 书生", "第二回：古寺"]
    assert "兰若寺荒凉。" in [p.text for p in d.paragraphs]
