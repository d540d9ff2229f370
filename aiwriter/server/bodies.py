"""Reading a request's JSON body: the right content type, within the size limit, in bounded time,
with only a few large bodies read at once, parsed off the event loop when large."""
from __future__ import annotations

import json

from starlette.requests import Request

from aiwriter.server.replies import ApiError


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
