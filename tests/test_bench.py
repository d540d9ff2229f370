"""`aiwriter bench --quick --json`: every case runs and reports positive numbers in the documented shape."""
import json

import pytest

from aiwriter import bench
from aiwriter.commands import main

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the rwkv package uses TorchScript


def test_quick_json(capsys):
    assert main(["bench", "--quick", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quick"] is True
    assert report["families"] == ["rwkv4", "rwkv7", "f1"]
    assert {"cpu", "cpus", "torch", "rwkv"} <= set(report["machine"])
    got = {(r["family"], r["engine"]) for r in report["results"]}
    want = {(f, e) for f, engines in bench.ENGINES.items() for e in engines}
    assert got == want
    for r in report["results"]:
        assert "error" not in r, r
        for key in ("decode_tok_s", "prefill_tok_s", "ttfc_s", "peak_rss_mb"):
            assert r[key] > 0, (r["engine"], key)
        assert sorted(r["agg_tok_s"], key=int) == ["1", "8", "64"]
        assert all(v > 0 for v in r["agg_tok_s"].values())
        assert r["ratio"]["decode"] > 0 and r["ratio"]["ttfc"] > 0
    yard = [r for r in report["results"] if r["engine"] in ("rwkv fp32", "original fp32")]
    assert len(yard) == 3 and all(r["ratio"]["decode"] == pytest.approx(1.0) for r in yard)
    assert {t["family"] for t in report["targets"]} == {"rwkv4", "rwkv7", "f1"}
    assert all(isinstance(t["met"], bool) for t in report["targets"])


def test_table_and_bad_family(capsys):
    from aiwriter.errors import AIWriterError

    assert main(["bench", "--quick", "--families", "f1", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "original fp32" in out and "×" in out and "decode targets" in out
    with pytest.raises(AIWriterError):
        bench.run(bench.BenchSettings(quick=True, families="gpt2"))
    assert main(["bench", "--quick", "--families", "gpt2"]) == 2
    assert "unknown families: gpt2" in capsys.readouterr().err


def test_case_processes_wait_as_their_users_do(tmp_path, monkeypatch):
    """Each case in its own process: ours with the passive OpenMP waiting aiwriter asks for, the
    yardsticks with whatever the user had (here: nothing), not with ours."""
    import aiwriter

    monkeypatch.setattr(aiwriter, "USER_OMP_WAIT_POLICY", None)
    paths = bench.build_checkpoints(bench.QUICK, ["rwkv4"], tmp_path)
    seen = {}
    for engine in ("aiwriter fp32", "rwkv fp32"):
        case = {"family": "rwkv4", "engine": engine, "path": str(paths["rwkv4"]), "tmp": str(tmp_path),
                "cfg": bench.QUICK["rwkv4"], "prompt": 8, "opening": 16, "streams": [1], "min_time": 0.0,
                "quick": True, "threads": 1}
        r = bench.run_case(case, in_process=False)
        assert "error" not in r, r
        seen[engine] = r["omp_wait_policy"]
    assert seen == {"aiwriter fp32": "PASSIVE", "rwkv fp32": None}
