"""KoboldAI Lite as a client: the requests it makes, replayed against a real server.

Written from what was observed, not from Lite's code: KoboldAI Lite v339 (github.com/LostRuins/lite.koboldai.net,
commit 27eb1dcc, 2026-07-21) and v180 (the page koboldcpp shipped in October 2024, commit 82af11e5) were opened in
Chromium against `aiwriter serve` (see docs/clients.md), and every request they sent was logged: method, path,
headers and body. Lite then wrote in story mode with SSE streaming, with polling and blocking, with Memory, an
Author's Note and a World Info entry, aborted a run, asked for logprobs, banned chars by logit bias and by token ban,
and switched to its OpenAI-compatible mode (text and chat completions). This file sends the same requests, with
the same headers and the same body fields, and checks each answer's status and shape and what reaches the model.

What Lite sends, in short:
- at startup, in this order: GET /api/v1/model, /api/v1/info/version, /api/v1/config/max_context_length,
  /api/extra/version, then (because the version says KoboldCpp) /api/extra/true_max_context_length,
  /api/extra/preloadstory and /sdapi/v1/sd-models. GETs carry `content-type: application/json`.
- a generation is one JSON body (BODY below) to /api/extra/generate/stream (SSE), or to /api/v1/generate (blocking;
  polling adds POST /api/extra/generate/check {"genkey"} every half second while it waits).
- Memory and the World Info entries that matched are joined, each ending in "\\n", into `memory`; the Author's Note
  is put into `prompt` itself as "[Author's note: ...]", `anote_strength` chars before its end.
- abort: POST /api/extra/abort {"genkey"}; logprobs after a stream: POST /api/extra/last_logprobs {"genkey"};
  the status popup: GET /api/extra/perf; "logit bias by string": POST /api/extra/tokencount {"prompt", "special"}.
"""
import json
import threading
import time

import httpx
import pytest
from test_server_api import running

from aiwriter.engine import load_model
from aiwriter.server.app import ServerSettings, create_app

# The generation body of Lite v339 in story mode, field for field as it sent it (its defaults for a local
# KoboldCpp). Tests change prompt, memory, max_length, genkey and the fields a test is about.
BODY = {
    "n": 1, "max_context_length": 1000000, "max_length": 24, "rep_pen": 1.05, "temperature": 0.75, "top_p": 0.92,
    "top_k": 100, "top_a": 0, "typical": 1, "tfs": 1, "rep_pen_range": 360, "rep_pen_slope": 0.7,
    "sampler_order": [6, 0, 1, 3, 4, 2, 5], "memory": "", "trim_stop": True, "genkey": "KCPP4151", "min_p": 0,
    "dynatemp_range": 0, "dynatemp_exponent": 1, "smoothing_factor": 0, "smoothing_curve": 1, "nsigma": 0,
    "banned_tokens": [], "render_special": False, "logprobs": False, "presence_penalty": 0, "logit_bias": {},
    "stop_sequence": [], "use_default_badwordsids": False, "bypass_eos": False, "prompt": "林黛玉进了贾府。",
}
# v180 sent fewer fields (no smoothing_curve, nsigma, logprobs, use_default_badwordsids, bypass_eos) and these
V180_EXTRA = {"rep_pen": 1.07, "temperature": 0.7}
# instruct mode (Lite's default) adds these
INSTRUCT = {"stop_sequence": ["### Instruction:", "### Response:"], "replace_instruct_placeholders": True,
            "prompt": "\n### Instruction:\n写一首诗\n### Response:\n"}
# chat mode: "User:" / "KoboldAI:" turns and these stops
CHAT_STOPS = ["User:", "\nUser ", "\nKoboldAI: "]
MEMORY = "【记忆】宝玉是贾母的孙子。\n"          # Lite's Memory box, with the newline it adds
WORLD_INFO = "【设定】黛玉体弱多病。\n"          # a World Info entry with key 黛玉, matched in the story
ANOTE = "[Author's note: 风格：细腻]"           # Lite's default template "[Author's note: <|>]"

