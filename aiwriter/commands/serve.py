"""`aiwriter serve`: the writing page and the APIs on a local port, opened in the browser."""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import webbrowser
from urllib.parse import quote, urlsplit

from aiwriter import paths
from aiwriter.commands.common import add_model_flags, check_backend, check_threads, check_vocab, model_loader, resolve_model
from aiwriter.errors import AIWriterError

NAME = "serve"
HELP = "打开网页写作界面 / open the web writer"
DESCRIPTION = ("在本机启动写作网页和 API（OpenAI、KoboldAI 兼容）/ run the writing page and the APIs (OpenAI, KoboldAI "
               "compatible) locally")
DEFAULT_PORT = 8266


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at each record, not the stream it was created with (an
    embedding host or a test harness may swap and close stderr while the logger lives on)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="监听地址（默认只对本机开放）/ address to listen on (default: this computer only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"端口（默认 {DEFAULT_PORT}，0 表示随便一个空闲端口）/ port (default {DEFAULT_PORT}; 0: any free port)")
    add_model_flags(p, backend=True)
    p.add_argument("--models-dir", help="模型文件夹：其中的 *.pth、*.safetensors 可在网页上选择（默认：aiwriter download 下载到的文件夹）/ "
                                        "folder whose *.pth and *.safetensors files the page offers (default: the folder "
                                        "aiwriter download fills)")
    p.add_argument("--states-dir", help="状态文件夹：其中的 *.pth、*.safetensors 状态文件（RWKV-Runner time_state）可按请求使用（字段 state）；"
                                        "默认为模型文件夹旁的 states / folder of state files (RWKV-Runner time_state *.pth, *.safetensors) "
                                        "a request may name in its `state` field (default: 'states' beside the models folder)")
    p.add_argument("--no-state-cache", action="store_true",
                   help="不把读过的状态存到磁盘（重启后要重读全文）/ do not keep read states on disk (a restart re-reads everything)")
    p.add_argument("--state-cache-mb", type=int, default=2048,
                   help="磁盘状态缓存的上限（MB，默认 2048）/ disk state cache limit in MB (default 2048)")
    p.add_argument("--db", help="文稿数据库文件（SQLite）/ manuscript database file (SQLite)")
    p.add_argument("--max-batch", type=int, default=16, help="同时写的最多条数（一次前向）/ most streams written together in one forward (default 16)")
    p.add_argument("--max-queue", type=int, default=32, help="排队请求的上限，超出回答 429 / most queued requests; more get 429 (default 32)")
    p.add_argument("--max-body", type=int, default=4 * 2**20, help="请求体上限（字节，默认 4 MB）/ request body limit in bytes (default 4 MB)")
    p.add_argument("--no-browser", action="store_true", help="不自动打开浏览器 / do not open the browser")
    p.add_argument("--api-key", default=os.environ.get("AIWRITER_API_KEY") or None,
                   help="API 密钥：每个接口都要 Authorization: Bearer 密钥（或 X-API-Key）；不在本机监听时必需；也可用环境变量 AIWRITER_API_KEY"
                        " / API key every API route requires (Authorization: Bearer KEY or X-API-Key); needed off loopback;"
                        " or set AIWRITER_API_KEY")
    p.add_argument("--insecure", action="store_true",
                   help="允许不设密钥在非本机地址上监听（任何人都能读写文稿）/ allow a non-loopback address without a key (anyone can read and change the manuscripts)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="URL",
                   help="允许这个网页（如 http://localhost:5000）跨域调用接口，可多次；* 表示任何网页 / let this web page (e.g. http://localhost:5000) call the APIs; repeatable; * = any page")
    p.add_argument("--log-prompts", action="store_true",
                   help="在日志里记下请求的原文（默认只记长度）/ put the request text in the log (default: sizes only)")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AIWriterError(f"无法在 {host}:{port} 上监听（{e.strerror}）；端口被占用时可换一个，如 --port {port + 1}",
                            f"cannot listen on {host}:{port} ({e.strerror}); if the port is taken, try --port {port + 1}")
    sock.listen(128)
    return sock


