"""Whether onnxruntime's waiting threads spin: AIWRITER_ORT_SPIN = auto (the default), 0 or 1.

A thread that spins answers the next parallel section at once; one that sleeps must be woken
(a system call, and on a virtual machine an interrupt to a halted CPU), once per matrix product
of every step. On idle cores spinning made the RWKV-7 1.5B int4 step 7-14 % faster (AVX2 EPYC, 2
cores). But when another program wants the cores, spinning threads burn the time slices the
work needs: the same step got 1.5-1.7x slower than with sleeping threads (docs/benchmarks.md).

So by default a session spins while this process's threads never wait for a CPU, and sleeps
once they do. The measure is the kernel's own: the time each thread spent runnable but not
running (the second field of /proc/self/task/*/schedstat), summed over the process's threads,
per second of onnxruntime work. On the quiet 2-core machine it stayed under 1 % of the work's
time with or without spinning; with another busy program, 70-95 %. After a contended window
the session is reopened without spinning (about a second for a mapped 1.5B step) and spins
again only after a long quiet stretch, twice as long after each contended episode. Where the
kernel gives no such figure (not Linux) auto means sleeping threads, as before.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from aiwriter.errors import AIWriterError


def spin_setting() -> bool | None:
    """$AIWRITER_ORT_SPIN: True (1: always spin), False (0: never), None (unset or auto: decided
    by SpinPolicy). Its own knob, not OMP_WAIT_POLICY=ACTIVE, which also spins torch's threads:
    in the int4 mode those then take the cores from onnxruntime's (1.5B, idle AVX2 EPYC: 10.2
    tok/s against 19.1 with neither spinning and 21.2 with onnxruntime's alone)."""
    text = os.environ.get("AIWRITER_ORT_SPIN", "").strip().lower()
    if text in ("", "auto"):
        return None
    if text in ("0", "1"):
        return text == "1"
    raise AIWriterError(f"AIWRITER_ORT_SPIN 应为 auto、0 或 1，而不是 {text!r}",
                        f"AIWRITER_ORT_SPIN must be auto, 0 or 1, not {text!r}")


def run_delay_ns() -> int | None:
    """Nanoseconds this process's threads have spent waiting for a CPU (runnable, not running),
    summed over its live threads; None where the kernel does not say (not Linux, no schedstat)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    total, seen = 0, False
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat", "rb") as f:
                total += int(f.read().split()[1])
            seen = True
        except (OSError, ValueError, IndexError):  # a thread that just ended
            continue
    return total if seen else None


@dataclass
class SpinPolicy:
    """Decides, window after window of onnxruntime work, whether its threads should spin.

    `observe(busy_s)` after each call of the session, with the seconds it ran; it returns the
    new setting when the session should be reopened with it, else None. The run-queue wait is
    read once per `window_s` of work (reading it costs ~0.1 ms: not once per step), so it also
    counts what the process's other threads waited between the calls; a window that took more
    than `max_stretch` times its work in wall time (an opening read by PyTorch's threads in
    between, an idle server) says little about the calls and is dropped."""

    probe: Callable[[], int | None] = run_delay_ns
    clock: Callable[[], float] = time.monotonic
    spinning: bool = True
    window_s: float = 1.0  # seconds of work per verdict
    contended: float = 0.2  # waiting per second of work above which the cores are contended
    quiet: float = 0.05  # ... and below which they are free
    calm_s: float = 30.0  # seconds of free windows in a row before spinning again
    max_calm_s: float = 600.0  # the longest that wait becomes (it doubles each episode)
    max_stretch: float = 3.0  # wall seconds per second of work above which a window is dropped
    _busy: float = field(default=0.0, init=False)
    _since: float = field(default=0.0, init=False)
    _calm: float = field(default=0.0, init=False)
    _last: int | None = field(default=None, init=False)
    last_share: float | None = field(default=None, init=False)  # the last window's wait per second of work

    def __post_init__(self):
        self._last, self._since = self.probe(), self.clock()

    def observe(self, busy_s: float) -> bool | None:
        self._busy += busy_s
        if self._busy < self.window_s:
            return None
        now, since, window = self.probe(), self._since, self._busy
        self._last, last, self._since, self._busy = now, self._last, self.clock(), 0.0
        if now is None or last is None or self._since - since > self.max_stretch * window:
            return None
        share = max(0, now - last) / 1e9 / window  # a thread that ended takes its count along
        self.last_share = share
        if share > self.contended:
            self._calm = 0.0
            if self.spinning:
                self.spinning = False
                return False
            return None
        self._calm = self._calm + window if share < self.quiet else 0.0
        if not self.spinning and self._calm >= self.calm_s:
            self.spinning, self._calm = True, 0.0
            self.calm_s = min(self.calm_s * 2, self.max_calm_s)  # the next episode waits longer
            return True
        return None
