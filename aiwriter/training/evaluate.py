"""`aiwriter eval`: nats and bits per char of a model over a text, read as one stream.

The text is cleaned like the writer's context, encoded, and fed in chunks through the model's
prefill with the state carried from chunk to chunk, so the cost is linear in the length and every
char is predicted from everything before it. The loss of each predicted token is summed and divided
by the number of chars those tokens spell (for a char vocab: one char per token).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import nullcontext

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
    from tqdm import tqdm

    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    n = len(ids) - 1  # predictions
    state = net.new_state(1)
    total = 0.0
    bar = tqdm(total=n, unit="char", unit_scale=True, desc="评测 / eval", disable=not progress,
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="模型文件（默认：内置模型） / model file (default: the built-in model)")
    p.add_argument("--vocab", default=None, help="词表文件（默认：模型旁的 .json） / vocab file (default: the .json beside the model)")
    p.add_argument("--text", required=True, help="评测用的文本文件 / text file to score")
    p.add_argument("--max-chars", type=int, default=None,
                   help="只评测清理后的前 N 个字 / score only the first N chars (after cleaning)")
    p.add_argument("--json", action="store_true", help="输出一行 JSON / print one line of JSON")
    p.add_argument("--device", default="cpu", help="cpu 或 cuda / cpu or cuda")
    p.add_argument("--dtype", default="fp32", help="fp32、bf16、fp16、int8 或 int4 / fp32, bf16, fp16, int8 or int4")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="每次读入的字数 / tokens per forward chunk")


def run(args) -> int:
    from pathlib import Path

    from aiwriter.engine import load_model
    from aiwriter.training.data import read_text

    if args.max_chars is not None and args.max_chars < 1:
        raise AIWriterError("--max-chars 必须是正整数", "--max-chars must be a positive integer")
    if args.chunk < 1:
        raise AIWriterError("--chunk 必须是正整数", "--chunk must be a positive integer")
    text_path = Path(args.text)
    if not text_path.is_file():
        raise AIWriterError(f"找不到文本文件：{text_path}", f"text file not found: {text_path}")
    text = read_text(text_path)
    model = load_model(args.model, vocab=args.vocab, device=args.device, dtype=args.dtype)
    r = evaluate_model(model, text, max_chars=args.max_chars, chunk=args.chunk, progress=True)
    if args.json:
        print(json.dumps({"nats_per_char": r["nats_per_char"], "bits_per_char": r["bits_per_char"], "chars": r["chars"]}))
    else:
        print(f"每字 {r['nats_per_char']:.4f} 奈特（{r['bits_per_char']:.4f} 比特），共 {r['chars']} 字 / "
              f"{r['nats_per_char']:.4f} nats/char ({r['bits_per_char']:.4f} bits/char) over {r['chars']} chars")
    return 0
