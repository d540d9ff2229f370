"""OpenAI-compatible API: POST /v1/completions, POST /v1/chat/completions, GET /v1/models.

Chat: for a model with the RWKV World vocab (World / G1 models, trained on that format) the messages
become "System: …\n\nUser: …\n\nAssistant:" and the reply ends at a blank line; for any other model
(the novel models) the reply is the plain continuation of the last message's text.
`echo`, `stream_options.include_usage` work on /v1/completions; `best_of` and `suffix` are refused
(400 naming the field) rather than ignored. When one model is served, a request naming another uses
it and says so (the reply's `model`, and a `notice`), as KoboldCpp does.

max_tokens counts characters (what a writer means by length), not tokens. Sampling fields the
OpenAI API lacks are accepted too: top_p_newline, allow_p, top_k, top_a, min_p, repetition_penalty.
Fields left out take the same defaults as `aiwriter write` (top_p 0.75, top_p_newline 0.9, ...).
`finish_sentence` (AI-Writer's own, 0-200, default 0): past max_tokens, write on to the end of the
sentence, at most that many more chars (the page sends 40).
"""
from __future__ import annotations

import dataclasses
import time
import uuid

from fastapi import APIRouter, Request

from aiwriter.errors import AIWriterError
from aiwriter.server.bodies import read_json
from aiwriter.server.fields import Fields
from aiwriter.server.job_response import JobResponse, Render, submit
from aiwriter.server.jobs import Job
from aiwriter.server.replies import ApiError, dumps
from aiwriter.server.sampling_fields import SAMPLING_FIELDS, logit_bias_bans, sampling_from, seed_from, with_bans

router = APIRouter()

DEFAULT_MAX_TOKENS = 16  # OpenAI's default
DEFAULT_CHAT_MAX_TOKENS = 512  # OpenAI's chat has no small default; `aiwriter write`'s length
MAX_MESSAGES = 1000
# OpenAI fields with no meaning here, and extensions other OpenAI-style servers take, which
# clients send by default: accepted and ignored. Any other field is a 400 naming it.
IGNORED = frozenset({
    "top_logprobs",
    "typical_p", "tfs", "mirostat_mode", "mirostat_tau", "mirostat_eta", "repetition_penalty_range", "min_tokens",
    "ignore_eos", "skip_special_tokens", "truncation_length", "ban_eos_token", "add_bos_token", "smoothing_factor",
    "dry_multiplier", "dry_base", "dry_allowed_length", "dry_sequence_breakers", "xtc_threshold", "xtc_probability",
    "dynatemp_low", "dynatemp_high", "dynatemp_exponent", "grammar_string", "custom_token_bans", "sampler_priority",
})
CHAT_IGNORED = IGNORED | {"parallel_tool_calls", "store", "metadata", "service_tier", "reasoning_effort", "modalities",
                          "prediction", "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier"}
# fields that would change what a client gets back and that this server cannot do: a 400 naming
# the field, never silently ignored
REFUSED = {
    "best_of": ("best_of 不支持：请用 n 取多条再自己挑", "best_of is not supported: ask for n choices and pick"),
    "suffix": ("suffix（中间插入）不支持：RNN 只往后续写", "suffix (insertion) is not supported: the model writes forwards only"),
    "tools": ("不支持工具调用", "tool calls are not supported"),
    "functions": ("不支持函数调用", "function calls are not supported"),
    "tool_choice": ("不支持工具调用", "tool calls are not supported"),
    "function_call": ("不支持函数调用", "function calls are not supported"),
    "audio": ("不支持音频", "audio is not supported"),
}


def _refuse(f: Fields, names) -> None:
    for name in names:
        v = f.data.get(name)
        if v is None or (name == "best_of" and v == 1) or (name == "suffix" and v == ""):
            continue
        zh, en = REFUSED[name]
        raise ApiError(400, f"字段 {name}：{zh}", f"field '{name}': {en}", param=name)


def _model(request: Request, f: Fields) -> tuple[str | None, dict | None]:
    """The model a request names, or None for the one loaded; with a notice when a name this
    server does not know is answered by its only model."""
    name = f.str("model", None, max_chars=500)
    if name is None:
        return None, None
    sched = request.app.state.scheduler
    try:
        sched.catalog.resolve(name)
        return name, None
    except AIWriterError:
        names = sched.catalog.names()
        if len(names) != 1:
            raise
    served = names[0]
    shown = name if len(name) <= 100 else name[:100] + "…"
    return None, {"zh": f"没有模型 {shown}，本服务器只有 {served}，已用它", "en": f"no model '{shown}': this server serves only "
                  f"'{served}' and used it"}


