"""The server's HTTP APIs, through a real uvicorn on a loopback port (so streaming, concurrency
and client disconnects behave as they do for users). Most tests use a test double model whose
output is known (see conftest.CycleNet); seed tests use the F2 fixture model."""
import asyncio
import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch
import uvicorn
from conftest import CycleNet

from aiwriter.engine import Model
from aiwriter.sampling import SamplingSettings
from aiwriter.server.app import ServerSettings, create_app
from aiwriter.server.connections import server_config
from aiwriter.server.scheduler import Job, ModelCatalog, Scheduler
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer

CHARS = ["\n", "甲", "乙", "丙", "。", UNKNOWN_CHAR, "子", "丑"]
CYCLE = [1, 2, 3, 4, 0, 5, 7, 6]  # 甲乙丙。\n甲… ; 子丑子丑…
GREEDY = {"temperature": 0, "repetition_penalty": 0}  # exact text from the double


class Double(CycleNet):
    """CycleNet that can be slowed down and records the batch size of every forward."""

    def __init__(self, nxt, delay=0.0):
        super().__init__(nxt)
        self.delay = delay
        self.batches: list[int] = []
        self.explode = False  # simulate a bug or a device error

    def forward(self, ids, state, all_logits=False):
        if self.explode:
            raise RuntimeError("simulated failure")
        self.batches.append(ids.shape[0])
        if self.delay:
            time.sleep(self.delay)
        return super().forward(ids, state, all_logits)


def double_model(delay=0.0, nxt=CYCLE):
    tok = CharTokenizer(dict(enumerate(CHARS)))
    return Model(net=Double(nxt, delay), tokenizer=tok, device=torch.device("cpu"), dtype=torch.float32)


