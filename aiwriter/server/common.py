"""What every endpoint shares: reading a JSON body within the size limit, checking fields with
errors that name the field (and never echo the value), safe JSON out, and JobResponse, which
sends a scheduler job's events to the client and cancels the job when the client leaves."""
from __future__ import annotations

import json
import logging
import math
import re

import anyio
from starlette.requests import Request
from starlette.responses import Response

from aiwriter.errors import AIWriterError
from aiwriter.sampling import FIELDS, SamplingSettings
from aiwriter.server.scheduler import Job
from aiwriter.settings import WriteConfig

log = logging.getLogger("aiwriter.server")
_SURROGATE = re.compile("[\ud800-\udfff]")
_FIELD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,60}")
MAX_STOPS, MAX_STOP_CHARS = 16, 200


class ApiError(Exception):
    """An answer with a 4xx (or 5xx) status and a bilingual message naming the field."""

    def __init__(self, status: int, zh: str, en: str, param: str | None = None, headers: dict | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(en)
        self.status, self.zh, self.en, self.param, self.headers, self.kind = status, zh, en, param, headers, kind

    @classmethod
    def of(cls, e: AIWriterError, status: int = 400, param: str | None = None) -> "ApiError":
        status = getattr(e, "status", status)
        return cls(status, e.zh, e.en, getattr(e, "param", param) or param,
                   kind="server_error" if status >= 500 else "invalid_request_error")


def dumps(obj) -> bytes:
    """JSON as UTF-8; a lone surrogate (never valid UTF-8) becomes '?' instead of an exception."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


class SafeJSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return dumps(content)


def error_body(status: int, zh: str, en: str, param: str | None = None, kind: str = "invalid_request_error") -> dict:
    # OpenAI's error shape; zh/en carried separately for the page
    return {"error": {"message": f"{en} / {zh}", "en": en, "zh": zh, "type": kind, "param": param, "code": status}}


def error_response(e: ApiError) -> SafeJSON:
    return SafeJSON(error_body(e.status, e.zh, e.en, e.param, e.kind), status_code=e.status, headers=e.headers)


# ---------------------------------------------------------------------------- request bodies

def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object; 415 unless sent as application/json (a browser can send other
    types cross-site without asking first), 413 past `limit` bytes (checked while reading, not
    only by the declared Content-Length), 400 for anything that is not a JSON object."""
    if not _is_json(request.headers.get("content-type")):
        raise ApiError(415, "请求体应以 Content-Type: application/json 发送", "send the body as Content-Type: application/json",
                       param="content-type", kind="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Content-Length 无效", "invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    if not body.strip():
        raise ApiError(400, "请求体是空的：应为一个 JSON 对象", "empty request body: expected a JSON object")
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):  # bad syntax, bad UTF-8, nesting too deep
        raise ApiError(400, "请求体不是有效的 JSON（UTF-8）", "the request body is not valid JSON (UTF-8)")
    if not isinstance(data, dict):
        raise ApiError(400, "请求体应为一个 JSON 对象 {…}", "the request body must be a JSON object {…}")
    return data


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"请求体太大：上限 {limit} 字节", f"request body too large: the limit is {limit} bytes",
                    kind="request_too_large")


