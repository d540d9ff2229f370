"""Fast CPU modes against the float32 reference path: int8 weights (aiwriter.speed.quant) and bf16.

Tolerances: int8 rounds each weight to 1/254 of its row's largest magnitude and (on CPU, fbgemm)
each activation vector to 7 bits, so logits move by a few percent of their range; we bound the
mean KL divergence of the next-token distributions (the held-out loss moves by about that) and the
largest logit error. bf16 rounds weights to 8 bits of mantissa: a tighter bound.
"""
import pytest
import torch
import torch.nn as nn

import aiwriter
from aiwriter.speed import quant
from aiwriter.models.aiwriter_v1 import AIWriterV1
from aiwriter.speed.quant import Int8Linear, quantize_int8
from aiwriter.models.rwkv4 import RWKV4
from aiwriter.models.rwkv7 import RWKV7

V = 120


def _kl(ref, out):
    p, q = ref.double().log_softmax(-1), out.double().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean().item()


def test_int8_linear_rows_and_fallback(monkeypatch):
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(96, 40, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(40, 96, generator=g) * torch.linspace(0.01, 3, 40)[:, None])  # rows of very different scale
    q = Int8Linear(lin)
    assert q.qweight.dtype == torch.int8 and q.qweight.abs().max() == 127
    assert q.weight.dtype == torch.float32  # what families cast their input to
    # per-row rounding: every weight within half a step of its row's scale
    err = (q.dequantized() - lin.weight).abs().max(1).values
    assert torch.all(err <= q.scale * 0.5 + 1e-7)
    x = torch.randn(2, 5, 96, generator=g)
    exact = lin(x).detach()
    fast = q(x)
    assert fast.shape == (2, 5, 40)
    rel = (fast - exact).abs().max() / exact.abs().max()
    assert rel < 0.03
    # the generic path (CUDA, no fbgemm): the same int8 weights, dequantized, float activations
    monkeypatch.setattr(quant, "_fbgemm_ok", lambda: False)
    slow = q(x)
    torch.testing.assert_close(slow, torch.nn.functional.linear(x, q.dequantized(), lin.bias.detach()))
    assert (slow - exact).abs().max() / exact.abs().max() < 0.01


@pytest.mark.parametrize("cls", [RWKV4, RWKV7], ids=["rwkv4", "rwkv7"])
def test_int8_and_bf16_models_close_to_fp32(cls, tmp_path):
    path = tmp_path / "m.pth"
    torch.save(cls.random_weights(V, 3, 128, 32, seed=11), path)
    ref = aiwriter.load_model(path)
    q8 = aiwriter.load_model(path)
    quantize_int8(q8.net)
    assert not any(isinstance(m, nn.Linear) for m in q8.net.modules())
    assert sum(isinstance(m, Int8Linear) for m in q8.net.modules()) == 1 + 3 * (7 if cls is RWKV4 else 6)
    bf = aiwriter.load_model(path, dtype="bf16")
    ids = torch.randint(0, V, (48,), generator=torch.Generator().manual_seed(1)).tolist()
    l32 = torch.from_numpy(ref.logits(ids))
    scale = l32.abs().max()
    l8 = torch.from_numpy(q8.logits(ids))
    # without VNNI (AVX2-only CPUs) fbgemm rounds activations to 7 bits: twice the error
    assert _kl(l32, l8) < 5e-3 and (l8 - l32).abs().max() < (0.08 if quant._full_range_ok() else 0.2) * scale
    lbf = torch.from_numpy(bf.logits(ids))
    assert _kl(l32, lbf) < 1e-3 and (lbf - l32).abs().max() < 0.03 * scale
    # decode steps (the T = 1 path) agree as well, state included
    s32, s8 = ref.forward(ids)[1], q8.forward(ids)[1]
    for t in ids[:8]:
        a, s32 = ref.forward([t], s32)
        b, s8 = q8.forward([t], s8)
    assert _kl(a[None], b[None]) < 5e-3
    for name in s32.data:
        d = (s8.data[name] - s32.data[name]).abs().max() / s32.data[name].abs().max().clamp(min=1e-6)
        assert d < 0.1, name


def test_int8_f1_and_batched_streams():
    torch.manual_seed(0)
    net = AIWriterV1(V, 64, 2, 4, 32).eval()
    ref = AIWriterV1(V, 64, 2, 4, 32).eval()
    ref.load_state_dict(net.state_dict())
    quantize_int8(net)
    ids = torch.randint(0, V, (2, 20))
    with torch.no_grad():
        a, _ = ref(ids, ref.new_state(2), all_logits=True)
        b, sb = net(ids, net.new_state(2), all_logits=True)
        assert _kl(a.flatten(0, 1), b.flatten(0, 1)) < 5e-3
        # two streams in one call vs each alone: int8 activations are quantized per call, so
        # batching moves logits only within the int8 error, never more
        one, _ = net(ids[:1], net.new_state(1), all_logits=True)
        assert (one[0] - b[0]).abs().max() < 0.05 * a.abs().max()


@pytest.mark.parametrize("cls", [RWKV4, RWKV7], ids=["rwkv4", "rwkv7"])
def test_packed_bf16_equals_plain_bf16(cls, tmp_path):
    """oneDNN-packed bf16 weights: the same products as torch's bf16 matmul (equal within bf16's
    last bit, in case the kernels add in another order; here they are bit-equal), on a prefill
    and on batched steps."""
    from aiwriter.speed.quant import PackedBF16Linear, bf16_packing_available, pack_bf16

    if not bf16_packing_available():  # oneDNN's bf16 reorder needs AVX-512 or AVX-NE-CONVERT
        pytest.skip("this CPU cannot pack bf16 weights (AVX2 only)")
    path = tmp_path / "m.pth"
    torch.save(cls.random_weights(V, 2, 128, 32, seed=2), path)
    # the plain side straight from the family class: load_model may pack bf16 itself
    plain_net = cls.from_weights(torch.load(path, weights_only=True)).to(dtype=torch.bfloat16).eval()
    assert any(isinstance(m, nn.Linear) for m in plain_net.modules())
    plain = aiwriter.load_model(path)
    plain.net = plain_net
    packed = aiwriter.load_model(path, dtype="bf16")
    pack_bf16(packed.net)
    assert sum(isinstance(m, PackedBF16Linear) for m in packed.net.modules()) == 1 + 2 * (7 if cls is RWKV4 else 6)
    assert not any(isinstance(m, nn.Linear) for m in packed.net.modules())
    ids = list(range(1, V, 5))
    a, sa = plain.forward(ids)
    b, sb = packed.forward(ids)
    torch.testing.assert_close(a, b, rtol=0, atol=2**-7 * a.abs().max().item())
    for t in ids[:5]:
        a, sa = plain.forward_batch([t, t + 1], aiwriter.State.stack([sa, sa]) if sa.batch == 1 else sa)
        b, sb = packed.forward_batch([t, t + 1], aiwriter.State.stack([sb, sb]) if sb.batch == 1 else sb)
    torch.testing.assert_close(a, b, rtol=0, atol=2**-7 * a.abs().max().item())
    # and the bf16 model stays within bf16 rounding of float32
    ref = torch.from_numpy(aiwriter.load_model(path).logits(ids))
    assert _kl(ref, torch.from_numpy(packed.logits(ids))) < 1e-3