def _positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value <= 0:
            flag = "--" + name.replace("_", "-")
            raise AIWriterError(f"{flag} 必须大于 0", f"{flag} must be greater than 0")


def run(args) -> int:
    import uvicorn

    from aiwriter.engine import configure_threads
    from aiwriter.server.connections import raise_open_file_limit, server_config
    from aiwriter.server.app import LOOPBACK, ServerSettings, check_exposure, create_app
    from aiwriter.store import default_db_path

    _positive(args, "max_batch", "max_queue", "max_body")
    if not 0 <= args.port <= 65535:
        raise AIWriterError("--port 应在 0 到 65535 之间", "--port must be between 0 and 65535")
    for origin in args.cors_origin:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/")):
            raise AIWriterError(f"--cors-origin 应为网址的开头，如 http://localhost:5000（收到 {origin!r}）",
                                f"--cors-origin must be an origin such as http://localhost:5000 (got {origin!r})")
    check_threads(args.threads)
    check_backend(args.backend, args.dtype)
    # the models folder (created by `aiwriter download`, absent = no models to offer) unless --models-dir
    models_dir = args.models_dir or str(paths.models_dir())
    settings = ServerSettings(model=resolve_model(args.model), vocab=args.vocab, models_dir=models_dir, db=args.db, host=args.host,
                              states_dir=args.states_dir,
                              state_cache_bytes=0 if args.no_state_cache else max(0, args.state_cache_mb) * 2**20,
                              device=args.device or "cpu", dtype=args.dtype, max_batch=args.max_batch, max_queue=args.max_queue,
                              max_body=args.max_body, max_n=min(8, args.max_batch), api_key=args.api_key,
                              insecure=args.insecure, cors_origins=tuple(args.cors_origin), log_prompts=args.log_prompts)
    check_exposure(settings)  # before loading anything: a refused start is quick
    configure_threads(None, args.threads)  # before loading: onnxruntime sessions take the count when made
    raise_open_file_limit()  # before the connection cap is worked out from it
    sock = _bind(args.host, args.port)
    try:
        # loads the model and opens the database: errors surface here
        app = create_app(settings, loader=model_loader(args.backend) if args.backend != "torch" else None)
        check_vocab(app.state.scheduler.model)  # a model without a usable vocab fails now, not per request
        configure_threads(app.state.scheduler.model, args.threads)  # before the first request's step
    except BaseException:
        if "app" in locals():
            app.state.scheduler.close()
            app.state.store.close()
        sock.close()
        raise
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    sched = app.state.scheduler
    print(f"AI-Writer 已启动：{url}  （模型 {sched.model_name}，{sched.model.family}；文稿存于 {settings.db or default_db_path()}）\n"
          f"AI-Writer is running at {url}  (model {sched.model_name}; manuscripts in {settings.db or default_db_path()})\n"
          f"按 Ctrl+C 停止 / press Ctrl+C to stop", flush=True)
    if args.host not in LOOPBACK and not args.api_key:
        print("注意：服务器对其他机器开放，文稿接口没有密码保护（--insecure）/ note: the server is open to other machines "
              "and has no password (--insecure)", file=sys.stderr, flush=True)
    if args.api_key:
        print("接口需要 API 密钥；网页会询问一次，或打开 网址#key=密钥 / the APIs require the API key; the page asks once, "
              "or open URL#key=KEY", flush=True)
    log = logging.getLogger("aiwriter.server")  # one line per generation, sizes only (common.submit)
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    if not args.no_browser:
        # the key travels in the fragment, which the browser never sends; the page stores it and removes it
        opened = url + (f"#key={quote(args.api_key, safe='')}" if args.api_key else "")
        threading.Timer(0.5, webbrowser.open, [opened]).start()
    uvicorn.Server(server_config(app, timeout_graceful_shutdown=3)).run(sockets=[sock])
    return 0
