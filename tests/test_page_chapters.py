"""The page's 章节 / Chapters panel (web/chapters.js, issue 15 items 4 and 6) in headless Chromium
against the server: the list follows the text (headings typed by hand too), the page reads
headings exactly as the server does, add / rename / move / delete change the text through the
chapter API and survive a reload, unsaved typing is saved first and a concurrent edit is not
overwritten, per-chapter and whole-book exports download, and the English toggle."""
import io
import json
import zipfile

import pytest
from test_page_features import Page, browser, shot  # noqa: F401  (browser: a fixture)
from test_server_api import server_with

from aiwriter.story import chapters as ch

TEXT = "楔子\n很久以前。\n第一章 起\n甲乙丙。\n第二章 承\n乙丙甲。\n"


class Dialogs:
    """Answers the page's prompt()/confirm() in order and keeps what they said."""

    def __init__(self, page):
        self.answers: list = []
        self.seen: list[tuple[str, str, str]] = []
        page.on("dialog", self.on)

    def on(self, d):
        self.seen.append((d.type, d.message, d.default_value))
        answer = self.answers.pop(0) if self.answers else None
        if answer is False:
            d.dismiss()
        elif d.type == "prompt":
            d.accept(d.default_value if answer is None else answer)
        else:
            d.accept()


def titles(p):
    return p.eval_on_selector_all("#chapter-list li .name", "els => els.map(e => e.textContent)")


def wait_titles(p, expected, timeout=10_000):
    from playwright.sync_api import TimeoutError

    try:
        p.wait_for_function("(want) => JSON.stringify([...document.querySelectorAll('#chapter-list li .name')]"
                            ".map(e => e.textContent)) === want", arg=json.dumps(expected, ensure_ascii=False), timeout=timeout)
    except TimeoutError:
        banner = p.inner_text("#banner") if p.is_visible("#banner") else ""
        assert titles(p) == expected, banner


def tool(p, index, glyph):
    p.click(f"#chapter-list li[data-index='{index}'] .tools button:text-is('{glyph}')")


def settle(p):
    p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    p.wait_for_function("!AIWriter.busy")


def server_text(c, doc_id):
    return c.get(f"/api/docs/{doc_id}").json()["text"]


def open_doc(c, browser, text, title="书"):  # noqa: F811
    doc = c.post("/api/docs", json={"title": title, "text": text}).json()
    w = Page(browser, str(c.base_url))
    assert w.page.evaluate("AIWriter.doc.id") == doc["id"]
    return w, doc["id"]


def test_page_reads_headings_as_the_server_does(browser, tmp_path):  # noqa: F811
    texts = [
        "", "没有标题的一段。", "  第一章\n甲\n", "前言文字\n第1章：开始\n甲\n第１２回 再会\n乙\n", "Chapter 3 Rain\nx\nCHAPTER iv\ny\n",
        "第一章\r\n甲\r\n第二章 乙\r\n", "序章\n尾声\n后记\n楔子 \n", "第十章" + "长" * 300 + "\n正文\n第一百零五章　完\n",
        "第一章不是标题吗\n第章\n第一 章\n", "\n\n第一章\n", "甲\n\u3000\u3000第二章 空白\n乙",
    ]
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        got = w.page.evaluate("async (texts) => { const m = await import('/web/chapters.js'); "
                              "return texts.map((t) => m.findChapters(t).map((s) => [s.title, s.start, s.end])); }", texts)
        for text, mine in zip(texts, got):
            want = [[s.title, s.start, s.end] for s in ch.find(text)]
            assert mine == want, (text, mine, want)
        numbers = w.page.evaluate("async () => { const m = await import('/web/chapters.js'); "
                                  "return [1, 2, 10, 12, 20, 105, 1010, 9999].map(m.chineseNumber); }")
        assert numbers == [ch.chinese_number(n) for n in (1, 2, 10, 12, 20, 105, 1010, 9999)]
        # the next chapter's number follows the last numbered heading, in its style
        nexts = w.page.evaluate("""async () => { const m = await import('/web/chapters.js');
            const t = (...ts) => ts.map((title) => ({ title }));
            return [m.nextNumber(t('楔子', '第一章 起', '第二章')), m.nextNumber(t('')), m.nextNumber(t('第12回 再会')),
                    m.nextNumber(t('第十九章', '尾声')), m.nextNumber(t('第一百零九章')), m.nextNumber(t('第两千章')),
                    m.headingFor(' 雨夜 ', '第三章'), m.headingFor('第九章 雨', '第三章'), m.headingFor('楔子', '第三章')]; }""")
        assert nexts == ["第三章", "第一章", "第13回", "第二十章", "第一百一十章", "第二千零一章",
                         "第三章 雨夜", "第九章 雨", "楔子"]
        w.close()


