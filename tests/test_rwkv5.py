"""RWKV-5 (x052): checked against BlinkDL's `rwkv` package and against its own step form."""
import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.models import rwkv_common
from aiwriter.models.rwkv5 import RWKV5
from aiwriter.models.rwkv_common import wkv_chunked, wkv_step
from rwkv_helpers import (assert_close, check_against_reference, check_batched, check_fp16_deep,
                          check_prefill_equals_steps, check_safetensors_and_dtypes, load_reference)


# (vocab, layers, n_embd, head size)
@pytest.mark.parametrize("V,L,C,N", [(150, 3, 128, 64), (97, 2, 96, 32)])
def test_matches_rwkv_package(tmp_path, V, L, C, N):
    check_against_reference(RWKV5, 5, V, L, C, N, tmp_path)


@pytest.mark.parametrize("plan", [None, (5, 3000)])
def test_prefill_equals_steps(tmp_path, monkeypatch, plan):
    if plan:  # chunks of 5, one chunk per segment: every boundary of the chunked form is crossed
        monkeypatch.setitem(rwkv_common.PREFILL_PLAN, "cpu", plan)
    check_prefill_equals_steps(RWKV5, tmp_path)


def test_batched_equals_single(tmp_path):
    check_batched(RWKV5, tmp_path)


def test_safetensors_and_dtypes(tmp_path):
    check_safetensors_and_dtypes(RWKV5, tmp_path)
    check_fp16_deep(RWKV5, tmp_path)


def test_chunked_wkv_is_stable_with_extreme_decays():
    """Per-step log decays from -e^4 (gone in one step) to -e^-8 (kept for thousands): every
    exponential the chunked form takes is <= 1, so it stays finite and equals float64 steps; a
    span of weak decays right after strong ones stays precise."""
    g = torch.Generator().manual_seed(0)
    B, T, H, N = 2, 70, 2, 8
    logw = -torch.empty(B, T, H, N).uniform_(-8, 4, generator=g).exp()
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    u = torch.randn(H, N, generator=g)
    S0 = torch.randn(B, H, N, N, generator=g)
    y, S = wkv_chunked(S0, r, k, v, logw, u, chunk=32)
    assert torch.isfinite(y).all() and torch.isfinite(S).all()
    S64, ys = S0.double(), []
    for t in range(T):
        yt, S64 = wkv_step(S64, r[:, t].double(), k[:, t].double(), v[:, t].double(), logw[:, t].double(), u.double())
        ys.append(yt)
    ys = torch.stack(ys, 1)
    # as close as float32 steps get (a float32 cumsum of the log decays would be off by 3e-6 x max)
    torch.testing.assert_close(y.double(), ys, rtol=1e-4, atol=1e-6 * ys.abs().max().item())
    torch.testing.assert_close(S.double(), S64, rtol=1e-4, atol=1e-6 * S64.abs().max().item())


def test_state_tuned_file_starts_from_time_state(tmp_path):
    """blocks.N.att.time_state (a state-tuning file merged into the model) is the initial state,
    as in the rwkv package."""
    V, L, C, N = 60, 2, 64, 32
    w = RWKV5.random_weights(V, L, C, N, seed=7)
    g = torch.Generator().manual_seed(8)
    for i in range(L):
        w[f"blocks.{i}.att.time_state"] = torch.randn(C // N, N, N, generator=g)
    path = tmp_path / "tuned.pth"
    torch.save(w, path)
    ref = load_reference(path)
    model = aiwriter.load_model(path)
    ids = [3, 14, 15, 9, 26]
    ref_logits, ref_state = ref.forward(ids, None)
    logits, state = model.forward(ids)
    assert_close(logits, ref_logits, "logits")
    assert_close(state.data["att_kv"][0, 1], ref_state[4], "kv state")
    plain = RWKV5.from_weights({k: t for k, t in w.items() if "time_state" not in k})
    assert not torch.allclose(plain.new_state()["att_kv"], model.net.new_state()["att_kv"])


def test_preview_v5_shapes_get_a_clear_error():
    w = RWKV5.random_weights(50, 1, 64, 32)
    w["blocks.0.att.time_faaaa"] = torch.zeros(2)   # RWKV-5.0/5.1 preview: one value per head
    with pytest.raises(AIWriterError, match="time_faaaa"):
        RWKV5.from_weights(w)