@contextmanager
def running(app):
    """uvicorn in a thread on a free loopback port; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextmanager
def server_with(tmp_path, model=None, **settings):
    model = model or double_model()
    app = create_app(ServerSettings(db=str(tmp_path / "docs.db"), **settings), model=model, model_name="cycle")
    with running(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        client.model = model
        client.app = app
        yield client


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("api"), max_body=64 * 1024) as c:
        yield c


def status(c):
    return c.get("/api/status").json()


def wait_until(pred, timeout=10.0):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def sse_data(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


# ----------------------------------------------------------------------------- info endpoints

def test_page_models_and_info_endpoints(client):
    page = client.get("/")
    assert page.status_code == 200 and "续写" in page.text and "/web/app.js" in page.text
    assert client.get("/web/app.js").status_code == 200 and client.get("/web/style.css").status_code == 200
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["cycle"]
    assert client.get("/api/v1/model").json() == {"result": "aiwriter/cycle"}
    assert client.get("/api/extra/version").json()["result"] == "KoboldCpp"
    assert client.get("/api/v1/info/version").json()["result"]
    assert client.post("/api/extra/tokencount", json={"prompt": "甲乙丙"}).json() == {"value": 3, "ids": [1, 2, 3]}
    cfg = client.get("/api/config").json()
    assert cfg["defaults"]["top_p"] == 0.75 and cfg["defaults"]["top_p_newline"] == 0.9 and cfg["defaults"]["temperature"] == 1.0


# ----------------------------------------------------------------------------- completions

def test_completion_counts_chars_and_writes_n_candidates(client):
    r = client.post("/v1/completions", json={"prompt": "甲乙", "max_tokens": 7, "n": 3, **GREEDY})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["model"] == "cycle"
    assert [c["text"] for c in body["choices"]] == ["丙。\n甲乙丙。"] * 3
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" for c in body["choices"])
    assert body["usage"]["completion_tokens"] == 21


def choice_texts(raw: str) -> list[str]:
    texts: dict[int, str] = {}
    for d in sse_data(raw)[:-1]:
        for c in json.loads(d)["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    return [texts[i] for i in sorted(texts)]


def test_completion_streams_sse_piece_by_piece(client):
    with client.stream("POST", "/v1/completions", json={"prompt": "甲", "max_tokens": 6, "n": 2, "stream": True, **GREEDY}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        data = sse_data(r.read().decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    texts = {0: "", 1: ""}
    for ch in chunks:
        for c in ch["choices"]:
            texts[c["index"]] += c["text"]
            assert len(c["text"]) <= 1  # one char per step: streamed, not buffered
    assert texts == {0: "乙丙。\n甲乙", 1: "乙丙。\n甲乙"}
    finals = [c for ch in chunks for c in ch["choices"] if c["finish_reason"]]
    assert sorted(c["index"] for c in finals) == [0, 1] and all(c["finish_reason"] == "length" for c in finals)


def test_stop_string_ends_before_it(client):
    r = client.post("/v1/completions", json={"prompt": "甲", "max_tokens": 50, "stop": ["。"], **GREEDY}).json()
    assert r["choices"][0]["text"] == "乙丙" and r["choices"][0]["finish_reason"] == "stop"


def test_kobold_generate_and_stream(client):
    r = client.post("/api/v1/generate", json={"prompt": "甲", "max_length": 4, "n": 2, **GREEDY}).json()
    assert r == {"results": [{"text": "乙丙。\n", "finish_reason": "length"}] * 2}
    r = client.post("/api/v1/generate", json={"prompt": "子", "max_length": 9, "stop_sequence": ["子丑子"], **GREEDY}).json()
    assert r["results"][0]["text"] == "丑"
    with client.stream("POST", "/api/extra/generate/stream", json={"prompt": "甲", "max_length": 3, **GREEDY}) as s:
        raw = s.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("event: message\ndata: ") for e in events)
    tokens = [json.loads(d) for d in sse_data(raw)]
    assert "".join(t["token"] for t in tokens) == "乙丙。" and tokens[-1]["finish_reason"] == "length"


def test_seed_reproduces_and_matches_the_cli_writer(tmp_path, f2_paths):
    from aiwriter import load_model
    from aiwriter.sampling import SamplingSettings
    from aiwriter.writer import Piece, Writer

    model = load_model(f2_paths[0], vocab=f2_paths[1])
    with server_with(tmp_path, model=model) as c:
        def go(seed, n=2):
            r = c.post("/v1/completions", json={"prompt": "林黛玉", "max_tokens": 12, "n": n, "seed": seed}).json()
            return [ch["text"] for ch in r["choices"]]

        a, b, other = go(7), go(7), go(8)
    assert a == b and a != other and a[0] != a[1]
    # the same seed through Writer.write (what `aiwriter write --seed 7` runs) gives the same text
    w = Writer(model)
    texts = ["", ""]
    for ev in w.write(w.read("林黛玉"), 2, 12, SamplingSettings(repetition_penalty=1.0), torch.Generator().manual_seed(7)):
        if isinstance(ev, Piece):
            texts[ev.run] += ev.text
    assert texts == a


# ----------------------------------------------------------------------------- scheduling

def _stream_in_thread(c, path, body, out, key):
    def run():
        with c.stream("POST", path, json=body) as r:
            out[key] = (r.status_code, r.read().decode())
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_concurrent_requests_step_in_one_batched_forward(tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.01)) as c:
        out = {}
        t1 = _stream_in_thread(c, "/v1/completions", {"prompt": "甲", "max_tokens": 40, "n": 2, "stream": True, **GREEDY}, out, 1)
        t2 = _stream_in_thread(c, "/v1/completions", {"prompt": "子", "max_tokens": 40, "n": 3, "stream": True, **GREEDY}, out, 2)
        t1.join(20), t2.join(20)
        net = c.model.net
        assert 5 in net.batches  # both requests' streams (2 + 3) went through one forward together
        assert status(c)["max_batch_seen"] == 5
        assert choice_texts(out[1][1]) == ["乙丙。\n甲" * 8] * 2  # each stream kept its own text
        assert choice_texts(out[2][1]) == ["丑子" * 20] * 3


def test_full_queue_answers_429_with_retry_after(tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.02), max_batch=1, max_queue=1) as c:
        out = {}
        long = {"prompt": "甲", "max_tokens": 2000, "stream": True, **GREEDY}
        t1 = _stream_in_thread(c, "/v1/completions", long, out, 1)
        wait_until(lambda: status(c)["active_streams"] == 1)
        t2 = _stream_in_thread(c, "/v1/completions", long, out, 2)  # waits: the batch is full
        wait_until(lambda: status(c)["waiting_jobs"] == 1)
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 5, "n": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"  # could never fit a batch of 1
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 5})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_exceeded"
        assert c.post("/api/extra/abort").json()["success"]  # kobold abort leaves openai jobs alone
        assert status(c)["active_streams"] == 1
        c.app.state.scheduler.abort()  # end both so the threads finish
        t1.join(10), t2.join(10)
        assert not t1.is_alive() and not t2.is_alive()
        assert status(c)["active_streams"] == 0 and status(c)["waiting_jobs"] == 0


def test_kobold_abort_by_genkey_stops_that_generation(tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.01)) as c:
        out = {}
        t = _stream_in_thread(c, "/api/extra/generate/stream", {"prompt": "甲", "max_length": 5000, "genkey": "KCPP1", **GREEDY}, out, 1)
        wait_until(lambda: len(c.post("/api/extra/generate/check", json={"genkey": "KCPP1"}).json()["results"][0]["text"]) >= 3)
        assert c.post("/api/extra/abort", json={"genkey": "other"}).json()["aborted"] == 0
        assert c.post("/api/extra/abort", json={"genkey": "KCPP1"}).json() == {"success": True, "aborted": 1}
        t.join(10)
        assert not t.is_alive() and out[1][0] == 200
        written = "".join(json.loads(d)["token"] for d in sse_data(out[1][1]))
        assert 3 <= len(written) < 5000
        wait_until(lambda: status(c)["active_streams"] == 0)


def test_a_client_that_leaves_frees_its_slots_within_a_step(tmp_path):
    with server_with(tmp_path, model=double_model(delay=0.02)) as c:
        # streaming: read a little, then close the connection
        with httpx.Client(base_url=str(c.base_url)) as other:
            with other.stream("POST", "/v1/completions", json={"prompt": "甲", "max_tokens": 5000, "n": 3, "stream": True, **GREEDY}) as r:
                chunks = r.iter_bytes()  # kept referenced: a dropped iterator closes the connection
                next(chunks)
                assert status(c)["active_streams"] == 3
                steps_at_close = status(c)["steps"]
        wait_until(lambda: status(c)["active_streams"] == 0)
        # the disconnect travels through the OS and the event loop first; the scheduler's own
        # part (one step) is checked exactly in test_cancel_frees_the_slots_at_the_next_step
        assert status(c)["steps"] - steps_at_close <= 25
        # not streaming: the client gives up waiting
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(str(c.base_url).rstrip("/") + "/v1/completions", json={"prompt": "甲", "max_tokens": 5000, **GREEDY}, timeout=0.5)
        wait_until(lambda: status(c)["active_streams"] == 0)
        assert status(c)["written_chars"] < 2000


def test_cancel_frees_the_slots_at_the_next_step():
    model = double_model(delay=0.005)
    sched = Scheduler(ModelCatalog(None, None, default_name="cycle"), model)
    greedy = SamplingSettings(top_p=0.0, top_p_newline=0.0)

    async def go():
        loop = asyncio.get_running_loop()
        a, b = Job("甲", n=2, length=10_000, settings=greedy), Job("子", n=3, length=10_000, settings=greedy)
        for job in (a, b):
            job.bind(loop)
            sched.submit(job)
        seen = set()
        while len(seen) < 2:  # both have written something: they share the batch
            for job in (a, b):
                if not job._queue.empty() and (await job.next_event())[0] == "pieces":
                    seen.add(job.id)
            await asyncio.sleep(0.001)
        k = len(model.net.batches)
        a.cancel()
        while (await a.next_event())[0] != "end":
            pass
        await asyncio.sleep(0.05)
        b.cancel()
        return model.net.batches[k - 1:]

    after = asyncio.run(go())
    sched.close()
    assert after[0] == 5  # both jobs were in one forward when a was cancelled
    assert after[1] in (5, 3) and set(after[2:]) == {3}  # at most the forward under way still held a's rows


def test_prefix_cache_reads_only_the_new_part(client):
    before = status(client)
    calls = client.model.net.calls
    n0 = len(calls)
    opening = "。子丑丙" * 50  # no earlier request began with "。": nothing of it is cached yet
    client.post("/v1/completions", json={"prompt": opening, "max_tokens": 1, **GREEDY})
    mid = status(client)
    assert mid["read_ids"] - before["read_ids"] == len(opening) + 1  # + the seed's leading "\n"
    client.post("/v1/completions", json={"prompt": opening + "甲乙", "max_tokens": 1, **GREEDY})
    after = status(client)
    assert after["read_ids"] - mid["read_ids"] == 2
    assert after["reused_ids"] - mid["reused_ids"] == len(opening) + 1
    assert sum(calls[n0:]) == len(opening) + 1 + 2  # the model itself saw nothing twice


def test_requests_can_name_a_model_from_the_models_folder(tmp_path):
    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "sub" / "other.pth").write_bytes(b"x")
    (models / "notes.txt").write_text("not a model")
    (tmp_path / "outside.pth").write_bytes(b"x")
    loaded = []

    def loader(path, vocab=None, device="cpu", dtype=None):
        loaded.append(path)
        return double_model(nxt=[6, 6, 6, 6, 6, 6, 6, 6])  # writes 子 forever

    app = create_app(ServerSettings(db=str(tmp_path / "d.db"), models_dir=str(models)), model=double_model(),
                     loader=loader, model_name="cycle")
    with running(app) as url, httpx.Client(base_url=url) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["cycle", "sub/other.pth"]
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, "model": "sub/other.pth", **GREEDY}).json()
        assert r["choices"][0]["text"] == "子子子" and r["model"] == "sub/other.pth"
        assert loaded == [(models / "sub" / "other.pth").resolve()]
        assert c.get("/api/v1/model").json()["result"] == "aiwriter/sub/other.pth"
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, "model": "cycle", **GREEDY}).json()
        assert r["choices"][0]["text"] == "乙丙。"  # and back
        for bad in ("../outside.pth", "/etc/passwd", "sub/../../outside.pth", "C:/x.pth", "sub\\other.pth"):
            r = c.post("/v1/completions", json={"prompt": "甲", "model": bad})
            assert r.status_code == 400 and r.json()["error"]["param"] == "model", bad
        for unknown in ("notes.txt", "missing.pth", "gpt-3.5-turbo-instruct"):
            r = c.post("/v1/completions", json={"prompt": "甲", "model": unknown})
            assert r.status_code == 404 and r.json()["error"]["param"] == "model", unknown
        assert loaded == [(models / "sub" / "other.pth").resolve()]


def test_a_model_file_that_fails_to_load_is_a_422_and_the_old_model_stays(tmp_path, f2_paths):
    models = tmp_path / "models"
    models.mkdir()
    (models / "broken.pth").write_bytes(b"not a checkpoint at all")
    shutil.copy(f2_paths[0], models / "no-vocab.pth")  # a real model, but no NAME.json beside it
    with server_with(tmp_path, models_dir=str(models)) as c:
        for name, words in (("broken.pth", ""), ("no-vocab.pth", "vocab")):
            r = c.post("/v1/completions", json={"prompt": "甲", "model": name})
            assert r.status_code == 422 and r.json()["error"]["param"] == "model", name
            assert words in r.json()["error"]["en"]
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "乙丙。"
        assert status(c)["model"] == "cycle"


def test_a_failing_model_gives_a_json_500_and_the_server_keeps_serving(tmp_path):
    with server_with(tmp_path) as c:
        c.model.net.explode = True
        r = c.post("/v1/completions", json={"prompt": "丙丙丙", "max_tokens": 3})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        with c.stream("POST", "/v1/completions", json={"prompt": "甲", "max_tokens": 3, "stream": True}) as s:
            assert s.status_code == 500
        c.model.net.explode = False
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "乙丙。"


# ----------------------------------------------------------------------------- bad input

LONE = "\ud800"
BAD = [
    # (path, raw body, field the error must name)
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": " \n\u3000"}, "prompt"),
    ("/v1/completions", {"max_tokens": 5}, "prompt"),
    ("/v1/completions", {"prompt": 123}, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": "甲" + LONE}, "prompt"),
    ("/v1/completions", {"prompt": "甲", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "甲", "n": 99}, "n"),
    ("/v1/completions", {"prompt": "甲", "n": "2"}, "n"),
    ("/v1/completions", {"prompt": "甲", "max_tokens": -1}, "max_tokens"),
    ("/v1/completions", {"prompt": "甲", "max_tokens": 10**30}, "max_tokens"),
    ("/v1/completions", {"prompt": "甲", "max_tokens": 1.5}, "max_tokens"),
    ("/v1/completions", {"prompt": "甲", "temperature": "hot"}, "temperature"),
    ("/v1/completions", {"prompt": "甲", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "甲", "temperature": True}, "temperature"),
    ("/v1/completions", {"prompt": "甲", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "甲", "top_p_newline": -0.1}, "top_p_newline"),
    ("/v1/completions", {"prompt": "甲", "allow_p": 2}, "allow_p"),
    ("/v1/completions", {"prompt": "甲", "presence_penalty": -2}, "presence_penalty"),
    ("/v1/completions", {"prompt": "甲", "frequency_penalty": "x"}, "frequency_penalty"),
    ("/v1/completions", {"prompt": "甲", "stop": 5}, "stop"),
    ("/v1/completions", {"prompt": "甲", "stop": ["。", LONE]}, "stop"),
    ("/v1/completions", {"prompt": "甲", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "甲", "seed": 2**70}, "seed"),
    ("/v1/completions", {"prompt": "甲", "model": 5}, "model"),
    ("/api/v1/generate", {"prompt": "甲", "max_length": 0}, "max_length"),
    ("/api/v1/generate", {"prompt": "甲", "stop_sequence": [1]}, "stop_sequence"),
    ("/api/extra/generate/stream", {"prompt": ""}, "prompt"),
    ("/api/extra/tokencount", {"prompt": LONE}, "prompt"),
    ("/api/docs", {"title": LONE}, "title"),
    ("/api/docs", {"text": ["not text"]}, "text"),
]


@pytest.mark.parametrize("path,body,field", BAD, ids=[f"{p}:{f}:{i}" for i, (p, _, f) in enumerate(BAD)])
def test_bad_fields_get_a_4xx_naming_the_field(client, path, body, field):
    escaped = json.dumps(body).encode()  # non-ASCII as \u escapes (a lone surrogate as \ud800)
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")  # ... and as raw bytes
    for content in (escaped, raw):
        r = client.post(path, content=content, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, r.text
        r.content.decode("utf-8")  # a valid UTF-8 body even when the input was not
        err = r.json()["error"]
        assert err["param"] == field and err["zh"] and err["en"] and field in err["en"]
        assert "hot" not in r.text and "not text" not in r.text and "\\ud800" not in r.text  # values never echoed


@pytest.mark.parametrize("raw,status", [
    (b"{bad json", 400),
    (b"", 400),
    (b"[1, 2]", 400),
    (b'"just a string"', 400),
    (b"\xff\xfe{}", 400),                       # not UTF-8
    (b"[" * 100_000 + b"]" * 100_000, 413),     # over the (64 KB) limit of this server
    (b"[" * 30_000 + b"]" * 30_000, 400),       # nested too deep for the parser
    (b'{"prompt": "' + "甲".encode() * 30_000 + b'"}', 413),
    (b'{"prompt": "\xed\xa0\x80"}', 400),        # a surrogate encoded as UTF-8 bytes (invalid UTF-8)
    (b'{"prompt": "a", "temperature": NaN}', 400),
    (b'{"prompt": "a", "top_p": Infinity}', 400),
])
def test_malformed_bodies_get_a_clear_4xx(client, raw, status):
    r = client.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == status
    err = r.json()["error"]
    assert err["code"] == status and err["zh"] and err["en"]


def test_body_limit_applies_without_content_length(client):
    def chunks():
        for _ in range(100):
            yield b" " * 1024
    r = client.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_errors_never_crash_and_the_server_keeps_serving(client):
    for path in ("/nope", "/api/docs/abc", "/api/docs/0", f"/api/docs/{2**80}", "/api/docs/999999/versions"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"], path
    assert client.delete("/v1/completions").status_code == 405
    assert client.post("/v1/completions", json={"prompt": "甲", "max_tokens": 2, **GREEDY}).status_code == 200


# ----------------------------------------------------------------------------- manuscripts

def test_documents_api(client):
    d = client.post("/api/docs", json={"title": "红楼", "text": "林黛玉"}).json()
    doc = f"/api/docs/{d['id']}"
    assert d["revision"] == 1 and d["text"] == "林黛玉"
    assert any(x["id"] == d["id"] for x in client.get("/api/docs").json()["documents"])
    s = client.put(doc, json={"text": "林黛玉进了贾府", "revision": 1}).json()
    assert s["revision"] == 2
    stale = client.put(doc, json={"text": "旧标签页", "revision": 1})
    assert stale.status_code == 409 and stale.json()["current"]["revision"] == 2
    assert client.put(doc, json={"title": "红楼梦", "revision": 2}).json()["title"] == "红楼梦"
    assert client.put(doc, json={"text": "x", "reason": "hack"}).status_code == 400
    client.put(doc, json={"text": "林黛玉进了贾府。续写", "reason": "generation"})
    versions = client.get(f"{doc}/versions").json()["versions"]
    assert [v["reason"] for v in versions] == ["generation", "autosave", "create"]
    first = client.get(f"{doc}/versions/{versions[-1]['id']}").json()
    assert first["text"] == "林黛玉"
    restored = client.post(f"{doc}/versions/{versions[-1]['id']}/restore").json()
    assert restored["text"] == "林黛玉" and client.get(doc).json()["text"] == "林黛玉"
    ex = client.get(f"{doc}/export")
    assert ex.text == "林黛玉" and ex.headers["content-type"].startswith("text/plain")
    assert "attachment" in ex.headers["content-disposition"] and "filename*=UTF-8''%E7%BA%A2" in ex.headers["content-disposition"]
    g = client.post(f"{doc}/generations", json={"text": "续写的字", "model": "cycle", "settings": {"top_p": 0.75}})
    assert g.status_code == 201
    assert client.get(f"{doc}/generations").json()["generations"][0]["text"] == "续写的字"
    assert client.delete(doc).json() == {"deleted": d["id"]}
    assert client.get(doc).status_code == 404


def test_other_sites_are_refused_unless_allowed(client):
    # the model APIs too: CORS is opt-in (--cors-origin, tested in test_hardening_security.py)
    evil = {"origin": "http://evil.example"}
    r = client.post("/api/docs", json={"title": "x"}, headers=evil)
    assert r.status_code == 403
    own = {"origin": str(client.base_url).rstrip("/")}
    assert client.post("/api/docs", json={"title": "x"}, headers=own).status_code == 201
    assert client.get("/api/docs", headers={"host": "evil.example"}).status_code == 403  # DNS rebinding
    pre = client.options("/v1/completions", headers={**evil, "access-control-request-method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    r = client.post("/v1/completions", json={"prompt": "甲", "max_tokens": 1, **GREEDY}, headers=evil)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    r = client.post("/v1/completions", json={"prompt": "甲", "max_tokens": 1, **GREEDY}, headers=own)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_server_writes_with_the_int4_mode(tmp_path):
    """`aiwriter serve --dtype int4`: the embedded model in the int4 mode serves batched completions."""
    from aiwriter.speed.int4 import Int4Net

    app = create_app(ServerSettings(db=str(tmp_path / "d.db"), dtype="int4"))
    assert isinstance(app.state.scheduler.model.net, Int4Net)
    with running(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        r = c.post("/v1/completions", json={"prompt": "话说那日宋江在山寨中，忽听得", "max_tokens": 30, "n": 2, "seed": 1})
        assert r.status_code == 200, r.text
        texts = [ch["text"] for ch in r.json()["choices"]]
        assert len(texts) == 2 and all(len(t) == 30 and sum("\u4e00" <= x <= "\u9fff" for x in t) > 10 for t in texts)
