import re
import subprocess
import sys

import pytest

from aiwriter.commands import main

ANSI = re.compile(r"\x1b\[")


def run_cli(args, stdin=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "aiwriter", *args], input=stdin, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def f2_args(f2_paths):
    return ["--model", str(f2_paths[0]), "--vocab", str(f2_paths[1])]


def test_write_plain_output_and_out_file(f2_args, tmp_path):
    out = tmp_path / "runs.txt"
    r = run_cli(["write", "林黛玉", *f2_args, "--runs", "3", "--length", "12", "--seed", "3", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert not ANSI.search(r.stdout)  # not a terminal: clean text
    runs = r.stdout.split("\n" + "-" * 20 + "\n")
    assert len(runs) == 3 and all(x.startswith("林黛玉") for x in runs)
    assert all(len(x.rstrip("\n")) == len("林黛玉") + 12 for x in runs)
    saved = out.read_text(encoding="utf-8")
    assert saved.count("run ") == 3 and "林黛玉" in saved
    assert "chars/s" in r.stderr


def test_write_same_seed_same_text_and_stdin(f2_args):
    a = run_cli(["write", *f2_args, "--runs", "1", "--length", "20", "--seed", "5"], stdin="第一段\n\n　　第二段  \n")
    b = run_cli(["write", *f2_args, "--runs", "1", "--length", "20", "--seed", "5"], stdin="第一段\n第二段")
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout  # same cleaned opening, same seed
    assert a.stdout.startswith("第一段\n第二段")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--length", "0"], "length"),
        (["--runs", "-1"], "runs"),
        (["--length", "100000000000000000000"], "length"),
        (["--top-p", "1.5"], "top_p"),
        (["--temperature", "0"], "temperature"),
        (["--device", "tpu"], "device"),
        (["--model", "/nonexistent/model.pth"], "not found"),
    ],
)
def test_write_bad_input_is_a_clear_error(f2_args, extra, needle):
    r = run_cli(["write", "开头", *f2_args, *extra])
    assert r.returncode == 2
    assert "错误" in r.stderr and "Error" in r.stderr and needle in r.stderr
    assert "Traceback" not in r.stderr


def test_write_empty_opening(f2_args):
    r = run_cli(["write", "  \n ", *f2_args])
    assert r.returncode == 2 and "empty" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_traceback(f2_args):
    r = run_cli(["--debug", "write", "开头", *f2_args, "--length", "0"])
    assert r.returncode == 2 and "Traceback" in r.stderr


def test_settings_file_gives_defaults_and_flags_win(f2_args, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[write]\nruns = 2\nlength = 9\nseed = 11\n", encoding="utf-8")
    r = run_cli(["write", "他", *f2_args, "--config", str(cfg)])
    assert r.returncode == 0, r.stderr
    runs = r.stdout.split("\n" + "-" * 20 + "\n")
    assert len(runs) == 2 and len(runs[0].rstrip("\n")) == 1 + 9
    r2 = run_cli(["write", "他", *f2_args, "--config", str(cfg), "--length", "4"])
    assert len(r2.stdout.split("\n" + "-" * 20 + "\n")[0].rstrip("\n")) == 1 + 4
    cfg.write_text("[write]\nrunz = 2\n", encoding="utf-8")
    r3 = run_cli(["write", "他", *f2_args, "--config", str(cfg)])
    assert r3.returncode == 2 and "runz" in r3.stderr


def test_ctrl_c_keeps_what_was_written(f2_args, tmp_path, monkeypatch, capsys):
    """Interrupt after some chars: exit 130, the partial run is on screen and in --out."""
    from aiwriter import writer as writer_mod

    real_write = writer_mod.Writer.write

    def interrupted(self, *a, **kw):
        for i, ev in enumerate(real_write(self, *a, **kw)):
            if i == 5:
                raise KeyboardInterrupt
            yield ev

    monkeypatch.setattr(writer_mod.Writer, "write", interrupted)
    out = tmp_path / "o.txt"
    code = main(["write", "林黛玉", *f2_args, "--runs", "1", "--length", "50", "--seed", "1", "--out", str(out)])
    assert code == 130
    shown = capsys.readouterr().out
    saved = out.read_text(encoding="utf-8")
    assert "interrupted" in saved
    written = shown.strip()[len("林黛玉"):]
    assert len(written) == 5 and written in saved


def test_malformed_flag_is_bilingual(capsys):
    with pytest.raises(SystemExit) as e:
        main(["write", "开头", "--runs", "x"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "错误" in err and "invalid arguments" in err and "Traceback" not in err


def test_help_lists_commands_bilingually(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("write", "train", "eval"):
        assert cmd in out
    assert "显示帮助" in out and "续写" in out


@pytest.mark.parametrize("cmd", [["write", "林黛玉", "--length", "5"], ["serve", "--no-browser", "--port", "0"]])
def test_threads_out_of_range_is_a_clear_error(cmd):
    r = run_cli([*cmd, "--threads", "0"], timeout=120)
    assert r.returncode != 0 and "--threads" in r.stderr and "Traceback" not in r.stderr
