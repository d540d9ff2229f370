"""The page's story panels (issue 15 item 6): 设定 (memory, author's note, budget), 设定集 (the
lorebook editor, import, export) and 上下文 (the context viewer), in headless Chromium against the
server with the test double model; and that 续写 sends the assembled context as its prompt."""
import json

from test_page_features import NO_FINISH, Page, browser, run, setnum, shot, write_opening  # noqa: F401 (fixture)
from test_server_api import server_with

LITE_SAVE = {
    "gamestarted": True, "prompt": "", "memory": "林黛玉，金陵十二钗之首。", "authorsnote": "气氛凄清",
    "anotetemplate": "[Author's note: <|>]", "actions": [], "wisearchdepth": 0,
    "worldinfo": [
        {"key": "黛玉,林妹妹", "keysecondary": "", "keyanti": "", "content": "黛玉体弱多病，爱哭。", "comment": "黛玉",
         "selective": False, "constant": False, "probability": 100, "useprobability": False, "widisabled": False},
        {"key": "贾府", "keysecondary": "荣国府", "keyanti": "", "content": "贾府在京城。", "comment": "",
         "selective": True, "constant": False, "probability": 80, "useprobability": True, "widisabled": False},
        {"key": "", "content": "全书用白话文写。", "comment": "文风", "constant": True},
    ],
}

STORY = {
    "memory": "宝玉住在怡红院。", "authors_note": "", "entries": [
        {"name": "黛玉", "keys": ["黛玉", "/林.?妹妹/"], "content": "黛玉住在潇湘馆。", "order": 120, "scan_depth": 500, "budget": 40},
        {"name": "宝钗", "keys": ["宝钗"], "secondary_keys": ["金锁"], "selective": True, "anti_keys": ["梦"],
         "content": "宝钗戴着金锁。", "probability": 50},
        {"name": "规则", "keys": [], "content": "不写现代词。", "constant": True, "enabled": False},
    ],
}


def tab(p, name):
    if p.is_hidden(f"#tab-{name}"):
        p.click("#btn-side")
    p.click(f"#tab-{name}")


def story_saved(p):
    p.wait_for_selector("body[data-story-saved=yes]", timeout=15_000)


def story_of(c, p):
    return c.get(f"/api/docs/{p.evaluate('AIWriter.doc.id')}/story").json()["story"]


def upload(p, name, data: bytes):
    p.set_input_files("#lb-import-file", {"name": name, "mimeType": "application/json", "buffer": data})