class Fields:
    """Typed access to a JSON object's fields. Null counts as absent (clients send nulls)."""

    def __init__(self, data: dict):
        self.data = data

    def only(self, *allowed: str, ignored: frozenset = frozenset()) -> "Fields":
        """400 naming the first field that is neither read here nor a known field of the API
        that is accepted and ignored: a typo (max_token) must not pass silently."""
        for name in self.data:
            if name not in allowed and name not in ignored:
                shown = name if _FIELD_NAME.fullmatch(name) else "?"  # never echo odd text
                raise ApiError(400, f"未知字段 {shown}", f"unknown field '{shown}'", param=shown)
        return self

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def _bad(self, name, zh, en):
        raise ApiError(400, f"字段 {name} {zh}", f"field '{name}' {en}", param=name)

    def int(self, name: str, default=None, lo: int | None = None, hi: int | None = None):
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
            v = int(v)  # 100.0 from JavaScript
        if isinstance(v, bool) or not isinstance(v, int):
            self._bad(name, "应为整数", "must be an integer")
        self._range(name, v, lo, hi)
        return v

    def float(self, name: str, default=None, lo: float | None = None, hi: float | None = None):
        v = self.data.get(name)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self._bad(name, "应为数字", "must be a number")
        v = float(v) if isinstance(v, float) or abs(v) < 2**53 else math.inf
        if not math.isfinite(v):
            self._bad(name, "应为有限的数字", "must be a finite number")
        self._range(name, v, lo, hi)
        return v

    def _range(self, name, v, lo, hi):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            lo_s = "-∞" if lo is None else f"{lo:g}"
            hi_s = "∞" if hi is None else f"{hi:g}"
            self._bad(name, f"应在 [{lo_s}, {hi_s}] 之间", f"must be in [{lo_s}, {hi_s}]")

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.data.get(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            self._bad(name, "应为 true 或 false", "must be true or false")
        return v

    def str(self, name: str, default=None, max_chars: int | None = None, required: bool = False,
            nonblank: bool = False):
        v = self.data.get(name)
        if v is None:
            if required:
                self._bad(name, "是必填的", "is required")
            return default
        if not isinstance(v, str):
            self._bad(name, "应为字符串", "must be a string")
        self._clean(name, v)
        if nonblank and not v.strip():
            self._bad(name, "是空的", "is empty")
        if max_chars is not None and len(v) > max_chars:
            self._bad(name, f"太长：最多 {max_chars} 个字符", f"is too long: at most {max_chars} characters")
        return v

    def _clean(self, name, v: str) -> None:
        if _SURROGATE.search(v):
            self._bad(name, "含有无效的 Unicode 字符（单独的代理项）", "contains invalid Unicode (a lone surrogate)")

    def prompt(self, name: str = "prompt") -> str:
        """A required, non-blank text; OpenAI clients may send a list holding one string."""
        v = self.data.get(name)
        if isinstance(v, list):
            if len(v) != 1:
                self._bad(name, "应为一个字符串（本服务器一次只续写一个开头）", "must be one string (one prompt per request here)")
            v = v[0]
        if v is None:
            self._bad(name, "是必填的：给出要续写的开头", "is required: give the text to continue")
        if not isinstance(v, str):
            self._bad(name, "应为字符串", "must be a string")
        self._clean(name, v)
        if not v.strip():
            self._bad(name, "是空的：给出要续写的开头", "is empty: give the text to continue")
        return v

    def strs(self, name: str) -> tuple[str, ...]:
        """A string or a list of strings (stop sequences)."""
        v = self.data.get(name)
        if v is None:
            return ()
        items = [v] if isinstance(v, str) else v
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            self._bad(name, "应为字符串或字符串列表", "must be a string or a list of strings")
        if len(items) > MAX_STOPS:
            self._bad(name, f"最多 {MAX_STOPS} 项", f"may hold at most {MAX_STOPS} items")
        for s in items:
            self._clean(name, s)
            if len(s) > MAX_STOP_CHARS:
                self._bad(name, f"的每一项最多 {MAX_STOP_CHARS} 个字符", f"items may be at most {MAX_STOP_CHARS} characters")
        return tuple(s for s in items if s)


# ---------------------------------------------------------------------------- sampling

DEFAULTS = WriteConfig()  # the same defaults as `aiwriter write`
SAMPLING_FIELDS = tuple(field.name for field in FIELDS)


def sampling_from(f: Fields, stop_field: str, aliases: dict[str, str] | None = None) -> SamplingSettings:
    """SamplingSettings from a request: every field of aiwriter.sampling.FIELDS, absent ones at
    `aiwriter write`'s defaults. temperature 0 means greedy (as in OpenAI's API): the most likely
    char every time."""
    a = aliases or {}
    values = {}
    for field in FIELDS:
        read = f.int if field.kind is int else f.float
        default = field.default
        if field.name == "top_p_newline":  # a client that widens top_p keeps the newline top-p at least as wide
            default = max(default, values["top_p"])
        values[field.name] = read(a.get(field.name, field.name), default, field.low, field.high)
    if values["temperature"] == 0:
        values.update(temperature=1.0, top_p=0.0, top_p_newline=0.0)
    try:
        return SamplingSettings(**values, stop_strings=f.strs(stop_field))
    except AIWriterError as e:  # fields were checked above; this is a safety net
        raise ApiError.of(e)


def seed_from(f: Fields, name: str = "seed") -> int | None:
    """A seed (any 64-bit value torch accepts); KoboldAI's sampler_seed uses -1 for random."""
    seed = f.int(name, None, -(2**63), 2**64 - 1)
    if name == "sampler_seed" and seed is not None and seed < 0:
        return None
    return seed


# ---------------------------------------------------------------------------- job responses

class Render:
    """How a job's events become bytes for one API. Subclasses override what they need."""

    stream = False
    media_type = "text/event-stream"

    def open(self, job: Job) -> bytes:
        return b""

    def pieces(self, job: Job, pieces: list[tuple[int, str]]) -> bytes:
        return b""

    def finish(self, job: Job, run: int, reason: str) -> bytes:
        return b""

    def close(self, job: Job) -> bytes:
        return b""

    def failed(self, job: Job, e: ApiError) -> bytes:
        return b"data: " + dumps(error_body(e.status, e.zh, e.en, e.param, e.kind)) + b"\n\n"

    def result(self, job: Job) -> dict:
        raise NotImplementedError


class JobResponse(Response):
    """Waits for the job to start (so a model that fails to load still gets a 4xx), then streams
    its events (SSE) or sends one JSON body at the end. Listens for the client leaving all the
    while: a disconnect cancels the job, which frees its batch slots at the next step."""

    def __init__(self, job: Job, render: Render):
        self.job, self.render = job, render
        self.status_code, self.background = 200, None
        self.init_headers({})

    async def __call__(self, scope, receive, send) -> None:
        job = self.job
        try:
            async with anyio.create_task_group() as tg:
                async def watch():
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    job.cancel()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                await self._respond(send)
                tg.cancel_scope.cancel()
        finally:
            job.cancel()  # nothing if it already ended

    async def _send_json(self, send, status: int, body: dict, headers: dict | None = None) -> None:
        data = dumps(body)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": data})

    async def _respond(self, send) -> None:
        job, r = self.job, self.render
        kind, data = await job.next_event()
        if kind == "error":
            e = ApiError.of(data)
            await self._send_json(send, e.status, error_body(e.status, e.zh, e.en, e.param, e.kind))
            return
        if not r.stream:
            while kind not in ("end", "error"):
                kind, data = await job.next_event()
            if kind == "error":
                e = ApiError.of(data, status=500)
                await self._send_json(send, e.status, error_body(e.status, e.zh, e.en, e.param, "server_error"))
            else:
                await self._send_json(send, 200, r.result(job))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})

        async def out(chunk: bytes):
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

        await out(r.open(job))
        while kind not in ("end", "error"):
            kind, data = await job.next_event()
            if kind == "pieces":
                await out(r.pieces(job, data))
            elif kind == "finish":
                await out(r.finish(job, *data))
            elif kind == "error":
                await out(r.failed(job, ApiError.of(data, status=500)))
        await out(r.close(job))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def submit(request: Request, job: Job) -> Job:
    """Queue a job for this request (429 with Retry-After when the queue is full)."""
    from aiwriter.server.scheduler import QueueFull

    sched = request.app.state.scheduler
    if job.model is not None:
        try:
            sched.catalog.resolve(job.model)
        except AIWriterError as e:
            raise ApiError.of(e, param="model")
    job.bind(_running_loop())
    try:
        sched.submit(job)
    except QueueFull as e:
        raise ApiError(429, f"排队的请求太多，请 {e.retry_after} 秒后再试", f"too many requests queued; retry in {e.retry_after} s",
                       headers={"Retry-After": str(e.retry_after)}, kind="rate_limit_exceeded")
    except AIWriterError as e:
        raise ApiError.of(e, status=503)
    if log.isEnabledFor(logging.INFO):
        # sizes only: a manuscript is private unless the user asked for it (--log-prompts)
        line = (f"job {job.id} ({job.origin}): prompt {len(job.prompt)} chars, n={job.n}, length={job.length}, "
                f"model={job.model or sched.model_name}")
        if getattr(request.app.state.settings, "log_prompts", False):
            line += f", prompt={job.prompt!r}"
        log.info(line)
    return job


def _running_loop():
    import asyncio

    return asyncio.get_running_loop()
