"""The writing page's items of issue 12 (section 3), each in real headless Chromium (Debian's
`chromium`, Playwright) against the server with a test double model whose output is known
(甲乙丙。\\n甲乙丙。… : see test_server_api). Screenshots go to test-artifacts/."""
import shutil
from pathlib import Path

import pytest
from test_server_api import double_model, server_with

from aiwriter.textmarks import count_chars

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed for this test: apt-get install chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A fresh browser profile on the server; `errors` collects the page's script errors."""

    def __init__(self, browser, url, width=1280, height=820, storage=None):
        self.context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
        if storage:
            self.context.add_init_script("".join(f"localStorage.setItem({k!r}, {v!r});" for k, v in storage.items()))
        self.url = url
        self.errors: list[str] = []
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.open()

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready=yes]", timeout=30_000)

    def reload(self):
        self.page.reload()
        self.page.wait_for_selector("body[data-ready=yes]", timeout=30_000)

    def close(self):
        self.context.close()
        assert not self.errors, self.errors


def setnum(page, selector, value):
    page.fill(selector, str(value))
    page.dispatch_event(selector, "change")


def write_opening(page, text):
    page.click("#editor")
    page.keyboard.type(text)


def run(page, button="#btn-continue"):
    page.click(button)
    page.wait_for_selector("body[data-gen=idle]", timeout=30_000)


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name))


NO_FINISH = {"aiwriter.finishSentence": "no"}


def test_continue_with_the_server_unreachable_says_so_and_adds_no_empty_round(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        write_opening(p, "甲乙")
        setnum(p, "#n", 3)
        p.route("**/v1/completions", lambda route: route.abort())  # as if the server were down
        run(p)
        banner = p.inner_text("#banner")
        assert "连不上服务器" in banner and "Failed to fetch" not in banner
        assert p.is_hidden("#candidates") and p.evaluate("AIWriter.rounds.length") == 0
        p.click("#btn-lang")
        run(p)
        assert "Cannot reach the server" in p.inner_text("#banner")
        p.unroute("**/v1/completions")
        run(p)  # back: one round of three, none empty
        assert p.evaluate("AIWriter.rounds.length") == 1
        assert p.locator("#cand-list .cand").count() == 3
        w.close()


def test_candidate_cards_count_chars_while_they_stream(browser, tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.08)) as c:
        w = Page(browser, str(c.base_url), storage=NO_FINISH)
        p = w.page
        write_opening(p, "甲乙")
        setnum(p, "#n", 2)
        setnum(p, "#length", 40)
        p.click("#btn-continue")
        p.wait_for_function("document.querySelectorAll('#cand-list .cand .text')[1]?.textContent.length >= 6")
        assert p.get_attribute("body", "data-gen") == "running"
        for card in p.locator("#cand-list .cand").all():
            text = card.locator(".text").text_content()
            label = card.locator(".meta span").first.text_content()
            # the label was set after the last piece: at least what it shows now, minus one piece in flight
            assert label != "候选 1 · 0 字" and label != "候选 2 · 0 字", label
            assert int(label.split("· ")[1].split(" ")[0]) >= count_chars(text) - 1
        p.click("#btn-stop")
        p.wait_for_selector("body[data-gen=idle]")
        for card in p.locator("#cand-list .cand").all():
            text = card.locator(".text").text_content()
            assert card.locator(".meta span").first.text_content().endswith(f"· {count_chars(text)} 字")
        w.close()


def test_rewrite_saves_no_half_finished_version(browser, tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.1)) as c:
        w = Page(browser, str(c.base_url), storage=NO_FINISH)
        p = w.page
        write_opening(p, "甲乙")
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        setnum(p, "#length", 30)  # ~3 s per run: longer than the 1.2 s autosave pause
        run(p)
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        first = p.input_value("#editor")
        run(p, "#btn-rewrite")
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        final = p.input_value("#editor")
        assert len(final) == len(first) == 32
        doc_id = p.evaluate("AIWriter.doc.id")
        versions = c.get(f"/api/docs/{doc_id}/versions").json()["versions"]
        texts = [c.get(f"/api/docs/{doc_id}/versions/{v['id']}").json()["text"] for v in versions]
        assert all(t in ("", "甲乙", first, final) for t in texts), texts  # finished states only
        w.close()


