"""The `aiwriter` command: one module per subcommand, each with NAME, HELP, DESCRIPTION,
add_arguments(parser) and run(args) -> exit status; common.py holds the shared model flags.

Building the parser imports only these small modules (no torch), so `aiwriter --help`, a
subcommand's help and argument errors answer at once; each run() imports what it needs.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from aiwriter.commands import bench, download, export_onnx, models, serve, train, write
from aiwriter.commands import eval as evaluate
from aiwriter.commands.common import EXIT_INTERRUPTED, EXIT_USAGE, Parser, bilingual, print_error
from aiwriter.errors import AIWriterError

COMMANDS = (write, serve, train, evaluate, bench, export_onnx, models, download)
DEBUG_HELP = "出错时显示完整的调用栈 / show tracebacks on errors"


def build_parser() -> argparse.ArgumentParser:
    parser = bilingual(Parser(
        prog="aiwriter", add_help=False,
        description="AI-Writer：用 RWKV 模型续写中文小说 / continue Chinese novels with RWKV language models",
    ))
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", title="命令 / commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, add_help=False, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(p)
        bilingual(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        p.set_defaults(func=command.run)
    return parser


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
