"""OpenAI-compatible completions: POST /v1/completions, GET /v1/models.

max_tokens counts characters (what a writer means by length), not tokens. Sampling fields the
OpenAI API lacks are accepted too: top_p_newline, allow_p, top_k, top_a, min_p, repetition_penalty.
Fields left out take the same defaults as `aiwriter write` (top_p 0.75, top_p_newline 0.9, ...).
"""
from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from aiwriter.server.common import SAMPLING_FIELDS, Fields, JobResponse, Render, dumps, read_json, sampling_from, seed_from, submit
from aiwriter.server.scheduler import Job

router = APIRouter()

DEFAULT_MAX_TOKENS = 16  # OpenAI's default
# OpenAI fields with no meaning here, and extensions other OpenAI-style servers take, which
# clients send by default: accepted and ignored. Any other field is a 400 naming it.
IGNORED = frozenset({
    "suffix", "echo", "logprobs", "best_of", "logit_bias", "stream_options", "top_logprobs",
    "typical_p", "tfs", "mirostat_mode", "mirostat_tau", "mirostat_eta", "repetition_penalty_range", "min_tokens",
    "ignore_eos", "skip_special_tokens", "truncation_length", "ban_eos_token", "add_bos_token", "smoothing_factor",
    "dry_multiplier", "dry_base", "dry_allowed_length", "dry_sequence_breakers", "xtc_threshold", "xtc_probability",
    "dynatemp_low", "dynatemp_high", "dynatemp_exponent", "grammar_string", "custom_token_bans", "sampler_priority",
})


class CompletionRender(Render):
    def __init__(self, stream: bool):
        self.stream = stream
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _chunk(self, job: Job, choices: list[dict]) -> bytes:
        return b"data: " + dumps({"id": self.id, "object": "text_completion", "created": self.created,
                                  "model": job.info.get("model", job.model), "choices": choices}) + b"\n\n"

    def pieces(self, job, pieces):
        return b"".join(self._chunk(job, [{"text": t, "index": run, "logprobs": None, "finish_reason": None}])
                        for run, t in pieces)

    def finish(self, job, run, reason):
        return self._chunk(job, [{"text": "", "index": run, "logprobs": None, "finish_reason": reason}])

    def close(self, job):
        return b"data: [DONE]\n\n"

    def result(self, job):
        chars = sum(len(t) for t in job.texts)
        return {
            "id": self.id, "object": "text_completion", "created": self.created, "model": job.info.get("model", job.model),
            "choices": [{"text": t, "index": i, "logprobs": None, "finish_reason": job.finish[i] or "abort"}
                        for i, t in enumerate(job.texts)],
            "usage": {"prompt_tokens": job.info.get("prompt_ids", 0), "completion_tokens": chars,
                      "total_tokens": job.info.get("prompt_ids", 0) + chars},
            "seed": job.info.get("seed"),
        }


@router.post("/v1/completions")
async def completions(request: Request):
    cfg = request.app.state.settings
    f = Fields(await read_json(request, cfg.max_body))
    f.only("prompt", "max_tokens", "n", "stop", "seed", "model", "user", "stream", *SAMPLING_FIELDS, ignored=IGNORED)
    job = Job(
        prompt=f.prompt("prompt"),
        length=f.int("max_tokens", DEFAULT_MAX_TOKENS, 1, cfg.max_length),
        n=f.int("n", 1, 1, cfg.max_n),
        settings=sampling_from(f, "stop"),
        seed=seed_from(f),
        model=f.str("model", None, max_chars=500),
        origin="openai",
        key=f.str("user", "", max_chars=200),
    )
    stream = f.bool("stream", False)
    submit(request, job)
    return JobResponse(job, CompletionRender(stream))


@router.get("/v1/models")
def models(request: Request):
    sched = request.app.state.scheduler
    created = int(request.app.state.started)
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "aiwriter", "loaded": name == sched.model_name}
        for name in sched.catalog.names()
    ]}
