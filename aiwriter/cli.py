"""Command line: aiwriter write · train · eval. Every message a user reads is Chinese + English."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from aiwriter.errors import AIWriterError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"错误：命令行参数有误（{message}）\nError: invalid arguments: {message}\n")


def _bilingual_parser(**kw) -> argparse.ArgumentParser:
    p = _Parser(add_help=False, **kw)
    _add_help(p)
    p._positionals.title = "参数 / arguments"
    p._optionals.title = "选项 / options"
    return p


def _add_help(p: argparse.ArgumentParser) -> None:
    p.add_argument("-h", "--help", action="help", help="显示帮助后退出 / show this help and exit")


def build_parser() -> argparse.ArgumentParser:
    parser = _bilingual_parser(
        prog="aiwriter",
        description="AI-Writer：用 RWKV 模型续写中文小说 / continue Chinese novels with RWKV language models",
    )
    parser.add_argument("--debug", action="store_true", help="出错时显示完整的调用栈 / show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", title="命令 / commands", metavar="COMMAND")

    from aiwriter import write_command

    w = sub.add_parser(
        "write", add_help=False, help="续写开头 / continue an opening",
        description="续写开头，写多少遍 × 每次多少字 / continue an opening, N runs of L chars",
    )
    write_command.add_arguments(w)
    w.set_defaults(func=write_command.run)

    from aiwriter.server import command as serve_command

    s = sub.add_parser(
        "serve", add_help=False, help="打开网页写作界面 / open the web writer",
        description="在本机启动写作网页和 API（OpenAI、KoboldAI 兼容）/ run the writing page and the APIs (OpenAI, KoboldAI compatible) locally",
    )
    serve_command.add_arguments(s)
    s.set_defaults(func=serve_command.run)

    for name, module, zh, en in (
        ("train", "aiwriter.training.train", "训练或微调模型", "train or fine-tune a model"),
        ("eval", "aiwriter.training.evaluate", "测量模型在文本上的损失", "measure a model's loss on a text"),
        ("bench", "aiwriter.bench", "测量速度（与 rwkv 官方包对比）", "measure speed (next to the rwkv package)"),
        ("export-onnx", "aiwriter.onnx_export", "导出一步 RNN 的 ONNX 模型", "export one RNN step as an ONNX model"),
    ):
        mod = importlib.import_module(module)
        p = sub.add_parser(name, add_help=False, help=f"{zh} / {en}", description=f"{zh} / {en}")
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    for p in sub.choices.values():
        _add_help(p)
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
