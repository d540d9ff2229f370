"""The KoboldAI API (as KoboldCpp serves it), so SillyTavern and Kobold Lite can connect.

max_length counts characters. Kobold's rep_pen is a multiplier of a different penalty and is
ignored; our own penalty fields (repetition_penalty, presence_penalty, ...) are accepted.
"""
from __future__ import annotations

from fastapi import APIRouter, Request

import aiwriter
from aiwriter.server.common import Fields, JobResponse, Render, dumps, read_json, sampling_from, seed_from, submit
from aiwriter.server.scheduler import Job

router = APIRouter()

DEFAULT_MAX_LENGTH = 80    # KoboldAI's default
CONTEXT_CHARS = 1_000_000  # an RNN has no context window; reported so clients do not trim
KOBOLD_API_VERSION = "1.2.5"
KOBOLDCPP_VERSION = "1.80"  # the KoboldCpp feature level clients check for (streaming, abort, genkey)


class GenerateRender(Render):
    def result(self, job):
        return {"results": [{"text": t, "finish_reason": job.finish[i] or "abort"} for i, t in enumerate(job.texts)]}


class StreamRender(Render):
    stream = True

    def pieces(self, job, pieces):
        return b"".join(b"event: message\ndata: " + dumps({"token": t, "finish_reason": None}) + b"\n\n" for _, t in pieces)

    def finish(self, job, run, reason):
        return b"event: message\ndata: " + dumps({"token": "", "finish_reason": reason}) + b"\n\n"


async def _job(request: Request, n_allowed: bool) -> Job:
    cfg = request.app.state.settings
    f = Fields(await read_json(request, cfg.max_body))
    return Job(
        prompt=f.prompt("prompt"),
        length=f.int("max_length", DEFAULT_MAX_LENGTH, 1, cfg.max_length),
        n=f.int("n", 1, 1, cfg.max_n if n_allowed else 1),
        settings=sampling_from(f, "stop_sequence"),
        seed=seed_from(f, "sampler_seed"),
        model=f.str("model", None, max_chars=500),
        origin="kobold",
        key=f.str("genkey", "", max_chars=200),
    )


@router.post("/api/v1/generate")
async def generate(request: Request):
    job = submit(request, await _job(request, n_allowed=True))
    return JobResponse(job, GenerateRender())


@router.post("/api/extra/generate/stream")
async def generate_stream(request: Request):
    job = submit(request, await _job(request, n_allowed=False))
    return JobResponse(job, StreamRender())


@router.post("/api/extra/generate/check")
async def check(request: Request):
    """The text so far of the generation with this genkey (Kobold Lite polls this)."""
    body = await _optional_body(request)
    key = body.str("genkey", "", max_chars=200)
    job = request.app.state.scheduler.find(key) if key else None
    return {"results": [{"text": job.texts[0] if job else ""}]}


@router.post("/api/extra/abort")
async def abort(request: Request):
    """Stop the generation with this genkey, or every KoboldAI generation without one."""
    body = await _optional_body(request)
    key = body.str("genkey", None, max_chars=200)
    n = request.app.state.scheduler.abort(origin="kobold", key=key or None)
    return {"success": True, "aborted": n}


async def _optional_body(request: Request) -> Fields:
    raw = request.headers.get("content-length")
    if raw == "0" or (raw is None and "transfer-encoding" not in request.headers):
        return Fields({})
    return Fields(await read_json(request, request.app.state.settings.max_body))


@router.post("/api/extra/tokencount")
async def tokencount(request: Request):
    f = Fields(await read_json(request, request.app.state.settings.max_body))
    text = f.str("prompt", required=True)
    ids = request.app.state.scheduler.model.tokenizer.encode(text)
    return {"value": len(ids), "ids": ids}


@router.get("/api/v1/model")
def model(request: Request):
    return {"result": f"aiwriter/{request.app.state.scheduler.model_name}"}


@router.get("/api/v1/info/version")
def api_version():
    return {"result": KOBOLD_API_VERSION}


@router.get("/api/extra/version")
def version():
    # "KoboldCpp" is what clients look for to enable streaming and abort; we say who we are too
    return {"result": "KoboldCpp", "version": KOBOLDCPP_VERSION, "server": "aiwriter", "aiwriter": aiwriter.__version__,
            "protected": False, "txt2img": False, "vision": False, "transcribe": False, "multiplayer": False,
            "websearch": False, "tts": False, "embeddings": False}


@router.get("/api/v1/config/max_length")
def max_length():
    return {"value": DEFAULT_MAX_LENGTH}


@router.get("/api/v1/config/max_context_length")
@router.get("/api/extra/true_max_context_length")
def max_context_length():
    return {"value": CONTEXT_CHARS}