def test_memory_and_an_entry_are_saved_with_the_manuscript(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        tab(p, "story")
        p.fill("#story-memory", "林黛玉，金陵人。")
        p.fill("#story-note", "写得慢一些")
        p.fill("#story-an-depth", "200")
        p.fill("#story-budget", "4000")
        tab(p, "lorebook")
        p.click("#lb-add")
        card = p.locator("#lb-list .lb-entry").last
        card.locator("input[data-field=name]").fill("黛玉")
        card.locator("input[data-field=keys]").fill("黛玉，林妹妹")  # a Chinese comma separates keys too
        card.locator("textarea[data-field=content]").fill("黛玉体弱。")
        card.locator("input[data-field=selective]").check()
        card.locator("input[data-field=secondary_keys]").fill("宝玉")
        card.locator("input[data-field=order]").fill("150")
        assert card.locator("summary .lb-name").text_content() == "黛玉"
        story_saved(p)
        s = story_of(c, p)
        assert (s["memory"], s["authors_note"], s["an_depth"], s["context_budget"]) == ("林黛玉，金陵人。", "写得慢一些", 200, 4000)
        assert [(e["name"], e["keys"], e["secondary_keys"], e["selective"], e["order"], e["content"]) for e in s["entries"]] == \
            [("黛玉", ["黛玉", "林妹妹"], ["宝玉"], True, 150, "黛玉体弱。")]
        shot(p, "page-lorebook.png")
        # a half-typed regular expression: not saved, and the pane says which entry and why
        card.locator("input[data-field=anti_keys]").fill("/林(/")
        p.wait_for_selector("body[data-story-error=yes]", timeout=15_000)
        assert "#1 黛玉" in p.text_content("#lb-save-status")
        assert story_of(c, p)["entries"][0]["anti_keys"] == []
        card.locator("input[data-field=anti_keys]").fill("/林(妹)/")
        story_saved(p)
        assert story_of(c, p)["entries"][0]["anti_keys"] == ["/林(妹)/"]
        assert p.get_attribute("body", "data-story-error") == "no"
        w.reload()
        tab(p, "story")
        assert p.input_value("#story-memory") == "林黛玉，金陵人。" and p.input_value("#story-budget") == "4000"
        tab(p, "lorebook")
        card = p.locator("#lb-list .lb-entry")
        assert card.count() == 1
        card.locator("summary").click()
        assert card.locator("input[data-field=keys]").input_value() == "黛玉, 林妹妹"
        assert card.locator("input[data-field=selective]").is_checked()
        # typed and reloaded before the save: the browser's copy is taken up and saved
        tab(p, "story")
        p.evaluate("AIWriter.story.timer && clearTimeout(AIWriter.story.timer)")
        p.route("**/api/docs/*/story", lambda route: route.abort() if route.request.method == "PUT" else route.continue_())
        p.fill("#story-memory", "改过的记忆")
        p.wait_for_timeout(1200)
        assert story_of(c, p)["memory"] == "林黛玉，金陵人。"  # the server did not get it
        p.unroute("**/api/docs/*/story")
        w.reload()
        story_saved(p)
        assert story_of(c, p)["memory"] == "改过的记忆"
        tab(p, "story")
        assert p.input_value("#story-memory") == "改过的记忆"
        w.errors = [e for e in w.errors if "Failed to fetch" not in e]
        w.close()


def test_import_a_lite_save_and_see_its_entries(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url))
        p = w.page
        tab(p, "lorebook")
        upload(p, "红楼.json", json.dumps(LITE_SAVE, ensure_ascii=False).encode())
        p.wait_for_function("document.querySelectorAll('#lb-list .lb-entry').length === 3")
        assert "红楼.json" in p.text_content("#lb-status")
        names = p.locator("#lb-list .lb-entry summary .lb-name").all_text_contents()
        assert names == ["黛玉", "贾府", "文风"]
        assert p.locator("#lb-list .lb-entry").nth(2).locator(".lb-tags").text_content() == "常驻"
        story_saved(p)
        s = story_of(c, p)
        assert s["memory"] == LITE_SAVE["memory"] and s["authors_note"] == "气氛凄清"
        assert s["entries"][1]["secondary_keys"] == ["荣国府"] and s["entries"][1]["selective"] and s["entries"][1]["probability"] == 80
        tab(p, "story")
        assert p.input_value("#story-memory") == LITE_SAVE["memory"]
        w.close()


def test_export_and_import_round_trip_in_all_three_forms(browser, tmp_path):
    with server_with(tmp_path) as c:
        src = c.post("/api/docs", json={"title": "源"}).json()["id"]
        put = c.put(f"/api/docs/{src}/story", json={"story": {**STORY, "context_budget": 3000, "an_depth": 100}})
        assert put.status_code == 200, put.text
        want = put.json()["story"]
        w = Page(browser, str(c.base_url), storage={"aiwriter.lastDoc": str(src)})
        p = w.page
        p.on("dialog", lambda d: d.accept())
        tab(p, "lorebook")
        assert p.locator("#lb-list .lb-entry").count() == 3
        files = {}
        for fmt in ("lite", "novelai", "aiwriter"):
            p.select_option("#lb-export-format", fmt)
            with p.expect_download() as dl:
                p.click("#lb-export")
            path = tmp_path / dl.value.suggested_filename
            dl.value.save_as(path)
            files[fmt] = path
        assert files["novelai"].name == "源.lorebook" and files["lite"].name == "源.kobold.json"
        for fmt, path in files.items():
            dst = c.post("/api/docs", json={"title": fmt}).json()["id"]
            p.evaluate(f"import('/web/documents.js').then((m) => m.openDoc({dst}))")
            p.wait_for_function(f"AIWriter.story.doc === {dst} && AIWriter.story.data !== null")
            upload(p, path.name, path.read_bytes())
            p.wait_for_function("document.querySelectorAll('#lb-list .lb-entry').length === 3")
            story_saved(p)
            got = c.get(f"/api/docs/{dst}/story").json()["story"]
            if fmt == "novelai":  # NovelAI has no secondary or anti keys, no probability: entries' keys and text
                assert [(e["name"], e["keys"], e["content"], e["constant"], e["enabled"], e["order"]) for e in got["entries"]] == \
                    [(e["name"], e["keys"], e["content"], e["constant"], e["enabled"], e["order"]) for e in want["entries"]]
            else:
                assert got == want, fmt
        w.close()


