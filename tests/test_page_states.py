"""The page's 起始状态 / start state picker (web/states.js, issue 16 item 2) in headless Chromium
against the server with the default model: the hint when the states folder is empty, files added
later are listed, the choice is sent as `state` with 续写 and 换个写法 and kept per manuscript
across a reload, and a different state writes a different text from the same seed."""
import json

import aiwriter
import torch
from test_page_features import Page, browser, run, setnum  # noqa: F401  (browser: a fixture)
from test_server_api import server_with

from aiwriter.state_files import save_time_state

OPENING = "从前有座山，山里有座庙。"


def test_state_picker(browser, tmp_path):  # noqa: F811
    models, states = tmp_path / "models", tmp_path / "states"
    models.mkdir()
    model = aiwriter.load_model()
    with server_with(tmp_path, model=model, models_dir=str(models), max_length=200) as c:
        c.post("/api/docs", json={"title": "山", "text": OPENING})
        w = Page(browser, str(c.base_url), storage={"aiwriter.finishSentence": "no"})
        p = w.page
        # no states folder yet: only "none", and a hint where files go and how to make one
        assert p.eval_on_selector_all("#state option", "os => os.map(o => o.value)") == [""]
        hint = p.inner_text("#state-hint")
        assert p.is_visible("#state-hint") and "states" in hint and "--models-dir" in hint and "train --state-only" in hint
        p.click("#btn-lang")
        assert "put .pth / .safetensors state files there" in p.inner_text("#state-hint")
        assert p.inner_text("label:has(#state) > span") == "Start state (style)"
        p.click("#btn-lang")

        # files made now are listed when the writer goes to pick one
        (states / "sub").mkdir(parents=True)
        ts = 0.5 * torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(0))
        save_time_state(states / "style.pth", ts)
        save_time_state(states / "sub" / "b.safetensors", -ts)
        p.focus("#state")
        p.wait_for_function("document.querySelectorAll('#state option').length === 3")
        assert p.eval_on_selector_all("#state option", "os => os.map(o => o.value)") == ["", "style.pth", "sub/b.safetensors"]
        assert p.is_hidden("#state-hint")

        sent = []
        p.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/completions") else None)
        setnum(p, "#seed", 7)
        setnum(p, "#length", 24)
        outs = {}
        for state in ("style.pth", "sub/b.safetensors", "", "style.pth"):
            p.select_option("#state", state)
            run(p, "#btn-rewrite" if outs else "#btn-continue")
            assert not p.is_visible("#banner.error"), p.inner_text("#banner")
            text = p.input_value("#editor")
            assert text.startswith(OPENING) and len(text) > len(OPENING)
            outs.setdefault(state, []).append(text[len(OPENING):])
        assert [b.get("state") for b in sent] == ["style.pth", "sub/b.safetensors", None, "style.pth"]
        assert all(b["seed"] == 7 and b["prompt"] == OPENING for b in sent)
        # same seed: the same state writes the same text, another state (or none) another text
        assert outs["style.pth"][0] == outs["style.pth"][1]
        assert len({outs["style.pth"][0], outs["sub/b.safetensors"][0], outs[""][0]}) == 3

        # kept per manuscript: a reload keeps it, another manuscript starts from none
        w.reload()
        p.wait_for_function("document.getElementById('state').value === 'style.pth'")
        other = c.post("/api/docs", json={"title": "另一篇", "text": "甲"}).json()["id"]
        p.evaluate(f"localStorage.setItem('aiwriter.lastDoc', '{other}')")
        w.reload()
        assert p.evaluate("AIWriter.doc.id") == other
        p.wait_for_function("document.getElementById('state').value === ''")

        # a chosen file that went away is shown as gone and not sent
        p.select_option("#state", "sub/b.safetensors")
        (states / "sub" / "b.safetensors").unlink()
        w.reload()
        p.wait_for_function("document.getElementById('state').selectedOptions[0]?.textContent.includes('已不在')")
        assert p.input_value("#state") == "sub/b.safetensors"
        assert p.evaluate("import('/web/states.js').then((m) => m.chosenState())") is None
        w.close()