def test_chapter_list_follows_the_text_and_changes_survive_a_reload(browser, tmp_path):  # noqa: F811
    with server_with(tmp_path) as c:
        w, doc_id = open_doc(c, browser, TEXT)
        p = w.page
        dialogs = Dialogs(p)
        wait_titles(p, ["楔子", "第一章 起", "第二章 承"])
        assert p.inner_text("#chapter-count") == "3 章"
        assert "4 字" in p.inner_text("#chapter-list li[data-index='1']")  # 甲乙丙。

        # a heading typed by hand is a chapter at once (before any save)
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("第三章 转\n丙甲乙。\n")
        wait_titles(p, ["楔子", "第一章 起", "第二章 承", "第三章 转"])

        # clicking a chapter moves the cursor to its heading
        p.click("#chapter-list li[data-index='2'] .name")
        start = p.input_value("#editor").index("第二章 承")
        assert p.evaluate("document.getElementById('editor').selectionStart") == start
        assert p.get_attribute("#chapter-list li[data-index='2']", "class") == "current"

        # add: unsaved typing is saved first; the default title is the next 第N章
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("未存的字。")
        assert p.get_attribute("body", "data-saved") == "no"
        dialogs.answers.append(None)  # accept the offered title
        p.click("#chapter-add")
        wait_titles(p, ["楔子", "第一章 起", "第二章 承", "第三章 转", "第四章"])
        settle(p)
        assert dialogs.seen[-1][2] == "第四章"
        text = server_text(c, doc_id)
        assert text == p.input_value("#editor")
        assert "丙甲乙。\n未存的字。\n第四章\n" in text

        # rename: a bare name gets 第N章 in front
        dialogs.answers.append(" 开端")
        tool(p, 1, "✎")
        wait_titles(p, ["楔子", "第一章 开端", "第二章 承", "第三章 转", "第四章"])
        # move 第三章 up, then 第一章 down
        tool(p, 3, "↑")
        wait_titles(p, ["楔子", "第一章 开端", "第三章 转", "第二章 承", "第四章"])
        tool(p, 1, "↓")
        wait_titles(p, ["楔子", "第三章 转", "第一章 开端", "第二章 承", "第四章"])
        assert p.is_disabled("#chapter-list li[data-index='0'] .tools button:text-is('↑')")
        assert p.is_disabled("#chapter-list li[data-index='4'] .tools button:text-is('↓')")
        # delete (confirmed): the question says how to get it back
        tool(p, 3, "×")
        wait_titles(p, ["楔子", "第三章 转", "第一章 开端", "第四章"])
        kind, message, _ = dialogs.seen[-1]
        assert kind == "confirm" and "第二章 承" in message and "版本历史" in message
        assert "版本历史" in p.inner_text("#banner")
        # a delete answered "no" changes nothing
        dialogs.answers.append(False)
        tool(p, 1, "×")
        settle(p)
        after = "楔子\n很久以前。\n第三章 转\n丙甲乙。\n未存的字。\n第一章 开端\n甲乙丙。\n第四章\n"
        assert server_text(c, doc_id) == p.input_value("#editor") == after
        shot(p, "chapters.png")

        # undo brings the deleted chapter back (and saves it)
        p.click("#btn-undo")
        wait_titles(p, ["楔子", "第三章 转", "第一章 开端", "第二章 承", "第四章"])
        settle(p)
        assert "第二章 承\n乙丙甲。" in server_text(c, doc_id)
        p.click("#btn-redo")
        settle(p)
        assert server_text(c, doc_id) == after
        # every change is a version: the one before the delete is in the history
        versions = c.get(f"/api/docs/{doc_id}/versions").json()["versions"]
        olds = [c.get(f"/api/docs/{doc_id}/versions/{v['id']}").json()["text"] for v in versions]
        assert any("第二章 承" in t and "第四章" in t for t in olds)

        w.reload()
        wait_titles(p, ["楔子", "第三章 转", "第一章 开端", "第四章"])
        assert p.input_value("#editor") == after
        w.close()


def test_a_concurrent_edit_is_not_overwritten(browser, tmp_path):  # noqa: F811
    with server_with(tmp_path) as c:
        w, doc_id = open_doc(c, browser, TEXT)
        p = w.page
        Dialogs(p)
        wait_titles(p, ["楔子", "第一章 起", "第二章 承"])
        # another client changes the manuscript behind the page's back
        rev = c.get(f"/api/docs/{doc_id}").json()["revision"]
        theirs = TEXT + "第三章 他人\n写的。\n"
        assert c.put(f"/api/docs/{doc_id}", json={"text": theirs, "revision": rev}).status_code == 200
        tool(p, 2, "×")
        p.wait_for_selector("#banner:not([hidden])")
        assert "别处" in p.inner_text("#banner")
        p.wait_for_function("!AIWriter.busy")
        assert server_text(c, doc_id) == theirs  # nothing deleted, their text kept
        assert p.input_value("#editor") == TEXT  # and the page's text not replaced behind the writer's back
        # the same with unsaved typing: its save meets the conflict, whose question stays; nothing is lost
        p.click("#banner button:text-is('载入服务器上的')")
        wait_titles(p, ["楔子", "第一章 起", "第二章 承", "第三章 他人"])
        rev = c.get(f"/api/docs/{doc_id}").json()["revision"]
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("我的字。")
        assert c.put(f"/api/docs/{doc_id}", json={"text": theirs + "又改。", "revision": rev}).status_code == 200
        tool(p, 1, "×")
        p.wait_for_function("!AIWriter.busy")
        assert "用我的覆盖" in p.inner_text("#banner")
        assert server_text(c, doc_id) == theirs + "又改。"
        assert p.input_value("#editor") == theirs + "我的字。"
        assert not p.evaluate("document.getElementById('editor').readOnly")

        # a change made between the page's check and its request: base_revision makes the server refuse it
        p.click("#banner button:text-is('载入服务器上的')")
        wait_titles(p, ["楔子", "第一章 起", "第二章 承", "第三章 他人"])
        last = theirs + "又改。"

        def meanwhile(route):
            rev = c.get(f"/api/docs/{doc_id}").json()["revision"]
            assert c.put(f"/api/docs/{doc_id}", json={"text": last + "再改。", "revision": rev}).status_code == 200
            route.continue_()

        p.route("**/chapters/1/move", meanwhile)
        tool(p, 1, "↓")
        p.wait_for_function("!AIWriter.busy")
        assert "别处" in p.inner_text("#banner")
        assert server_text(c, doc_id) == last + "再改。"
        assert p.input_value("#editor") == last
        w.close()


