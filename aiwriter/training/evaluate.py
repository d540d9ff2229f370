"""`aiwriter eval`: nats and bits per char of a model over a text, read as one stream.

The text is cleaned like the writer's context, encoded, and fed in chunks through the model's
prefill with the state carried from chunk to chunk, so the cost is linear in the length and every
char is predicted from everything before it. The loss of each predicted token is summed and divided
by the number of chars those tokens spell (for a char vocab: one char per token).
"""
from __future__ import annotations

import math
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.tokenizer import Tokenizer, clean_context

DEFAULT_CHUNK = 512


def prepare_text(text: str, tokenizer: Tokenizer, max_chars: int | None = None):
    """Clean `text` as the writer does, keep the leading "\\n" plus at most max_chars chars, and
    encode it: returns (ids int64 array, chars scored). The first id is context, never scored."""
    from aiwriter.training.data import encode_fast

    text = clean_context(text)
    if max_chars is not None:
        text = text[: max_chars + 1]
    if len(text) < 2:
        raise AIWriterError("评测文本是空的", "the evaluation text is empty")
    ids = encode_fast(text, tokenizer).astype(np.int64)
    if len(ids) < 2:
        raise AIWriterError("评测文本太短：至少要有两个词元", "the evaluation text is too short: it needs two tokens or more")
    chars = len(tokenizer.decode([int(i) for i in ids[1:]]))
    return ids, chars


def stream_nats(net, ids, chunk: int = DEFAULT_CHUNK, device="cpu", autocast=None, progress: bool = False) -> float:
    """Sum over t >= 1 of -ln p(ids[t] | ids[:t]), in float64, carrying the state across chunks."""
    from aiwriter.progress import progress as progress_bar

    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n = len(ids) - 1  # predictions
    state = net.new_state(1)
    total = 0.0
    bar = progress_bar(total=n, unit="char", unit_scale=True, desc="评测 / eval", disable=not progress,
               file=sys.stderr, leave=False)
    with torch.inference_mode(), (autocast or nullcontext()):
        for s in range(0, n, chunk):
            e = min(s + chunk, n)
            x = ids[s:e].to(device).unsqueeze(0)
            logits, state = net(x, state, all_logits=True)
            logp = F.log_softmax(logits[0].double(), dim=-1)
            y = ids[s + 1:e + 1].to(logp.device)
            total -= float(logp.gather(1, y.unsqueeze(1)).sum())
            bar.update(e - s)
    bar.close()
    if not math.isfinite(total):
        raise AIWriterError("评测结果不是有限数（模型输出了 NaN 或 inf）", "the loss is not finite (the model gave NaN or inf)")
    return total


def evaluate_model(model, text: str, max_chars: int | None = None, chunk: int = DEFAULT_CHUNK,
                   progress: bool = False) -> dict:
    """nats/char, bits/char and chars scored for an aiwriter Model over `text`."""
    ids, chars = prepare_text(text, model.tokenizer, max_chars)
    if int(ids.max()) >= model.vocab_size:
        raise AIWriterError("词表与模型不配套：编号超出模型输出", "vocab and model do not match: an id exceeds the model's outputs")
    nats = stream_nats(model.net, ids, chunk=chunk, device=model.device, progress=progress)
    return {"nats_per_char": nats / chars, "bits_per_char": nats / chars / math.log(2), "chars": chars}


@dataclass
class EvalSettings:
    """`aiwriter eval`'s settings (aiwriter/commands/eval.py fills them from its flags)."""
    text: str
    model: str | None = None  # None: the embedded model
    vocab: str | None = None
    max_chars: int | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    chunk: int = DEFAULT_CHUNK
    progress: bool = True


def evaluate_file(cfg: EvalSettings) -> dict:
    """Load the model and score the text file: {"nats_per_char", "bits_per_char", "chars"}."""
    from pathlib import Path

    from aiwriter.engine import load_model
    from aiwriter.training.data import read_text

    if cfg.max_chars is not None and cfg.max_chars < 1:
        raise AIWriterError("--max-chars 必须是正整数", "--max-chars must be a positive integer")
    if cfg.chunk < 1:
        raise AIWriterError("--chunk 必须是正整数", "--chunk must be a positive integer")
    text_path = Path(cfg.text)
    if not text_path.is_file():
        raise AIWriterError(f"找不到文本文件：{text_path}", f"text file not found: {text_path}")
    text = read_text(text_path)
    model = load_model(cfg.model, vocab=cfg.vocab, device=cfg.device, dtype=cfg.dtype)
    return evaluate_model(model, text, max_chars=cfg.max_chars, chunk=cfg.chunk, progress=cfg.progress)
