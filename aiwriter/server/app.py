"""The FastAPI app: the writing page at /, the OpenAI and KoboldAI APIs, manuscripts.

create_app(settings) loads the model and opens the manuscript database; a Scheduler thread owns
the model from then on. Every error leaves as JSON with a 4xx status naming the field, never a
traceback; a bug gives a JSON 500 and the server keeps serving.
"""
from __future__ import annotations

import hmac
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

import aiwriter
from aiwriter import sampling
from aiwriter.errors import AIWriterError
from aiwriter.server.bodies import BodyGuard
from aiwriter.server.catalog import ModelCatalog, StateCatalog
from aiwriter.server.replies import ApiError, SafeJSON, dumps, error_body, error_response
from aiwriter.server.sampling_fields import DEFAULTS
from aiwriter.server.scheduler import Scheduler
from aiwriter.store import NotFound, Store, default_db_path

WEB = Path(__file__).resolve().parent.parent / "web"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# the page runs only its own files, talks only to this server, and cannot be framed by another
# site (which could trick a writer into clicking 删除)
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# every response carries them (API answers and errors too): nothing this server sends may be
# framed by another site or read as another type
_SECURITY_HEADERS = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
API_PREFIXES = ("/v1/", "/api/")  # everything that reads or changes data or runs the model


@dataclass
class ServerSettings:
    model: str | None = None       # model file; None = the embedded default model
    vocab: str | None = None       # vocab for that model (else NAME.json / vocab.json beside it)
    models_dir: str | None = None  # *.pth / *.safetensors here are offered in the model picker
    states_dir: str | None = None  # state files a request may name (`state`); None = "states" beside models_dir
    state_cache_bytes: int = 0     # disk cache of read states (survives restarts); 0 = off (serve turns it on)
    db: str | None = None          # SQLite file for manuscripts; None = the per-user default
    host: str = "127.0.0.1"
    device: str = "cpu"
    dtype: str | None = None
    max_body: int = 4 * 2**20      # bytes; larger bodies get 413
    max_batch: int = 16            # streams stepped together in one forward
    max_queue: int = 32            # requests waiting for room; more get 429
    max_n: int = 8                 # continuations per request
    max_length: int = 10_000       # chars per continuation
    cache_bytes: int = 256 * 2**20  # prefix cache (saved states) budget
    api_key: str | None = None     # required on every API route when set (always off loopback)
    insecure: bool = False         # off loopback without a key: only when asked for in so many words
    cors_origins: tuple = ()       # other web pages allowed to call the APIs ("*" = any)
    log_prompts: bool = False      # logs carry sizes only, unless this is set
    # slow and idle clients (see connections.py and bodies.py)
    body_slots: int = 4            # bodies over 64 KB read at once; the others wait in their sockets
    body_timeout: float = 60.0     # seconds a body may take to arrive
    header_timeout: float = 10.0   # seconds a connection may take to send a request's headers
    max_connections: int = 1000    # open connections; past it the longest-idle ones are closed
    max_backlog: int = 1024        # chars per stream a client may leave unread before its job pauses
    stall_timeout: float = 60.0    # seconds a paused job (and an unread stream) waits, then is stopped
    turn_after: float = 2.0        # seconds a request waits for room before the longest-running job pauses for it


