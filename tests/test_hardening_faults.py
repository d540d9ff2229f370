"""Faults: `kill -9` of a real `aiwriter serve` while it saves, a full disk, a database that
cannot be written. (A client that leaves mid-stream: test_server_api.py checks its slots are
freed at the next step, exactly in-process and within a few steps over a real socket.)"""
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_server_api import GREEDY, server_with

from aiwriter.store import Store

FIXTURES = Path(__file__).parent / "fixtures"


def start_server(db: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "aiwriter", "serve", "--no-browser", "--port", "0", "--db", str(db),
           "--model", str(FIXTURES / "aiwriter-v2-tiny.pth"), "--vocab", str(FIXTURES / "aiwriter-v2-vocab.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 90
    for line in proc.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if m:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
            return proc, m.group(1)
        assert time.time() < deadline
    raise AssertionError(f"server exited with {proc.wait()}")


def test_kill_9_during_autosave_keeps_the_database_consistent(tmp_path):
    db = tmp_path / "m.db"
    proc, url = start_server(db)
    confirmed = {}   # doc id -> last text the server confirmed
    in_flight = {}   # doc id -> text of a save that had no answer when the server died
    try:
        with httpx.Client(base_url=url, timeout=10) as c:
            docs = [c.post("/api/docs", json={"title": f"稿{i}", "text": ""}).json() for i in range(3)]
            revs = {d["id"]: d["revision"] for d in docs}
            stop = threading.Event()

            def hammer(doc_id):
                # a writer typing: every save holds the whole text so far, based on the last revision
                text = ""
                with httpx.Client(base_url=url, timeout=10) as w:
                    while not stop.is_set():
                        text += "林黛玉进了贾府。" * 50
                        in_flight[doc_id] = text
                        try:
                            r = w.put(f"/api/docs/{doc_id}", json={"text": text, "revision": revs[doc_id]})
                        except httpx.HTTPError:
                            return  # the server is gone: this save was not confirmed
                        assert r.status_code == 200, r.text
                        revs[doc_id] = r.json()["revision"]
                        confirmed[doc_id] = text
                        del in_flight[doc_id]

            threads = [threading.Thread(target=hammer, args=(d["id"],), daemon=True) for d in docs]
            for th in threads:
                th.start()
            deadline = time.time() + 30
            while min((len(confirmed.get(d["id"], "")) for d in docs)) < 50 * 8 * 10:  # ten saves each at least
                assert time.time() < deadline, "saves too slow"
                time.sleep(0.02)
            os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: as a power cut is to the process
            proc.wait(10)
            stop.set()
            for th in threads:
                th.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    raw = sqlite3.connect(db)  # opening runs WAL recovery, as the next start would
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()
    store = Store(db)
    landed = 0
    for d in docs:
        got = store.get_document(d["id"])
        landed += got["text"] == in_flight.get(d["id"])
        # the last confirmed save is there; at most the one save in flight got in as well
        assert got["text"] in (confirmed[d["id"]], in_flight.get(d["id"])), (len(got["text"]), len(confirmed[d["id"]]))
        newest = store.list_versions(d["id"])[0]
        assert store.get_version(d["id"], newest["id"])["text"] == got["text"]  # the history holds it too
    store.close()
    print(f"kill -9 after {sum(revs.values()) - len(docs)} confirmed saves; {len(in_flight)} in flight, {landed} of them landed")

    # and the restarted server serves it
    proc, url = start_server(db)
    try:
        for d in docs:
            assert httpx.get(f"{url}/api/docs/{d['id']}").json()["text"] in (confirmed[d["id"]], in_flight.get(d["id"]))
    finally:
        proc.kill()
        proc.wait()


def fill_disk(store: Store) -> None:
    """A real SQLITE_FULL: the database may not grow past the pages it has now."""
    with store._lock:
        pages = store._db.execute("PRAGMA page_count").fetchone()[0]
        store._db.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(store: Store) -> None:
    with store._lock:
        store._db.execute("PRAGMA max_page_count = 1073741823")


def test_a_full_disk_is_a_clear_507_and_nothing_is_half_written(tmp_path):
    with server_with(tmp_path) as c:
        store = c.app.state.store
        doc = c.post("/api/docs", json={"title": "t", "text": "原文"}).json()
        fill_disk(store)
        big = "林黛玉进了贾府。" * 20_000
        r = c.put(f"/api/docs/{doc['id']}", json={"text": big, "revision": doc["revision"]})
        assert r.status_code == 507, r.text
        err = r.json()["error"]
        assert err["type"] == "storage_full" and "full" in err["en"] and "磁盘已满" in err["zh"] and "browser" in err["en"]
        for path, body in (("/api/docs", {"title": "新", "text": big}), (f"/api/docs/{doc['id']}/generations", {"text": big})):
            assert c.post(path, json=body).status_code == 507
        got = c.get(f"/api/docs/{doc['id']}").json()  # reading still works; nothing half-written
        assert got["text"] == "原文" and got["revision"] == doc["revision"]
        assert c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY}).status_code == 200
        free_disk(store)  # space freed: the same save now goes through
        r = c.put(f"/api/docs/{doc['id']}", json={"text": big, "revision": doc["revision"]})
        assert r.status_code == 200 and c.get(f"/api/docs/{doc['id']}").json()["text"] == big
        with store._lock:
            assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_failing_commit_does_not_leave_the_store_stuck(tmp_path, monkeypatch):
    store = Store(tmp_path / "m.db")
    doc = store.create_document("t", "原文")
    fill_disk(store)
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.save_document(doc["id"], text="长" * 200_000)
    assert not store._db.in_transaction  # rolled back: the next save can start
    free_disk(store)
    assert store.save_document(doc["id"], text="之后")["text"] == "之后"
    store.close()


