"""What goes back to a client: JSON that is always valid UTF-8, and ApiError, an answer with a
status and a bilingual message naming the field (OpenAI's error shape)."""
from __future__ import annotations

import json

from starlette.responses import Response

from aiwriter.errors import AIWriterError


class ApiError(AIWriterError):
    """An answer with a 4xx (or 5xx) status and a bilingual message naming the field. Raised by
    the endpoints and by the scheduler (a job's error event carries it to its response)."""

    def __init__(self, status: int, zh: str, en: str, param: str | None = None, headers: dict | None = None,
                 kind: str | None = None):
        super().__init__(zh, en)
        self.status, self.param, self.headers = status, param, headers
        self.kind = kind or ("server_error" if status >= 500 else "invalid_request_error")

    @classmethod
    def of(cls, e: AIWriterError, status: int = 400, param: str | None = None) -> "ApiError":
        """An ApiError as it is; any other AIWriterError with this status and field."""
        if isinstance(e, ApiError):
            return e
        return cls(status, e.zh, e.en, param)


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
