"""A local stand-in for huggingface.co (127.0.0.1 only), answering the requests huggingface_hub
makes to download a file, as the real hub does:

- HEAD /{repo}/resolve/{rev}/{file}: for an LFS file a 302 to the "CDN" (a second server, another
  origin, so huggingface_hub stops there as it does at the real CDN) with X-Repo-Commit,
  X-Linked-Etag (the sha256), X-Linked-Size; for a small file a 200 with ETag = git blob sha1 and
  Content-Length. A missing file is a 404 with X-Error-Code: EntryNotFound.
- GET of the same URL: the 302 again (LFS) or the bytes; GET /lfs/{sha} on the CDN: the bytes,
  honouring `Range: bytes=N-` with a 206.

Faults, for tests: `cut_after` (the next body stops after that many bytes and the connection is
dropped, then every later GET is a 503 until `down` is cleared) and `sha256=` on add() (the hub
advertises a checksum the bytes do not have). Every request is recorded in `requests`.
"""
from __future__ import annotations

import hashlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hung up mid-answer: not news here
        pass


class FakeHub:
    def __init__(self):
        self.files: dict[tuple[str, str], dict] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.served: list[tuple[str, str | None]] = []  # (path, Range) of every GET that got file bytes
        self.cut_after: int | None = None
        self.down = False
        self.lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self.hub = _Server(("127.0.0.1", 0), Handler)
        self.cdn = _Server(("127.0.0.1", 0), Handler)
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def add(self, repo: str, filename: str, data: bytes, lfs: bool = True, sha256: str | None = None) -> None:
        real = hashlib.sha256(data).hexdigest()
        self.files[(repo, filename)] = {"data": data, "lfs": lfs, "sha256": sha256 or real}
        self.blobs[real] = data

    def gets(self) -> list[tuple[str, str | None]]:
        """(path, Range) of every GET (not huggingface_hub's /api/ calls)."""
        return [(p, r) for m, p, r in self.requests if m == "GET" and not p.startswith("/api/")]

    def close(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    # -------------------------------------------------------------------------------- answers

    def _answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        with self.lock:
            self.requests.append((h.command, h.path, h.headers.get("Range")))
        path = unquote(h.path.split("?", 1)[0])
        if path.startswith("/lfs/"):
            data = self.blobs.get(path[len("/lfs/"):])
            return self._bytes(h, data, body) if data is not None else self._status(h, 404)
        parts = path.strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._status(h, 404, {"X-Error-Code": "RepoNotFound"})
        repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
        f = self.files.get((repo, filename))
        if f is None:
            return self._status(h, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        if f["lfs"]:
            return self._status(h, 302, {
                "Location": f"{self.cdn_url}/lfs/{hashlib.sha256(f['data']).hexdigest()}",
                "X-Repo-Commit": COMMIT, "ETag": f'"{git_sha1(b"pointer " + filename.encode())}"',
                "X-Linked-Etag": f'"{f["sha256"]}"', "X-Linked-Size": str(len(f["data"]))})
        return self._bytes(h, f["data"], body, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_sha1(f["data"])}"'})

    def _status(self, h, code: int, headers: dict | None = None) -> None:
        h.send_response(code)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _bytes(self, h, data: bytes, body: bool, headers: dict | None = None) -> None:
        if body and self.down:
            return self._status(h, 503)
        start, rng = 0, h.headers.get("Range")
        if body:
            with self.lock:
                self.served.append((h.path, rng))
        if rng:
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
        h.send_response(206 if rng else 200)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if rng:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.send_header("Content-Length", str(len(data) - start))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        if not body:
            return
        if self.cut_after is not None:
            h.wfile.write(data[start:start + self.cut_after])
            h.wfile.flush()
            self.cut_after, self.down = None, True
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(data[start:])
