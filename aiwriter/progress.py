"""Progress of long jobs (training, evaluation, data packing): a tqdm bar on a terminal, plain
periodic lines anywhere else (a pipe, a CI log, a file), where carriage-return redraws would pile up
into one endless line. Every progress display in the package goes through `progress()`."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

PLAIN_INTERVAL = 30.0  # seconds between plain lines (AIWRITER_PROGRESS_INTERVAL overrides it)


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class Every:
    """True on the first call, then at most once per `seconds` (a display throttle)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.clock, self.last = seconds, clock, None

    def __call__(self) -> bool:
        now = self.clock()
        if self.last is None or now - self.last >= self.seconds:
            self.last = now
            return True
        return False


def _human(x: float, scale: bool) -> str:
    if not scale:
        return f"{x:g}" if isinstance(x, float) else str(x)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:.2f}{unit}"
    return f"{x:g}"


class PlainProgress:
    """The subset of tqdm's surface the package uses (update, set_postfix_str, write, close, n),
    printed as one plain line every `interval` seconds and one at the end."""

    def __init__(self, total=None, desc: str = "", unit: str = "it", file: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL, initial: int = 0, unit_scale: bool = False, disable: bool = False,
                 clock: Callable[[], float] = time.monotonic, **_ignored):
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.file, self.disable, self.clock = file, disable, clock
        self.n, self.postfix = initial, ""
        self.start = clock()
        self._due = Every(interval, clock)
        self._due()  # the first line comes after one interval, not at the start
        self._printed_n = None
        self._closed = False

    def _out(self) -> TextIO:
        return self.file or sys.stderr

    def line(self) -> str:
        done = _human(self.n, self.unit_scale)
        if self.total:
            done += f"/{_human(self.total, self.unit_scale)} {self.unit} ({100 * self.n / self.total:.0f}%)"
        else:
            done += f" {self.unit}"
        text = f"{self.desc}: {done}, {self.clock() - self.start:.0f} s" if self.desc else f"{done}, {self.clock() - self.start:.0f} s"
        return text + (f", {self.postfix}" if self.postfix else "")

    def _print(self) -> None:
        print(self.line(), file=self._out(), flush=True)
        self._printed_n = self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.disable and self._due():
            self._print()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def write(self, s: str, file: TextIO | None = None, **_ignored) -> None:
        if not self.disable:
            print(s, file=file or self._out(), flush=True)

    def close(self) -> None:
        if not self._closed and not self.disable and self._printed_n != self.n:
            self._print()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(total=None, desc: str = "", unit: str = "it", *, file: TextIO | None = None, disable: bool = False,
             interval: float | None = None, **tqdm_kw):
    """A tqdm bar when `file` (default stderr) is a terminal, else a PlainProgress printing a line
    every `interval` seconds. Both take update(n), set_postfix_str(s), write(s), close()."""
    file = file or sys.stderr
    if is_terminal(file) and not disable:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=file, **tqdm_kw)
    if interval is None:
        try:
            interval = float(os.environ.get("AIWRITER_PROGRESS_INTERVAL", PLAIN_INTERVAL))
        except ValueError:
            interval = PLAIN_INTERVAL
    keep = {k: v for k, v in tqdm_kw.items() if k in ("initial", "unit_scale", "clock")}
    return PlainProgress(total=total, desc=desc, unit=unit, file=file, interval=interval, disable=disable, **keep)


class PositionBar:
    """A bar fed with (done, total) positions, as callbacks report them (Writer.read's): made on
    the first call, when the total is known; on a terminal it shows only past `delay` seconds, so
    short work prints nothing."""

    def __init__(self, desc: str, unit: str = "it", delay: float = 2.0, file: TextIO | None = None):
        self.desc, self.unit, self.delay, self.file = desc, unit, delay, file
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = progress(total=total, desc=self.desc, unit=self.unit, file=self.file, delay=self.delay,
                                leave=False, initial=done)
        elif done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
