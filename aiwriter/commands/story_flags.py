"""`aiwriter write` flags for long-form writing: memory, author's note, lorebook, context budget,
and --show-context (print exactly what the model will read, and the report, then exit)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aiwriter.errors import AIWriterError

DEFAULT_BUDGET = 16_000


def add_story_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("长篇 / long-form")
    g.add_argument("--memory", help="记忆：模型先读的设定文字 / memory: text the model reads before the story")
    g.add_argument("--memory-file", help="从文件读记忆 (UTF-8) / read the memory from a file")
    g.add_argument("--authors-note", help="作者注：插在结尾前 320 字处 / author's note, inserted 320 chars before the end")
    g.add_argument("--lorebook", help="设定集文件：KoboldAI Lite 存档、NovelAI .lorebook 或本程序的 JSON / lorebook file: "
                                      "a KoboldAI Lite save, a NovelAI .lorebook, or AI-Writer JSON")
    g.add_argument("--context-budget", type=int, help=f"模型最多读多少字（默认：设定文件的 context_budget，或 {DEFAULT_BUDGET:,}）/ "
                                                      f"the most chars the model reads (default: the lorebook file's "
                                                      f"context_budget, else {DEFAULT_BUDGET:,})")
    g.add_argument("--show-context", action="store_true", help="只显示模型将读的全部文字和触发的设定，然后退出 / print exactly "
                                                               "what the model will read and which entries fired, then exit")


def _read_text(path: str, what_zh: str, what_en: str) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise AIWriterError(f"无法读取{what_zh}文件 {path}：{e.strerror}", f"cannot read {what_en} file {path}: {e.strerror}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AIWriterError(f"{what_zh}文件 {path} 不是 UTF-8 文本", f"{what_en} file {path} is not UTF-8 text")


def wants_story(args) -> bool:
    return any(getattr(args, k, None) for k in ("memory", "memory_file", "authors_note", "lorebook", "context_budget",
                                                "show_context"))


def story_context(args, opening: str):
    """The Context the model reads for this opening under the flags, or None if no long-form flag
    was given (then the opening is read as before)."""
    if not wants_story(args):
        return None
    from aiwriter.story import AssemblySettings, Lorebook, assemble, load_file

    if args.memory is not None and args.memory_file:
        raise AIWriterError("--memory 和 --memory-file 只能给一个", "give --memory or --memory-file, not both")
    book = load_file(args.lorebook).book if args.lorebook else Lorebook()
    if args.memory_file:
        book.memory = _read_text(args.memory_file, "记忆", "memory")
    elif args.memory is not None:
        book.memory = args.memory
    if args.authors_note is not None:
        book.authors_note = args.authors_note
    budget = args.context_budget if args.context_budget is not None else (book.context_budget or DEFAULT_BUDGET)
    ctx = assemble(opening, book, AssemblySettings(budget=budget, seed=args.seed or 0))
    for w in ctx.warnings:
        print(w, file=sys.stderr)
    return ctx


def show_context(ctx, out=None) -> None:
    """What the model will read (after the same cleaning Writer.read does), between rulers, then the report."""
    from aiwriter.tokenizer import clean_context

    out = out or sys.stdout
    out.write("=" * 20 + " 模型将读到 / what the model reads " + "=" * 20 + "\n")
    out.write(clean_context(ctx.text).lstrip("\n") + "\n")
    out.write("=" * 20 + " 报告 / report " + "=" * 20 + "\n")
    out.write(ctx.describe() + "\n")
    out.flush()
