"""`aiwriter bench --model FILE`: each dtype's first and later load in their own processes, with the
machine's bandwidth measured in the same run (tiny model here; real shapes in docs/benchmarks.md)."""
import torch

from aiwriter import bench_big
from aiwriter.models.rwkv7 import RWKV7


def test_bench_model_measures_loads_decode_and_bandwidth(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(RWKV7.random_weights(100, 2, 64, 32, seed=1), path)
    res = bench_big.bench_model(str(path), ["int4", "fp32"], prompt=20, seconds=0.3, cache=str(tmp_path / "c"))
    assert res["bandwidth_gbs"] > 0.1
    for run in res["runs"]:
        for side in ("first", "later"):
            r = run[side]
            assert "error" not in r, r
            assert r["load_s"] > 0 and r["decode_tok_s"] > 0 and r["peak_rss_mb"] > 50 and r["bytes_per_token"] > 0
        assert run["later"]["prompt_tokens"] == 20
    assert len(list((tmp_path / "c").glob("*.int4.onnx"))) == 1  # the first load wrote it, the later one read it
    text = bench_big.table(res)
    assert "| int4 |" in text and "| fp32 |" in text and "GB/s" in text
