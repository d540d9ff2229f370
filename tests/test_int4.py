"""The int4 CPU mode (aiwriter/speed/int4.py): the 4-bit block format, onnxruntime's MatMulNBits reading it
as we write it, and load_model(dtype="int4") against the float32 path and against itself.

Tolerances: 4-bit weights (16 levels per block of 128) move logits far more than int8, so the
mode is bounded by the mean KL divergence of its next-token distributions from float32's; the
two engines inside the mode (onnxruntime for decoding, PyTorch for prompts) share the weights
exactly and differ only by MatMulNBits' 8-bit rounding of the activations: a tight bound.
"""
import json
import os

import numpy as np
import pytest
import torch

import aiwriter
from aiwriter.speed import int4, int4_blocks
from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv4 import RWKV4
from aiwriter.models.rwkv5 import RWKV5
from aiwriter.models.rwkv6 import RWKV6
from aiwriter.models.rwkv7 import RWKV7
from aiwriter.speed.onnx_export import META_PREFIX

V = 100


def _kl(ref, out):
    p, q = ref.double().log_softmax(-1), out.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean().item()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("AIWRITER_CACHE", str(folder))
    return folder


def _model_file(tmp_path, cls=RWKV7, C=64, seed=5):
    path = tmp_path / "m.pth"
    torch.save(cls.random_weights(V, 2, C, 32, seed=seed), path)
    chars = ["\n"] + [chr(0x4E00 + i) for i in range(V - 2)] + ["\ue083"]
    (tmp_path / "m.json").write_text(json.dumps({str(i): c for i, c in enumerate(chars)}, ensure_ascii=False),
                                     encoding="utf-16")
    return path


def _unpack(packed, K):
    """Our reading of the packed format: element 2j in the low nibble, 2j+1 in the high, q + 8."""
    low, high = packed & 15, packed >> 4
    u = torch.stack([low, high], -1).reshape(packed.shape[0], -1).to(torch.int64) - 8
    return u[:, :K]


