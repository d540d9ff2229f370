"""The HTTP connections uvicorn serves for `aiwriter serve`: a connection must send its request's
headers within header_timeout seconds (idle keep-alive ones close after a few seconds, as
uvicorn does), at most max_connections are open (past it the longest-idle ones are closed, so
a flood of idle sockets cannot lock real clients out), and a stream's send buffer is small, so
a client that stops reading it is noticed soon (the scheduler then pauses its job). A request's scope carries its transport under
TRANSPORT, for stream_buffers()."""
from __future__ import annotations

import resource
import socket
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

STREAM_BUFFER = 8 * 1024   # bytes the kernel and the event loop each hold for a stream's slow reader
TRANSPORT = "aiwriter.transport"
BACKLOG = 128               # connections accepted in one go, before any of them is looked at
# file descriptors kept free: two accept bursts (the connections closed to make room for one burst are
# closed by the event loop only on its next turn; on a busy machine a second burst came first and hit
# EMFILE), and the model, the database and the rest
FDS_KEPT = 2 * BACKLOG + 64
KEEP_ALIVE = 5              # seconds an idle keep-alive connection stays open
MAX_HEADER_BYTES = 16 * 1024  # request line and headers; more is a 400


def open_file_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit (at most 65536): the default 1024
    on many systems is small for a server. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 65536, 65536)
    if want > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft


class GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a header timeout, a cap on open connections and a
    small send buffer. The class attributes are set per server by server_config()."""

    header_timeout = 10.0
    max_connections = 1000

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._header_timer = None
        self._idle_since = time.monotonic()
        self._arm_header_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def _busy(self) -> bool:
        """Whether a request is in progress (its headers have come, its response has not ended)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _make_room(self) -> None:
        """Close the longest-idle connections (no request in progress: idle keep-alive, or
        headers not all sent yet); if every other one is busy, this new one is closed."""
        idle = sorted((c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol)
                       and not c._busy() and not c.transport.is_closing()), key=lambda c: c._idle_since)
        excess = len(self.connections) - self.max_connections
        # a few more than needed, so that a flood does not pay the sort on every connection
        for c in idle[:excess + max(1, self.max_connections // 100)]:
            c.transport.close()
        if not idle:
            self.transport.close()

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._busy() and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers came
            self.cycle.scope[TRANSPORT] = self.transport
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        self._arm_header_timer()  # first: a pipelined request that starts in super() disarms it
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)


def stream_buffers(scope) -> None:
    """Small send buffers for a long stream of small events: a client that stops reading is
    noticed after ~100 KB (mostly its own receive buffer) instead of megabytes, and its job is
    paused (scheduler.py). Whole responses keep the system's buffers (fast downloads)."""
    transport = scope.get(TRANSPORT)
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_BUFFER)
        except OSError:
            pass
    transport.set_write_buffer_limits(high=STREAM_BUFFER)


def server_config(app, **kw) -> uvicorn.Config:
    """The uvicorn configuration `aiwriter serve` (and the tests) run the app with; the limits
    come from app.state.settings (ServerSettings)."""
    settings = app.state.settings
    cap = max(16, min(settings.max_connections, open_file_limit() - FDS_KEPT))
    protocol = type("AIWriterH11Protocol", (GuardedH11Protocol,),
                    {"header_timeout": settings.header_timeout, "max_connections": cap})
    options = dict(log_level="warning", access_log=False, http=protocol, timeout_keep_alive=KEEP_ALIVE,
                   limit_concurrency=cap + 1, h11_max_incomplete_event_size=MAX_HEADER_BYTES, backlog=BACKLOG)
    options.update(kw)
    return uvicorn.Config(app, **options)
