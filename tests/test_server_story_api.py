"""Issue 15's client features through a real uvicorn: KoboldAI `memory` (read first), the KoboldCpp
endpoints Kobold Lite calls, and the OpenAI API driven by the official `openai` package."""
import json
from contextlib import contextmanager

import httpx
import openai
import pytest
import torch
from conftest import CycleNet
from test_server_api import running

from aiwriter.engine import Model, load_model
from aiwriter.server.app import ServerSettings, create_app
from aiwriter.server.openai_api import chat_prompt
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer

CHARS = ["\n", "甲", "乙", "丙", "。", UNKNOWN_CHAR, "子", "丑"]
CYCLE = [1, 2, 3, 4, 0, 5, 7, 6]  # 甲乙丙。\n甲… ; 子丑子丑…
GREEDY = {"temperature": 0, "repetition_penalty": 0}


def double_model():
    return Model(net=CycleNet(CYCLE), tokenizer=CharTokenizer(dict(enumerate(CHARS))), device=torch.device("cpu"),
                 dtype=torch.float32)


@contextmanager
def serve(tmp_path, model, name="cycle"):
    app = create_app(ServerSettings(db=str(tmp_path / "docs.db")), model=model, model_name=name)
    with running(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        c.app, c.url = app, url
        yield c


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    with serve(tmp_path_factory.mktemp("story-api"), double_model()) as c:
        yield c


@pytest.fixture(scope="module")
def oai(client):
    return openai.OpenAI(base_url=client.url + "/v1", api_key="unused", max_retries=0, timeout=30)


# ----------------------------------------------------------------------------- KoboldAI

def test_kobold_memory_changes_the_text_and_is_read_first(tmp_path, f2_paths):
    model = load_model(f2_paths[0], vocab=f2_paths[1])
    with serve(tmp_path, model, "f2") as c:
        sched = c.app.state.scheduler
        read = []
        real = sched.writer.start_reading  # where the scheduler reads every opening
        sched.writer.start_reading = lambda text, *a, **kw: (read.append(text), real(text, *a, **kw))[1]
        body = {"prompt": "他走进了庙门，", "max_length": 40, "sampler_seed": 7, "temperature": 1.0}
        plain = c.post("/api/v1/generate", json=body).json()["results"][0]["text"]
        again = c.post("/api/v1/generate", json=body).json()["results"][0]["text"]
        with_memory = c.post("/api/v1/generate", json={**body, "memory": "从前有一个书生，名叫宁采臣。\n"}).json()["results"][0]["text"]
    assert plain == again  # the seed holds
    assert with_memory != plain
    assert read[-1] == "从前有一个书生，名叫宁采臣。\n他走进了庙门，"  # memory first, then the prompt


LITE_BODY = {  # the fields Kobold Lite (v180) sends to /api/extra/generate/stream
    "n": 1, "max_context_length": 8192, "max_length": 6, "rep_pen": 1.07, "temperature": 0, "top_p": 0.92,
    "top_k": 100, "top_a": 0, "typical": 1, "tfs": 1, "rep_pen_range": 360, "rep_pen_slope": 0.7,
    "sampler_order": [6, 0, 1, 3, 4, 2, 5], "memory": "子丑\n", "trim_stop": True, "genkey": "KCPP1234",
    "min_p": 0, "dynatemp_range": 0, "dynatemp_exponent": 1, "smoothing_factor": 0, "nsigma": 0,
    "banned_tokens": [], "render_special": False, "logprobs": False, "replace_instruct_placeholders": True,
    "presence_penalty": 0, "logit_bias": {}, "prompt": "甲", "quiet": True, "stop_sequence": ["You:"],
    "use_default_badwordsids": False, "bypass_eos": False, "repetition_penalty": 0,
}


def test_kobold_lite_session(client):
    """The requests Kobold Lite makes, in its order: connect, count tokens, write (SSE), poll, abort."""
    assert client.get("/api/v1/model").json()["result"] == "aiwriter/cycle"
    assert client.get("/api/extra/version").json()["result"] == "KoboldCpp"
    perf = client.get("/api/extra/perf").json()
    assert perf["idle"] == 1 and perf["queue"] == 0 and "total_gens" in perf
    assert client.get("/api/extra/preloadstory").json() == {}
    assert client.get("/api/v1/config/max_context_length").json()["value"] > 0
    tc = client.post("/api/extra/tokencount", json={"prompt": "甲乙丙", "special": True})
    assert tc.status_code == 200 and tc.json()["value"] == 3
    with client.stream("POST", "/api/extra/generate/stream", json=LITE_BODY) as r:
        assert r.status_code == 200
        events = [json.loads(line[6:]) for line in r.read().decode().split("\n") if line.startswith("data: ")]
    assert "".join(e["token"] for e in events) == "乙丙。\n甲乙"
    body = {k: v for k, v in LITE_BODY.items() if k != "genkey"}
    r = client.post("/api/v1/generate", json={**body, "genkey": "KCPP5678"})  # blocking mode
    assert r.json()["results"][0]["text"] == "乙丙。\n甲乙"
    assert client.post("/api/extra/generate/check", json={"genkey": "KCPP5678"}).status_code == 200
    assert client.post("/api/extra/abort", json={"genkey": "KCPP5678"}).json()["success"]


def test_kobold_memory_must_be_text(client):
    r = client.post("/api/v1/generate", json={"prompt": "甲", "memory": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "memory"


# ----------------------------------------------------------------------------- OpenAI, official client

def test_openai_completion_with_echo(oai):
    r = oai.completions.create(model="cycle", prompt="甲乙", max_tokens=4, echo=True, extra_body=GREEDY)
    assert r.choices[0].text == "甲乙丙。\n甲" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 4


def test_openai_completion_stream_with_usage_and_echo(oai):
    chunks = list(oai.completions.create(model="cycle", prompt="甲", max_tokens=3, stream=True, echo=True,
                                         stream_options={"include_usage": True}, extra_body=GREEDY))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "甲乙丙。"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3 and chunks[-1].usage.prompt_tokens >= 1


@pytest.mark.parametrize("field, value", [("best_of", 3), ("suffix", "尾")])
def test_openai_refuses_best_of_and_suffix_naming_the_field(oai, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        oai.completions.create(model="cycle", prompt="甲", max_tokens=2, **{field: value})
    assert e.value.body["param"] == field and field in e.value.body["message"]


def test_openai_chat_continues_the_last_message_for_a_novel_model(oai):
    r = oai.chat.completions.create(model="cycle", max_tokens=4, extra_body=GREEDY, messages=[
        {"role": "system", "content": "子丑"}, {"role": "user", "content": "甲乙"}])
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant" and r.choices[0].message.content == "丙。\n甲"
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4


def test_openai_chat_stream(oai):
    stream = oai.chat.completions.create(model="cycle", max_tokens=3, stream=True, stream_options={"include_usage": True},
                                         extra_body=GREEDY, messages=[{"role": "user", "content": [{"type": "text", "text": "甲"}]}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "乙丙。"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 3


def test_openai_chat_bad_messages_name_the_field(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="cycle", messages=[{"role": "wizard", "content": "x"}])
    assert e.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model="cycle", messages=[{"role": "user", "content": "x"}],
                                    tools=[{"type": "function", "function": {"name": "f"}}])
    assert e.value.body["param"] == "tools"


def test_unknown_model_name_uses_the_only_model_and_says_so(oai):
    r = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="甲", max_tokens=2, extra_body=GREEDY)
    assert r.model == "cycle" and r.choices[0].text == "乙丙"
    assert "gpt-3.5-turbo-instruct" in r.notice["en"] and "cycle" in r.notice["zh"]


def test_world_chat_format():
    p, stops = chat_prompt([("system", "你是作家。"), ("user", "写一段\n\n开头"), ("assistant", "好的"), ("user", "继续")], True)
    assert p == "System: 你是作家。\n\nUser: 写一段\n开头\n\nAssistant: 好的\n\nUser: 继续\n\nAssistant:"
    assert stops == ("\n\n",)
    assert chat_prompt([("user", "a"), ("user", "从前")], False) == ("从前", ())


def test_openai_logprobs_on_completions(oai):
    r = oai.completions.create(model="cycle", prompt="甲", max_tokens=5, logprobs=2, extra_body=GREEDY)
    c = r.choices[0]
    assert "".join(c.logprobs.tokens) == c.text == "乙丙。\n甲"
    assert c.logprobs.text_offset == [0, 1, 2, 3, 4]
    assert all(-0.01 < lp <= 0 for lp in c.logprobs.token_logprobs)  # the double is sure of each char
    assert all(len(t) == 2 and max(t, key=t.get) == tok for t, tok in zip(c.logprobs.top_logprobs, c.logprobs.tokens))
    # a stop string cuts the text and its tokens alike
    r = oai.completions.create(model="cycle", prompt="甲", max_tokens=9, logprobs=0, stop=["。"], extra_body=GREEDY)
    assert r.choices[0].logprobs.tokens == ["乙", "丙"] and r.choices[0].logprobs.top_logprobs is None


def test_openai_logprobs_streamed_and_in_chat(oai):
    chunks = list(oai.completions.create(model="cycle", prompt="甲", max_tokens=4, logprobs=1, stream=True, extra_body=GREEDY))
    toks = [t for ch in chunks for c in ch.choices if c.logprobs for t in c.logprobs.tokens]
    assert "".join(toks) == "乙丙。\n"
    r = oai.chat.completions.create(model="cycle", max_tokens=3, logprobs=True, top_logprobs=2, extra_body=GREEDY,
                                    messages=[{"role": "user", "content": "甲"}])
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content == "乙丙。"
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].token == t.token for t in content)
    stream = oai.chat.completions.create(model="cycle", max_tokens=3, logprobs=True, stream=True, extra_body=GREEDY,
                                         messages=[{"role": "user", "content": "甲"}])
    toks = [t.token for ch in stream for c in ch.choices if c.logprobs and c.logprobs.content for t in c.logprobs.content]
    assert "".join(toks) == "乙丙。"


def test_openai_echo_with_logprobs_refused(oai):
    with pytest.raises(openai.BadRequestError) as e:
        oai.completions.create(model="cycle", prompt="甲", max_tokens=2, logprobs=1, echo=True)
    assert e.value.body["param"] == "echo"
