"""The writing page under hardening, in real headless Chromium (Debian's `chromium`, Playwright):
a server with an API key (the page gets the key from #key=… or asks for it), and a full disk on
save (the page shows the error, keeps the text in localStorage, and saves once there is room).
Chromium missing is a failure, not a skip: CI installs it."""
from pathlib import Path

import pytest
from test_hardening_faults import fill_disk, free_disk
from test_page_features import browser  # noqa: F401 (fixture)
from test_server_api import server_with

KEY = "page-key-42"


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # the page's Content-Security-Policy must not block anything the page itself uses
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
    return page, errors


def test_the_page_works_with_an_api_key(browser, tmp_path):
    with server_with(tmp_path, api_key=KEY) as c:
        base = str(c.base_url).rstrip("/")
        # 1. given in the fragment, as `aiwriter serve` opens it: stored, and gone from the address bar
        page, errors = open_page(browser, f"{base}/#key={KEY}")
        assert page.evaluate("localStorage.getItem('aiwriter.apiKey')") == KEY
        assert "key" not in page.url
        page.fill("#length", "6")
        page.dispatch_event("#length", "change")
        page.click("#editor")
        page.keyboard.type("甲乙")
        page.click("#btn-continue")
        page.wait_for_selector("body[data-gen=idle]", timeout=30_000)
        assert page.input_value("#editor") == "甲乙丙。\n甲乙丙。"  # the sentence is finished (on by default)
        page.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        doc_id = page.evaluate("AIWriter.doc.id")
        assert c.get(f"/api/docs/{doc_id}", headers={"x-api-key": KEY}).json()["text"] == "甲乙丙。\n甲乙丙。"
        with page.expect_download() as dl:  # export: a link cannot carry the key, the page fetches it
            page.click("#btn-export")
        assert Path(dl.value.path()).read_text(encoding="utf-8") == "甲乙丙。\n甲乙丙。"
        assert not errors, errors
        page.close()

        # 2. not given: the page asks once (a wrong answer first), then works
        page = browser.new_page()
        answers = iter(["wrong", KEY])
        page.on("dialog", lambda d: d.accept(next(answers, KEY)) if d.type == "prompt" else d.accept())
        page.goto(base + "/")
        page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
        assert page.evaluate("localStorage.getItem('aiwriter.apiKey')") == KEY
        assert page.evaluate("AIWriter.doc.id") == doc_id
        page.close()


def test_a_full_disk_shows_the_error_keeps_the_text_and_saves_later(browser, tmp_path):
    with server_with(tmp_path) as c:
        store = c.app.state.store
        page, errors = open_page(browser, str(c.base_url))
        doc_id = page.evaluate("AIWriter.doc.id")
        page.evaluate("AIWriter.saveRetryMs = 1500")  # the page waits 10 s before it tries again
        fill_disk(store)
        typed = "林黛玉进了贾府。" * 600  # more than the pages left
        page.fill("#editor", typed)
        page.dispatch_event("#editor", "input")
        page.wait_for_selector("body[data-save-error='507']", timeout=15_000)
        banner = page.inner_text("#banner")
        assert "磁盘已满" in banner and not page.is_hidden("#banner")
        assert page.inner_text("#save-status") == "未保存（已暂存在浏览器）"
        draft = page.evaluate(f"JSON.parse(localStorage.getItem('aiwriter.draft.{doc_id}.' + AIWriter.tab)).text")
        assert draft == typed == page.input_value("#editor")  # the text stays, in the page and the browser
        assert c.get(f"/api/docs/{doc_id}").json()["text"] == ""

        free_disk(store)  # room again: the page's retry saves it without the writer doing anything
        page.wait_for_selector("body[data-saved=yes]", timeout=20_000)
        assert c.get(f"/api/docs/{doc_id}").json()["text"] == typed
        assert page.evaluate(f"Object.keys(localStorage).filter((k) => k.startsWith('aiwriter.draft.{doc_id}'))") == []
        assert page.get_attribute("body", "data-save-error") is None
        assert not errors, errors
        page.close()
