"""`aiwriter write`: the seed's run.py job — an opening, N runs of L chars, streamed to the terminal."""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

from aiwriter.commands.common import add_model_flags, check_backend, check_threads, check_vocab, model_loader, resolve_model
from aiwriter.errors import AIWriterError
from aiwriter.progress import PositionBar
from aiwriter.sampling_settings import FIELDS
from aiwriter.settings import WriteConfig, load_write_config
from aiwriter.commands.story_flags import add_story_arguments, show_context, story_context

NAME = "write"
HELP = "续写开头 / continue an opening"
DESCRIPTION = "续写开头，写多少遍 × 每次多少字 / continue an opening, N runs of L chars"

YELLOW, DIM, RESET = "\x1b[93m", "\x1b[2m", "\x1b[0m"
INDENT = "\u3000"  # the seed shows each paragraph with a full-width indent


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("opening", nargs="?", help="开头；也可用 --file 或标准输入 / the opening; or --file, or standard input")
    p.add_argument("--file", "-f", help="从文件读开头 (UTF-8) / read the opening from a file")
    p.add_argument("--runs", "-n", type=int, help="写多少遍（默认 3）/ how many continuations (default 3)")
    p.add_argument("--length", "-l", type=int, help="每次写多少字（默认 512）/ chars per continuation (default 512)")
    for f in FIELDS:  # every sampling setting, from the one list
        flags = (f.flag, f.short_flag) if f.short_flag else (f.flag,)
        p.add_argument(*flags, type=f.kind, help=f"{f.help[0]}（默认 {f.default:g}）/ {f.help[1]} (default {f.default:g})")
    p.add_argument("--stop", action="append", help="遇到这段文字就停（可多次）/ stop at this string (repeatable)")
    add_model_flags(p, backend=True)
    p.add_argument("--seed", type=int, help="随机种子：同一种子写出同样的文字 / random seed: same seed, same text")
    p.add_argument("--batch", type=int, help="同时写几遍（默认 8）/ runs written together in one batch (default 8)")
    p.add_argument("--out", "-o", help="把每一遍都存到这个文件 / save every run to this file")
    p.add_argument("--state", help="从这个状态文件开始（RWKV-Runner 的 time_state .pth/.safetensors，或 aiwriter train --state-only 的输出）/ "
                                   "start from this state file (RWKV-Runner time_state .pth/.safetensors, or aiwriter train --state-only)")
    p.add_argument("--no-state-cache", action="store_true",
                   help="不把读过的状态存到磁盘缓存 / do not keep the states of what was read in the disk cache")
    p.add_argument("--config", help="设置文件 (TOML) / settings file (TOML)")
    add_story_arguments(p)


def _read_opening(args) -> str:
    if args.opening is not None and args.file:
        raise AIWriterError("开头和 --file 只能给一个", "give the opening or --file, not both")
    if args.file:
        try:
            raw = Path(args.file).read_bytes()
        except OSError as e:
            raise AIWriterError(f"无法读取开头文件 {args.file}：{e.strerror}", f"cannot read opening file {args.file}: {e.strerror}")
        try:
            return raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                return raw.decode("gb18030")
            except UnicodeDecodeError:
                raise AIWriterError(f"开头文件 {args.file} 不是 UTF-8 或 GB18030 文本", f"opening file {args.file} is not UTF-8 or GB18030 text")
    if args.opening is not None:
        return args.opening
    if not sys.stdin.isatty():
        return sys.stdin.read()
    raise AIWriterError("请给出开头：aiwriter write \"开头\"，或 --file 文件", "give an opening: aiwriter write \"text\", or --file FILE")


def _config(args) -> WriteConfig:
    overrides = {k: getattr(args, k, None) for k in WriteConfig.__dataclass_fields__}
    if args.stop:
        overrides["stop"] = tuple(args.stop)
    return load_write_config(args.config, overrides)


MAX_LENGTH, MAX_RUNS = 1_000_000, 100_000


def _check_counts(cfg: WriteConfig) -> None:
    if not 0 < cfg.length <= MAX_LENGTH:
        raise AIWriterError(
            f"每次写的字数必须在 1 到 {MAX_LENGTH:,} 之间（收到 {cfg.length}）",
            f"--length must be between 1 and {MAX_LENGTH:,} (got {cfg.length})",
        )
    if not 0 < cfg.runs <= MAX_RUNS:
        raise AIWriterError(
            f"写的遍数必须在 1 到 {MAX_RUNS:,} 之间（收到 {cfg.runs}）", f"--runs must be between 1 and {MAX_RUNS:,} (got {cfg.runs})"
        )
    if cfg.batch <= 0:
        raise AIWriterError(f"--batch 必须大于 0（收到 {cfg.batch}）", f"--batch must be greater than 0 (got {cfg.batch})")