GET_HEADERS = {"accept": "*/*", "content-type": "application/json"}


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A real server (uvicorn on a loopback port) with the embedded model, and a client that sends what Lite
    sends: same-origin requests (Lite served from the server's own address, as KoboldCpp serves it)."""
    model = load_model()  # the embedded default model, as `aiwriter serve` runs it
    app = create_app(ServerSettings(db=str(tmp_path_factory.mktemp("lite") / "docs.db")), model=model, model_name="default")
    with running(app) as url, httpx.Client(base_url=url, timeout=180) as c:
        c.app, c.url = app, url
        c.post_headers = {**GET_HEADERS, "origin": url}
        yield c


def post(c, path, body):
    """A POST as Lite's fetch sends it: JSON text, content-type and the page's origin."""
    return c.post(path, content=json.dumps(body, ensure_ascii=False).encode(), headers=c.post_headers)


def stream_events(c, body) -> list[dict]:
    with c.stream("POST", "/api/extra/generate/stream", content=json.dumps(body, ensure_ascii=False).encode(),
                  headers=c.post_headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode("utf-8")
    blocks = [b for b in raw.split("\n\n") if b.strip()]
    assert all(b.startswith("event: message\ndata: ") for b in blocks), raw[:300]
    return [json.loads(b.split("data: ", 1)[1]) for b in blocks]


def streamed_text(events) -> str:
    assert all(set(e) == {"token", "finish_reason"} for e in events)
    assert all(e["finish_reason"] is None for e in events[:-1]) and events[-1]["finish_reason"] in ("length", "stop")
    return "".join(e["token"] for e in events)


def read_openings(c) -> list[str]:
    """Every opening the scheduler reads, recorded from here on (what the model is given)."""
    sched = c.app.state.scheduler
    read: list[str] = []
    real = sched.writer.start_reading
    sched.writer.start_reading = lambda text, *a, **kw: (read.append(text), real(text, *a, **kw))[1]
    return read


# ----------------------------------------------------------------------------- connecting

def test_startup_requests_in_lites_order(lite):
    model = lite.get("/api/v1/model", headers=GET_HEADERS)
    assert model.status_code == 200 and model.json() == {"result": "aiwriter/default"}
    assert lite.get("/api/v1/info/version", headers=GET_HEADERS).json()["result"].count(".") == 2
    ctx = lite.get("/api/v1/config/max_context_length", headers=GET_HEADERS).json()["value"]
    version = lite.get("/api/extra/version", headers=GET_HEADERS).json()
    # "KoboldCpp" and a version turn on Lite's streaming, polling, abort and the requests below
    assert version["result"] == "KoboldCpp" and version["version"] >= "1.80" and version["protected"] is False
    true_ctx = lite.get("/api/extra/true_max_context_length", headers=GET_HEADERS).json()["value"]
    # an RNN reads any length: at least as much as Lite's local default, so Lite never trims the story
    # (a trimmed front would change the prompt's start every time and defeat the prefix cache)
    assert true_ctx == ctx >= 12288
    preload = lite.get("/api/extra/preloadstory", headers=GET_HEADERS)
    assert preload.status_code == 200 and preload.json() == {}  # no story to preload: Lite starts as usual
    images = lite.get("/sdapi/v1/sd-models", headers={"accept": "*/*"})
    assert images.status_code == 200 and images.json() == []  # no image model (was a 404 in Lite's console)


def test_the_status_popup(lite):
    """Clicking "KoboldCpp 1.80" shows /api/extra/version's and /api/extra/perf's fields as "key: value" lines."""
    perf = lite.get("/api/extra/perf", headers=GET_HEADERS)
    assert perf.status_code == 200
    p = perf.json()
    assert {"last_process", "last_eval", "last_token_count", "total_gens", "queue", "idle", "uptime"} <= set(p)
    assert all(isinstance(v, (int, float, bool)) for v in p.values())  # Lite formats numbers with toFixed(2)


def test_tokencount_with_lites_body_round_trips_chinese(lite):
    r = post(lite, "/api/extra/tokencount", {"prompt": "林黛玉进了贾府。", "special": False})
    assert r.status_code == 200
    got = r.json()
    assert got["value"] == len(got["ids"]) == 8  # one token per char for this model
    tok = lite.app.state.scheduler.model.tokenizer
    assert tok.decode(got["ids"]) == "林黛玉进了贾府。"


# ----------------------------------------------------------------------------- writing

def test_story_mode_sse_memory_world_info_and_authors_note_reach_the_model(lite):
    read = read_openings(lite)
    story = "林黛玉进了贾府。贾母听说，忙问" + ANOTE + "：“你们听说了么？”黛玉见了宝玉。"
    body = {**BODY, "prompt": story, "sampler_seed": 7, "genkey": "KCPP5198", "max_length": 30}
    plain = streamed_text(stream_events(lite, body))
    again = streamed_text(stream_events(lite, body))
    with_memory = streamed_text(stream_events(lite, {**body, "memory": MEMORY + WORLD_INFO}))
    assert plain == again and len(plain) == 30
    assert with_memory != plain  # the memory was read: the same seed writes something else
    # the model read Memory and the World Info entry first, then the story with the Author's Note in it
    assert read[-1] == MEMORY + WORLD_INFO + story
    # blocking mode with the same body writes the same text
    r = post(lite, "/api/v1/generate", {**body, "memory": MEMORY + WORLD_INFO})
    assert r.status_code == 200
    assert r.json() == {"results": [{"text": with_memory, "finish_reason": "length"}]}


def test_a_story_that_is_only_memory(lite):
    """A new story with Memory set and nothing typed: Lite sends an empty prompt."""
    read = read_openings(lite)
    events = stream_events(lite, {**BODY, "prompt": "", "memory": "林黛玉进了贾府。\n", "max_length": 8})
    assert len(streamed_text(events)) == 8 and read[-1] == "林黛玉进了贾府。\n"
    # with no memory either, there is nothing to continue: a clear 400
    r = post(lite, "/api/v1/generate", {**BODY, "prompt": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"


def test_polling_mode_check_shows_the_text_so_far(lite):
    body = {**BODY, "genkey": "KCPP1017", "max_length": 400, "sampler_seed": 3}
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(r=post(lite, "/api/v1/generate", body)))
    t.start()
    seen = []
    deadline = time.time() + 120
    while t.is_alive() and time.time() < deadline:
        r = post(lite, "/api/extra/generate/check", {"genkey": "KCPP1017"})
        assert r.status_code == 200 and set(r.json()) == {"results"}
        seen.append(r.json()["results"][0]["text"])
        time.sleep(0.05)
    t.join(120)
    final = done["r"].json()["results"][0]
    assert final["finish_reason"] == "length" and len(final["text"]) == 400
    partial = [s for s in seen if 0 < len(s) < 400]
    assert partial and all(final["text"].startswith(s) for s in seen)
    # a poll that arrives just after the end still gets the whole text; another genkey gets nothing
    assert post(lite, "/api/extra/generate/check", {"genkey": "KCPP1017"}).json()["results"][0]["text"] == final["text"]
    assert post(lite, "/api/extra/generate/check", {"genkey": "KCPP0000"}).json() == {"results": [{"text": ""}]}
    # without a genkey, nothing: one client never reads another's text
    assert lite.post("/api/extra/generate/check", headers=lite.post_headers).json() == {"results": [{"text": ""}]}


def test_abort_by_genkey_ends_the_stream(lite):
    events: list = []
    body = {**BODY, "genkey": "KCPP3912", "max_length": 10_000}
    t = threading.Thread(target=lambda: events.extend(stream_events(lite, body)))
    t.start()
    deadline = time.time() + 30
    while not post(lite, "/api/extra/generate/check", {"genkey": "KCPP3912"}).json()["results"][0]["text"]:
        assert time.time() < deadline
        time.sleep(0.02)
    r = post(lite, "/api/extra/abort", {"genkey": "KCPP3912"})
    assert r.status_code == 200 and r.json()["success"] is True and r.json()["aborted"] == 1
    t.join(30)
    assert not t.is_alive()
    assert 0 < len("".join(e["token"] for e in events)) < 10_000
    assert post(lite, "/api/extra/abort", {"genkey": "KCPP3912"}).json()["aborted"] == 0  # nothing left to stop


def test_logprobs_in_the_reply_and_after_a_stream(lite):
    body = {**BODY, "logprobs": True, "genkey": "KCPP7234", "max_length": 12, "sampler_seed": 5}
    text = streamed_text(stream_events(lite, body))
    r = post(lite, "/api/extra/last_logprobs", {"genkey": "KCPP7234"})  # what Lite asks right after a stream
    assert r.status_code == 200
    content = r.json()["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == text
    for t in content:
        assert t["logprob"] <= 0 and t["bytes"] == list(t["token"].encode())
        tops = t["top_logprobs"]
        assert 1 <= len(tops) <= 5 and [a["logprob"] for a in tops] == sorted((a["logprob"] for a in tops), reverse=True)
    # blocking mode carries them in the result, as KoboldCpp does
    res = post(lite, "/api/v1/generate", {**body, "genkey": "KCPP1013"}).json()["results"][0]
    assert res["text"] == text and res["logprobs"]["content"] == content
    # a generation that did not ask, or an unknown genkey: null (Lite then shows none)
    streamed_text(stream_events(lite, {**BODY, "genkey": "KCPP0001", "max_length": 2}))
    assert post(lite, "/api/extra/last_logprobs", {"genkey": "KCPP0001"}).json() == {"logprobs": None}
    assert post(lite, "/api/extra/last_logprobs", {"genkey": "nope"}).json() == {"logprobs": None}
    assert post(lite, "/api/extra/last_logprobs", {}).json() == {"logprobs": None}


def test_logit_bias_and_token_bans(lite):
    """Lite's "logit bias by string" asks tokencount for the ids, then sends {"id": -100}; its token ban list
    is banned_tokens. Single chars are banned; a phrase or any other bias is refused, never ignored."""
    comma = post(lite, "/api/extra/tokencount", {"prompt": "，", "special": False}).json()["ids"]
    assert len(comma) == 1
    body = {**BODY, "logit_bias": {str(comma[0]): -100}, "banned_tokens": ["。", "的"], "max_length": 120,
            "sampler_seed": 11}
    text = streamed_text(stream_events(lite, body))
    plain = streamed_text(stream_events(lite, {**body, "logit_bias": {}, "banned_tokens": []}))
    assert len(text) == 120 and not {"，", "。", "的"} & set(text)
    assert {"，", "。", "的"} & set(plain)  # the ban is what kept them out
    for field, value in [("banned_tokens", ["宝玉"]), ("logit_bias", {"5": 3}), ("logit_bias", {"x": -100}),
                         ("logit_bias", {"99999999": -100}), ("logit_bias", [1]), ("banned_tokens", "的")]:
        r = post(lite, "/api/extra/generate/stream", {**BODY, field: value})
        assert r.status_code == 400, (field, value)
        err = r.json()["error"]
        assert err["param"] == field and err["zh"] and err["en"]  # Lite shows this message in its error box


def test_other_modes_bodies(lite):
    """Instruct mode (Lite's default), chat mode and v180's body are accepted and written."""
    assert len(streamed_text(stream_events(lite, {**BODY, **INSTRUCT, "max_length": 6}))) <= 6
    chat = {**BODY, "prompt": "黛玉见了宝玉。\nUser: 你好，今天去哪里？\nKoboldAI:", "stop_sequence": CHAT_STOPS,
            "max_length": 40}
    text = streamed_text(stream_events(lite, chat))
    assert not any(s in text for s in CHAT_STOPS)
    v180 = {k: v for k, v in BODY.items() if k not in ("smoothing_curve", "nsigma", "logprobs",
                                                       "use_default_badwordsids", "bypass_eos")}
    assert post(lite, "/api/v1/generate", {**v180, **V180_EXTRA, "max_length": 4}).status_code == 200
    # a max_length over the server's limit (Lite's slider goes to a quarter of the context) is a clear 400
    r = post(lite, "/api/extra/generate/stream", {**BODY, "max_length": 20000})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_length"


# ----------------------------------------------------------------------------- Lite's OpenAI-compatible mode

def test_openai_mode_text_and_chat_completions(lite):
    """Lite's "OpenAI Compatible API" with the URL http://127.0.0.1:PORT/v1 and any key: it lists the models,
    then streams text completions (story mode) or chat completions (its default when the box is ticked)."""
    auth = {**GET_HEADERS, "authorization": "Bearer sk-none"}
    models = lite.get("/v1/models", headers=auth)
    assert models.status_code == 200 and [m["id"] for m in models.json()["data"]] == ["default"]
    body = {"max_tokens": 16, "model": "default", "temperature": 0.75, "top_p": 0.92, "presence_penalty": 0.050000000000000044,
            "prompt": "宝玉笑道：", "stream": True}
    post_auth = {**auth, "origin": lite.url}
    with lite.stream("POST", "/v1/completions", content=json.dumps(body, ensure_ascii=False).encode(), headers=post_auth) as r:
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.read().decode().split("\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    text = "".join(json.loads(ln)["choices"][0]["text"] for ln in lines[:-1])
    assert len(text) == 16
    chat = {"max_tokens": 16, "model": "default", "temperature": 0.75, "top_p": 0.92,
            "stop": ["### Instruction:", "### Response:"], "presence_penalty": 0.050000000000000044,
            "messages": [{"role": "user", "content": "写一首诗"}, {"role": "assistant", "content": "\n话说三藏在旁边，"},
                         {"role": "user", "content": "你好"}], "stream": True}
    with lite.stream("POST", "/v1/chat/completions", content=json.dumps(chat, ensure_ascii=False).encode(),
                     headers=post_auth) as r:
        assert r.status_code == 200
        lines = [ln[6:] for ln in r.read().decode().split("\n") if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    reply = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert 0 < len(reply) <= 16


def test_openai_mode_sends_the_logit_bias_too(lite):
    """With a logit bias set, Lite's OpenAI mode adds "logit_bias" to the body: -100 bans, other biases are refused."""
    comma = post(lite, "/api/extra/tokencount", {"prompt": "，", "special": False}).json()["ids"][0]
    body = {"max_tokens": 60, "model": "default", "temperature": 0.75, "top_p": 0.92, "prompt": "宝玉笑道：", "seed": 4}
    plain = post(lite, "/v1/completions", body).json()["choices"][0]["text"]
    banned = post(lite, "/v1/completions", {**body, "logit_bias": {str(comma): -100}}).json()["choices"][0]["text"]
    assert "，" in plain and "，" not in banned and len(banned) == 60
    chat = {"max_tokens": 4, "model": "default", "messages": [{"role": "user", "content": "你好"}], "logit_bias": {"5": 2}}
    r = post(lite, "/v1/chat/completions", chat)
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"
