"""When onnxruntime's threads spin (speed/spin.py): the setting, the policy's verdicts on a scripted
run-queue wait, and the kernel's figure itself."""
import os
import subprocess
import sys
import textwrap

import pytest

from aiwriter.errors import AIWriterError
from aiwriter.speed.spin import SpinPolicy, run_delay_ns, spin_setting


def test_setting(monkeypatch):
    monkeypatch.delenv("AIWRITER_ORT_SPIN", raising=False)
    assert spin_setting() is None
    for text, want in (("", None), ("auto", None), (" AUTO ", None), ("0", False), ("1", True)):
        monkeypatch.setenv("AIWRITER_ORT_SPIN", text)
        assert spin_setting() is want
    for bad in ("yes", "2", "on"):
        monkeypatch.setenv("AIWRITER_ORT_SPIN", bad)
        with pytest.raises(AIWriterError, match="AIWRITER_ORT_SPIN") as e:
            spin_setting()
        assert "auto" in e.value.args[0]  # the Chinese message names the values too


class Clock:
    """A run-queue wait that grows by what the test says per window, and the wall clock."""

    def __init__(self):
        self.ns, self.reads, self.s = 0, 0, 0.0

    def __call__(self):
        self.reads += 1
        return self.ns

    def wall(self):
        return self.s


def policy(clock, **kw):
    return SpinPolicy(probe=clock, clock=clock.wall, **kw)


def window(policy, clock, wait_share, seconds=1.0, steps=4, gap=0.0):
    """`steps` calls making one window of `seconds`, the threads waiting `wait_share` of it,
    `gap` seconds of other work before the last call."""
    verdicts = []
    for i in range(steps):
        clock.ns += int(wait_share * seconds / steps * 1e9)
        clock.s += seconds / steps + (gap if i == steps - 1 else 0.0)
        verdicts.append(policy.observe(seconds / steps))
    changes = [v for v in verdicts if v is not None]
    assert len(changes) <= 1
    return changes[0] if changes else None


def test_policy_stops_spinning_at_contention_and_resumes_after_a_growing_calm():
    clock = Clock()
    p = policy(clock, window_s=1.0, calm_s=3.0, max_calm_s=5.0)
    assert p.spinning
    for _ in range(5):
        assert window(p, clock, 0.01) is None  # quiet: keeps spinning
    assert window(p, clock, 0.7) is False  # contended: stop spinning, once
    assert not p.spinning
    assert window(p, clock, 0.8) is None
    assert window(p, clock, 0.01) is None
    assert window(p, clock, 0.01) is None
    assert window(p, clock, 0.1) is None  # neither quiet nor contended: the calm starts over
    assert [window(p, clock, 0.0) for _ in range(3)] == [None, None, True]  # 3 s of calm
    assert p.spinning and p.calm_s == 5.0  # the next episode waits longer (doubled, capped)
    assert window(p, clock, 0.5) is False
    assert [window(p, clock, 0.0) for _ in range(5)] == [None] * 4 + [True]
    assert p.calm_s == 5.0


def test_policy_reads_the_kernel_once_per_window():
    clock = Clock()
    p = policy(clock, window_s=1.0)
    assert clock.reads == 1  # the baseline
    for _ in range(3):
        p.observe(0.25)
    assert clock.reads == 1
    p.observe(0.25)
    assert clock.reads == 2


def test_policy_without_the_kernels_figure_never_changes():
    p = SpinPolicy(probe=lambda: None, window_s=0.1)
    assert all(p.observe(1.0) is None for _ in range(10))
    assert p.spinning


def test_a_thread_that_ended_does_not_count_as_negative_wait():
    clock = Clock()
    p = policy(clock, window_s=1.0, calm_s=1.0)
    assert window(p, clock, 0.9) is False
    clock.ns -= 10**9  # a thread with a large count ended: the sum fell
    assert window(p, clock, 0.0) is True  # read as no wait, not as an error


def test_a_window_stretched_by_other_work_is_dropped():
    """An opening read by PyTorch's threads between two calls (or an idle server) leaves the
    window's wall time far above its work, and whatever waited meanwhile is not the calls'."""
    clock = Clock()
    p = policy(clock, window_s=1.0)
    assert window(p, clock, 0.9, gap=5.0) is None and p.spinning and p.last_share is None
    assert window(p, clock, 0.9, gap=1.5) is False  # stretched 2.5x: still counted


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="the kernel's run-queue figure is Linux's")
def test_run_delay_counts_the_wait_for_a_shared_cpu():
    """A process whose busy thread shares one CPU with another busy process waits for it about
    half the time (more if others use that CPU too), and more than when it has the CPU to itself.
    (The scheduler's fairness, not a speed: no timing bound.)"""
    code = textwrap.dedent("""
        import os, subprocess, sys, time
        from aiwriter.speed.spin import run_delay_ns
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        def busy(seconds):
            d0, t0 = run_delay_ns(), time.perf_counter()
            while time.perf_counter() - t0 < seconds:
                pass
            return (run_delay_ns() - d0) / 1e9 / seconds
        alone = busy(0.5)
        rival = subprocess.Popen([sys.executable, "-c", "import os; os.sched_setaffinity(0, {%d})\\nwhile True: pass" % cpu])
        time.sleep(0.2)
        shared = busy(1.0)
        rival.kill()
        print(alone, shared)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=os.getcwd()))
    alone, shared = map(float, out.stdout.split())
    assert isinstance(run_delay_ns(), int)
    assert shared > 0.3
    assert shared > alone
