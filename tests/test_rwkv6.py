"""RWKV-6 (x060): checked against BlinkDL's `rwkv` package and against its own step form."""
import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.models import rwkv_common
from aiwriter.models.rwkv6 import RWKV6
from rwkv_helpers import (assert_close, check_against_reference, check_batched, check_fp16_deep,
                          check_prefill_equals_steps, check_safetensors_and_dtypes, load_reference)


# (vocab, layers, n_embd, head size)
@pytest.mark.parametrize("V,L,C,N", [(150, 3, 128, 64), (97, 2, 96, 32)])
def test_matches_rwkv_package(tmp_path, V, L, C, N):
    check_against_reference(RWKV6, 6, V, L, C, N, tmp_path)


@pytest.mark.parametrize("plan", [None, (5, 3000)])
def test_prefill_equals_steps(tmp_path, monkeypatch, plan):
    if plan:  # chunks of 5, one chunk per segment: every boundary of the chunked form is crossed
        monkeypatch.setitem(rwkv_common.PREFILL_PLAN, "cpu", plan)
    check_prefill_equals_steps(RWKV6, tmp_path)


def test_batched_equals_single(tmp_path):
    check_batched(RWKV6, tmp_path)


def test_safetensors_and_dtypes(tmp_path):
    check_safetensors_and_dtypes(RWKV6, tmp_path)
    check_fp16_deep(RWKV6, tmp_path)


def test_decay_really_depends_on_the_data(tmp_path):
    """The random checkpoint exercises the data-dependent parts: zeroing the decay LoRA changes
    the logits (so the comparison with the package covers it)."""
    V, L, C, N = 60, 1, 64, 32
    w = RWKV6.random_weights(V, L, C, N, seed=2)
    ids = torch.tensor([[5, 7, 11, 13, 17, 19]])
    a = RWKV6.from_weights(w)
    w["blocks.0.att.time_decay_w2"] = torch.zeros_like(w["blocks.0.att.time_decay_w2"])
    b = RWKV6.from_weights(w)
    with torch.no_grad():
        la, _ = a(ids, a.new_state())
        lb, _ = b(ids, b.new_state())
    assert (la - lb).abs().max() > 1e-2


def test_state_tuned_file_starts_from_time_state(tmp_path):
    V, L, C, N = 60, 2, 64, 32
    w = RWKV6.random_weights(V, L, C, N, seed=7)
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
    assert_close(state.data["att_kv"][0, 0], ref_state[1], "kv state")


def test_lora_widths_come_from_the_file():
    w = RWKV6.random_weights(50, 1, 64, 32)
    w["blocks.0.att.time_maa_w1"] = torch.zeros(64, 5 * 16)
    w["blocks.0.att.time_maa_w2"] = torch.zeros(5, 16, 64)
    net = RWKV6.from_weights(w)
    assert net.blocks[0].att.time_maa_w2.shape == (5, 16, 64)
    w["blocks.0.att.time_maa_w2"] = torch.zeros(5, 17, 64)
    with pytest.raises(AIWriterError, match="time_maa_w2"):
        RWKV6.from_weights(w)
