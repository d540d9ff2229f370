"""F2 (aiwriter-v2): golden logits for stepping, the parallel prefill and the original GPT form;
prefill == stepping beyond the copy window (against a float64 transcription of the step math)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aiwriter
from aiwriter.engine import State
from aiwriter.models.aiwriter_v2 import AIWriterV2, default_eps

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
    return aiwriter.load_model(FIX / "aiwriter-v2-tiny.pth", vocab=FIX / "aiwriter-v2-vocab.json")


@pytest.fixture(scope="module")
def golden():
    return np.load(FIX / "aiwriter-v2-tiny.expected.npz")


def reference_steps(w, ids, T, eps):
    """docs/FORMATS.md's one-step math in float64, id by id; logits after each id."""
    w = {k: v.double() for k, v in w.items()}
    C = w["emb.weight"].shape[1]
    L = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    state = {(i, s): torch.zeros(C, dtype=torch.float64) for i in range(L) for s in ("att", "aa", "bb", "ffn")}
    keys, out = [], []

    def ln(x, name):
        return F.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"])

    def ffn(x, p, slot, i):
        mk, mr = w[p + "time_mix_k"].view(-1), w[p + "time_mix_r"].view(-1)
        sx = state[(i, slot)]
        xk, xr = x * mk + sx * (1 - mk), x * mr + sx * (1 - mr)
        state[(i, slot)] = x
        return torch.sigmoid(w[p + "receptance.weight"] @ xr) * (w[p + "value.weight"] @ torch.relu(w[p + "key.weight"] @ xk) ** 2)

    def att(x, p, i):
        sx = state[(i, "att")]
        xk, xv, xr = (x * w[p + f"time_mix_{c}"].view(-1) + sx * (1 - w[p + f"time_mix_{c}"].view(-1)) for c in "kvr")
        state[(i, "att")] = x
        r = torch.sigmoid(w[p + "receptance.weight"] @ xr)
        k = torch.exp(torch.clamp(w[p + "key.weight"] @ xk, max=60))
        v = w[p + "value.weight"] @ xv
        u, decay = torch.exp(w[p + "time_first"].view(-1)), torch.exp(-torch.exp(w[p + "time_decay"].view(-1)))
        aa, bb = state[(i, "aa")], state[(i, "bb")]
        a, b = aa + u * k * v, bb + u * k
        state[(i, "aa")], state[(i, "bb")] = decay * aa + k * v, decay * bb + k
        return w[p + "output.weight"] @ (r * a / (b + eps))

    for t, idx in enumerate(ids):
        x = w["emb.weight"][idx]
        for i in range(L):
            x = ln(x, f"blocks.{i}.ln1")
            x = x + (ffn(x, "blocks.0.ffnPre.", "att", 0) if i == 0 else att(x, f"blocks.{i}.att.", i))
            x = ln(x, f"blocks.{i}.ln2")
            x = x + ffn(x, f"blocks.{i}.ffn.", "ffn", i)
        x = ln(x, "ln_out")
        keys.append(w["head_k.weight"] @ x)
        logits = w["head.weight"] @ x
        q = w["head_q.weight"] @ x
        for j in range(max(0, t + 1 - T), t + 1):  # the last T positions, this one included
            logits[ids[j]] += keys[j] @ q / 256
        out.append(logits)
    return torch.stack(out)


# ---- golden fixture through the public API -------------------------------------------------------

def test_fixture_every_step(model, golden):
    ids = golden["ids"].tolist()
    assert model.tokenizer.encode(str(golden["text"])) == ids
    state, rows = model.new_state(), []
    for i in ids:
        logits, state = model.forward([i], state)
        rows.append(logits.numpy())
    np.testing.assert_allclose(np.stack(rows), golden["rnn_logits"], **TOL)


