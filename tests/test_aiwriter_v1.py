"""F1 (aiwriter-v1): golden logits, incremental == full recompute, the slide policy, branching.

References: the fixture (the original code's numbers) and a float64 transcription of the
docs/FORMATS.md math below that recomputes a whole window from scratch.
"""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aiwriter
from aiwriter.engine import State
from aiwriter.models.aiwriter_v1 import AIWriterV1

FIX = Path(__file__).parent / "fixtures"
TOL = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: with the CPU shared, extra threads only wait on each other
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return aiwriter.load_model(FIX / "aiwriter-v1-tiny.pth", vocab=FIX / "aiwriter-v1-vocab.json")


@pytest.fixture(scope="module")
def golden():
    return np.load(FIX / "aiwriter-v1-tiny.expected.npz")


def reference_window(w, ids):
    """Logits at every position of one window that starts at position 0, in float64."""
    w = {k: v.double() for k, v in w.items()}
    V, C = w["tok_emb.weight"].shape
    T = w["time_out"].shape[1]
    n = len(ids)
    ids = torch.tensor(ids)

    def lin(x, name):
        return x @ w[name + ".weight"].T + w.get(name + ".bias", 0)

    def ln(x, name):
        return F.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"])

    def shift(x):
        prev = torch.cat([torch.zeros(1, C, dtype=x.dtype), x[:-1]])
        return torch.cat([prev[:, : C // 2], x[:, C // 2:]], dim=1)

    x = w["tok_emb.weight"][ids]
    L = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    for i in range(L):
        p = f"blocks.{i}."
        s = shift(ln(x, p + "ln1"))
        k = torch.exp(torch.clamp(lin(s, p + "attn.key"), -60, 30))
        v, r = lin(s, p + "attn.value"), lin(s, p + "attn.receptance")
        tw, alpha, beta = w[p + "attn.time_w"], w[p + "attn.time_alpha"], w[p + "attn.time_beta"]
        H = tw.shape[0]
        W = torch.zeros(H, n, n, dtype=x.dtype)
        for t in range(n):  # W[h,t,u] = time_w[h, T-1-t+u] * alpha[h,u] * beta[h,t] for u = 0..t
            W[:, t, : t + 1] = tw[:, T - 1 - t: T] * alpha[:, 0, : t + 1] * beta[:, t]
        wkv = torch.einsum("htu,uhc->thc", W, (k * v).view(n, H, -1)).reshape(n, -1)
        x = x + lin(torch.sigmoid(r) * wkv / torch.cumsum(k, 0), p + "attn.output") * w[p + "attn.time_gamma"][:n]
        s = shift(ln(x, p + "ln2"))
        cm = lin(F.mish(lin(s, p + "mlp.key")) * lin(s, p + "mlp.value"), p + "mlp.weight")
        x = x + torch.sigmoid(lin(s, p + "mlp.receptance")) * cm
    x = ln(x, "ln_f")
    c = torch.tril(lin(x, "head_q") @ lin(x, "head_k").T / 256)
    return (x * w["time_out"][0, :n]) @ w["head.weight"].T + c @ F.one_hot(ids, V).double()


def random_model(seed=0, V=40, C=16, L=2, H=2, T=12):
    torch.manual_seed(seed)
    net = AIWriterV1(V, C, L, H, T)
    with torch.no_grad():
        for name, p in net.named_parameters():
            base = 1.0 if ("time_" in name or "ln" in name and name.endswith("weight")) else 0.0
            p.copy_(base + 0.4 * torch.randn_like(p))
    return net.eval()


# ---- golden fixture through the public API -------------------------------------------------

@pytest.mark.parametrize("which", ["short", "full"])
def test_fixture_logits(model, golden, which):
    ids = golden[f"{which}_ids"].tolist()
    assert model.tokenizer.encode(str(golden[f"{which}_text"]))[-model.ctx_len:] == ids
    np.testing.assert_allclose(model.logits(ids), golden[f"{which}_logits"], **TOL)
    # Model.logits keeps the last ctx_len ids of a longer text, as the original did
    if which == "full":
        long_ids = model.tokenizer.encode(str(golden["full_text"]))
        assert len(long_ids) > model.ctx_len
        np.testing.assert_allclose(model.logits(long_ids), golden["full_logits"], **TOL)


def test_fixture_matches_float64_reference(model, golden):
    w = {k: v for k, v in model.net.state_dict().items()}
    w["time_out"] = model.net.time_out.detach()
    ref = reference_window(w, golden["full_ids"].tolist()).numpy()
    np.testing.assert_allclose(ref, golden["full_logits"], **TOL)


# ---- incremental == full recompute -----------------------------------------------------------

def test_one_id_at_a_time_equals_the_full_window(model, golden):
    ids = golden["full_ids"].tolist()
    state, rows = model.new_state(), []
    for i in ids:
        logits, state = model.forward([i], state)
        rows.append(logits.numpy())
    np.testing.assert_allclose(np.stack(rows), golden["full_logits"], **TOL)
    assert int(state.data["len"]) == model.ctx_len


@pytest.mark.parametrize("split", [1, 7, 20, 31])
def test_prefill_in_pieces_equals_the_full_window(model, golden, split):
    ids = torch.tensor([golden["full_ids"].tolist()])
    with torch.no_grad():
        a, state = model.net(ids[:, :split], model.net.new_state(), all_logits=True)
        b, state = model.net(ids[:, split:], state, all_logits=True)
    np.testing.assert_allclose(torch.cat([a, b], 1)[0].numpy(), golden["full_logits"], **TOL)


# ---- past a full window ------------------------------------------------------------------------

def _step_all(net, ids):
    state, rows = net.new_state(), []
    with torch.no_grad():
        for i in ids:
            logits, state = net(torch.tensor([[i]]), state)
            rows.append(logits[0])
    return torch.stack(rows), state


def test_exact_window_is_the_original_recompute():
    net = random_model()
    net.exact_window(True)
    T = net.ctx_len
    ids = torch.randint(0, net.vocab_size, (2 * T + 4,), generator=torch.Generator().manual_seed(1)).tolist()
    rows, _ = _step_all(net, ids)
    w = net.state_dict() | {"time_out": net.time_out.detach()}
    for j in range(len(ids)):
        window = ids[max(0, j + 1 - T): j + 1]  # the original: the last T ids, recomputed
        ref = reference_window(w, window)[-1]
        np.testing.assert_allclose(rows[j].numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_slide_keeps_half_the_window_and_restarts_at_position_zero():
    net = random_model(seed=2)
    T, keep = net.ctx_len, net.keep
    assert keep == T // 2
    ids = torch.randint(0, net.vocab_size, (2 * T + 4,), generator=torch.Generator().manual_seed(3)).tolist()
    rows, state = _step_all(net, ids)
    w = net.state_dict() | {"time_out": net.time_out.detach()}
    n = 0
    for j in range(len(ids)):
        n = keep + 1 if n == T else n + 1  # the window length after reading ids[j]
        ref = reference_window(w, ids[j + 1 - n: j + 1])[-1]
        np.testing.assert_allclose(rows[j].numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)
    assert int(state["len"]) == n and state["ids"][0, :n].tolist() == ids[-n:]

    # all ids at once: all_logits walks the same windows; last-only jumps to the final one
    with torch.no_grad():
        every, s1 = net(torch.tensor([ids]), net.new_state(), all_logits=True)
        last, s2 = net(torch.tensor([ids]), net.new_state())
        # from a part-filled state too
        _, mid = net(torch.tensor([ids[:5]]), net.new_state())
        last_mid, s3 = net(torch.tensor([ids[5:]]), mid)
    np.testing.assert_allclose(every[0].numpy(), rows.numpy(), rtol=1e-5, atol=1e-5)
    for s in (s1, s2, s3):
        assert int(s["len"]) == n and torch.equal(s["ids"], state["ids"])
        torch.testing.assert_close(s["kva"], state["kva"], rtol=1e-5, atol=1e-5)
    for out in (last, last_mid):
        np.testing.assert_allclose(out[0].numpy(), rows[-1].numpy(), rtol=1e-5, atol=1e-5)


def test_round_trip_through_from_weights():
    net = random_model(seed=4)
    again = AIWriterV1.from_weights(net.state_dict())
    assert (again.ctx_len, again.vocab_size, again.n_layer) == (12, 40, 2)
    ids = torch.tensor([[1, 5, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids, again.new_state())[0], net(ids, net.new_state())[0])


# ---- states: branches, batches -------------------------------------------------------------------

def test_state_copy_branches_are_independent(model, golden):
    ids = golden["full_ids"].tolist()
    _, root = model.forward(ids[:10])
    before = root.copy()
    branch = root.copy()
    la, sa = model.forward(ids[10:20], root)
    lb, sb = model.forward(ids[20:25], branch)
    for k in root.data:  # the input states were not touched
        assert torch.equal(root.data[k], before.data[k]) and torch.equal(branch.data[k], before.data[k])
    np.testing.assert_allclose(la.numpy(), model.logits(ids[:20])[-1], **TOL)
    np.testing.assert_allclose(lb.numpy(), model.logits(ids[:10] + ids[20:25])[-1], **TOL)
    assert int(sa.data["len"]) == 20 and int(sb.data["len"]) == 15


def test_batch_of_streams_at_different_positions(model, golden):
    ids = golden["full_ids"].tolist()
    _, s1 = model.forward(ids[:4])
    _, s2 = model.forward(ids[:9])
    batch = State.stack([s1, s2.repeat(2)])
    logits, new = model.forward_batch([ids[4], ids[9], ids[10]], batch)
    np.testing.assert_allclose(logits[0].numpy(), model.logits(ids[:5])[-1], **TOL)
    np.testing.assert_allclose(logits[1].numpy(), model.logits(ids[:10])[-1], **TOL)
    np.testing.assert_allclose(logits[2].numpy(), model.logits(ids[:9] + [ids[10]])[-1], **TOL)
    assert new.data["len"].tolist() == [5, 10, 10]
    # same-length streams go through one batched forward
    logits, _ = model.forward_batch([[ids[9], ids[10]], [ids[10], ids[11]]], s2.repeat(2))
    np.testing.assert_allclose(logits[1].numpy(), model.logits(ids[:9] + ids[10:12])[-1], **TOL)


def test_bfloat16_weights_stay_close(golden):
    m = aiwriter.load_model(FIX / "aiwriter-v1-tiny.pth", dtype="bf16")
    out = m.logits(golden["full_ids"].tolist())
    ref = golden["full_logits"]
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < 0.1 * np.abs(ref).max()
    assert (out.argmax(-1) == ref.argmax(-1)).mean() > 0.8