def test_exports_download_the_chapter_and_the_whole_book(browser, tmp_path):  # noqa: F811
    with server_with(tmp_path) as c:
        w, doc_id = open_doc(c, browser, TEXT, title="小书")
        p = w.page
        wait_titles(p, ["楔子", "第一章 起", "第二章 承"])
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("尾巴。")  # unsaved: the export saves it first
        with p.expect_download() as d:
            p.click("#chapters-panel .book button[data-format='epub']")
        download = d.value
        assert download.suggested_filename == "小书.epub"
        data = open(download.path(), "rb").read()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            assert z.read("mimetype") == b"application/epub+zip"
            pages = "".join(z.read(n).decode("utf-8") for n in z.namelist() if n.endswith(".xhtml"))
        for title in ("楔子", "第一章 起", "第二章 承"):
            assert title in pages
        assert "尾巴。" in pages
        with p.expect_download() as d:
            p.click("#chapters-panel .book button[data-format='docx']")
        assert zipfile.is_zipfile(d.value.path()) and d.value.suggested_filename == "小书.docx"
        with p.expect_download() as d:
            p.click("#chapters-panel .book button[data-format='txt']")
        assert "第二章 承" in open(d.value.path(), encoding="utf-8").read()
        with p.expect_download() as d:
            tool(p, 1, "⤓")
        assert d.value.suggested_filename == "第一章 起.txt"
        one = open(d.value.path(), encoding="utf-8").read()
        assert one.startswith("第一章 起") and "甲乙丙。" in one and "乙丙甲" not in one
        w.close()


def test_chapters_in_english(browser, tmp_path):  # noqa: F811
    with server_with(tmp_path) as c:
        w, _ = open_doc(c, browser, TEXT)
        p = w.page
        dialogs = Dialogs(p)
        wait_titles(p, ["楔子", "第一章 起", "第二章 承"])
        p.click("#btn-lang")
        assert p.inner_text("#chapters-panel h3") .startswith("Chapters")
        assert p.inner_text("#chapter-count") == "3 chapters"
        assert p.inner_text("#chapter-add") == "Add chapter"
        assert "4 chars" in p.inner_text("#chapter-list li[data-index='1']")
        assert p.get_attribute("#chapter-list li[data-index='1'] .tools button:text-is('×')", "title") == "Delete this chapter"
        assert p.inner_text("#chapters-panel .book .hint") == "Whole book"
        dialogs.answers.append(False)
        tool(p, 2, "×")
        assert "version history" in dialogs.seen[-1][1].lower() or "Versions" in dialogs.seen[-1][1]
        w.close()
        # text before the first heading is an untitled opening: it cannot move, nor can anything go before it
        c.post("/api/docs", json={"title": "无题", "text": "只有一段。\n" + "又一行。\n" * 200 + "第一章 甲\n" + "乙。\n" * 200})
        w = Page(browser, str(c.base_url), storage={"aiwriter.lang": "en"})
        p = w.page
        wait_titles(p, ["(opening, untitled)", "第一章 甲"])
        assert p.is_disabled("#chapter-list li[data-index='0'] .tools button:text-is('↓')")
        assert p.is_disabled("#chapter-list li[data-index='1'] .tools button:text-is('↑')")
        # jumping scrolls the heading to the top of the editor (201 one-line paragraphs above it)
        p.click("#chapter-list li[data-index='1'] .name")
        line = 18 * 1.9  # style.css: 18px/1.9
        assert p.evaluate("document.getElementById('editor').scrollTop") == pytest.approx(201 * line, abs=line)
        p.click("#chapter-list li[data-index='0'] .name")
        assert p.evaluate("document.getElementById('editor').scrollTop") == 0
        p.click("#chapter-list li[data-index='1'] .name")
        assert p.evaluate("document.getElementById('editor').selectionStart") == p.input_value("#editor").index("第一章 甲")
        w.close()
