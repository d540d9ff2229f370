"""Streaming a scheduler job to its client: Render (how one API turns a job's events into bytes),
JobResponse (SSE or one JSON body; a client that leaves cancels its job) and submit."""
from __future__ import annotations

import asyncio
import logging

import anyio
from starlette.requests import Request
from starlette.responses import Response

from aiwriter.server.connections import stream_buffers
from aiwriter.server.jobs import Job, QueueFull
from aiwriter.server.replies import ApiError, dumps, error_body

log = logging.getLogger("aiwriter.server")


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

    def __init__(self, job: Job, render: Render, send_timeout: float | None = None):
        """send_timeout: seconds a stream's client may go without reading before the connection
        is given up; by default the scheduler's stall_timeout."""
        self.job, self.render, self.send_timeout = job, render, send_timeout
        self.status_code, self.background = 200, None
        self.init_headers({})

    async def __call__(self, scope, receive, send) -> None:
        job = self.job
        if self.send_timeout is None:
            app = scope.get("app")
            sched = getattr(getattr(app, "state", None), "scheduler", None)
            self.send_timeout = getattr(sched, "stall_timeout", 60.0)
        try:
            async with anyio.create_task_group() as tg:
                async def watch():
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    job.cancel()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                if self.render.stream:
                    stream_buffers(scope)
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
                await self._send_json(send, e.status, error_body(e.status, e.zh, e.en, e.param, e.kind))
            else:
                await self._send_json(send, 200, r.result(job))
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})

        async def out(chunk: bytes, more_body: bool = True):
            if chunk or not more_body:
                # a client that does not read for this long is let go (its job is paused, then
                # stopped, by the scheduler; this frees the connection)
                with anyio.fail_after(self.send_timeout):
                    await send({"type": "http.response.body", "body": chunk, "more_body": more_body})

        try:
            await self._stream(out, kind)
        except TimeoutError:  # the client stopped reading: give up the connection, quietly
            job.cancel()

    async def _stream(self, out, kind) -> None:
        job, r = self.job, self.render
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
        await out(b"", more_body=False)


def submit(request: Request, job: Job) -> Job:
    """Queue a job for this request (429 with Retry-After when the queue is full)."""
    sched = request.app.state.scheduler
    if job.model is not None:
        sched.catalog.resolve(job.model)  # an unknown or odd name is a 4xx now, not an event later
    if job.state is not None:
        sched.states.resolve(job.state)
    job.bind(asyncio.get_running_loop())
    try:
        sched.submit(job)
    except QueueFull as e:
        raise ApiError(429, f"排队的请求太多，请 {e.retry_after} 秒后再试", f"too many requests queued; retry in {e.retry_after} s",
                       headers={"Retry-After": str(e.retry_after)}, kind="rate_limit_exceeded")
    if log.isEnabledFor(logging.INFO):
        # sizes only: a manuscript is private unless the user asked for it (--log-prompts)
        line = (f"job {job.id} ({job.origin}): prompt {len(job.prompt)} chars, n={job.n}, length={job.length}, "
                f"model={job.model or sched.model_name}")
        if getattr(request.app.state.settings, "log_prompts", False):
            line += f", prompt={job.prompt!r}"
        log.info(line)
    return job
