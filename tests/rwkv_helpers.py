"""Shared checks of the RWKV-4/5/6 families against BlinkDL's `rwkv` package (the reference)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

import aiwriter

_REFERENCE = None


def package_model_module(v7: bool, jit: bool):
    """rwkv.model as a private module copy: the package picks its model version and JIT from
    environment variables at import time, and tests load both a v4/5/6 and a v7 copy. The
    variables are restored afterwards."""
    import rwkv

    name = "_rwkv_model_x070" if v7 else "_rwkv_model_v456"
    spec = importlib.util.spec_from_file_location(name, Path(rwkv.__file__).parent / "model.py")
    env = {"RWKV_V7_ON": "1" if v7 else "0", "RWKV_JIT_ON": "1" if jit else "0", "RWKV_CUDA_ON": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return module


def reference_rwkv():
    """rwkv.model.RWKV for versions 4/5/6 (one copy per test session)."""
    global _REFERENCE
    if _REFERENCE is None:
        _REFERENCE = package_model_module(v7=False, jit=False).RWKV
    return _REFERENCE


def load_reference(path: Path):
    # The package reads these at call time too (forward checks RWKV_CUDA_ON).
    os.environ.setdefault("RWKV_JIT_ON", "0")
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    return reference_rwkv()(str(path), "cpu fp32", verbose=False)


def assert_close(ours, ref, what: str, rtol: float = 1e-4):
    """Element-wise relative agreement; the absolute floor (1e-5 of the largest value) only
    covers entries that are themselves near zero."""
    ours, ref = ours.double().cpu(), ref.double().cpu()
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}"
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=1e-5 * ref.abs().max().item(), msg=lambda m: f"{what}: {m}")


def state_per_layer(state: dict, version: int, n_layer: int) -> list[torch.Tensor]:
    """Our state dict (batch 1) in the rwkv package's layout: v4 [att_x, aa, bb, pp, ffn_x] per
    layer, v5/v6 [att_x, kv, ffn_x] per layer."""
    names = ["att_x", "att_a", "att_b", "att_p", "ffn_x"] if version == 4 else ["att_x", "att_kv", "ffn_x"]
    return [state[name][0, i] for i in range(n_layer) for name in names]


def check_against_reference(cls, version: int, V: int, L: int, C: int, N: int, tmp_path: Path, steps: int = 64):
    """Random checkpoint -> .pth -> aiwriter.load_model and the rwkv package: logits of every
    step, the final state, and the package's own sequence mode against our prefill."""
    weights = cls.random_weights(V, L, C, N, seed=L + C)
    path = tmp_path / "model.pth"
    torch.save(weights, path)
    ref = load_reference(path)
    model = aiwriter.load_model(path)
    assert model.family == f"rwkv{version}" and model.vocab_size == V and model.net.n_layer == L
    assert model.ctx_len is None

    ids = torch.randint(0, V, (steps,), generator=torch.Generator().manual_seed(V)).tolist()
    ref_state, state = None, model.new_state()
    ours_steps, ref_steps = [], []
    for t in ids:
        ref_logits, ref_state = ref.forward([t], ref_state)
        logits, state = model.forward([t], state)
        ours_steps.append(logits)
        ref_steps.append(ref_logits)
    assert_close(torch.stack(ours_steps), torch.stack(ref_steps), "step logits")
    ours_state = state_per_layer(state.data, version, L)
    assert len(ours_state) == len(ref_state)
    for i, (a, b) in enumerate(zip(ours_state, ref_state)):
        assert_close(a, b, f"state[{i}]")
    # the state carries real information (decays do not wipe it, values are not tiny)
    assert max(s.abs().max().item() for s in ref_state) > 0.5

    # our chunked prefill (all logits) against the package's sequence mode on the same ids
    ref_all, ref_seq_state = ref.forward(ids, None, full_output=True)
    ours_all = torch.from_numpy(model.logits(ids))
    assert_close(ours_all, ref_all, "prefill logits")
    _, pre_state = model.forward(ids)
    for i, (a, b) in enumerate(zip(state_per_layer(pre_state.data, version, L), ref_seq_state)):
        assert_close(a, b, f"prefill state[{i}]")
    return weights, path


