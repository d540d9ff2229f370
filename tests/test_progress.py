"""aiwriter/progress.py: a tqdm bar on a terminal, plain periodic lines elsewhere (never carriage
returns in a pipe or a log); and the training display, which must move with fast steps."""
from __future__ import annotations

import io
import random

from aiwriter.progress import Every, PlainProgress, PositionBar, progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_lines_every_interval_and_one_at_the_end():
    out, clock = io.StringIO(), FakeClock()
    bar = PlainProgress(total=100, desc="评测 / eval", unit="char", file=out, interval=30, clock=clock)
    for _ in range(100):
        clock.t += 1.0
        bar.update(1)
        bar.set_postfix_str(f"at {bar.n}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4  # at 30, 60, 90 s and the end
    assert lines[0] == "评测 / eval: 30/100 char (30%), 30 s, at 29"
    assert lines[-1] == "评测 / eval: 100/100 char (100%), 100 s, at 100"
    bar.close()  # closing twice prints nothing more
    assert len(out.getvalue().splitlines()) == 4


def test_disabled_plain_progress_is_silent():
    out = io.StringIO()
    bar = progress(total=10, desc="x", file=out, disable=True)
    bar.update(10)
    bar.write("hidden")
    bar.close()
    assert out.getvalue() == ""


def test_terminal_gets_tqdm_and_a_pipe_gets_lines():
    from tqdm import tqdm

    bar = progress(total=3, desc="d", file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()
    out = io.StringIO()
    bar = progress(total=3, desc="d", file=out, unit_scale=True, mininterval=2.0, leave=False)
    assert isinstance(bar, PlainProgress)
    bar.update(3)
    bar.close()
    assert out.getvalue() == "d: 3/3 it (100%), 0 s\n"


def test_every():
    clock = FakeClock()
    every = Every(2.0, clock)
    fired = []
    for i in range(100):
        clock.t = i * 0.1
        if every():
            fired.append(i)
    assert fired == list(range(0, 100, 20))


def test_training_display_moves_with_fast_steps(tmp_path, monkeypatch, capsys):
    """Issue 17: at 600+ steps a minute the bar said "step 1" for the whole run, because the
    10-step history window also restarted the 2-second display window. Steps here take 0.02 s of
    (fake) time: the display must be refreshed about every 2 s, i.e. every ~100 steps."""
    from aiwriter.training import train as T
    from test_training import make_text, tiny_args, train

    now = [0.0]

    def fake_clock():
        now[0] += 0.01  # the loop reads the clock twice a step
        return now[0]

    (tmp_path / "a.txt").write_text(make_text(200, 1), encoding="utf-8")
    monkeypatch.setattr(T, "clock", fake_clock)
    monkeypatch.setenv("AIWRITER_PROGRESS_INTERVAL", "0")  # a plain line on every update
    args = [a for a in tiny_args([tmp_path / "a.txt"], tmp_path / "o", "--max-steps", "400") if a != "--no-progress"]
    train(args)
    err = capsys.readouterr().err
    assert "\r" not in err  # not a terminal: plain lines
    shown = sorted({int(line.split(", step ")[1].split()[0]) for line in err.splitlines() if ", step " in line})
    assert shown[0] == 1 and len(shown) >= 4 and shown[-1] >= 300, shown
    assert all(b - a <= 110 for a, b in zip(shown, shown[1:])), shown


def test_eval_in_a_pipe_prints_lines_not_carriage_returns(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from test_hardening_faults import FIXTURES

    text = tmp_path / "t.txt"
    rng = random.Random(0)
    text.write_text("".join(rng.choice("却说那人走进门来只见天色已晚。\n") for _ in range(3000)), encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "aiwriter", "eval", "--model", str(FIXTURES / "aiwriter-v2-tiny.pth"),
                        "--vocab", str(FIXTURES / "aiwriter-v2-vocab.json"), "--text", str(text), "--chunk", "256"],
                       capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(root), "AIWRITER_PROGRESS_INTERVAL": "0"})
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("评测 / eval:")]
    assert len(lines) >= 5 and "k char (100%)" in lines[-1], r.stderr


def test_position_bar_starts_where_the_first_call_says_and_ends_at_the_total(monkeypatch):
    monkeypatch.setenv("AIWRITER_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    with PositionBar("读入开头 / reading the opening", unit="token", file=out) as bar:
        bar(1000, 5000)   # 1,000 ids came from a cache
        bar(3048, 5000)
        bar(5000, 5000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("读入开头 / reading the opening: 3048/5000 token (61%)")
    assert lines[-1].startswith("读入开头 / reading the opening: 5000/5000 token (100%)")
    assert bar.bar.n == 5000


def test_position_bar_never_called_prints_nothing():
    out = io.StringIO()
    with PositionBar("x", file=out):
        pass
    assert out.getvalue() == ""
