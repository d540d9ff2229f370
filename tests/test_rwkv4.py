"""RWKV-4 (x040): checked against BlinkDL's `rwkv` package and against its own step form."""
import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.models import rwkv_common
from aiwriter.models.rwkv4 import RWKV4, wkv4_chunked, wkv4_step
from rwkv_helpers import (check_against_reference, check_batched, check_fp16_deep,
                          check_prefill_equals_steps, check_safetensors_and_dtypes)


# (vocab, layers, n_embd, head size: unused by v4)
@pytest.mark.parametrize("V,L,C,N", [(150, 3, 128, 64), (97, 2, 96, 32)])
def test_matches_rwkv_package(tmp_path, V, L, C, N):
    check_against_reference(RWKV4, 4, V, L, C, N, tmp_path)


@pytest.mark.parametrize("plan", [None, (5, 3000)])
def test_prefill_equals_steps(tmp_path, monkeypatch, plan):
    if plan:  # chunks of 5, one chunk per segment: every boundary of the chunked form is crossed
        monkeypatch.setitem(rwkv_common.PREFILL_PLAN, "cpu", plan)
    check_prefill_equals_steps(RWKV4, tmp_path)


def test_batched_equals_single(tmp_path):
    check_batched(RWKV4, tmp_path)


def test_safetensors_and_dtypes(tmp_path):
    check_safetensors_and_dtypes(RWKV4, tmp_path)
    check_fp16_deep(RWKV4, tmp_path)


def test_chunked_wkv_is_stable_with_extreme_decays():
    """Decay rates up to e^5 per step and keys up to +-40 (exponents far past float32's e^88 if
    taken naively): the float32 chunked form stays finite and equals the float64 step form."""
    g = torch.Generator().manual_seed(0)
    B, T, A = 2, 45, 16
    w = torch.linspace(-6, 5, A).exp()
    u = 3 * torch.randn(A, generator=g)
    k = 40 * torch.randn(B, T, A, generator=g).clamp(-1, 1)
    v = torch.randn(B, T, A, generator=g)
    aa, bb, pp = torch.zeros(B, A), torch.zeros(B, A), torch.full((B, A), -1e30)
    y, *state = wkv4_chunked(w, u, k, v, aa, bb, pp, chunk=16)
    assert torch.isfinite(y).all()
    s64 = (aa.double(), bb.double(), pp.double())
    ys = []
    for t in range(T):
        yt, *s64 = wkv4_step(w.double(), u.double(), k[:, t].double(), v[:, t].double(), *s64)
        ys.append(yt)
    torch.testing.assert_close(y.double(), torch.stack(ys, 1), rtol=1e-4, atol=1e-5)
    for a, b in zip(state, s64):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_loader_names_missing_and_unknown_keys():
    w = RWKV4.random_weights(50, 1, 32)
    del w["blocks.0.att.time_first"]
    w["blocks.0.att.pos_emb"] = torch.zeros(3)
    with pytest.raises(AIWriterError) as e:
        RWKV4.from_weights(w)
    assert "blocks.0.att.time_first" in e.value.en and "blocks.0.att.pos_emb" in e.value.en
    w = RWKV4.random_weights(50, 1, 32)
    w["blocks.0.ffn.time_mix_k"] = torch.zeros(1, 1, 33)
    with pytest.raises(AIWriterError, match="time_mix_k"):
        RWKV4.from_weights(w)
    w = RWKV4.random_weights(50, 1, 32)
    w["emb.weight"] = torch.zeros(50 * 32)
    with pytest.raises(AIWriterError, match="malformed"):
        RWKV4.from_weights(w)


def test_unknown_vocab_size_gives_logits_but_no_text(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save(RWKV4.random_weights(123, 1, 32), path)
    model = aiwriter.load_model(path)
    logits, _ = model.forward([1, 2, 3])
    assert logits.shape == (123,) and torch.isfinite(logits).all()
    with pytest.raises(AIWriterError):
        model.tokenizer.encode("你好")