def _stream_options(f: Fields) -> bool:
    v = f.data.get("stream_options")
    if v is None:
        return False
    if not isinstance(v, dict):
        raise ApiError(400, "字段 stream_options 应为对象", "field 'stream_options' must be an object", param="stream_options")
    Fields(v).only("include_usage", "include_obfuscation")
    return Fields(v).bool("include_usage", False)


def _decoder(request: Request, logprobs):
    """Token text for logprobs: the loaded model's tokenizer, one id at a time."""
    if logprobs is None:
        return None
    tok = request.app.state.scheduler.model.tokenizer
    return lambda i: tok.decode([i])


def _logit_bias(request: Request, f: Fields) -> tuple[int, ...]:
    """logit_bias -100 bans a char (ids as the loaded model's tokenizer numbers them); other biases: a 400."""
    return logit_bias_bans(f, request.app.state.scheduler.model.tokenizer.vocab_size)


def _usage(job: Job) -> dict:
    chars = sum(len(t) for t in job.texts)
    prompt = job.info.get("prompt_ids", 0)
    return {"prompt_tokens": prompt, "completion_tokens": chars, "total_tokens": prompt + chars}


class LogprobCursor:
    """Walks a run's recorded (id, logprob, top) entries as its text grows, so each chunk carries
    the tokens of the text it carries (the text a stop string cut off has none)."""

    def __init__(self, decode):
        self.decode = decode
        self.index, self.offset = 0, 0

    def take(self, entries: list | None, text_chars: int) -> list[tuple[str, float, list | None, int]]:
        out = []
        while entries is not None and self.index < len(entries) and self.offset < text_chars:
            tid, lp, top = entries[self.index]
            t = self.decode(tid)
            out.append((t, lp, [(self.decode(a), v) for a, v in top] if top is not None else None, self.offset))
            self.index += 1
            self.offset += len(t)
        return out


def completion_logprobs(items) -> dict:
    return {"tokens": [t for t, _, _, _ in items], "token_logprobs": [lp for _, lp, _, _ in items],
            "top_logprobs": [dict(top) if top is not None else None for _, _, top, _ in items]
            if any(top is not None for _, _, top, _ in items) else None,
            "text_offset": [o for _, _, _, o in items]}