def test_one_char_count_in_the_header_the_list_and_the_versions(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        text = "林黛玉 进了贾府。\n\n　　她说：“好。”\n"
        p.fill("#editor", text)
        p.dispatch_event("#editor", "input")
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        p.wait_for_function(f"document.querySelector('#doc-list li.current small').textContent.startsWith('{count_chars(text)} 字')")
        assert p.inner_text("#char-count") == f"{count_chars(text)} 字"
        assert p.text_content("#version-list li small").startswith(f"{count_chars(text)} 字")
        same = p.evaluate(f"import('/web/text.js').then((m) => m.countChars({text!r} + '𠀀'))")
        assert same == count_chars(text + "𠀀")  # a char outside the BMP is one char on both sides
        w.close()


def test_rewrite_after_a_reload_replaces_the_last_continuation(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url), storage=NO_FINISH)
        p = w.page
        write_opening(p, "甲")
        setnum(p, "#length", 6)
        run(p)
        assert p.input_value("#editor") == "甲乙丙。\n甲乙"
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        w.reload()
        run(p, "#btn-rewrite")
        assert p.input_value("#editor") == "甲乙丙。\n甲乙"  # replaced (the double writes the same again), not appended
        # edited after the continuation: it cannot be replaced, and the page says why
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("丙")
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        w.reload()
        run(p, "#btn-rewrite")
        assert "续写" in p.inner_text("#banner")
        assert p.input_value("#editor") == "甲乙丙。\n甲乙丙。\n甲乙丙。"
        w.close()


def test_the_preset_in_force_shows_after_a_reload(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        p.select_option("#preset", "builtin:steady")
        assert p.input_value("#s-top_p") == "0.6"
        w.reload()
        assert p.input_value("#preset") == "builtin:steady" and p.input_value("#s-top_p") == "0.6"
        setnum(p, "#s-top_p", 0.5)  # changed by hand: no preset any more
        w.reload()
        assert p.input_value("#preset") == "" and p.input_value("#s-top_p") == "0.5"
        w.close()


def test_both_panels_hide_on_a_wide_screen(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url), width=1600, height=900)
        p = w.page
        full = p.evaluate("document.getElementById('editor').clientWidth")
        assert p.is_visible("#docs-panel") and p.is_visible("#side-panel")
        p.click("#btn-docs")
        assert p.is_hidden("#docs-panel") and p.is_visible("#side-panel")
        p.click("#btn-side")
        assert p.is_hidden("#side-panel")
        assert p.evaluate("document.getElementById('editor').clientWidth") >= full + 480
        shot(p, "page-panels-hidden-desktop.png")
        w.reload()  # remembered
        assert p.is_hidden("#docs-panel") and p.is_hidden("#side-panel")
        p.click("#btn-docs")
        p.click("#btn-side")
        assert p.is_visible("#docs-panel") and p.is_visible("#side-panel")
        w.close()


