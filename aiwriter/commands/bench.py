"""`aiwriter bench`: the flags of the speed report (aiwriter/bench.py measures)."""
from __future__ import annotations

import argparse

from aiwriter.commands.common import check_threads, resolve_model

NAME = "bench"
HELP = "测量速度（与 rwkv 官方包对比）/ measure speed (next to the rwkv package)"
DESCRIPTION = HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="输出 JSON / print JSON")
    p.add_argument("--quick", action="store_true", help="极小的模型，几秒跑完（测试用）/ tiny shapes, seconds (for tests)")
    p.add_argument("--families", default="rwkv4,rwkv7,f1", help="测哪些模型（逗号分隔）/ which models, comma separated")
    p.add_argument("--engines", default=None, help="只测这些引擎（逗号分隔，如 \"aiwriter int8,rwkv fp32\"）/ only these engines")
    p.add_argument("--threads", type=int, default=None, help="torch 线程数（默认：torch 的默认值）/ torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="把 JSON 结果另存到文件 / also save the JSON results to this file")
    p.add_argument("--model", default=None,
                   help="测一个真实大小的模型文件：首次/再次载入、峰值内存、解码速度、内存带宽 / measure one real-size "
                        "model file: first and later load, peak RSS, decode, bandwidth")
    p.add_argument("--dtypes", default="int4", help="配合 --model：哪些精度（逗号分隔）/ with --model: which dtypes")
    p.add_argument("--prompt", type=int, default=0, help="配合 --model：读入多长的开头（token）/ with --model: opening length")


def run(args) -> int:
    check_threads(args.threads)
    from aiwriter.bench import BenchSettings, run as bench

    return bench(BenchSettings(json=args.json, quick=args.quick, families=args.families, engines=args.engines,
                               threads=args.threads or 0, out=args.out, model=resolve_model(args.model), dtypes=args.dtypes,
                               prompt=args.prompt))
