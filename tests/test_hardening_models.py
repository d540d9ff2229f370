"""Bad model files, through the two ways a user reaches them: the server's model picker (a file
in the models folder named by a request) and `aiwriter write --model`. Each is a clear bilingual
error; nothing in the file is executed; the server keeps its current model and keeps serving.
(The loaders themselves are tested in test_formats.py, test_safe_pickle.py, test_tokenizer.py.)"""
import json
import os
import pickle
import shutil
import zipfile

import torch
from test_server_api import GREEDY, server_with

from aiwriter.commands import main as cli_main


class Payload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def bad_models(folder, f2_paths, marker):
    """name -> what the error must say (English, lower case); files written into folder."""
    model, vocab = (p.read_bytes() for p in f2_paths)
    itos = json.loads(vocab.decode("utf-16"))
    files = {
        "empty.pth": (b"", "empty"),
        "truncated.pth": (model[: len(model) // 3], ""),
        "truncated-tail.pth": (model[:-200], ""),
        "corrupted.pth": (model[:4000] + bytes(range(256)) * 40 + model[14240:], ""),
        "random.pth": (os.urandom(20_000), ""),
        "text.pth": ("这不是模型文件\n".encode() * 100, ""),
        "evil-pickle.pth": (pickle.dumps(Payload(marker), protocol=2), "refused"),
        "wrong-vocab.pth": (model, "wrong vocab"),
        "gbk-vocab.pth": (model, "utf-16 or utf-8"),
        "no-vocab.pth": (model, "vocab"),
    }
    for name, (raw, _) in files.items():
        (folder / name).write_bytes(raw)
    evil = folder / "evil-zip.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "x": Payload(marker)}, evil)
    files["evil-zip.pth"] = (None, "refused")
    # a zip whose data.pkl is a live payload (the pickle inside a valid torch zip)
    with zipfile.ZipFile(folder / "evil-inner.pth", "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(Payload(marker), protocol=2))
        z.writestr("archive/version", "3\n")
    files["evil-inner.pth"] = (None, "refused")
    bigger = {**itos, str(len(itos) + 10): "X"}
    (folder / "wrong-vocab.json").write_text(json.dumps(bigger, ensure_ascii=False), encoding="utf-8")
    (folder / "gbk-vocab.json").write_bytes(json.dumps(itos, ensure_ascii=False).encode("gb18030"))
    return {name: words for name, (_, words) in files.items()}


def test_the_model_picker_refuses_bad_files_and_keeps_serving(tmp_path, f2_paths):
    models, marker = tmp_path / "models", tmp_path / "pwned"
    models.mkdir()
    cases = bad_models(models, f2_paths, marker)
    shutil.copy(f2_paths[0], models / "good.pth")
    shutil.copy(f2_paths[1], models / "good.json")
    with server_with(tmp_path, models_dir=str(models)) as c:
        listed = {m["id"] for m in c.get("/v1/models").json()["data"]}
        assert set(cases) <= listed
        for name, words in cases.items():
            r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 2, "model": name})
            assert r.status_code == 422, (name, r.text)
            err = r.json()["error"]
            assert err["param"] == "model" and err["zh"] and words in err["en"].lower(), (name, err)
            assert "Traceback" not in r.text and str(tmp_path) not in r.text  # no server paths leak out
            assert not marker.exists(), name  # nothing in the file ran
            r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY})
            assert r.status_code == 200 and r.json()["choices"][0]["text"] == "乙丙。", name  # the old model stays
        # a good file in the same folder still loads
        r = c.post("/v1/completions", json={"prompt": "林黛玉", "max_tokens": 4, "model": "good.pth", "seed": 1})
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 4


def test_the_command_line_refuses_bad_files(tmp_path, f2_paths, capsys):
    marker = tmp_path / "pwned"
    cases = bad_models(tmp_path, f2_paths, marker)
    for name, words in cases.items():
        rc = cli_main(["write", "甲", "--model", str(tmp_path / name), "--runs", "1", "--length", "2"])
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert "错误" in err and words in err.lower() and "Traceback" not in err, (name, err)
        assert not marker.exists(), name
    # a vocab given with --vocab that is wrong for the model, or in the wrong encoding
    for vocab, words in (("wrong-vocab.json", "wrong vocab"), ("gbk-vocab.json", "utf-16 or utf-8")):
        rc = cli_main(["write", "甲", "--model", str(f2_paths[0]), "--vocab", str(tmp_path / vocab), "--runs", "1"])
        err = capsys.readouterr().err
        assert rc == 2 and words in err.lower(), err


def test_control_the_payload_is_live(tmp_path):
    # the payloads above do run when unpickled the usual way: the tests above would catch a loader that did
    marker = tmp_path / "pwned"
    raw = pickle.dumps(Payload(marker), protocol=2)
    pickle.loads(raw)
    assert marker.exists()