def create_app(settings: ServerSettings | None = None, model=None, loader=None, model_name: str | None = None) -> FastAPI:
    """model / loader / model_name: inject an already-loaded Model (and how to load others),
    for tests and embedding; by default the model is loaded from settings.model."""
    settings = settings or ServerSettings()
    check_exposure(settings)
    default_path = settings.model or aiwriter.DEFAULT_MODEL
    catalog = ModelCatalog(default_path, settings.models_dir, settings.vocab,
                           default_name=model_name or ("default" if settings.model is None else None))
    store = Store(settings.db or default_db_path())
    try:
        scheduler = Scheduler(catalog, model, device=settings.device, dtype=settings.dtype, max_batch=settings.max_batch,
                              max_queue=settings.max_queue, cache_bytes=settings.cache_bytes, loader=loader,
                              max_backlog=settings.max_backlog, stall_timeout=settings.stall_timeout,
                              turn_after=settings.turn_after, states=StateCatalog(states_dir(settings)),
                              state_cache_bytes=settings.state_cache_bytes)
    except BaseException:
        store.close()
        raise

    @asynccontextmanager
    async def lifespan(app):
        yield
        scheduler.close()
        store.close()

    # no Swagger UI page: it loads its script from a CDN (a third party's code on the API's own
    # origin); the schema is at /api/openapi.json for any tool that reads OpenAPI
    app = FastAPI(title="AI-Writer", version=aiwriter.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings, app.state.store, app.state.scheduler = settings, store, scheduler
    app.state.started = time.time()
    app.state.body_guard = BodyGuard(settings.body_slots, settings.body_timeout)

    _error_handlers(app)
    from aiwriter.server import documents, kobold_api, openai_api, story_api

    app.include_router(openai_api.router)
    app.include_router(kobold_api.router)
    app.include_router(documents.router)
    app.include_router(story_api.router)

    @app.get("/api/status")
    def status():
        return {"aiwriter": aiwriter.__version__, **scheduler.status()}

    @app.get("/api/states")
    def states():
        """State files a request may name in its `state` field (the states folder)."""
        return {"states": scheduler.states.names()}

    @app.get("/api/config")
    def config():
        """What the page needs to draw its controls: defaults and limits."""
        return {
            "version": aiwriter.__version__, "model": scheduler.model_name, "models": catalog.names(),
            "states": scheduler.states.names(),
            "max_n": settings.max_n, "max_length": settings.max_length,
            "defaults": {**sampling.DEFAULTS, "length": DEFAULTS.length, "runs": DEFAULTS.runs},
            "sampling_fields": [f.to_json() for f in sampling.FIELDS],  # names, ranges, labels, help (zh, en)
        }

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache", **PAGE_HEADERS})

    app.mount("/web", _Static(directory=WEB), name="web")
    app.add_middleware(GuardMiddleware, loopback_only=settings.host in LOOPBACK, api_key=settings.api_key,
                       cors_origins=settings.cors_origins)
    return app


class _Static(StaticFiles):
    """The page's files, revalidated on every load (ETag), so an upgrade shows at once."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(PAGE_HEADERS)
        return response


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return error_response(e)

    @app.exception_handler(AIWriterError)
    async def aiwriter_error(request, e: AIWriterError):
        return error_response(ApiError(404 if isinstance(e, NotFound) else 400, e.zh, e.en))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e: RequestValidationError):
        # name the parameter; never echo its value
        loc = next(iter(e.errors()), {}).get("loc", ())
        name = str(loc[-1]) if loc else "?"
        return error_response(ApiError(422 if loc[:1] != ("path",) else 404,
                                       f"参数 {name} 无效", f"invalid parameter '{name}'", param=name))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        if e.status_code == 404:
            return error_response(ApiError(404, "没有这个地址", "no such endpoint", kind="not_found"))
        if e.status_code == 405:
            return error_response(ApiError(405, "这个地址不接受这种请求方法", "method not allowed here"))
        return SafeJSON(error_body(e.status_code, "请求无效", "bad request"), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):
        traceback.print_exc()
        return error_response(ApiError(500, f"内部错误（{type(e).__name__}），请报告此问题",
                                       f"internal error ({type(e).__name__}); please report it", kind="server_error"))


class GuardMiddleware:
    """Keeps other web sites and other machines out:
    - on loopback, Host must be a loopback name (a DNS-rebinding page has its own name in Host);
    - a request from a browser page of another origin is refused unless that origin was allowed
      with --cors-origin (then it gets CORS headers); the page's own origin needs nothing;
    - with an API key, every API route (/v1/…, /api/…) wants it as `Authorization: Bearer KEY`
      or `X-API-Key: KEY`; the page itself (/, /web/…) holds no data and loads without it."""

    def __init__(self, app, loopback_only: bool = True, api_key: str | None = None, cors_origins=()):
        self.app, self.loopback_only = app, loopback_only
        self.api_key = api_key.encode() if api_key else None
        self.cors_origins = {o.rstrip("/").lower() for o in cors_origins}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.loopback_only and _hostname(host) not in LOOPBACK:
            return await _refuse(scope, receive, send, 403, "只接受来自本机地址的请求（Host 不是 127.0.0.1 或 localhost）",
                                 "only requests to a loopback address are served (Host is not 127.0.0.1 or localhost)")
        path, method = scope["path"], scope["method"]
        api = path.startswith(API_PREFIXES)
        origin = headers.get("origin")
        own = origin is None or urlsplit(origin).netloc.lower() == host.lower()
        cors = not own and ("*" in self.cors_origins or origin.rstrip("/").lower() in self.cors_origins)
        if not own and not cors and (api or method not in ("GET", "HEAD")):
            return await _refuse(scope, receive, send, 403, "拒绝来自其他网站的请求（可用 --cors-origin 允许某个网址）",
                                 "requests from other web sites are refused (allow one with --cors-origin)")
        if cors and method == "OPTIONS" and "access-control-request-method" in headers:
            # a preflight carries no credentials; the request that follows is checked
            await send({"type": "http.response.start", "status": 204,
                        "headers": _cors_headers(origin, self.cors_origins, preflight=True)})
            await send({"type": "http.response.body", "body": b""})
            return
        if api and self.api_key is not None and not self._authorized(headers):
            return await _refuse(scope, receive, send, 401, "需要 API 密钥：Authorization: Bearer 密钥，或 X-API-Key: 密钥",
                                 "an API key is required: Authorization: Bearer KEY, or X-API-Key: KEY",
                                 cors=_cors_headers(origin, self.cors_origins) if cors else [],
                                 extra=[(b"www-authenticate", b'Bearer realm="aiwriter"')], kind="unauthorized")
        extra = _SECURITY_HEADERS + (_cors_headers(origin, self.cors_origins) if cors else [])

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": list(message.get("headers", [])) + [h for h in extra if h[0] not in have]}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _authorized(self, headers: dict) -> bool:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
        # constant time: the comparison must not leak how much of a guess was right
        return hmac.compare_digest(given.encode("latin-1"), self.api_key)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:].split("]")[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _cors_headers(origin: str, allowed: set, preflight: bool = False) -> list[tuple[bytes, bytes]]:
    value = b"*" if "*" in allowed else origin.encode("latin-1")
    h = [(b"access-control-allow-origin", value), (b"vary", b"Origin")]
    if preflight:
        h += [(b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
              (b"access-control-allow-headers", b"Authorization, X-API-Key, Content-Type"),
              (b"access-control-max-age", b"600")]
    return h


async def _refuse(scope, receive, send, status, zh, en, cors=(), extra=(), kind="forbidden"):
    body = dumps(error_body(status, zh, en, kind=kind))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *cors, *extra,
               *_SECURITY_HEADERS]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def states_dir(settings: ServerSettings) -> Path | None:
    """--states-dir, else a "states" folder beside the models folder."""
    if settings.states_dir:
        return Path(settings.states_dir)
    if settings.models_dir:
        return Path(settings.models_dir).resolve().parent / "states"
    return None


def check_exposure(settings: ServerSettings) -> None:
    """Off loopback, anyone on the network could read and delete manuscripts: insist on a key
    or an explicit --insecure."""
    if "*" in settings.cors_origins and not settings.api_key and not settings.insecure:
        raise AIWriterError(
            "拒绝 --cors-origin '*' 而不设密钥：任何网站都能读取和删除所有文稿。请加 --api-key 密钥，"
            "或只允许某个网址（--cors-origin http://localhost:5000），或确实要不设防时加 --insecure",
            "refusing --cors-origin '*' without a key: any web site could read and delete every manuscript. Add "
            "--api-key KEY, or allow one origin only (--cors-origin http://localhost:5000), or --insecure if you "
            "really mean it",
        )
    if settings.host not in LOOPBACK and not settings.api_key and not settings.insecure:
        raise AIWriterError(
            f"拒绝在 {settings.host} 上监听：其他机器也能访问，文稿没有保护。请加 --api-key 密钥"
            f"（客户端用 Authorization: Bearer 密钥），或确实要不设防时加 --insecure",
            f"refusing to listen on {settings.host}: other machines could reach it and the manuscripts would be "
            f"unprotected. Add --api-key KEY (clients send Authorization: Bearer KEY), or --insecure if you really mean it",
        )