def test_a_bad_file_shows_the_servers_error_and_changes_nothing(browser, tmp_path):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "坏"}).json()["id"]
        c.put(f"/api/docs/{doc}/story", json={"story": STORY})
        before = c.get(f"/api/docs/{doc}/story").json()["story"]
        w = Page(browser, str(c.base_url), storage={"aiwriter.lastDoc": str(doc)})
        p = w.page
        p.on("dialog", lambda d: d.accept())
        tab(p, "lorebook")
        upload(p, "不是JSON.json", "林黛玉，金陵人。\n".encode())
        p.wait_for_selector("#banner:not([hidden])")
        msg = p.inner_text("#banner")
        assert "不是JSON.json" in msg and "JSON" in msg and "没有改动" in msg
        bad = {**LITE_SAVE, "worldinfo": [LITE_SAVE["worldinfo"][0], {**LITE_SAVE["worldinfo"][1], "content": 5}]}
        upload(p, "坏条目.json", json.dumps(bad).encode())
        p.wait_for_function("document.getElementById('banner').innerText.includes('坏条目.json')")
        assert "#2" in p.inner_text("#banner") and "content" in p.inner_text("#banner")  # names the entry and the field
        assert p.locator("#lb-list .lb-entry").count() == 3
        p.wait_for_timeout(1000)
        assert c.get(f"/api/docs/{doc}/story").json()["story"] == before
        tab(p, "story")
        assert p.input_value("#story-memory") == STORY["memory"]
        w.close()


def test_the_context_viewer_shows_which_entries_fired_and_why(browser, tmp_path):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "看"}).json()["id"]
        story = {**STORY, "entries": STORY["entries"][:2] + [{**STORY["entries"][2], "enabled": True}]}
        c.put(f"/api/docs/{doc}/story", json={"story": story})
        w = Page(browser, str(c.base_url), storage={"aiwriter.lastDoc": str(doc)})
        p = w.page
        write_opening(p, "宝玉进了大观园。")
        tab(p, "context")
        p.wait_for_selector("#ctx-summary")
        assert p.locator("#ctx-entries li[data-status]").all_text_contents() == ["#3 规则常驻 · 最前常驻 · 6 字"]
        assert "宝玉住在怡红院。" in p.text_content("#ctx-text") and "潇湘馆" not in p.text_content("#ctx-text")
        kinds = p.locator("#ctx-parts li").evaluate_all("(ls) => ls.map((l) => l.dataset.kind)")
        assert kinds == ["memory", "constant", "story"]
        # the key typed into the text: the entry fires, and the viewer says which key
        p.click("#editor")
        p.keyboard.press("Control+End")
        p.keyboard.type("林妹妹来了。")
        p.wait_for_selector("#ctx-entries li[data-status=inserted]")
        fired = p.locator("#ctx-entries li[data-status=inserted]")
        assert fired.locator("b").text_content() == "#1 黛玉" and "/林.?妹妹/" in fired.text_content()
        assert "潇湘馆" in p.text_content("#ctx-text")
        # the text is shorter than the note's depth (320): the entry goes before all of it
        assert p.locator("#ctx-parts li").evaluate_all("(ls) => ls.map((l) => l.dataset.kind)") == ["memory", "constant", "entry", "story"]
        used = p.text_content("#ctx-summary")
        ctx = c.post(f"/api/docs/{doc}/context", json={"text": p.input_value("#editor"), "seed": 0}).json()
        assert used.startswith(f"已用 {ctx['chars_used']} / 16000 字")
        shot(p, "page-context.png")
        # a selective entry without its secondary key: shown as not fired, with the reason
        p.keyboard.type("宝钗也来了。")
        p.wait_for_selector("#ctx-entries li[data-status=blocked]")
        assert "金锁" in p.text_content("#ctx-entries li[data-status=blocked]")
        w.close()


