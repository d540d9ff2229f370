"""RWKV-7 (x070): checked against BlinkDL's `rwkv` package and a float64 step-by-step recurrence."""
import math

import pytest
import torch

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv7 import RWKV7, lora_dims, wkv7_chunked, wkv7_scan
from rwkv_helpers import package_model_module


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@pytest.fixture(scope="module")
def reference_class():
    """rwkv.model's RWKV_x070 (a private module copy, see rwkv_helpers)."""
    return package_model_module(v7=True, jit=True).RWKV_x070


def save_checkpoint(weights, tmp_path, name="model"):
    path = tmp_path / f"{name}.pth"
    torch.save(weights, path)
    return path


# (vocab, layers, n_embd, head size)
SHAPES = [(150, 2, 128, 64), (97, 3, 96, 32)]


@pytest.mark.parametrize("V,L,C,N", SHAPES)
def test_matches_rwkv_package(reference_class, tmp_path, V, L, C, N):
    weights = RWKV7.random_weights(V, L, C, N, seed=L)
    path = save_checkpoint(weights, tmp_path)
    ref = reference_class(str(path)[:-4], "cpu fp32")  # the package appends ".pth"
    model = aiwriter.load_model(path)
    assert model.family == "rwkv7" and model.vocab_size == V and model.net.n_layer == L
    assert model.net.n_head == C // N

    ids = torch.randint(0, V, (70,), generator=torch.Generator().manual_seed(5)).tolist()
    ref_state, state, worst = None, model.new_state(), 0.0
    for t in ids:
        ref_logits, ref_state = ref.forward([t], ref_state)
        logits, state = model.forward([t], state)
        worst = max(worst, rel_err(logits, ref_logits))
    assert worst < 1e-4
    for i in range(L):
        assert rel_err(state.data["att_x"][0, i], ref_state[3 * i]) < 1e-4
        assert rel_err(state.data["wkv"][0, i], ref_state[3 * i + 1]) < 1e-4
        assert rel_err(state.data["ffn_x"][0, i], ref_state[3 * i + 2]) < 1e-4
    assert ref_state[1].abs().max() > 0.1  # the state is not trivially small

    # prefill: our chunked all-positions logits vs the package's sequence mode
    ref_all, _ = ref.forward(ids, None, full_output=True)
    ours = torch.from_numpy(model.logits(ids))
    assert ours.shape == (len(ids), V)
    assert rel_err(ours, ref_all) < 1e-4
    assert rel_err(ours[-1], ref_logits) < 1e-4


def test_chunked_wkv_matches_float64_scan_at_extreme_decays():
    """Decays at both ends of (exp(-0.6065), 1) and chunks up to 64: no overflow, same numbers."""
    g = torch.Generator().manual_seed(0)
    B, T, H, N = 2, 100, 2, 16
    r, k, v = (torch.randn(B, T, H, N, generator=g) for _ in range(3))
    z = torch.where(torch.rand(B, T, H, N, generator=g) < 0.5, 30.0, -30.0)  # sigmoid -> 1 or 0
    z[:, :, 1] = 30.0                                                         # a head at the fastest decay
    logw = -0.606531 * torch.sigmoid(z)
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1)
    iclr = torch.rand(B, T, H, N, generator=g)
    S0 = torch.randn(B, H, N, N, generator=g)
    args = (S0, r, logw, k, v, -kk, kk * iclr)
    y_ref, S_ref = wkv7_scan(*(t.double() for t in args))
    for chunk in (16, 32, 64):
        y, S = wkv7_chunked(*args, chunk=chunk)
        assert torch.isfinite(y).all() and torch.isfinite(S).all()
        assert rel_err(y, y_ref) < 1e-4, chunk
        assert rel_err(S, S_ref) < 1e-4, chunk


def test_prefill_equals_stepping_and_batch_equals_single():
    net = RWKV7.from_weights(RWKV7.random_weights(50, 2, 64, 16, seed=3)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 50, (3, 37), generator=g)  # 37: not a multiple of the chunk length
    with torch.no_grad():
        start = net.new_state(3)
        start["wkv"] = torch.randn(start["wkv"].shape, generator=g) * 0.3  # a non-empty state
        start["att_x"] = torch.randn(start["att_x"].shape, generator=g)
        start["ffn_x"] = torch.randn(start["ffn_x"].shape, generator=g)
        before = {n: t.clone() for n, t in start.items()}

        all_logits, prefilled = net(ids, start, all_logits=True)
        last, _ = net(ids, start)
        for n in start:  # the input state is never mutated
            assert torch.equal(start[n], before[n])
        # the head sees [B, 1, C] here and [B, T, C] there: BLAS may sum in another order (AVX2 vs AVX-512)
        assert rel_err(last, all_logits[:, -1]) < 1e-6

        state, stepped = start, []
        for t in range(ids.shape[1]):
            logits, state = net(ids[:, t:t + 1], state)
            stepped.append(logits)
        assert rel_err(all_logits, torch.stack(stepped, 1)) < 1e-4
        for n in state:
            assert rel_err(prefilled[n], state[n]) < 1e-4

        for b in range(3):
            one = {n: t[b:b + 1] for n, t in start.items()}
            single, single_state = net(ids[b:b + 1], one, all_logits=True)
            assert rel_err(single[0], all_logits[b]) < 1e-5
            assert rel_err(single_state["wkv"][0], prefilled["wkv"][b]) < 1e-5

        net.chunk_len = 64  # another chunking, same numbers
        other, _ = net(ids, start, all_logits=True)
        assert rel_err(other, all_logits) < 1e-4


