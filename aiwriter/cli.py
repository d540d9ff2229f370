"""Command line: aiwriter write · train · eval. Every message a user reads is Chinese + English."""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from aiwriter.errors import AIWriterError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def _bilingual_parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(**kw)
    p._positionals.title = "参数 / arguments"
    p._optionals.title = "选项 / options"
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _bilingual_parser(
        prog="aiwriter",
        description="AI-Writer：用 RWKV 模型续写中文小说 / continue Chinese novels with RWKV language models",
    )
    parser.add_argument("--debug", action="store_true", help="出错时显示完整的调用栈 / show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", title="命令 / commands", metavar="COMMAND")

    from aiwriter import write_command

    w = sub.add_parser(
        "write", help="续写开头 / continue an opening",
        description="续写开头，写多少遍 × 每次多少字 / continue an opening, N runs of L chars",
    )
    write_command.add_arguments(w)
    w.set_defaults(func=write_command.run)

    for name, module, zh, en in (
        ("train", "aiwriter.training.train", "训练或微调模型", "train or fine-tune a model"),
        ("eval", "aiwriter.training.evaluate", "测量模型在文本上的损失", "measure a model's loss on a text"),
    ):
        try:
            mod = __import__(module, fromlist=["run"])
        except ImportError:
            continue
        p = sub.add_parser(name, help=f"{zh} / {en}", description=f"{zh} / {en}")
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    for p in sub.choices.values():
        p._positionals.title = "参数 / arguments"
        p._optionals.title = "选项 / options"
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="出错时显示完整的调用栈 / show tracebacks on errors")
    return parser


def print_error(zh: str, en: str) -> None:
    print(f"错误：{zh}\nError: {en}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except AIWriterError as e:
        if args.debug:
            traceback.print_exc()
        print_error(e.zh, e.en)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\n已停止 / stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `aiwriter write … | head`: the reader left; nothing to report.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: say so plainly, traceback only on request
        if args.debug:
            traceback.print_exc()
        print_error(
            f"内部错误（{type(e).__name__}: {e}）。加上 --debug 可查看详情，欢迎报告此问题。",
            f"internal error ({type(e).__name__}: {e}). Run with --debug for details; please report it.",
        )
        return 1