def test_finish_the_sentence_is_on_by_default_and_bounded(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        assert p.is_checked("#finish-sentence")
        write_opening(p, "甲")
        setnum(p, "#length", 2)
        run(p)
        assert p.input_value("#editor") == "甲乙丙。"  # 2 chars asked, the sentence finished
        p.click("#btn-side") if p.is_hidden("#finish-sentence") else None
        p.uncheck("#finish-sentence")
        run(p)
        assert p.input_value("#editor") == "甲乙丙。\n甲"
        w.close()


def test_history_meta_stays_on_one_line_with_its_buttons(browser, tmp_path):
    with server_with(tmp_path) as c:
        for width in (1280, 390):
            w = Page(browser, str(c.base_url), width=width, height=844)
            p = w.page
            write_opening(p, "甲")
            setnum(p, "#length", 195)
            run(p)
            if width < 900:
                p.click("#btn-side")
            p.click("#tab-history")
            li = p.locator("#history-list li").first
            info, buttons = li.locator(".meta span").first, li.locator(".meta button")
            line = p.evaluate("parseFloat(getComputedStyle(document.querySelector('#history-list .meta')).fontSize)")
            assert info.bounding_box()["height"] < 2 * line  # one line
            a, b = buttons.nth(0).bounding_box(), buttons.nth(1).bounding_box()
            assert abs(a["y"] - b["y"]) < 2 and b["x"] > a["x"]  # side by side
            assert p.evaluate("document.documentElement.scrollWidth") <= width
            shot(p, f"page-history-{width}.png")
            w.close()


def test_sampling_fields_explain_themselves_in_both_languages(browser, tmp_path):
    """The page draws its settings from the server's one list (/api/config sampling_fields)."""
    with server_with(tmp_path) as c:
        fields = c.get("/api/config").json()["sampling_fields"]
        w = Page(browser, str(c.base_url))
        p = w.page
        assert p.locator("#sampling input[type=number]").count() == len(fields)
        for f in fields:
            assert p.text_content(f"#help-{f['name']}") == f["help"]["zh"]
        for name in ("top_p", "top_p_newline", "allow_p"):
            zh = p.text_content(f"#help-{name}")
            assert zh and len(zh) > 8 and any("\u4e00" <= ch <= "\u9fff" for ch in zh), name
        p.click("#btn-lang")
        for name in ("top_p", "top_p_newline", "allow_p"):
            en = p.text_content(f"#help-{name}")
            assert en and not any("\u4e00" <= ch <= "\u9fff" for ch in en) and len(en.split()) > 5, name
        shot(p, "page-settings-en.png")
        w.close()


def test_ai_written_text_is_marked_and_the_marks_stay_with_the_manuscript(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url), storage=NO_FINISH)
        p = w.page
        write_opening(p, "甲")
        setnum(p, "#length", 6)
        run(p)
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("子丑")  # the author's own
        p.wait_for_selector("body[data-saved=yes]", timeout=15_000)
        doc_id = p.evaluate("AIWriter.doc.id")
        doc = c.get(f"/api/docs/{doc_id}").json()
        assert doc["text"] == "甲乙丙。\n甲乙子丑"
        assert doc["marks"] == {"ai": [[1, 7]], "last": [1, 7]}
        p.wait_for_function("document.querySelectorAll('#marks mark').length === 1")
        assert p.text_content("#marks mark") == "乙丙。\n甲乙"
        shot(p, "page-ai-marks.png")
        w.reload()  # kept with the manuscript
        p.wait_for_function("document.querySelectorAll('#marks mark').length === 1")
        assert p.text_content("#marks mark") == "乙丙。\n甲乙"
        # an edit inside the AI text: the typed char is the author's
        p.evaluate("""() => { const e = document.getElementById('editor'); e.focus(); e.setSelectionRange(3, 3); }""")
        p.keyboard.type("子")
        p.wait_for_function("document.querySelectorAll('#marks mark').length === 2")
        assert p.locator("#marks mark").all_text_contents() == ["乙丙", "。\n甲乙"]
        # the toggle hides the marks (and is remembered)
        p.uncheck("#mark-ai")
        assert p.is_hidden("#marks")
        w.reload()
        assert p.is_hidden("#marks") and not p.is_checked("#mark-ai")
        w.close()


def test_the_page_at_desktop_and_phone_widths(browser, tmp_path):
    with server_with(tmp_path) as c:
        for width, height, name in ((1280, 820, "desktop"), (390, 844, "phone")):
            w = Page(browser, str(c.base_url), width=width, height=height, storage=NO_FINISH)
            p = w.page
            write_opening(p, "甲")
            setnum(p, "#length", 40)
            run(p)
            setnum(p, "#n", 2)
            setnum(p, "#length", 10)
            run(p)
            assert p.evaluate("document.documentElement.scrollWidth") <= width
            shot(p, f"page-{name}.png")
            if width < 900:
                p.click("#btn-side")
                shot(p, f"page-{name}-settings.png")
            w.close()


def test_marked_ranges_follow_edits(browser, tmp_path):
    """web/text.js, run in the browser: how AI-written ranges and the last continuation move
    when text is typed, deleted or replaced around or inside them."""
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        cases = w.page.evaluate("""import('/web/text.js').then((m) => {
          const edit = (a, b) => m.diff(a, b);
          const r = (before, after, ranges) => m.shiftRanges(ranges, edit(before, after));
          const l = (before, after, range) => m.shiftRange(range, edit(before, after));
          return [
            r("甲乙丙丁", "子甲乙丙丁", [[1, 3]]),      // typed before: moves
            r("甲乙丙丁", "甲乙丙丁子", [[1, 3]]),      // typed after: stays
            r("甲乙丙丁", "甲乙子丙丁", [[1, 3]]),      // typed inside: split, the typed char unmarked
            r("甲乙丙丁", "甲丁", [[1, 3]]),            // deleted: gone
            r("甲乙丙丁", "甲乙丁", [[0, 4]]),          // part deleted: shrinks
            l("甲乙丙丁", "甲乙丙丁子", [1, 4]),        // typed after the last continuation: it stays (not at the end any more)
            l("甲乙丙丁", "子甲乙丙丁", [1, 4]),        // typed before: moves
            l("甲乙丙丁", "甲乙子丙丁", [1, 4]),        // edited inside: no longer a continuation to replace
            m.countChars("甲 乙\\n　丙𠀀"),
          ];
        })""")
        assert cases == [[[2, 4]], [[1, 3]], [[1, 2], [3, 4]], [], [[0, 3]], [1, 4], [2, 5], None, 4]
        w.close()