def test_continue_sends_the_assembled_context_with_the_memory(browser, tmp_path):
    with server_with(tmp_path) as c:
        w = Page(browser, str(c.base_url), storage=NO_FINISH)
        p = w.page
        prompts = []
        p.on("request", lambda r: prompts.append(json.loads(r.post_data)["prompt"]) if r.url.endswith("/v1/completions") else None)
        write_opening(p, "甲乙")
        run(p)
        assert prompts == ["甲乙"]  # no story settings: the text itself, as before
        tab(p, "story")
        p.fill("#story-memory", "丙丙丙")
        p.fill("#story-note", "子丑")
        run(p)
        text = p.input_value("#editor")
        assert prompts[1].startswith("丙丙丙\n") and "[Author's note: 子丑]" in prompts[1]
        assert text.startswith("甲乙") and "丙丙丙" not in text  # the manuscript holds only the story
        run(p, "#btn-rewrite")
        assert prompts[2] == prompts[1]  # the same base, the same context
        tab(p, "settings")
        setnum(p, "#seed", -12345678901)  # any seed the completion takes: the rolls get it folded into 0..2^31
        run(p, "#btn-rewrite")
        assert len(prompts) == 4 and prompts[3] == prompts[1] and p.is_hidden("#banner")
        story_saved(p)
        assert story_of(c, p)["memory"] == "丙丙丙"
        w.close()


def test_the_english_toggle_changes_the_story_labels(browser, tmp_path):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "英"}).json()["id"]
        c.put(f"/api/docs/{doc}/story", json={"story": STORY})
        w = Page(browser, str(c.base_url), storage={"aiwriter.lastDoc": str(doc)})
        p = w.page
        write_opening(p, "黛玉")
        tab(p, "context")
        p.wait_for_selector("#ctx-entries li[data-status=inserted]")
        assert p.text_content("#tab-story") == "设定" and p.text_content("#tab-lorebook") == "设定集"
        p.click("#btn-lang")
        assert [p.text_content(f"#tab-{n}") for n in ("story", "lorebook", "context")] == ["Story", "Lorebook", "Context"]
        assert "inserted · near the end" in p.text_content("#ctx-entries li[data-status=inserted]")
        assert p.text_content("#ctx-summary").endswith("(read once, then reused)")
        tab(p, "story")
        assert p.locator("#pane-story label span").first.text_content() == "Memory"
        tab(p, "lorebook")
        assert p.text_content("#lb-add") == "Add entry"
        p.locator("#lb-list .lb-entry summary").first.click()
        labels = p.locator("#lb-list .lb-entry").first.locator("label > span").all_text_contents()
        assert "Secondary keys" in labels and not any("\u4e00" <= ch <= "\u9fff" for ch in "".join(labels))
        shot(p, "page-lorebook-en.png")
        w.close()


def test_the_story_panes_fit_a_phone(browser, tmp_path):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "手机"}).json()["id"]
        c.put(f"/api/docs/{doc}/story", json={"story": STORY})
        w = Page(browser, str(c.base_url), width=390, height=844, storage={"aiwriter.lastDoc": str(doc)})
        p = w.page
        write_opening(p, "林妹妹")
        for name in ("story", "lorebook", "context"):
            tab(p, name)
            if name == "lorebook":
                p.locator("#lb-list .lb-entry summary").first.click()
            if name == "context":
                p.wait_for_selector("#ctx-entries li[data-status=inserted]")
            assert p.is_visible(f"#pane-{name}")
            assert p.evaluate("document.documentElement.scrollWidth") <= 390
            assert p.evaluate("document.getElementById('side-panel').scrollWidth <= document.getElementById('side-panel').clientWidth")
            shot(p, f"page-{name}-phone.png")
        w.close()
