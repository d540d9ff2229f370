"""The KoboldAI API (as KoboldCpp serves it), so SillyTavern and Kobold Lite can connect.

max_length counts characters. `memory` is read before the prompt, as KoboldCpp does (Kobold Lite
sends its Memory and the World Info entries it matched there); kept first, its state comes from the
prefix cache on the next request. Kobold's rep_pen is a multiplier of a different penalty and is
ignored; our own penalty fields (repetition_penalty, presence_penalty, ...) are accepted.
`logprobs: true` gives KoboldCpp's logprobs (up to 5 alternatives per token, in the reply and from
/api/extra/last_logprobs); `logit_bias` -100 and single-char `banned_tokens` ban those chars (other
biases and phrase bans are refused with a 400 naming the field, never ignored).
What Kobold Lite sends and expects is written down in tests/test_kobold_lite.py and docs/clients.md.
"""
from __future__ import annotations

from collections import OrderedDict

import anyio
from fastapi import APIRouter, Request

import aiwriter
from aiwriter.server.bodies import read_json
from aiwriter.server.fields import Fields
from aiwriter.server.job_response import JobResponse, Render, submit
from aiwriter.server.jobs import Job
from aiwriter.server.openai_api import LogprobCursor, chat_logprobs
from aiwriter.server.replies import ApiError, dumps
from aiwriter.server.sampling_fields import SAMPLING_FIELDS, logit_bias_bans, sampling_from, seed_from, with_bans

router = APIRouter()

DEFAULT_MAX_LENGTH = 80    # KoboldAI's default
CONTEXT_CHARS = 1_000_000  # an RNN has no context window; reported so clients do not trim
KOBOLD_API_VERSION = "1.2.5"
MAX_TOKENCOUNT_IDS = 16_384  # ids a tokencount reply lists (about 100 KB of JSON)
# KoboldAI / KoboldCpp fields that SillyTavern and Kobold Lite send and that have no meaning for
# this server: accepted and ignored. Any other field is a 400 naming it (a typo must not pass).
IGNORED = frozenset({
    "max_context_length", "rep_pen", "rep_pen_range", "rep_pen_slope", "typical", "tfs", "sampler_order",
    "sampler_full_determinism", "use_default_badwordsids", "quiet", "trim_stop", "mirostat", "mirostat_tau",
    "mirostat_eta", "dynatemp_range", "dynatemp_exponent", "smoothing_factor", "smoothing_curve", "dry_multiplier",
    "dry_base", "dry_allowed_length", "dry_penalty_last_n", "dry_sequence_breakers", "xtc_threshold", "xtc_probability",
    "nsigma", "top_n_sigma", "grammar", "grammar_retain_state", "images", "bypass_eos",
    "render_special", "replace_instruct_placeholders", "stream", "api_server", "can_abort", "min_length", "singleline",
    "use_story", "use_memory", "use_authors_note", "use_world_info", "use_userscripts", "soft_prompt",
    "disable_output_formatting", "disable_input_formatting", "frmttriminc", "frmtrmblln", "frmtrmspch", "frmtadsnsp",
    "adaptive_target", "adaptive_decay", "gui_settings", "streaming", "dry_range",
    "s1", "s2", "s3", "s4", "s5", "s6", "s7",
})
KOBOLDCPP_VERSION = "1.80"  # the KoboldCpp feature level clients check for (streaming, abort, genkey)
LOGPROBS_TOP = 5     # KoboldCpp's logprobs: true gives up to 5 alternatives per token
RECENT_JOBS = 32     # finished generations /api/extra/generate/check and last_logprobs still know, by genkey
MAX_BANS = 1024      # entries banned_tokens may hold


def kobold_logprobs(job: Job, run: int, decode) -> dict | None:
    """KoboldCpp's logprobs object for a run: {"content": [{token, logprob, bytes, top_logprobs}]},
    the tokens of the text the run kept (a stop string cut off the rest); None if not asked for."""
    if job.logprobs is None or job.logprob_lists[run] is None:
        return None
    items = LogprobCursor(decode).take(job.logprob_lists[run], len(job.texts[run]))
    return {"content": chat_logprobs(items)["content"]}


