"""`aiwriter write` with memory, author's note and a lorebook: --show-context prints what the model
reads, writing reads it, bad lorebooks are clear errors."""
import json
import subprocess
import sys

import pytest

from aiwriter.tokenizer import clean_context


def run_cli(args, timeout=300):
    return subprocess.run([sys.executable, "-m", "aiwriter", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def f2_args(f2_paths):
    return ["--model", str(f2_paths[0]), "--vocab", str(f2_paths[1])]


@pytest.fixture
def lite(tmp_path):
    p = tmp_path / "save.json"
    p.write_text(json.dumps({"memory": "宁采臣是书生。", "authorsnote": "阴森", "worldinfo": [
        {"key": "兰若寺", "content": "兰若寺是荒寺。", "comment": "寺"},
        {"key": "燕赤霞", "content": "燕赤霞是剑客。", "comment": "燕"}]}, ensure_ascii=False), encoding="utf-8")
    return p


def test_show_context_prints_what_the_model_reads(lite, tmp_path):
    opening = "那夜宁采臣走进兰若寺，" + "月色昏暗，" * 100
    r = run_cli(["write", opening, "--lorebook", str(lite), "--show-context"])
    assert r.returncode == 0, r.stderr
    text, report = r.stdout.split("报告 / report")
    assert text.index("宁采臣是书生。") < text.index("那夜") < text.index("兰若寺是荒寺。") < text.index("[Author's note: 阴森]")
    assert "燕赤霞是剑客" not in text
    assert "#1 寺" in report and "兰若寺" in report and "context" in report


def test_flags_override_the_file_and_memory_file(lite, tmp_path):
    mem = tmp_path / "mem.txt"
    mem.write_text("聂小倩是女鬼。", encoding="utf-8")
    r = run_cli(["write", "兰若寺里", "--lorebook", str(lite), "--memory-file", str(mem), "--authors-note", "温柔",
                 "--show-context"])
    assert r.returncode == 0, r.stderr
    assert "聂小倩是女鬼。" in r.stdout and "宁采臣是书生" not in r.stdout and "温柔" in r.stdout


def test_writing_reads_the_assembled_context(f2_args):
    from aiwriter.story import AssemblySettings, Lorebook, assemble

    r = run_cli(["write", "他走进了庙门", *f2_args, "--memory", "从前有个书生。", "--runs", "1", "--length", "10", "--seed", "1"])
    assert r.returncode == 0, r.stderr
    ctx = assemble("他走进了庙门", Lorebook(memory="从前有个书生。"), AssemblySettings(budget=16_000))
    assert r.stdout.startswith(clean_context(ctx.text).lstrip("\n"))
    plain = run_cli(["write", "他走进了庙门", *f2_args, "--runs", "1", "--length", "10", "--seed", "1"])
    assert plain.stdout.split("他走进了庙门")[1] != r.stdout.split("他走进了庙门")[1]


@pytest.mark.parametrize("content, needle", [
    ("not json", "JSON"),
    (json.dumps({"worldinfo": [{"key": "k" * 10_000, "content": "x", "comment": "长键"}]}), "长键"),
])
def test_bad_lorebook_is_a_clear_error(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content, encoding="utf-8")
    r = run_cli(["write", "开头", "--lorebook", str(p), "--show-context"])
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr


def test_memory_and_memory_file_together_refused(tmp_path):
    r = run_cli(["write", "开头", "--memory", "a", "--memory-file", str(tmp_path / "x"), "--show-context"])
    assert r.returncode != 0 and "--memory-file" in r.stderr


def test_show_context_needs_no_model_and_no_torch(lite):
    code = ("import sys; from aiwriter.commands import main; "
            f"rc = main(['write', '兰若寺', '--lorebook', {str(lite)!r}, '--show-context']); "
            "print('RC', rc, 'TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "RC 0 NO-TORCH" in r.stdout and "兰若寺" in r.stdout, r.stdout + r.stderr


def test_the_files_context_budget_is_the_default(tmp_path):
    p = tmp_path / "ours.json"
    p.write_text(json.dumps({"memory": "宁采臣是书生。", "context_budget": 300}, ensure_ascii=False), encoding="utf-8")
    opening = "月色昏暗，" * 200
    r = run_cli(["write", opening, "--lorebook", str(p), "--show-context"])
    assert r.returncode == 0, r.stderr
    assert "/ 300 " in r.stdout.split("报告 / report")[1]
    r = run_cli(["write", opening, "--lorebook", str(p), "--context-budget", "500", "--show-context"])
    assert "/ 500 " in r.stdout.split("报告 / report")[1]  # the flag wins