def chat_logprobs(items) -> dict:
    def one(t, lp):
        return {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8", "replace"))}

    return {"content": [{**one(t, lp), "top_logprobs": [one(a, v) for a, v in (top or [])]} for t, lp, top, _ in items],
            "refusal": None}


class CompletionRender(Render):
    def __init__(self, stream: bool, echo: str = "", include_usage: bool = False, notice: dict | None = None,
                 decode=None):
        self.stream, self.echo, self.include_usage, self.notice = stream, echo, include_usage, notice
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.decode = decode  # set when logprobs were asked for
        self._cursors: dict[int, LogprobCursor] = {}
        self._sent: dict[int, int] = {}

    def _logprobs(self, job: Job, run: int, new_chars: int | None = None):
        """The logprobs object for a run's next chunk (new_chars of text), or for all of it (None)."""
        if self.decode is None:
            return None
        cur = self._cursors.setdefault(run, LogprobCursor(self.decode))
        self._sent[run] = self._sent.get(run, 0) + (new_chars or 0)
        limit = len(job.texts[run]) if new_chars is None else self._sent[run]
        return self._format(cur.take(job.logprob_lists[run], limit))

    def _format(self, items):
        return completion_logprobs(items)

    def _body(self, job: Job, choices: list[dict], **extra) -> dict:
        body = {"id": self.id, "object": "text_completion", "created": self.created,
                "model": job.info.get("model", job.model), "choices": choices, **extra}
        if self.notice:
            body["notice"] = self.notice
        return body

    def _chunk(self, job: Job, choices: list[dict], **extra) -> bytes:
        return b"data: " + dumps(self._body(job, choices, **extra)) + b"\n\n"

    def open(self, job):
        if not self.echo:
            return b""
        return b"".join(self._chunk(job, [{"text": self.echo, "index": run, "logprobs": None, "finish_reason": None}])
                        for run in range(job.n))

    def pieces(self, job, pieces):
        return b"".join(self._chunk(job, [{"text": t, "index": run, "logprobs": self._logprobs(job, run, len(t)),
                                           "finish_reason": None}]) for run, t in pieces)

    def finish(self, job, run, reason):
        return self._chunk(job, [{"text": "", "index": run, "logprobs": None, "finish_reason": reason}])

    def close(self, job):
        usage = self._chunk(job, [], usage=_usage(job)) if self.include_usage else b""
        return usage + b"data: [DONE]\n\n"

    def result(self, job):
        return self._body(job, [{"text": self.echo + t, "index": i, "logprobs": self._logprobs(job, i),
                                 "finish_reason": job.finish[i] or "abort"}
                                for i, t in enumerate(job.texts)], usage=_usage(job), seed=job.info.get("seed"))


MAX_FINISH_SENTENCE = 200


@router.post("/v1/completions")
async def completions(request: Request):
    cfg = request.app.state.settings
    f = Fields(await read_json(request, cfg.max_body))
    f.only("prompt", "max_tokens", "n", "stop", "seed", "model", "state", "user", "stream", "echo", "stream_options", "logprobs",
           "best_of", "suffix", "finish_sentence", "logit_bias", *SAMPLING_FIELDS, ignored=IGNORED)
    _refuse(f, ("best_of", "suffix"))
    logprobs = f.int("logprobs", None, 0, 5)
    echo = f.bool("echo", False)
    if logprobs is not None and echo:
        raise ApiError(400, "字段 echo 不能和 logprobs 一起用（本服务器不给开头的 logprobs）",
                       "field 'echo' cannot be combined with logprobs (this server gives no logprobs for the prompt)",
                       param="echo")
    model, notice = _model(request, f)
    prompt = f.prompt("prompt")
    job = Job(
        prompt=prompt,
        length=f.int("max_tokens", DEFAULT_MAX_TOKENS, 1, cfg.max_length),
        n=f.int("n", 1, 1, cfg.max_n),
        settings=with_bans(sampling_from(f, "stop"), _logit_bias(request, f)),
        seed=seed_from(f),
        model=model,
        state=f.str("state", None, max_chars=500),
        origin="openai",
        key=f.str("user", "", max_chars=200),
        logprobs=logprobs,
        # AI-Writer's own: past max_tokens, up to this many more chars to end the sentence (0 = off)
        finish_sentence=f.int("finish_sentence", 0, 0, MAX_FINISH_SENTENCE),
    )
    stream = f.bool("stream", False)
    render = CompletionRender(stream, prompt if echo else "", _stream_options(f), notice, _decoder(request, logprobs))
    submit(request, job)
    return JobResponse(job, render)


# ---------------------------------------------------------------------------- chat

ROLES = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant"}


def _messages(f: Fields) -> list[tuple[str, str]]:
    msgs = f.data.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise ApiError(400, "字段 messages 应为非空的列表", "field 'messages' must be a non-empty list", param="messages")
    if len(msgs) > MAX_MESSAGES:
        raise ApiError(400, f"字段 messages 最多 {MAX_MESSAGES} 条", f"field 'messages' may hold at most {MAX_MESSAGES}",
                       param="messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"字段 {where} 应为对象", f"field '{where}' must be an object", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise ApiError(400, f"字段 {where}.role 应为 system、user 或 assistant", f"field '{where}.role' must be system, "
                           "user or assistant", param=f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):  # parts: only text here
            texts = []
            for part in content:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"字段 {where}.content 只能含文字部分", f"field '{where}.content' may hold text parts "
                                   "only", param=f"{where}.content")
                texts.append(part["text"])
            content = "".join(texts)
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"字段 {where}.content 应为字符串", f"field '{where}.content' must be a string",
                           param=f"{where}.content")
        Fields({"content": content}).str("content")  # lone surrogates
        out.append((role, content))
    return out


def chat_prompt(messages: list[tuple[str, str]], world: bool) -> tuple[str, tuple[str, ...]]:
    """(prompt, extra stop strings). World vocab: the RWKV World / G1 chat format, blank lines
    inside a message folded to one newline (a blank line ends a message); otherwise the text of the
    last message, continued."""
    if not world:
        text = messages[-1][1]
        if not text.strip():
            raise ApiError(400, "最后一条消息是空的：给出要续写的文字", "the last message is empty: give the text to continue",
                           param="messages")
        return text, ()
    turns = []
    for role, content in messages:
        c = content.strip().replace("\r\n", "\n")
        while "\n\n" in c:
            c = c.replace("\n\n", "\n")
        turns.append(f"{ROLES[role]}: {c}")
    if messages[-1][0] == "assistant":  # the reply is begun: continue it
        return "\n\n".join(turns), ("\n\n",)
    return "\n\n".join(turns) + "\n\nAssistant:", ("\n\n",)