def test_gradients_flow_and_match_scan():
    net = RWKV7.from_weights(RWKV7.random_weights(40, 2, 64, 32, seed=4))
    ids = torch.randint(0, 40, (2, 21), generator=torch.Generator().manual_seed(2))
    grads = {}
    for mode in ("chunked", "scan"):
        net.wkv_mode = mode
        net.zero_grad()
        logits, _ = net(ids[:, :-1], net.new_state(2), all_logits=True)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), ids[:, 1:].reshape(-1))
        loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in net.named_parameters()}
    for n, gr in grads["chunked"].items():
        assert torch.isfinite(gr).all(), n
        assert gr.abs().max() > 0, n
        assert rel_err(gr, grads["scan"][n]) < 1e-3, n


def test_init_weights_trains_and_saves_an_official_checkpoint(reference_class, tmp_path):
    V, L, C, N = 120, 2, 64, 32
    w = RWKV7.init_weights(V, L, C, N, seed=0)
    assert w["blocks.0.att.output.weight"].abs().max() == 0 and w["blocks.1.ffn.value.weight"].abs().max() == 0
    assert "blocks.0.att.v0" not in w and w["blocks.1.att.v1"].shape == (C, lora_dims(C)["v"])
    assert w["emb.weight"].abs().max() <= 1e-4
    decay = torch.exp(-0.606531 * torch.sigmoid(w["blocks.0.att.w0"]))
    assert decay.max() > 0.99 and decay.min() < 0.75  # slow and fast channels
    assert torch.equal(w["blocks.0.att.x_r"], RWKV7.init_weights(V, L, C, N, seed=1)["blocks.0.att.x_r"])

    net = RWKV7.from_weights(w)
    ids = torch.randint(0, V, (4, 33), generator=torch.Generator().manual_seed(3))
    logits, _ = net(ids[:, :-1], net.new_state(4), all_logits=True)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
    assert abs(loss.item() - math.log(V)) < 0.5  # starts near uniform
    loss.backward()
    with torch.no_grad():  # a few big steps so that the zero-initialised projections move
        for p in net.parameters():
            p -= 0.5 * p.grad.sign() * p.abs().mean().clamp(min=1e-2)
    assert net.blocks[0].att.output.weight.abs().max() > 0

    path = save_checkpoint(net.state_dict(), tmp_path, "trained")
    ref = reference_class(str(path)[:-4], "cpu fp32")
    model = aiwriter.load_model(path)
    seq = ids[0].tolist()
    ref_all, _ = ref.forward(seq, None, full_output=True)
    assert rel_err(torch.from_numpy(model.logits(seq)), ref_all) < 1e-4


def test_stored_dtypes_and_bad_checkpoints(tmp_path):
    w = RWKV7.random_weights(30, 2, 64, 32, seed=5)
    ids = torch.randint(0, 30, (1, 12), generator=torch.Generator().manual_seed(0))
    base = RWKV7.from_weights(w)
    with torch.no_grad():
        want, _ = base(ids, base.new_state(1))
        for dtype in (torch.float16, torch.bfloat16):
            net = RWKV7.from_weights({n: t.to(dtype) for n, t in w.items()})
            assert net.emb.weight.dtype == dtype
            got, state = net(ids, net.new_state(1))
            assert got.dtype == torch.float32 and state["wkv"].dtype == torch.float32
            assert rel_err(got, want) < 0.05
        # squeezed vectors (as some converters store them) load the same
        squeezed = RWKV7.from_weights({n: t.squeeze() for n, t in w.items()})
        assert torch.equal(squeezed(ids, squeezed.new_state(1))[0], want)

    broken = dict(w)
    del broken["blocks.1.att.k_a"]
    with pytest.raises(AIWriterError, match="k_a"):
        aiwriter.load_model(save_checkpoint(broken, tmp_path, "broken"))
    deep_embed = dict(w, **{"blocks.0.ffn.s_emb.weight": torch.zeros(30, 1024)})  # a variant we do not run
    with pytest.raises(AIWriterError, match="s_emb"):
        RWKV7.from_weights(deep_embed)
    wrong = dict(w)
    wrong["blocks.1.ffn.x_k"] = torch.zeros(7)
    with pytest.raises(AIWriterError, match="ffn.x_k"):
        RWKV7.from_weights(wrong)