class GenerateRender(Render):
    def __init__(self, decode=None):
        self.decode = decode

    def result(self, job):
        out = []
        for i, t in enumerate(job.texts):
            r = {"text": t, "finish_reason": job.finish[i] or "abort"}
            if job.logprobs is not None:
                r["logprobs"] = kobold_logprobs(job, i, self.decode)
            out.append(r)
        return {"results": out}


class StreamRender(Render):
    stream = True

    def pieces(self, job, pieces):
        return b"".join(b"event: message\ndata: " + dumps({"token": t, "finish_reason": None}) + b"\n\n" for _, t in pieces)

    def finish(self, job, run, reason):
        return b"event: message\ndata: " + dumps({"token": "", "finish_reason": reason}) + b"\n\n"


def _banned_ids(f: Fields, tokenizer) -> tuple[int, ...]:
    """The ids a request bans: logit_bias entries at -100 or below (KoboldCpp's {"id": bias}, ids as
    tokencount gives them) and banned_tokens that are one token (one char here). Anything else would
    change what is written in a way this server cannot do: a 400 naming the field."""
    ids = list(logit_bias_bans(f, tokenizer.vocab_size))
    banned = f.data.get("banned_tokens")
    if banned is not None:
        if not isinstance(banned, list) or len(banned) > MAX_BANS or not all(isinstance(b, str) for b in banned):
            raise ApiError(400, f"字段 banned_tokens 应为字符串列表（最多 {MAX_BANS} 项）",
                           f"field 'banned_tokens' must be a list of at most {MAX_BANS} strings", param="banned_tokens")
        for text in banned:
            if not text:
                continue
            f._clean("banned_tokens", text)
            got = tokenizer.encode(text)
            if len(got) != 1:
                raise ApiError(400, "字段 banned_tokens 只能禁用单个字（本模型逐字写作，不能禁用词组）",
                               "field 'banned_tokens' can ban single chars only (this model writes char by char; "
                               "phrases cannot be banned)", param="banned_tokens")
            ids.append(got[0])
    return tuple(dict.fromkeys(ids))


def _recent(request: Request) -> OrderedDict:
    """genkey -> the last RECENT_JOBS KoboldAI jobs with a genkey (running or done), newest last."""
    state = request.app.state
    if not hasattr(state, "kobold_recent"):
        state.kobold_recent = OrderedDict()
    return state.kobold_recent


def _remember(request: Request, job: Job) -> None:
    if not job.key:
        return
    recent = _recent(request)
    recent.pop(job.key, None)
    recent[job.key] = job
    while len(recent) > RECENT_JOBS:
        recent.popitem(last=False)


async def _job(request: Request, n_allowed: bool) -> Job:
    cfg = request.app.state.settings
    f = Fields(await read_json(request, cfg.max_body))
    f.only("prompt", "memory", "max_length", "n", "stop_sequence", "sampler_seed", "model", "state", "genkey", "logprobs",
           "logit_bias", "banned_tokens", *SAMPLING_FIELDS, ignored=IGNORED)
    memory = f.str("memory", "")
    # Kobold Lite sends an empty prompt when a story is only its Memory: the memory is then the opening
    prompt = f.str("prompt", "") if memory.strip() else f.prompt("prompt")
    settings = with_bans(sampling_from(f, "stop_sequence"), _banned_ids(f, request.app.state.scheduler.model.tokenizer))
    return Job(
        prompt=memory + prompt,
        length=f.int("max_length", DEFAULT_MAX_LENGTH, 1, cfg.max_length),
        n=f.int("n", 1, 1, cfg.max_n if n_allowed else 1),
        settings=settings,
        seed=seed_from(f, "sampler_seed"),
        model=f.str("model", None, max_chars=500),
        state=f.str("state", None, max_chars=500),
        origin="kobold",
        key=f.str("genkey", "", max_chars=200),
        logprobs=LOGPROBS_TOP if f.bool("logprobs", False) else None,
    )


