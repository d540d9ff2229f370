"""The lean one-token step (aiwriter.speed.fast_decode) equals the families' own forward bit for
bit, for every weight format, batched, over many steps; prefill still goes through the family."""
import pytest
import torch

import aiwriter
from aiwriter.speed.fast_decode import FastDecoder
from aiwriter.speed.quant import pack_bf16, quantize_int8
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
    m.decoder = FastDecoder(m.net) if fast else None
    return m


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int8", "fp16"])
@pytest.mark.parametrize("cls", [RWKV4, RWKV7], ids=["rwkv4", "rwkv7"])
def test_lean_step_bit_equal(cls, mode, tmp_path):
    path = tmp_path / "m.pth"
    # 8 layers: past the fp16 rescale boundary of RWKV-4 (every 6 layers)
    torch.save(cls.random_weights(V, 8, 64, 32, seed=5), path)
    ref, fast = _load(path, mode, False), _load(path, mode, True)
    assert fast.decoder is not None and ref.decoder is None
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
    fast.forward_batch([3, 4], fast.new_state(2))  # the step is built
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
    logits, _ = fast.decoder(torch.tensor([[7]]), fast.net.new_state(1))
    logits.sum().backward()
    assert fast.net.blocks[1].att.x_k.grad is not None and fast.net.blocks[1].att.x_k.grad.abs().sum() > 0


def test_other_families_unchanged():
    from aiwriter.models.aiwriter_v1 import AIWriterV1

    net = AIWriterV1(V, 32, 1, 2, 16)
    assert not FastDecoder.supports(net)
    with pytest.raises(ValueError):
        FastDecoder(net)


def test_dropping_a_model_frees_it_without_gc(tmp_path):
    """No reference cycle between the module and its lean step: with the garbage collector off,
    the module is freed as soon as the model is dropped (issue 12: memory grew on every switch)."""
    import gc
    import weakref

    path = tmp_path / "m.pth"
    torch.save(RWKV7.random_weights(V, 2, 64, 32, seed=8), path)
    gc.collect()
    gc.disable()
    try:
        for mode in ("fp32", "bf16", "int8"):
            m = aiwriter.load_model(path, dtype=mode)
            assert m.decoder is not None
            m.forward_batch([1], m.new_state(1))  # builds the step
            net = weakref.ref(m.net)
            del m
            assert net() is None, mode
    finally:
        gc.enable()


def test_rss_flat_over_20_model_switches(tmp_path):
    """Issue 12: memory grew ~49 MiB per switch of model (the monkey-patched forward made a
    reference cycle that only a full GC pass freed). With the collector off, 20 switches between
    two models of ~25 MB each keep the resident memory flat."""
    import gc

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

    paths = []
    for i, cls in enumerate((RWKV4, RWKV7)):
        paths.append(tmp_path / f"m{i}.pth")
        torch.save(cls.random_weights(V, 2, 512, 64, seed=i), paths[-1])
    gc.collect()
    gc.disable()
    try:
        model, sizes = None, []
        for i in range(20):
            model = None  # the server drops the old model before loading the next
            model = aiwriter.load_model(paths[i % 2])
            model.forward_batch([1, 2], model.new_state(2))
            sizes.append(rss_mb())
    finally:
        gc.enable()
    assert sizes[-1] - sizes[3] < 40, sizes  # a leak would add ~25 MB per switch: 400 MB