class Display:
    """Terminal: the opening in yellow, paragraphs indented like the seed, stats dimmed.
    Not a terminal: the plain text on stdout (so `| tee` is clean), stats on stderr."""

    def __init__(self, stream=None):
        self.out = stream or sys.stdout  # looked up now, not at import (tests swap sys.stdout)
        self.tty = self.out.isatty() and not os.environ.get("NO_COLOR")

    def _w(self, s: str) -> None:
        self.out.write(s)
        self.out.flush()

    def begin(self, opening: str, run: int, runs: int) -> None:
        if self.tty:
            self._w(f"{DIM}{'-' * 20} 第 {run + 1}/{runs} 遍 / run {run + 1}/{runs}{RESET}{YELLOW}")
            self._w(opening.replace("\n", "\n" + INDENT) + RESET)
        else:
            if run:
                self._w("\n" + "-" * 20 + "\n")
            self._w(opening.lstrip("\n"))

    def text(self, s: str) -> None:
        self._w(s.replace("\n", "\n" + INDENT) if self.tty else s)

    def end(self, chars: int, seconds: float, run: int, runs: int, note: str = "") -> None:
        speed = chars / seconds if seconds > 0 else math.inf
        stats = f"{chars} 字，{seconds:.2f} 秒，{speed:.1f} 字/秒{note} / {chars} chars, {seconds:.2f} s, {speed:.1f} chars/s"
        if self.tty:
            self._w(f"\n{DIM}{'-' * 10} {stats}{RESET}\n")
        else:
            self._w("\n")
            print(f"[{run + 1}/{runs}] {stats}", file=sys.stderr)


class OutFile:
    """--out: every finished (or interrupted) run appended and flushed at once."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        if self.path:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path.open("a", encoding="utf-8").close()
            except OSError as e:
                raise AIWriterError(f"无法写入 {self.path}：{e.strerror}", f"cannot write {self.path}: {e.strerror}")

    def save(self, opening: str, text: str, run: int, runs: int, note: str = "") -> None:
        if self.path:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"---------- 第 {run + 1}/{runs} 遍 / run {run + 1}/{runs}{note}\n{opening.lstrip(chr(10))}{text}\n")
                f.flush()
                os.fsync(f.fileno())


def run(args) -> int:
    cfg = _config(args)
    _check_counts(cfg)
    cfg.model = resolve_model(cfg.model)  # a catalogue name or a file in the models folder -> its path
    sampling = cfg.sampling()
    opening = _read_opening(args)
    if not opening.strip():
        raise AIWriterError("开头是空的，请输入开头", "the opening is empty: give some text to continue")
    ctx = story_context(args, opening)
    if ctx is not None:
        if args.show_context:
            show_context(ctx)
            return 0
        opening = ctx.text
    out = OutFile(args.out)

    threads = getattr(args, "threads", None)
    backend = getattr(args, "backend", "torch")
    check_threads(threads)
    check_backend(backend, cfg.dtype)
    # Everything above runs without torch; say what happens next before the slow part begins.
    zh, en = (Path(cfg.model).name,) * 2 if cfg.model else ("内置模型", "the embedded model")
    print(f"正在载入{zh}… / loading {en}…", file=sys.stderr, flush=True)

    import torch

    from aiwriter.engine import configure_threads
    from aiwriter.writer import Piece, Writer

    configure_threads(None, threads)  # before loading: onnxruntime sessions take the count when made
    t_load = time.perf_counter()
    model = model_loader(backend)(cfg.model, vocab=cfg.vocab, device=cfg.device, dtype=cfg.dtype)
    check_vocab(model)
    configure_threads(model, threads)
    start = model.state_from_file(args.state) if getattr(args, "state", None) else None
    disk = None
    if not getattr(args, "no_state_cache", False):
        from aiwriter.state_cache import DiskStateCache

        disk = DiskStateCache(model)
    writer = Writer(model, disk=disk)
    with PositionBar("读入开头 / reading the opening", unit="token") as bar:
        reading = writer.read(opening, start=start, progress=bar)
    seed = cfg.seed if cfg.seed is not None else random.randrange(2**31)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    print(
        f"模型 {model.path.name}（{model.family}），开头 {len(reading.text) - 1} 字，写 {cfg.runs} 遍，每遍 {cfg.length} 字，种子 {seed}，"
        f"准备用时 {time.perf_counter() - t_load:.1f} 秒 / model {model.path.name} ({model.family}), opening {len(reading.text) - 1} chars, "
        f"{cfg.runs} runs × {cfg.length} chars, seed {seed}",
        file=sys.stderr,
    )

    display = Display()
    for start in range(0, cfg.runs, cfg.batch):
        n = min(cfg.batch, cfg.runs - start)
        texts = {start + i: "" for i in range(n)}
        finished: dict[int, object] = {}
        live = start
        display.begin(reading.text, live, cfg.runs)
        t0 = time.perf_counter()
        try:
            for ev in writer.write(reading, n, cfg.length, sampling, gen, first_run=start):
                if isinstance(ev, Piece):
                    texts[ev.run] += ev.text
                    if ev.run == live:
                        display.text(ev.text)
                    continue
                finished[ev.run] = ev
                out.save(reading.text, ev.text, ev.run, cfg.runs)
                # Show every finished run in order; the next unfinished one becomes live.
                while live in finished:
                    r = finished[live]
                    display.end(r.chars, r.seconds, live, cfg.runs)
                    live += 1
                    if live < start + n:
                        display.begin(reading.text, live, cfg.runs)
                        display.text(texts[live])
        except KeyboardInterrupt:
            elapsed = time.perf_counter() - t0
            note = "（中断）/ (interrupted)"
            display.end(len(texts[live]), elapsed, live, cfg.runs, note=" 已中断")
            for r in range(live, start + n):
                if r not in finished and texts[r]:
                    out.save(reading.text, texts[r], r, cfg.runs, note=" " + note)
            print("已停止，写好的文字已保留 / stopped; what was written is kept", file=sys.stderr)
            return 130
    return 0
