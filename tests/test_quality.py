"""benchmarks/quality.py: the measures of written text the benchmarks report."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("quality", Path(__file__).resolve().parent.parent / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)
repeated_share = quality.repeated_share


def test_no_repeats_is_zero():
    assert repeated_share("天地玄黄宇宙洪荒日月盈昃辰宿列张寒来暑往") == 0.0


def test_a_loop_is_counted():
    unit = "他说道：“你好。”"  # 9 chars
    text = "开头一句话，不重复。" + unit * 4
    # period 9: the 10-gram at i repeats the one at i-9 once both lie in the loop (i >= 10 + 9),
    # so every char from index 19 on is covered; the prefix and the first period are new
    share = repeated_share(text, n=10)
    expected_covered = len(text) - 19
    assert abs(share - expected_covered / len(text)) < 1e-9


def test_short_text():
    assert repeated_share("短", n=10) == 0.0
    assert repeated_share("a" * 10, n=10) == 0.0
    assert repeated_share("a" * 11, n=10) == 10 / 11  # the first char is new