@pytest.mark.parametrize("chunk_len", [64, 16, 5])
def test_fixture_parallel_prefill(model, golden, chunk_len):
    model.net.chunk_len = chunk_len
    try:
        ids = golden["ids"].tolist()
        np.testing.assert_allclose(model.logits(ids), golden["rnn_logits"], **TOL)  # all_logits prefill
        last, _ = model.forward(ids)
        np.testing.assert_allclose(last.numpy(), golden["gpt_last_logits"], **TOL)  # the original GPT form
        np.testing.assert_allclose(last.numpy(), golden["rnn_logits"][-1], **TOL)
    finally:
        model.net.chunk_len = 64


def test_fixture_matches_float64_reference(model, golden):
    ref = reference_steps(model.net.state_dict(), golden["ids"].tolist()[:12], model.net.copy_len, model.net.eps)
    np.testing.assert_allclose(ref.numpy(), golden["rnn_logits"][:12], **TOL)


def test_eps_rule(model):
    assert model.net.eps == 1e-16  # the fixture (C=64) and L6_CHN (C=512)
    assert default_eps(512) == 1e-16  # L6_CHN
    assert default_eps(1024) == 1e-9  # L24_CHN, the original's default
    assert AIWriterV2(10, 8, 1, 4, eps=1e-3).eps == 1e-3


# ---- prefill == stepping, past the copy window -----------------------------------------------------

def test_prefill_equals_stepping_beyond_the_copy_window(model):
    T = model.net.copy_len
    ids = torch.randint(0, model.vocab_size, (T + 23,), generator=torch.Generator().manual_seed(0)).tolist()
    state, rows = model.new_state(), []
    for i in ids:
        logits, state = model.forward([i], state)
        rows.append(logits.numpy())
    rows = np.stack(rows)
    model.net.chunk_len = 20
    try:
        par = model.logits(ids)
        last, pstate = model.forward(ids)
    finally:
        model.net.chunk_len = 64
    np.testing.assert_allclose(par, rows, **TOL)
    np.testing.assert_allclose(last.numpy(), rows[-1], **TOL)
    for k in state.data:
        torch.testing.assert_close(pstate.data[k], state.data[k], rtol=1e-4, atol=1e-4)
    assert state.data["hk_ids"][0].tolist() == ids[-T:]

    ref = reference_steps(model.net.state_dict(), ids, T, model.net.eps).numpy()
    np.testing.assert_allclose(rows, ref, **TOL)


def test_prefill_continues_a_state(model, golden):
    ids = golden["ids"].tolist()
    _, s = model.forward(ids[:9])
    _, s = model.forward(ids[9:30], s)
    last, _ = model.forward(ids[30:], s)
    np.testing.assert_allclose(last.numpy(), golden["rnn_logits"][-1], **TOL)


# ---- states: branches, batches -------------------------------------------------------------------

def test_state_copy_branches_are_independent(model, golden):
    ids = golden["ids"].tolist()
    _, root = model.forward(ids[:10])
    before, branch = root.copy(), root.copy()
    la, _ = model.forward(ids[10:20], root)
    lb, _ = model.forward([ids[30], ids[31]], branch)
    for k in root.data:
        assert torch.equal(root.data[k], before.data[k]) and torch.equal(branch.data[k], before.data[k])
    np.testing.assert_allclose(la.numpy(), golden["rnn_logits"][19], **TOL)
    np.testing.assert_allclose(lb.numpy(), model.logits(ids[:10] + [ids[30], ids[31]])[-1], **TOL)


def test_batch_forward(model, golden):
    ids = golden["ids"].tolist()
    _, s1 = model.forward(ids[:5])
    _, s2 = model.forward(ids[:11])
    logits, new = model.forward_batch([[ids[5], ids[6]], [ids[11], ids[12]]], State.stack([s1, s2]))
    np.testing.assert_allclose(logits[0].numpy(), golden["rnn_logits"][6], **TOL)
    np.testing.assert_allclose(logits[1].numpy(), golden["rnn_logits"][12], **TOL)
    assert new.batch == 2