def test_blocks_round_to_nearest_level_with_exact_extremes():
    g = torch.Generator().manual_seed(0)
    K, N = 300, 7  # K not a multiple of the block: padded with zeros
    B = torch.randn(K, N, generator=g) * torch.linspace(0.01, 5, N)
    B[:, 3] = 0  # an all-zero column: scale 0, no division by zero
    packed, scales, deq = int4_blocks.quantize_blocks(B)
    nb = -(-K // int4_blocks.BLOCK)
    assert packed.dtype == torch.uint8 and packed.shape == (N, nb, int4_blocks.BLOCK // 2)
    assert scales.shape == (N * nb,) and deq.shape == (K, N)
    q = _unpack(packed.reshape(N, -1), K)
    assert q.min() >= -8 and q.max() <= 7
    s = scales.view(N, nb).repeat_interleave(int4_blocks.BLOCK, 1)[:, :K]
    torch.testing.assert_close(deq, (q * s).T, rtol=0, atol=0)  # the packed bits are the dequantized values
    levels = torch.arange(-8, 8, dtype=torch.float32)
    nearest = (levels * s.unsqueeze(-1) - B.T.unsqueeze(-1)).abs().min(-1).values
    assert torch.all((deq - B).abs().T <= nearest + 1e-6)  # the nearest of the 16 levels
    assert torch.all((deq - B).abs().T <= s.abs() + 1e-6)
    assert torch.all(deq[:, 3] == 0)
    for n in (0, 6):  # each block's largest magnitude is kept exactly (it maps to -8)
        for b in range(nb):
            blk = B[b * int4_blocks.BLOCK:(b + 1) * int4_blocks.BLOCK, n]
            i = int(blk.abs().argmax())
            assert deq[b * int4_blocks.BLOCK + i, n] == blk[i]


def test_onnxruntime_reads_our_packing():
    """MatMulNBits with float products (accuracy_level 0) equals x @ dequantized(B): the layout
    of bits and scales is the one onnxruntime reads. Level 4 (8-bit activations) stays close."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    g = torch.Generator().manual_seed(1)
    K, N = 320, 48
    B = torch.randn(K, N, generator=g)
    x = torch.randn(3, K, generator=g)
    packed, scales, deq = int4_blocks.quantize_blocks(B)
    want = x @ deq
    for level, tol in ((0, 1e-4), (4, 0.02)):
        node = helper.make_node("MatMulNBits", ["x", "B", "s"], ["y"], domain="com.microsoft", K=K, N=N, bits=4,
                                block_size=int4_blocks.BLOCK, accuracy_level=level)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, K])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, N])],
                                  [numpy_helper.from_array(packed.numpy(), "B"), numpy_helper.from_array(scales.numpy(), "s")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])
        rel = ((got - want).abs().max() / want.abs().max()).item()
        assert rel < tol, (level, rel)


@pytest.mark.parametrize("cls", [RWKV4, RWKV5, RWKV6, RWKV7], ids=["rwkv4", "rwkv5", "rwkv6", "rwkv7"])
def test_int4_mode_close_to_fp32_and_engines_agree(cls, tmp_path, cache):
    path = _model_file(tmp_path, cls)
    ref = aiwriter.load_model(path)
    m = aiwriter.load_model(path, dtype="int4")
    assert isinstance(m.net, int4.Int4Net) and m.family == ref.family and m.vocab_size == V
    assert len(list(cache.glob("*.int4.onnx"))) == 1
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (30,), generator=g).tolist()
    # a prompt through PyTorch (4-bit weights, float32 math), then steps through onnxruntime
    a, sa = ref.forward(ids)
    b, sb = m.forward(ids)
    assert _kl(a, b) < 0.05  # tiny random models (C = 64: one block per row) are the hard case
    torch_net, onnx_net = m.net.torch_net, m.net.onnx_net
    st, so = sb.data, sb.copy().data
    kl_mode, kl_engines, gap = [], [], 0.0
    for t in ids[:12]:
        x = torch.tensor([[t]])
        a, sa = ref.forward([t], sa)
        with torch.inference_mode():
            lt, st = torch_net(x, st)
            lo, so = onnx_net(x, so)
        kl_mode.append(_kl(a, lo[0]))
        kl_engines.append(_kl(lt, lo))
        gap = max(gap, (lt - lo).abs().max().item() / lt.abs().max().item())
    assert np.mean(kl_mode) < 0.05, np.mean(kl_mode)
    assert max(kl_engines) < 2e-3 and gap < 0.05, (max(kl_engines), gap)
    # the model's own surface routes single steps to onnxruntime and batches them
    batch = aiwriter.State.stack([sb, m.new_state(), m.forward(ids[:3])[1]])
    lb, nb = m.forward_batch([1, 2, 3], batch)
    lo, _ = onnx_net(torch.tensor([[1], [2], [3]]), batch.data)
    assert lb.shape == (3, V) and torch.equal(lb, lo)
    assert set(nb.data) == set(sb.data)


def test_int4_weights_identical_in_both_engines(tmp_path):
    """Every Linear of the PyTorch side holds exactly the 4-bit blocks of its float32 weight
    (int4_blocks.quantize_blocks is the reference), and every MatMulNBits of the cached graph
    reads those same bytes; everything else (embedding, norms, LoRA) is left as it was."""
    import onnx

    path = _model_file(tmp_path, RWKV7)
    ref = aiwriter.load_model(path)
    m = aiwriter.load_model(path, dtype="int4")
    torch_side = m.net.torch_net
    layers = {n: l for n, l in torch_side.named_modules() if isinstance(l, int4.Int4Linear)}
    assert "head" in layers and "blocks.0.att.key" in layers
    assert not any(isinstance(l, torch.nn.Linear) for l in torch_side.modules())
    own = dict(ref.net.named_parameters())
    for name, layer in layers.items():
        W = own[name + ".weight"].detach()
        packed, scales, deq = int4_blocks.quantize_blocks(W.T)
        assert torch.equal(layer.packed, packed) and torch.equal(layer.scales, scales), name
        assert torch.equal(layer.dequantized(), deq.T), name
    for name, p in torch_side.named_parameters():
        torch.testing.assert_close(p, own[name], rtol=0, atol=0)
    entry = next(iter((tmp_path / "cache").glob("*.int4.onnx")))
    model = onnx.load(str(entry), load_external_data=False)
    data = (tmp_path / "cache" / (entry.name + ".data")).read_bytes()
    where = {i.name: {e.key: e.value for e in i.external_data} for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert len(nodes) == len(layers) and not [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in where
                                              and len(next(i for i in model.graph.initializer if i.name == n.input[1]).dims) == 2
                                              and n.input[1].endswith(".weight")]
    buffers = dict(torch_side.named_buffers())
    for n in nodes:
        for key in n.input[1:3]:
            e = where[key]
            raw = data[int(e["offset"]):int(e["offset"]) + int(e["length"])]
            assert raw == buffers[key.removeprefix("net.")].numpy().tobytes(), key


def test_bf16_file_quantized_from_its_own_values(tmp_path):
    """A bf16 file (as released models are) is quantized a slice of rows at a time from its own
    dtype: the blocks are exactly those of its values as float32 (no float32 copy of a whole
    matrix is made first, which at 1.5B was the first load's peak)."""
    from safetensors.torch import save_file

    w = {k: v.to(torch.bfloat16).contiguous() for k, v in RWKV7.random_weights(V, 2, 64, 32, seed=3).items()}
    path = tmp_path / "m.safetensors"
    save_file(w, str(path))
    _model_file(tmp_path)  # its vocab, m.json
    m = aiwriter.load_model(path, vocab=tmp_path / "m.json", dtype="int4")
    layers = {n: l for n, l in m.net.torch_net.named_modules() if isinstance(l, int4.Int4Linear)}
    assert "head" in layers
    for name, layer in layers.items():
        packed, scales, _ = int4_blocks.quantize_blocks(w[name + ".weight"].float().T)
        assert torch.equal(layer.packed, packed) and torch.equal(layer.scales, scales), name


def test_cache_reused_rebuilt_and_optional(tmp_path, cache, monkeypatch):
    path = _model_file(tmp_path, RWKV4)
    first = aiwriter.load_model(path, dtype="int4")
    entry = next(iter(cache.glob("*.int4.onnx")))
    stamp = entry.stat().st_mtime_ns
    second = aiwriter.load_model(path, dtype="int4")
    assert entry.stat().st_mtime_ns == stamp  # read, not rebuilt
    # decoding runs the graph onnxruntime optimized and packed on the first load, mapped from disk;
    # the PyTorch side's tensors are views of the cache file
    assert not first.net.onnx_net.optimized or first.net.onnx_net.path == int4.optimized_entry(entry)
    assert second.net.onnx_net.optimized and second.net.onnx_net.path == int4.optimized_entry(entry)
    assert second.net.data is not None and second.net.data.mapped > 0
    ids = [3, 1, 4, 1, 5]
    torch.testing.assert_close(first.forward(ids)[0], second.forward(ids)[0], rtol=0, atol=0)
    torch.testing.assert_close(first.forward_batch([2], first.new_state())[0],
                               second.forward_batch([2], second.new_state())[0], rtol=0, atol=0)
    # a damaged entry (graph or data) is built again
    entry.write_bytes(b"not an onnx file")
    third = aiwriter.load_model(path, dtype="int4")
    torch.testing.assert_close(third.forward(ids)[0], first.forward(ids)[0], rtol=0, atol=0)
    assert entry.stat().st_size > 1000
    data = entry.with_name(entry.name + ".data")
    data.write_bytes(data.read_bytes()[:1000])
    fifth = aiwriter.load_model(path, dtype="int4")
    torch.testing.assert_close(fifth.forward(ids)[0], first.forward(ids)[0], rtol=0, atol=0)
    # a changed model file gets its own entry
    torch.save(RWKV4.random_weights(V, 2, 64, 32, seed=9), path)
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    aiwriter.load_model(path, dtype="int4")
    assert len(list(cache.glob("*.int4.onnx"))) == 2
    # a cache folder that cannot be written: built in a temporary folder, nothing left behind
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    monkeypatch.setenv("AIWRITER_CACHE", str(blocker / "sub"))
    fourth = aiwriter.load_model(path, dtype="int4")
    assert fourth.forward(ids)[0].shape == (V,)


def test_int4_refuses_what_it_cannot_do(tmp_path, f2_paths):
    with pytest.raises(AIWriterError, match="int4"):
        aiwriter.load_model(f2_paths[0], vocab=f2_paths[1], dtype="int4")
    if not torch.cuda.is_available():
        with pytest.raises(AIWriterError):  # no GPU here: the device error comes first
            aiwriter.load_model(_model_file(tmp_path), device="cuda", dtype="int4")
    with pytest.raises(AIWriterError, match="int4"):
        aiwriter.load_model(_model_file(tmp_path), dtype="int3")


def test_default_model_int4_writes(tmp_path):
    from aiwriter.sampling import SamplingSettings
    from aiwriter.writer import Writer

    from aiwriter.writer import RunResult

    m = aiwriter.load_model(dtype="int4")
    w = Writer(m)
    reading = w.read("话说那日宋江在山寨中，忽听得")
    runs = [r for r in w.write(reading, 2, 40, SamplingSettings(), torch.Generator().manual_seed(1)) if isinstance(r, RunResult)]
    assert len(runs) == 2
    for r in runs:
        assert r.chars == 40 and sum("\u4e00" <= c <= "\u9fff" for c in r.text) > 20


def test_default_model_held_out_loss_within_issue_limit():
    """The bar: at most 0.02 nats/char more than float32 on held-out text, through both
    engines of the mode (PyTorch chunks; onnxruntime one char at a time, as writing does)."""
    from pathlib import Path

    from aiwriter.training.evaluate import evaluate_model

    text = (Path(__file__).parent / "fixtures" / "heldout-rulin-20k.txt").read_text(encoding="utf-8")
    fp32 = evaluate_model(aiwriter.load_model(), text)["nats_per_char"]
    m = aiwriter.load_model(dtype="int4")
    chunks = evaluate_model(m, text)["nats_per_char"]
    assert 0 < chunks - fp32 < 0.02, (fp32, chunks)
    # the step engine (onnxruntime, one char at a time) against the chunk engine on the first 5,000 chars
    text = text[:5000]
    chunks = evaluate_model(m, text)["nats_per_char"]
    ids = m.tokenizer.encode(text)
    state, total = m.new_state(), 0.0
    with torch.inference_mode():
        for a, b in zip(ids[:-1], ids[1:]):
            logits, state = m.forward_batch([a], state)
            total -= torch.log_softmax(logits[0].double(), -1)[b].item()
    steps = total / (len(ids) - 1)
    assert abs(steps - chunks) < 0.002, (steps, chunks)


def test_write_command_dtype_int4(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, AIWRITER_CACHE=str(tmp_path / "c"))
    args = [sys.executable, "-m", "aiwriter", "write", "林黛玉", "--dtype", "int4", "--runs", "2", "--length", "15",
            "--seed", "3"]
    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    runs = first.stdout.split("\n" + "-" * 20 + "\n")
    assert len(runs) == 2 and all(x.startswith("林黛玉") and len(x.rstrip("\n")) == 18 for x in runs)
    assert len(list((tmp_path / "c").glob("*.int4.onnx"))) == 1
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)  # from the cache
    assert again.stdout == first.stdout
    bad = subprocess.run(args[:5] + ["--dtype", "int5"], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode != 0 and "int4" in bad.stderr and "Traceback" not in bad.stderr
    both = subprocess.run(args + ["--backend", "onnx"], capture_output=True, text=True, env=env, timeout=300)
    assert both.returncode != 0 and "--backend onnx" in both.stderr and "Traceback" not in both.stderr


def test_cache_keeps_tensors_beside_a_small_graph(tmp_path, cache):
    """The graph file holds no weights (no 2 GB protobuf limit, no second copy in memory while
    writing): they lie raw, 64 KiB-aligned, in NAME.data beside it."""
    path = _model_file(tmp_path, RWKV4, C=256)
    aiwriter.load_model(path, dtype="int4")
    files = sorted(p.name for p in cache.iterdir())
    base = [f for f in files if f.endswith(".int4.onnx")]
    assert len(base) == 1 and base[0] + ".data" in files
    graph, data = (cache / base[0]).stat().st_size, (cache / (base[0] + ".data")).stat().st_size
    assert data > 5 * graph
    # and onnxruntime's optimized graph with its prepacked weights, for this machine only
    opt = int4.optimized_entry(cache / base[0])
    assert sorted(files) == sorted([base[0], base[0] + ".data", opt.name, opt.name + ".data"])
    assert (cache / (opt.name + ".data")).stat().st_size > 5 * opt.stat().st_size


def test_export_onnx_int4_file_runs_alone(tmp_path):
    from aiwriter.commands import main

    path = _model_file(tmp_path, RWKV7)
    out = tmp_path / "out" / "step4.onnx"
    assert main(["export-onnx", str(path), str(out), "--int4"]) == 0
    alone = aiwriter.load_model(out, backend="onnx")  # the vocab was copied beside it
    assert alone.tokenizer.vocab_size == V
    mode = aiwriter.load_model(path, dtype="int4")
    state = mode.forward([1, 2, 3])[1]
    torch.testing.assert_close(alone.forward_batch([9], state)[0], mode.forward_batch([9], state)[0], rtol=0, atol=0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["step4.json", "step4.onnx", "step4.onnx.data"]


def test_ort_threads_setting(tmp_path, cache, monkeypatch):
    """AIWRITER_ORT_THREADS sizes the decoding session's pool (default: torch's thread count); the
    logits do not depend on it; a bad value is refused before any cache file is touched."""
    path = _model_file(tmp_path)
    m = aiwriter.load_model(path, dtype="int4")
    assert m.net.onnx_net.threads == torch.get_num_threads()
    monkeypatch.setenv("AIWRITER_ORT_THREADS", "3")
    m3 = aiwriter.load_model(path, dtype="int4")
    assert m3.net.onnx_net.threads == 3
    ids = [5, 7, 9, 11]
    la, sa = m.forward([1])
    lb, sb = m3.forward([1])
    for t in ids:
        la, sa = m.forward([t], sa)
        lb, sb = m3.forward([t], sb)
        assert (la - lb).abs().max().item() <= 1e-5 * la.abs().max().item()
    files = sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir())
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("AIWRITER_ORT_THREADS", bad)
        with pytest.raises(AIWriterError, match="AIWRITER_ORT_THREADS"):
            aiwriter.load_model(path, dtype="int4")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()) == files


def test_ort_spin_setting(tmp_path, cache, monkeypatch):
    """onnxruntime's waiting threads: AIWRITER_ORT_SPIN=0 sleeps, =1 spins, unset (auto) spins
    until this process's threads wait for a CPU, then the session is reopened sleeping (not
    OMP_WAIT_POLICY, which would spin torch's threads too); the logits depend on none of it; a
    bad value is refused."""
    from aiwriter.speed.spin import SpinPolicy, run_delay_ns

    path = _model_file(tmp_path)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("AIWRITER_ORT_SPIN", "0")
    off = aiwriter.load_model(path, dtype="int4")
    assert not off.net.onnx_net.spinning and off.net.onnx_net._spin_policy is None
    monkeypatch.setenv("AIWRITER_ORT_SPIN", "1")
    on = aiwriter.load_model(path, dtype="int4")
    assert on.net.onnx_net.spinning and on.net.onnx_net._spin_policy is None
    la, lb = off.forward([1, 2, 3])[0], on.forward([1, 2, 3])[0]
    assert (la - lb).abs().max().item() <= 1e-5 * la.abs().max().item()

    monkeypatch.delenv("AIWRITER_ORT_SPIN")
    auto = aiwriter.load_model(path, dtype="int4")
    net = auto.net.onnx_net
    assert net.spinning == (run_delay_ns() is not None) == (net._spin_policy is not None)  # Linux: spins at first
    if net._spin_policy is not None:
        waited = [0]

        def contended():  # the threads waited for a CPU a second per call
            waited[0] += 10**9
            return waited[0]

        net._spin_policy = SpinPolicy(probe=contended, clock=lambda: 0.0, window_s=0.0)
        old = net.session
        lc, sc = auto.forward([1, 2])
        assert not net.spinning and net.session is not old  # reopened, sleeping
        lc, sc = auto.forward([3], sc)
        assert (la - lc).abs().max().item() <= 1e-5 * la.abs().max().item()
    for bad in ("yes", "2"):
        monkeypatch.setenv("AIWRITER_ORT_SPIN", bad)
        with pytest.raises(AIWriterError, match="AIWRITER_ORT_SPIN"):
            aiwriter.load_model(path, dtype="int4")


def test_short_openings_are_read_by_the_decoding_step(tmp_path, monkeypatch):
    """Up to Int4Net.STEPWISE ids are read one at a time by onnxruntime's step (the PyTorch side
    would unpack every matrix for them): the same logits and state as stepping by hand; longer
    openings (and all-logits calls) go to the PyTorch side."""
    path = _model_file(tmp_path, RWKV7)
    m = aiwriter.load_model(path, dtype="int4")
    calls = []
    real = m.net.torch_net.forward
    monkeypatch.setattr(m.net.torch_net, "forward", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    ids = [3, 1, 4, 1, 5, 9, 2]
    logits, state = m.forward(ids)
    assert calls == []
    s = m.new_state()
    for i in ids:
        step, s = m.forward_batch([i], s)
    torch.testing.assert_close(logits, step[0], rtol=0, atol=0)
    for k in s.data:
        torch.testing.assert_close(state.data[k], s.data[k], rtol=0, atol=0)
    long_ids = list(range(2, 2 + int4.Int4Net.STEPWISE + 1))
    m.forward(long_ids)
    assert calls == [(1, len(long_ids))]


def test_first_load_frees_the_float_tensors_without_a_gc_pass(tmp_path):
    """After the first load wrote the cache entry, the module's tensors are views of it: the float
    tensors it was built with are gone at once (by reference counting), not after some later
    garbage collection (the traced step once held them in a reference cycle: 700 MB at 1.5B)."""
    import gc
    import weakref

    path = _model_file(tmp_path, RWKV7)
    net = RWKV7.from_weights(torch.load(path, weights_only=True))
    before = [weakref.ref(p) for p in (net.emb.weight, net.blocks[1].att.w1, net.blocks[1].att.key.weight)]
    gc.disable()
    try:
        int4.to_int4(net, path)
        assert [r() for r in before] == [None, None, None]
    finally:
        gc.enable()