@pytest.mark.parametrize("message,status,kind", [("attempt to write a readonly database", 503, "storage_error"),
                                                 ("disk I/O error", 503, "storage_error"),
                                                 ("database is locked", 503, "storage_error")])
def test_other_database_failures_are_clear_errors_not_500(tmp_path, monkeypatch, message, status, kind):
    with server_with(tmp_path) as c:
        doc = c.post("/api/docs", json={"title": "t", "text": "原文"}).json()

        def broken(*a, **k):
            raise sqlite3.OperationalError(message)

        monkeypatch.setattr(Store, "save_document", broken)
        r = c.put(f"/api/docs/{doc['id']}", json={"text": "新的"})
        assert r.status_code == status and r.json()["error"]["type"] == kind and r.headers["retry-after"]
        monkeypatch.undo()
        assert c.put(f"/api/docs/{doc['id']}", json={"text": "新的"}).status_code == 200


def test_a_long_opening_does_not_stall_the_streams_already_writing():
    # a 4 MB body is a few million chars to read; the writers already running go on meanwhile:
    # one step of theirs between every chunk of the long opening
    import asyncio

    from test_server_api import double_model

    from aiwriter.sampling import SamplingSettings
    from aiwriter.server.scheduler import Job, ModelCatalog, Scheduler
    from aiwriter.writer import PREFILL_CHUNK

    model = double_model(delay=0.002)
    sched = Scheduler(ModelCatalog(None, None, default_name="cycle"), model)
    greedy = SamplingSettings(top_p=0.0, top_p_newline=0.0, repetition_penalty=0)
    chunks = 12

    async def go():
        loop = asyncio.get_running_loop()
        a = Job("甲", n=2, length=100_000, settings=greedy)
        b = Job("子丑" * (PREFILL_CHUNK * chunks // 2), n=1, length=3, settings=greedy)
        for job in (a, b):
            job.bind(loop)
        sched.submit(a)
        while (await a.next_event())[0] != "pieces":  # a is writing
            pass
        sched.submit(b)
        while (await b.next_event())[0] != "start":  # b's opening has been read
            pass
        written_during = len(a.texts[0])
        a.cancel()
        events = []
        while (ev := await b.next_event())[0] != "end":
            events.append(ev)
        return written_during, b.texts[0]

    written, b_text = asyncio.run(go())
    sched.close()
    assert written >= chunks - 1  # a kept writing while b was read (before: it waited for all of b)
    assert b_text == "子丑子"  # and b is right: its reading was not disturbed by a's steps


def test_retry_after_is_the_wait_for_a_free_place_not_a_whole_job():
    # one place frees each time a running job ends; telling a client to wait a whole job
    # (as before) let clients that had just finished win every free place (load.py: 7 of 100
    # clients never served in 60 s)
    from test_server_api import double_model

    from aiwriter.server.scheduler import Job, ModelCatalog, Scheduler

    sched = Scheduler(ModelCatalog(None, None, default_name="cycle"), double_model())
    try:
        sched._avg_job_s = 8.0
        assert sched.retry_after() == 8  # nothing running: a whole job
        sched._running = [Job("甲") for _ in range(16)]
        assert sched.retry_after() == 1  # 16 running: one ends every half second
        sched._running = sched._running[:3]
        assert sched.retry_after() == 3
        sched._avg_job_s = 1e6
        assert sched.retry_after() == 60  # capped
    finally:
        sched._running = []
        sched.close()