class ChatRender(CompletionRender):
    def __init__(self, stream: bool, include_usage: bool, notice: dict | None, trim_start: bool, decode=None):
        super().__init__(stream, "", include_usage, notice, decode)
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.trim_start = trim_start  # "Assistant:" is followed by a space the reply does not include
        self._began: set[int] = set()

    def _body(self, job, choices, **extra):
        body = super()._body(job, choices, **extra)
        body["object"] = "chat.completion.chunk" if self.stream else "chat.completion"
        return body

    def _format(self, items):
        return chat_logprobs(items)

    def _trim(self, run: int, text: str) -> str:
        if self.trim_start and run not in self._began:
            text = text.lstrip(" ")
            if text:
                self._began.add(run)
        return text

    def open(self, job):
        return b"".join(self._chunk(job, [{"index": run, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                           "finish_reason": None}]) for run in range(job.n))

    def pieces(self, job, pieces):
        out = []
        for run, raw in pieces:
            t = self._trim(run, raw)
            lp = self._logprobs(job, run, len(raw))
            if t:
                out.append(self._chunk(job, [{"index": run, "delta": {"content": t}, "logprobs": lp, "finish_reason": None}]))
        return b"".join(out)

    def finish(self, job, run, reason):
        return self._chunk(job, [{"index": run, "delta": {}, "logprobs": None, "finish_reason": reason}])

    def result(self, job):
        choices = []
        for i, t in enumerate(job.texts):
            t = t.lstrip(" ") if self.trim_start else t
            choices.append({"index": i, "message": {"role": "assistant", "content": t, "refusal": None},
                            "logprobs": self._logprobs(job, i), "finish_reason": job.finish[i] or "abort"})
        return self._body(job, choices, usage=_usage(job), seed=job.info.get("seed"))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request):
    cfg = request.app.state.settings
    f = Fields(await read_json(request, cfg.max_body))
    f.only("messages", "max_tokens", "max_completion_tokens", "n", "stop", "seed", "model", "state", "user", "stream",
           "stream_options", "logprobs", "top_logprobs", "response_format", "logit_bias", *REFUSED, *SAMPLING_FIELDS,
           ignored=CHAT_IGNORED)
    _refuse(f, ("tools", "functions", "tool_choice", "function_call", "audio"))
    top = f.int("top_logprobs", None, 0, 20)
    logprobs = (top or 0) if f.bool("logprobs", False) else None
    if top is not None and logprobs is None:
        raise ApiError(400, "字段 top_logprobs 需要 logprobs: true", "field 'top_logprobs' needs logprobs: true", param="top_logprobs")
    rf = f.data.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and rf.get("type") == "text"):
        raise ApiError(400, "字段 response_format：只支持 text", "field 'response_format': only type 'text' is supported",
                       param="response_format")
    model, notice = _model(request, f)
    world = getattr(request.app.state.scheduler.model.tokenizer, "name", "") == "world"
    prompt, stops = chat_prompt(_messages(f), world)
    settings = with_bans(sampling_from(f, "stop"), _logit_bias(request, f))
    if stops:
        settings = dataclasses.replace(settings, stop_strings=tuple(settings.stop_strings) + stops)
    length = f.int("max_completion_tokens", None, 1, cfg.max_length)
    job = Job(
        prompt=prompt,
        length=length if length is not None else f.int("max_tokens", min(DEFAULT_CHAT_MAX_TOKENS, cfg.max_length), 1,
                                                      cfg.max_length),
        n=f.int("n", 1, 1, cfg.max_n),
        settings=settings,
        seed=seed_from(f),
        model=model,
        state=f.str("state", None, max_chars=500),
        origin="openai",
        key=f.str("user", "", max_chars=200),
        logprobs=logprobs,
    )
    stream = f.bool("stream", False)
    render = ChatRender(stream, _stream_options(f), notice, trim_start=world, decode=_decoder(request, logprobs))
    submit(request, job)
    return JobResponse(job, render)


@router.get("/v1/models")
def models(request: Request):
    sched = request.app.state.scheduler
    created = int(request.app.state.started)
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "aiwriter", "loaded": name == sched.model_name}
        for name in sched.catalog.names()
    ]}
