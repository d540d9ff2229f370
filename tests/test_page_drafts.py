"""Nothing typed in the page is lost when the server goes away (issue 12, section 1), in real
headless Chromium against a real `aiwriter serve` process: open a manuscript, stop the server,
type, close the tab, start the server again on the same database, reopen the page: the typed
text is there and is saved. The same with two tabs open on one manuscript, and with the
server's copy changed meanwhile (then the draft is offered, not dropped and not forced)."""
from pathlib import Path

import httpx
import pytest
from test_server_e2e import CHROMIUM, CHROMIUM_ARGS, Server

OPENING = "林黛玉进了贾府。"


@pytest.fixture
def env(tmp_path):
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed for this test: apt-get install chromium"
    from playwright.sync_api import sync_playwright

    server = Server(tmp_path)
    url = server.start()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 800}, bypass_csp=True)  # one profile: shared localStorage; bypass_csp: wait_for_function evals a string
        errors: list[str] = []
        try:
            yield server, url, port, context, errors
        finally:
            browser.close()
            server.stop()
    assert not errors, errors


def open_page(context, url, errors):
    page = context.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
    return page


def type_at_end(page, text):
    page.click("#editor")
    page.keyboard.press("Control+End")
    page.keyboard.type(text)


def wait_offline(page, expected):
    """The page knows the server is gone and holds `expected` in this browser."""
    page.wait_for_function("document.getElementById('save-status').textContent.includes('浏览器')", timeout=15_000)
    assert page.input_value("#editor") == expected


def server_text(url, doc_id):
    return httpx.get(f"{url}api/docs/{doc_id}").json()["text"]


def drafts_left(page, doc_id):
    return page.evaluate(f"Object.keys(localStorage).filter((k) => k.startsWith('aiwriter.draft.{doc_id}'))")


def test_typed_while_the_server_is_down_then_tab_closed_is_restored_and_saved(env):
    server, url, port, context, errors = env
    a = open_page(context, url, errors)
    doc_id = a.evaluate("AIWriter.doc.id")
    type_at_end(a, OPENING)
    a.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert server_text(url, doc_id) == OPENING

    server.stop()
    type_at_end(a, "断网时写的字")
    wait_offline(a, OPENING + "断网时写的字")
    a.close(run_before_unload=True)  # its last-chance save cannot reach the server either

    server.start(port)  # same port: the same origin, so the same localStorage
    assert server_text(url, doc_id) == OPENING
    b = open_page(context, url, errors)
    b.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert b.input_value("#editor") == OPENING + "断网时写的字"
    assert server_text(url, doc_id) == OPENING + "断网时写的字"
    assert "恢复" in b.inner_text("#banner")  # said, not silent
    assert drafts_left(b, doc_id) == []


def test_two_tabs_on_one_manuscript(env):
    server, url, port, context, errors = env
    a = open_page(context, url, errors)
    doc_id = a.evaluate("AIWriter.doc.id")
    type_at_end(a, OPENING)
    a.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    b = open_page(context, url, errors)
    assert b.evaluate("AIWriter.doc.id") == doc_id and b.input_value("#editor") == OPENING

    # 1. typed in one tab while the server is down, that tab closed, the other left open
    server.stop()
    type_at_end(a, "甲页写的")
    wait_offline(a, OPENING + "甲页写的")
    a.close(run_before_unload=True)
    server.start(port)
    c = open_page(context, url, errors)
    # the open tab may have taken the closed one's draft over first (and saves it once the
    # server answers), or the new one does: either way it is saved, and shown in both
    for page in (c, b):
        page.wait_for_function(f"document.getElementById('editor').value === {str(OPENING + '甲页写的')!r}", timeout=15_000)
        page.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert server_text(url, doc_id) == OPENING + "甲页写的"
    c.close()
    b.close()

    # 2. both tabs typed while the server was down, both closed: the newest is restored and
    # saved, the other offered; taking it keeps both (the first stays in the version history)
    d = open_page(context, url, errors)
    e = open_page(context, url, errors)
    base = OPENING + "甲页写的"
    assert d.input_value("#editor") == base == e.input_value("#editor")
    server.stop()
    type_at_end(d, "丁页")
    wait_offline(d, base + "丁页")
    type_at_end(e, "戊页")
    wait_offline(e, base + "戊页")
    d.close(run_before_unload=True)
    e.close(run_before_unload=True)
    server.start(port)
    f = open_page(context, url, errors)
    f.wait_for_selector("#banner button:has-text('用浏览器里的')", timeout=15_000)
    f.wait_for_function(f"document.getElementById('editor').value === {str(base + '戊页')!r}")
    f.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert server_text(url, doc_id) == base + "戊页"  # the newest, saved
    f.click("#banner button:has-text('用浏览器里的')")
    assert f.input_value("#editor") == base + "丁页"
    f.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert server_text(url, doc_id) == base + "丁页"
    versions = httpx.get(f"{url}api/docs/{doc_id}/versions").json()["versions"]
    texts = [httpx.get(f"{url}api/docs/{doc_id}/versions/{v['id']}").json()["text"] for v in versions]
    assert base + "戊页" in texts and base + "丁页" in texts
    assert drafts_left(f, doc_id) == []


def test_a_draft_older_than_the_servers_copy_is_offered_not_dropped(env):
    server, url, port, context, errors = env
    a = open_page(context, url, errors)
    doc_id = a.evaluate("AIWriter.doc.id")
    type_at_end(a, OPENING)
    a.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    server.stop()
    type_at_end(a, "断网时写的字")
    wait_offline(a, OPENING + "断网时写的字")
    a.close(run_before_unload=True)
    server.start(port)
    # meanwhile another client changed the server's copy
    rev = httpx.get(f"{url}api/docs/{doc_id}").json()["revision"]
    httpx.put(f"{url}api/docs/{doc_id}", json={"text": OPENING + "别处改的", "revision": rev}).raise_for_status()

    b = open_page(context, url, errors)
    b.wait_for_selector("#banner button:has-text('用浏览器里的')", timeout=15_000)
    assert b.input_value("#editor") == OPENING + "别处改的"  # nothing forced over the newer copy
    b.wait_for_timeout(5000)  # the periodic check does not drop or re-decide the offered draft
    assert len(drafts_left(b, doc_id)) == 1
    b.click("#banner button:has-text('用浏览器里的')")
    assert b.input_value("#editor") == OPENING + "断网时写的字"
    b.wait_for_selector("body[data-saved=yes]", timeout=15_000)
    assert server_text(url, doc_id) == OPENING + "断网时写的字"
    assert drafts_left(b, doc_id) == []
    b.click("#editor")
    b.keyboard.press("Control+z")  # the server's other text is one undo away (and in the versions)
    assert b.input_value("#editor") == OPENING + "别处改的"
