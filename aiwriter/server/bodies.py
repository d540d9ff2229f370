"""Reading a request's JSON body: the right content type, within the size limit, in bounded time,
with only a few large bodies read at once, parsed off the event loop when large."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import anyio
from starlette.requests import Request

from aiwriter.server.replies import ApiError


SMALL_BODY = 64 * 1024     # bodies up to this size are read without waiting for a slot
PARSE_OFF_LOOP = 256 * 1024  # larger bodies are parsed in a worker thread


@dataclass
class BodyGuard:
    """How bodies are read: at most `slots` bodies larger than SMALL_BODY at once (the others
    wait, their bytes left in the socket: 100 uploads of 4 MB do not take 400 MB at once), and
    each body within `timeout` seconds of its turn (a client sending a byte now and then does
    not hold a slot for ever)."""

    slots: int = 4
    timeout: float = 60.0
    _sem: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        return self._sem


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
    guard = getattr(request.app.state, "body_guard", None) or BodyGuard()
    if declared is not None and int(declared) <= SMALL_BODY:
        body = await _read(request, limit, guard.timeout)
    else:
        sem = guard.semaphore()
        try:
            with anyio.fail_after(guard.timeout):
                await sem.acquire()
        except TimeoutError:
            raise ApiError(503, "服务器正忙于接收其他大的请求，请稍后再试", "the server is busy receiving other large requests; retry",
                           headers={"Retry-After": "5"}, kind="server_busy")
        try:
            body = await _read(request, limit, guard.timeout)
        finally:
            sem.release()
    if not body.strip():
        raise ApiError(400, "请求体是空的：应为一个 JSON 对象", "empty request body: expected a JSON object")
    try:
        if len(body) > PARSE_OFF_LOOP:  # parsing megabytes would stall every other request
            data = await anyio.to_thread.run_sync(json.loads, body)
        else:
            data = json.loads(body)
    except (ValueError, RecursionError):  # bad syntax, bad UTF-8, nesting too deep
        raise ApiError(400, "请求体不是有效的 JSON（UTF-8）", "the request body is not valid JSON (UTF-8)")
    if not isinstance(data, dict):
        raise ApiError(400, "请求体应为一个 JSON 对象 {…}", "the request body must be a JSON object {…}")
    return data


async def _read(request: Request, limit: int, timeout: float) -> bytes:
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
    except TimeoutError:
        raise ApiError(408, f"请求体没有在 {timeout:g} 秒内传完", f"the request body did not arrive within {timeout:g} s",
                       kind="timeout")
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"请求体太大：上限 {limit} 字节", f"request body too large: the limit is {limit} bytes",
                    kind="request_too_large")