def _decode(request: Request):
    tok = request.app.state.scheduler.model.tokenizer
    return lambda i: tok.decode([i])


@router.post("/api/v1/generate")
async def generate(request: Request):
    job = submit(request, await _job(request, n_allowed=True))
    _remember(request, job)
    return JobResponse(job, GenerateRender(_decode(request)))


@router.post("/api/extra/generate/stream")
async def generate_stream(request: Request):
    job = submit(request, await _job(request, n_allowed=False))
    _remember(request, job)
    return JobResponse(job, StreamRender())


@router.post("/api/extra/generate/check")
async def check(request: Request):
    """The text so far of the generation with this genkey (Kobold Lite polls this); one that just
    ended still answers. Without a genkey, nothing: one client never reads another's text."""
    body = await _optional_body(request)
    key = body.str("genkey", "", max_chars=200)
    job = (request.app.state.scheduler.find(key) or _recent(request).get(key)) if key else None
    return {"results": [{"text": job.texts[0] if job else ""}]}


@router.post("/api/extra/last_logprobs")
async def last_logprobs(request: Request):
    """KoboldCpp's logprobs of a generation by genkey (Kobold Lite asks after a streamed one):
    {"logprobs": {"content": [...]}}, or {"logprobs": null} when that generation did not ask for
    them, is not known any more, or no genkey was given."""
    body = await _optional_body(request)
    key = body.str("genkey", "", max_chars=200)
    job = _recent(request).get(key) if key else None
    return {"logprobs": kobold_logprobs(job, 0, _decode(request)) if job is not None else None}


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
    return Fields(await read_json(request, request.app.state.settings.max_body)).only("genkey")


@router.post("/api/extra/tokencount")
async def tokencount(request: Request):
    """KoboldCpp's {"value": n, "ids": [...]}, with the ids of the first MAX_TOKENCOUNT_IDS
    tokens only (a 4 MB text has over a million; "ids_truncated" says so): the count is what
    clients use. Kobold Lite sends {"prompt", "special"}; there are no special tokens here."""
    f = Fields(await read_json(request, request.app.state.settings.max_body))
    f.only("prompt", "special", ignored=frozenset({"genkey"}))
    text = f.str("prompt", required=True)
    f.bool("special")
    tokenizer = request.app.state.scheduler.model.tokenizer
    # megabytes of text take a while: never on the event loop, where every other request waits
    ids = await anyio.to_thread.run_sync(tokenizer.encode, text)
    out = {"value": len(ids), "ids": ids[:MAX_TOKENCOUNT_IDS]}
    if len(ids) > MAX_TOKENCOUNT_IDS:
        out["ids_truncated"] = True
    return out


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


@router.get("/api/extra/perf")
def perf(request: Request):
    """KoboldCpp's performance summary (Kobold Lite shows it and polls `queue` and `idle`)."""
    import time

    st = request.app.state.scheduler.status()
    busy = st.get("running_jobs", 0) + st.get("waiting_jobs", 0)
    return {"last_process": 0.0, "last_eval": 0.0, "last_token_count": 0, "last_seed": -1,
            "total_gens": st.get("jobs", 0), "stop_reason": -1, "total_img_gens": 0, "total_tts_gens": 0,
            "total_transcribe_gens": 0, "queue": st.get("waiting_jobs", 0), "idle": 0 if busy else 1,
            "hordeexitcounter": 0, "uptime": time.time() - request.app.state.started, "idletime": 0.0, "quiet": False}


@router.get("/api/extra/preloadstory")
def preloadstory():
    """KoboldCpp offers a story to preload here; this server has none: an empty object, as KoboldCpp
    answers without --preloadstory (Kobold Lite then starts as usual)."""
    return {}


@router.get("/sdapi/v1/sd-models")
def image_models():
    """The image models (KoboldCpp's A1111-style API, which Kobold Lite asks at startup): none here,
    an empty list, as KoboldCpp answers without an image model."""
    return []
