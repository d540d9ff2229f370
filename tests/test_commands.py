"""aiwriter/commands/: help and argument errors without torch, one set of model flags, the train
flags matching TrainSettings, `serve --backend onnx`, and the entry point."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from aiwriter.commands import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "numpy", "onnxruntime", "fastapi", "uvicorn", "tqdm")

PROBE = """
import json, sys, time
t0 = time.perf_counter()
from aiwriter.commands import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        codes.append(main(argv))
    except SystemExit as e:
        codes.append(e.code)
print(json.dumps({"codes": codes, "seconds": time.perf_counter() - t0,
                  "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}), file=sys.__stdout__)
""" % (HEAVY,)


def _capture_serve(monkeypatch) -> dict:
    """`aiwriter serve` builds its app but does not serve: the app lands in the returned dict."""
    import uvicorn

    served = {}

    def fake_run(server, sockets=None):
        served["app"] = server.config.app
        for s in sockets:
            s.close()

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    return served


def test_help_and_argument_errors_do_not_import_torch():
    argvs = [["--help"], [], ["write", "--bogus"], ["train"], ["eval", "--text"], ["serve", "--port", "x"],
             ["bench", "--threads", "two"], ["export-onnx"], ["nosuch"]]
    argvs += [[c.NAME, "--help"] for c in COMMANDS]
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], report["heavy"]
    assert report["codes"] == [0, 2, 2, 2, 2, 2, 2, 2, 2] + [0] * len(COMMANDS)
    assert "Traceback" not in r.stderr and "错误：命令行参数有误" in r.stderr and "Error: invalid arguments" in r.stderr


def test_write_says_it_is_loading_before_torch_loads(tmp_path):
    code = ("import sys\nfrom aiwriter.commands import main\n"
            "import builtins\nreal = builtins.__import__\n"
            "def spy(name, *a, **k):\n"
            "    if name == 'torch' and 'torch' not in sys.modules:\n"
            "        print('<torch>', file=sys.stderr, flush=True)\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = spy\n"
            "sys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "write", "开头", "--model", str(tmp_path / "missing.pth")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and lines[0] == "正在载入missing.pth… / loading missing.pth…" and lines[1] == "<torch>", lines


def test_every_command_module_has_its_surface():
    names = [c.NAME for c in COMMANDS]
    assert names == ["write", "serve", "train", "eval", "bench", "export-onnx", "models", "download"]
    for c in COMMANDS:
        assert c.HELP and "/ " in c.HELP and callable(c.add_arguments) and callable(c.run)


def _flag_help(command: str, flag: str) -> str:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return next(a.help for a in sub._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", ["--model", "--vocab", "--device", "--dtype", "--threads", "--backend"])
def test_write_and_serve_share_the_model_flags(flag):
    assert _flag_help("write", flag) == _flag_help("serve", flag)


def test_threads_are_checked_once_for_every_command(capsys):
    for argv in (["write", "甲", "--threads", "0"], ["serve", "--threads", "2000", "--no-browser"],
                 ["eval", "--text", "x", "--threads", "0"], ["train", "--data", "x", "--out", "y", "--threads", "0"],
                 ["bench", "--threads", "-1"]):
        assert main(argv) == 2, argv
        assert "--threads must be between 1 and 1024" in capsys.readouterr().err


def test_train_flags_match_train_settings():
    """The flags' defaults are written in commands/train.py (no torch at help time): they must be
    TrainSettings' defaults, and every setting must have its flag."""
    from aiwriter.commands import train as command
    from aiwriter.training.train import TrainSettings

    p = argparse.ArgumentParser()
    command.add_arguments(p)
    args = p.parse_args(["--data", "a.txt", "--out", "o"])
    s = command.settings(args)
    for f in fields(TrainSettings):
        if f.default is not MISSING:
            assert getattr(s, f.name) == f.default, f.name
    assert s.data == ["a.txt"] and s.out == "o"
    assert command.settings(p.parse_args(["--data", "a", "--out", "o", "--no-progress", "--compile"])).compile is True


def test_serve_backend_onnx_serves_an_onnx_model(tmp_path, monkeypatch, capsys):
    import torch

    from aiwriter.models.rwkv7 import RWKV7
    from test_onnx import V, _vocab

    path = tmp_path / "model.pth"
    torch.save(RWKV7.random_weights(V, 1, 32, 32, seed=3), path)
    _vocab(tmp_path / "model.json")
    served = _capture_serve(monkeypatch)
    monkeypatch.setenv("AIWRITER_CACHE", str(tmp_path / "cache"))
    argv = ["serve", "--model", str(path), "--backend", "onnx", "--port", "0", "--no-browser", "--db", str(tmp_path / "d.db")]
    assert main(argv) == 0
    app = served["app"]
    try:
        model = app.state.scheduler.model
        assert type(model.net).__module__ == "aiwriter.speed.onnx_runtime"
        assert model.forward([1, 2])[0].shape[-1] == V
    finally:
        app.state.scheduler.close()
        app.state.store.close()
    assert main([*argv, "--dtype", "int8"]) == 2
    assert "--backend onnx" in capsys.readouterr().err


def test_serve_offers_the_models_folder_by_default(tmp_path, monkeypatch):
    """Without --models-dir, serve lists the models folder (where `aiwriter download` puts models)
    in the page's picker, with the states folder beside it; --model takes a name found there."""
    import shutil

    fixtures = Path(__file__).parent / "fixtures"
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    shutil.copy(fixtures / "aiwriter-v1-tiny.pth", models / "tiny.pth")
    shutil.copy(fixtures / "aiwriter-v1-vocab.json", models / "tiny.json")
    shutil.copy(fixtures / "aiwriter-v1-tiny.pth", models / "other.pth")
    shutil.copy(fixtures / "aiwriter-v1-vocab.json", models / "other.json")
    monkeypatch.setenv("AIWRITER_MODELS", str(models))
    served = _capture_serve(monkeypatch)
    assert main(["serve", "--model", "tiny.pth", "--port", "0", "--no-browser", "--db", str(tmp_path / "d.db")]) == 0
    app = served["app"]
    try:
        sched = app.state.scheduler
        assert sched.catalog.default_path == models / "tiny.pth"
        assert sched.catalog.names() == ["tiny.pth", "other.pth"]
        assert sched.states.dir == tmp_path / "data" / "states"
    finally:
        app.state.scheduler.close()
        app.state.store.close()


def test_write_eval_bench_take_a_model_name(tmp_path, monkeypatch, capsys):
    """--model NAME: a catalogue name not yet downloaded says how to get it (before anything loads)."""
    monkeypatch.setenv("AIWRITER_MODELS", str(tmp_path / "models"))
    for argv in (["write", "开头", "--model", "rwkv7-g1-0.1b"], ["eval", "--text", "x.txt", "--model", "rwkv7-g1-0.1b"],
                 ["bench", "--model", "rwkv7-g1-0.1b"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "aiwriter download rwkv7-g1-0.1b" in err and "还没有下载" in err, argv
    assert not (tmp_path / "models").exists()


def test_entry_point_is_in_commands():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["aiwriter"] == "aiwriter.commands:main"
    assert not (ROOT / "aiwriter" / "cli.py").exists() and not (ROOT / "aiwriter" / "server" / "command.py").exists()
