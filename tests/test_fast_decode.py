"""The lean one-token step (aiwriter.models.fast_decode) equals the families' own forward bit for
bit, for every weight format, batched, over many steps; prefill still goes through the family."""
import pytest
import torch

import aiwriter
from aiwriter.models.fast_decode import disable_fast_decode, enable_fast_decode
from aiwriter.models.quant import pack_bf16, quantize_int8
from aiwriter.models.rwkv4 import RWKV4
from aiwriter.models.rwkv7 import RWKV7

V = 90


def _load(path, mode, fast):
    """The model in a weight format, with or without the lean step, whatever load_model installs."""
    m = aiwriter.load_model(path, dtype=None if mode == "int8" else mode)
    if mode == "int8":
        quantize_int8(m.net)
    elif mode == "bf16":
        pack_bf16(m.net)
    return enable_fast_decode(m.net) and m if fast else disable_fast_decode(m.net) and m


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8", "fp16"])
@pytest.mark.parametrize("cls", [RWKV4, RWKV7], ids=["rwkv4", "rwkv7"])
def test_lean_step_bit_equal(cls, mode, tmp_path):
    path = tmp_path / "m.pth"
    # 8 layers: past the fp16 rescale boundary of RWKV-4 (every 6 layers)
    torch.save(cls.random_weights(V, 8, 64, 32, seed=5), path)
    ref, fast = _load(path, mode, False), _load(path, mode, True)
    assert fast.net.fast_decode and not getattr(ref.net, "fast_decode", False)
    g = torch.Generator().manual_seed(2)
    _, warm = ref.forward(torch.randint(0, V, (33,), generator=g).tolist())
    sa = aiwriter.State.stack([warm, ref.new_state(), warm])
    sb = sa.copy()
    before = sb.copy()
    for _ in range(12):
        ids = torch.randint(0, V, (3,), generator=g)
        la, sa = ref.forward_batch(ids, sa)
        lb, sb2 = fast.forward_batch(ids, sb)
        if _ == 0:  # the input state is never mutated
            assert all(torch.equal(before.data[k], sb.data[k]) for k in sb.data)
        sb = sb2
        assert torch.equal(la, lb)
        for k in sa.data:
            assert torch.equal(sa.data[k], sb.data[k]), k
    assert la.abs().max() > 0.1
    # a prefill and all_logits still take the family's forward: the same numbers either way
    ids = torch.randint(0, V, (1, 17), generator=g)
    assert torch.equal(ref.forward(ids[0].tolist())[0], fast.forward(ids[0].tolist())[0])
    assert (ref.logits(ids[0].tolist()) == fast.logits(ids[0].tolist())).all()


def test_swapping_layers_rebuilds_the_step(tmp_path):
    """quantize_int8 after the lean step was installed: the step follows the new layers."""
    path = tmp_path / "m.pth"
    torch.save(RWKV4.random_weights(V, 2, 64, 32, seed=6), path)
    fast = _load(path, "fp32", True)
    quantize_int8(fast.net)
    ref = _load(path, "int8", False)
    la, _ = ref.forward_batch([3, 4], ref.new_state(2))
    lb, _ = fast.forward_batch([3, 4], fast.new_state(2))
    assert torch.equal(la, lb)


def test_weights_changed_later_and_autograd(tmp_path):
    """An in-place update of a cached parameter (as an optimizer does) is seen by the next step;
    with autograd on, the family's forward runs (gradients reach every parameter)."""
    path = tmp_path / "m.pth"
    torch.save(RWKV7.random_weights(V, 2, 64, 32, seed=8), path)
    ref, fast = _load(path, "fp32", False), _load(path, "fp32", True)
    for m in (ref, fast):
        with torch.no_grad():
            m.net.blocks[1].att.x_k.mul_(0.5)
            m.net.blocks[0].ffn.x_k.add_(0.1)
    la, _ = ref.forward_batch([7], ref.new_state(1))
    lb, _ = fast.forward_batch([7], fast.new_state(1))
    assert torch.equal(la, lb)
    logits, _ = fast.net(torch.tensor([[7]]), fast.net.new_state(1))
    logits.sum().backward()
    assert fast.net.blocks[1].att.x_k.grad is not None and fast.net.blocks[1].att.x_k.grad.abs().sum() > 0


def test_other_families_unchanged():
    from aiwriter.models.aiwriter_v1 import AIWriterV1

    net = AIWriterV1(V, 32, 1, 2, 16)
    assert enable_fast_decode(net) is net and not getattr(net, "fast_decode", False)
