"""End to end: a real `aiwriter serve` process and the page in headless Chromium (Debian's
`chromium` package, driven by Playwright). A writer types an opening, continues, rewrites, picks
a candidate, stops a long run; the manuscript survives a reload and a server restart.

Chromium missing is a failure, not a skip: CI installs it (apt-get install chromium)."""
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

FIXTURES = Path(__file__).parent / "fixtures"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
OPENING = "林黛玉进了贾府。"


class Server:
    """`python -m aiwriter serve` on a free port (--port 0); the URL is read from its banner."""

    def __init__(self, tmp_path: Path):
        models = tmp_path / "models"
        models.mkdir(exist_ok=True)
        shutil.copy(FIXTURES / "aiwriter-v2-tiny.pth", models / "tiny-copy.pth")
        shutil.copy(FIXTURES / "aiwriter-v2-vocab.json", models / "tiny-copy.json")
        self.cmd = [sys.executable, "-m", "aiwriter", "serve", "--no-browser",
                    "--db", str(tmp_path / "manuscripts.db"), "--models-dir", str(models),
                    "--model", str(FIXTURES / "aiwriter-v2-tiny.pth"), "--vocab", str(FIXTURES / "aiwriter-v2-vocab.json")]
        self.proc = None
        self.log: list[str] = []

    def start(self, port: int = 0) -> str:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(self.cmd + ["--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        lines: queue.Queue = queue.Queue()

        def pump(out=self.proc.stdout):
            for line in out:
                self.log.append(line)
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, "server exited:\n" + "".join(self.log)
                continue
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if m:
                return m.group(1)
        raise AssertionError("server did not start:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl+C, as a user stops it
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.returncode in (0, -signal.SIGINT, 130), "".join(self.log)


def wait_idle(page, timeout=90_000):
    page.wait_for_selector("body[data-gen=idle]", timeout=timeout)


def editor(page) -> str:
    return page.input_value("#editor")


def set_number(page, selector, value):
    page.fill(selector, str(value))
    page.dispatch_event(selector, "change")


def shot(page, tmp_path, name):
    path = tmp_path / name
    page.screenshot(path=str(path))
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / name)


def test_write_rewrite_pick_then_reload_and_restart(tmp_path):
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed for this test: apt-get install chromium"
    from playwright.sync_api import sync_playwright  # an ImportError fails the test: pip install playwright

    server = Server(tmp_path)
    url = server.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 820}, bypass_csp=True)  # wait_for_function evals a string
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            assert page.inner_text("#btn-continue").startswith("续写")  # Chinese by default

            # exact lengths below: no finishing of sentences past the length (on by default)
            page.uncheck("#finish-sentence")
            # type an opening and continue (Alt+Q): the text streams into the editor
            set_number(page, "#length", 30)
            set_number(page, "#n", 1)
            page.click("#editor")
            page.keyboard.type(OPENING)
            page.keyboard.press("Alt+q")
            wait_idle(page)
            first = editor(page)
            assert first.startswith(OPENING) and len(first) == len(OPENING) + 30
            trace = page.evaluate("AIWriter.trace")
            assert [n for _, n in trace] == list(range(len(OPENING) + 1, len(OPENING) + 31))  # char by char
            assert len({round(t) for t, _ in trace}) >= 3  # ... arriving over time, not in one lump

            # 换个写法 (Alt+E) replaces that continuation with a fresh one; the first stays reachable
            page.keyboard.press("Alt+e")
            wait_idle(page)
            second = editor(page)
            assert second.startswith(OPENING) and len(second) == len(first) and second != first
            assert page.inner_text("#round-label") == "第 2/2 次"
            page.click("#round-prev")
            assert page.text_content("#cand-list .cand .text") == first[len(OPENING):]

            # three candidates side by side; pick the second
            set_number(page, "#n", 3)
            set_number(page, "#length", 12)
            page.click("#btn-continue")
            wait_idle(page)
            cards = page.locator("#cand-list .cand")
            assert cards.count() == 3
            texts = cards.locator(".text").all_text_contents()
            assert all(len(t) == 12 for t in texts)
            assert editor(page) == second  # nothing changes until a pick
            cards.nth(1).locator("button.pick").click()
            picked = second + texts[1]
            assert editor(page) == picked

            # 停止 (Esc) ends a long run early and keeps what was written
            set_number(page, "#n", 1)
            set_number(page, "#length", 5000)
            page.keyboard.press("Alt+q")
            page.wait_for_function(f"document.getElementById('editor').value.length > {len(picked) + 3}")
            page.keyboard.press("Escape")
            wait_idle(page, timeout=10_000)
            final = editor(page)
            assert final.startswith(picked) and len(picked) < len(final) < len(picked) + 5000
            page.wait_for_selector("body[data-saved=yes]", timeout=15_000)
            deadline = time.time() + 10  # the server notices the closed stream at its next step
            while (status := httpx.get(url + "api/status").json())["running_jobs"] and time.time() < deadline:
                time.sleep(0.1)
            assert status["active_streams"] == 0 and status["running_jobs"] == 0  # the stop reached the server

            page.click("#tab-history")
            assert page.locator("#history-list li").count() == 1 + 1 + 3 + 1  # every generation is logged
            page.click("#tab-settings")
            shot(page, tmp_path, "writer-desktop.png")

            # reload: the manuscript comes back
            page.reload()
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            assert editor(page) == final

            # restart the server (new port = a new origin with no localStorage): still there
            server.stop()
            url = server.start()
            page.goto(url)
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            assert editor(page) == final
            versions = page.locator("#version-list li")
            assert versions.count() >= 3
            doc_id = page.evaluate("AIWriter.doc.id")

            # the server goes away while the writer types: the text waits in the browser,
            # and reaches the server once it is back (same port, so the same origin)
            port = int(url.rstrip("/").rsplit(":", 1)[1])
            server.stop()
            page.click("#editor")
            page.keyboard.press("End")
            page.keyboard.type("断网时写的字")
            page.wait_for_function("document.getElementById('save-status').textContent.includes('浏览器')", timeout=15_000)
            draft = page.evaluate(f"JSON.parse(localStorage.getItem('aiwriter.draft.{doc_id}.' + AIWriter.tab)).text")
            assert draft == final + "断网时写的字"
            server.start(port)
            page.reload()
            page.wait_for_selector("body[data-ready=yes]", timeout=30_000)
            page.wait_for_selector("body[data-saved=yes]", timeout=15_000)
            assert editor(page) == draft
            assert httpx.get(f"{url}api/docs/{doc_id}").json()["text"] == draft
            assert page.evaluate(f"Object.keys(localStorage).filter((k) => k.startsWith('aiwriter.draft.{doc_id}'))") == []

            # English toggle, and the page at phone width
            page.click("#btn-lang")
            assert page.inner_text("#btn-continue").startswith("Continue")
            page.set_viewport_size({"width": 390, "height": 844})
            shot(page, tmp_path, "writer-phone.png")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
            assert not errors, errors
            browser.close()
    finally:
        server.stop()