def check_prefill_equals_steps(cls, tmp_path: Path, V=80, L=2, C=64, N=32, T=150):
    """Prefill of T ids (several chunks and a shorter last one) from a non-empty state, vs T
    single steps."""
    model = aiwriter.load_model(_save(cls.random_weights(V, L, C, N, seed=3), tmp_path))
    g = torch.Generator().manual_seed(1)
    warm = torch.randint(0, V, (7,), generator=g).tolist()
    ids = torch.randint(0, V, (T,), generator=g).tolist()
    _, start = model.forward(warm)
    net = model.net
    with torch.no_grad():
        pre_logits, pre_state = net(torch.tensor([ids]), start.copy().data, all_logits=True)
        state, step_logits = start.copy().data, []
        for t in ids:
            logits, state = net(torch.tensor([[t]]), state)
            step_logits.append(logits[0])
    assert pre_logits.shape == (1, T, V)
    assert_close(pre_logits[0], torch.stack(step_logits), "prefill vs steps")
    for name in state:
        assert_close(pre_state[name], state[name], f"state {name}")


def check_batched(cls, tmp_path: Path, V=80, L=2, C=64, N=32):
    """B = 3 streams from different states in one call equal three single-stream calls, for a
    prefill and a step; the input state is not mutated."""
    model = aiwriter.load_model(_save(cls.random_weights(V, L, C, N, seed=4), tmp_path))
    g = torch.Generator().manual_seed(2)
    starts = [model.forward(torch.randint(0, V, (n,), generator=g).tolist())[1] for n in (1, 5, 40)]
    batch = aiwriter.State.stack(starts)
    before = batch.copy()
    ids = torch.randint(0, V, (3, 37), generator=g)
    logits, after = model.forward_batch(ids, batch)
    for name in before.data:
        assert torch.equal(before.data[name], batch.data[name])
    step_logits, stepped = model.forward_batch(ids[:, :1], after)
    for b in range(3):
        one_logits, one = model.forward(ids[b].tolist(), starts[b])
        assert_close(logits[b], one_logits, f"batched prefill stream {b}")
        one_step, one = model.forward(ids[b, :1].tolist(), one)
        assert_close(step_logits[b], one_step, f"batched step stream {b}")
        for name in one.data:
            assert_close(stepped.data[name][b], one.data[name][0], f"batched state {name} stream {b}")


def check_safetensors_and_dtypes(cls, tmp_path: Path, V=80, L=2, C=64, N=32):
    """A .safetensors copy loads the same; bf16/fp16-stored checkpoints load with exact params in
    float32; a bf16 module keeps its decays float32."""
    weights = cls.random_weights(V, L, C, N, seed=5)
    pth = _save(weights, tmp_path)
    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(st))
    ids = list(range(0, V, 3))
    a, b = aiwriter.load_model(pth), aiwriter.load_model(st)
    assert b.family == a.family
    assert torch.equal(torch.from_numpy(a.logits(ids)), torch.from_numpy(b.logits(ids)))

    half = tmp_path / "half.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in weights.items()}, half)
    net = cls.from_weights(torch.load(half, weights_only=True))
    assert net.emb.weight.dtype == torch.bfloat16 and net.blocks[0].att.time_decay.dtype == torch.float32
    net = net.float()
    with torch.no_grad():
        lb, _ = net(torch.tensor([ids]), net.new_state(1))
    la = torch.from_numpy(a.logits(ids)[-1])
    assert (lb[0] - la).abs().max() < 0.1 * la.abs().max()  # bf16 rounding of the weights only

    m16 = aiwriter.load_model(pth, dtype="fp16")
    assert m16.net.head.weight.dtype == torch.float16
    assert m16.net.blocks[0].att.time_decay.dtype == torch.float32
    assert m16.net.blocks[0].ln1.weight.dtype == torch.float32
    l16, s16 = m16.forward(ids)
    assert l16.dtype == torch.float32 and all(v.dtype == torch.float32 for v in s16.data.values())
    assert (l16 - la).abs().max() < 0.05 * la.abs().max()


def check_fp16_deep(cls, tmp_path: Path, V=60, L=8, C=32, N=16):
    """fp16 weights on a model deeper than 6 layers (the FFN value input is scaled down there and
    back up in float32): logits stay close to float32 ones."""
    path = _save(cls.random_weights(V, L, C, N, seed=6), tmp_path)
    ids = list(range(1, V, 2))
    ref = torch.from_numpy(aiwriter.load_model(path).logits(ids))
    m16 = aiwriter.load_model(path, dtype="fp16")
    out = torch.from_numpy(m16.logits(ids))
    assert (out - ref).abs().max() < 0.03 * ref.abs().max()


def _save(weights, tmp_path: Path) -> Path:
    path = tmp_path / "model.pth"
    torch.save(weights, path)
    return path
