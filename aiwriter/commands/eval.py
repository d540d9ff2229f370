"""`aiwriter eval`: a model's nats and bits per char over a text (aiwriter/training/evaluate.py)."""
from __future__ import annotations

import argparse
import json

from aiwriter.commands.common import add_model_flags, check_threads, resolve_model

NAME = "eval"
HELP = "测量模型在文本上的损失 / measure a model's loss on a text"
DESCRIPTION = HELP
DEFAULT_CHUNK = 512  # = training.evaluate.DEFAULT_CHUNK (not imported: that module loads torch)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", required=True, help="评测用的文本文件 / text file to score")
    p.add_argument("--max-chars", type=int, default=None,
                   help="只评测清理后的前 N 个字 / score only the first N chars (after cleaning)")
    p.add_argument("--json", action="store_true", help="输出一行 JSON / print one line of JSON")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="每次读入的字数 / tokens per forward chunk")
    add_model_flags(p)


def run(args) -> int:
    check_threads(args.threads)
    from aiwriter.engine import configure_threads
    from aiwriter.training.evaluate import EvalSettings, evaluate_file

    configure_threads(None, args.threads)
    r = evaluate_file(EvalSettings(text=args.text, model=resolve_model(args.model), vocab=args.vocab, max_chars=args.max_chars,
                                   device=args.device or "cpu", dtype=args.dtype or "fp32", chunk=args.chunk))
    if args.json:
        print(json.dumps({"nats_per_char": r["nats_per_char"], "bits_per_char": r["bits_per_char"], "chars": r["chars"]}))
    else:
        print(f"每字 {r['nats_per_char']:.4f} 奈特（{r['bits_per_char']:.4f} 比特），共 {r['chars']} 字 / "
              f"{r['nats_per_char']:.4f} nats/char ({r['bits_per_char']:.4f} bits/char) over {r['chars']} chars")
    return 0
