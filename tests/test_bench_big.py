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
        # the later load probes the bandwidth right after its decode; the first does not
        assert run["later"]["bandwidth_gbs"] > 0.1 and "bandwidth_gbs" not in run["first"]
        assert run["later"]["decode_median_tok_s"] > 0
    assert len(list((tmp_path / "c").glob("*.int4.onnx"))) == 1  # the first load wrote it, the later one read it
    int4, fp32 = (run["later"] for run in res["runs"])
    assert isinstance(int4["ort_spinning"], bool) and "ort_spinning" not in fp32  # how onnxruntime's threads waited
    text = bench_big.table(res)
    assert "| int4 (threads s" in text and "| fp32 |" in text and "GB/s" in text and "median" in text


def test_random_checkpoint_streams_the_same_weights_as_random_weights(tmp_path):
    """benchmarks/random_checkpoint.py writes a .safetensors tensor by tensor (for 7B shapes);
    the file holds exactly RWKV7.random_weights in bf16."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    out = tmp_path / "r.safetensors"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "random_checkpoint.py"
    subprocess.run([sys.executable, str(script), str(out), "--layers", "2", "--embd", "128", "--vocab", "300",
                    "--seed", "4"], check=True, capture_output=True)
    got, want = load_file(str(out)), RWKV7.random_weights(300, 2, 128, 64, seed=4)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], want[k].bfloat16()), k


def test_table_puts_decode_against_the_bandwidth_probed_after_it():
    later = {"load_s": 1.0, "peak_rss_mb": 100.0, "decode_tok_s": 5.0, "decode_median_tok_s": 8.0,
             "bytes_per_token": 1e9, "bandwidth_gbs": 10.0}
    res = {"model": "m", "file_bytes": 2**30, "bandwidth_gbs": 20.0,
           "runs": [{"dtype": "int4", "first": {"load_s": 2.0, "peak_rss_mb": 100.0}, "later": later}]}
    row = bench_big.table(res).splitlines()[-1]
    assert "| 10.0 | 10.0 | 50 % / 80 % |" in row  # 10 GB/s / 1 GB per token; 5 and 8 tok/s of it
    del later["bandwidth_gbs"], later["decode_median_tok_s"]  # a result of the older format
    row = bench_big.table(res).splitlines()[-1]
    assert "| 20.0 | 20.0 | 25 % / 25 % |" in row
