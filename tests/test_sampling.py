"""Sampling: the seed's top-p math, the other filters, penalties and stop strings, checked on
hand-made distributions against float64 numpy."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings as hsettings, strategies as st

from aiwriter.errors import AIWriterError
from aiwriter.sampling import (
    PenaltyState, SamplingSettings, StopMatcher, apply_penalties, draw, filter_probs,
    probs_after_filters, sample,
)

S = SamplingSettings


def ref_filter(p, top_p=0.75, allow_p=0.0, top_k=0, top_a=0.0, min_p=0.0, temperature=1.0):
    """The seed's math written out in float64 numpy."""
    p = np.asarray(p, dtype=np.float64)
    s = np.sort(p)[::-1]
    cum = np.cumsum(s)
    cutoff = s[np.argmax(cum > top_p)] if (cum > top_p).any() else 0.0
    if allow_p > 0:
        cutoff = min(cutoff, allow_p)
    keep = p >= cutoff
    if top_k:
        keep &= p >= s[top_k - 1]
    keep &= p >= top_a * p.max() ** 2
    keep &= p >= min_p * p.max()
    q = np.where(keep, p, 0.0) ** (1.0 / temperature)
    return q / q.sum()


def kept(q):
    return set(torch.nonzero(torch.as_tensor(q) > 0).flatten().tolist())


def logits_of(p):
    return torch.log(torch.tensor(p, dtype=torch.float64)).float()


# ----------------------------------------------------------------------------- top-p family

def test_top_p_keeps_seed_set():
    p = torch.tensor([0.1, 0.3, 0.2, 0.4])  # sorted: .4 .3 .2 .1, cum .4 .7 .9 1.0
    q = filter_probs(p, S(top_p=0.75))
    assert kept(q) == {1, 2, 3}  # first cum > 0.75 is at 0.2 -> keep >= 0.2
    np.testing.assert_allclose(q.numpy(), [0, 0.3 / 0.9, 0.2 / 0.9, 0.4 / 0.9], rtol=1e-6)
    assert kept(filter_probs(p, S(top_p=0.65))) == {1, 3}
    assert kept(filter_probs(p, S(top_p=0.0))) == {3}  # top_p 0: greedy


def test_top_p_boundary_equal_is_not_exceeding():
    # dyadic probs: the cumulative sums are exact in float32
    p = torch.tensor([0.125, 0.5, 0.125, 0.25])  # sorted .5 .25 .125 .125, cum .5 .75 .875 1
    # cum == top_p at .75 does not exceed it: the cut falls on the next prob (.125), kept with its tie
    assert kept(filter_probs(p, S(top_p=0.75))) == {0, 1, 2, 3}
    assert kept(filter_probs(p, S(top_p=0.5))) == {1, 3}
    assert kept(filter_probs(p, S(top_p=0.7499))) == {1, 3}
    assert kept(filter_probs(p, S(top_p=1.0))) == {0, 1, 2, 3}  # nothing exceeds 1: keep all


def test_top_p_from_logits_matches_float64_reference():
    gen = np.random.default_rng(0)
    checked = 0
    for _ in range(50):
        logits = gen.normal(0, 2, size=40)
        p = np.exp(logits - logits.max()); p /= p.sum()
        top_p = float(gen.uniform(0.1, 0.95))
        if np.min(np.abs(np.cumsum(np.sort(p)[::-1]) - top_p)) < 1e-4:
            continue  # too close to the boundary for a float32 vs float64 comparison
        q = probs_after_filters(torch.tensor(logits, dtype=torch.float32), S(top_p=top_p))
        np.testing.assert_allclose(q.numpy(), ref_filter(p, top_p), atol=2e-6)
        checked += 1
    assert checked >= 40


def test_newline_switches_to_top_p_newline():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    st_ = S(top_p=0.5, top_p_newline=0.85)
    assert kept(filter_probs(p, st_, prev_is_newline=False)) == {0, 1}
    assert kept(filter_probs(p, st_, prev_is_newline=True)) == {0, 1, 2}
    batch = filter_probs(p.repeat(3, 1), st_, prev_is_newline=torch.tensor([True, False, True]))
    assert [kept(r) for r in batch] == [{0, 1, 2}, {0, 1}, {0, 1, 2}]


def test_allow_p_keeps_likely_tokens_beyond_the_cut():
    p = torch.tensor([0.6, 0.2, 0.15, 0.04, 0.01])
    assert kept(filter_probs(p, S(top_p=0.5))) == {0}
    q = filter_probs(p, S(top_p=0.5, allow_p=0.1))  # cutoff = min(0.6, 0.1)
    assert kept(q) == {0, 1, 2}
    np.testing.assert_allclose(q.numpy(), ref_filter(p.numpy(), 0.5, allow_p=0.1), atol=1e-7)
    # allow_p never narrows the top-p set
    assert kept(filter_probs(p, S(top_p=0.9, allow_p=0.5))) == {0, 1, 2}


def test_temperature_is_power_after_the_cut():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    for t in (0.5, 0.7, 2.0):
        q = filter_probs(torch.tensor(p, dtype=torch.float32), S(top_p=0.75, temperature=t))
        want = np.array([0.4, 0.3, 0.2, 0.0]) ** (1 / t)
        np.testing.assert_allclose(q.numpy(), want / want.sum(), atol=1e-6)
    # a tiny temperature on tiny probs does not underflow to an empty row
    q = filter_probs(torch.full((65536,), 1 / 65536), S(top_p=1.0, temperature=0.05))
    assert torch.isfinite(q).all() and abs(float(q.sum()) - 1) < 1e-5


def test_top_k_top_a_min_p_sets():
    p = torch.tensor([0.05, 0.5, 0.1, 0.25, 0.1])
    off = dict(top_p=1.0)
    assert kept(filter_probs(p, S(top_k=2, **off))) == {1, 3}
    assert kept(filter_probs(p, S(top_k=3, **off))) == {1, 3, 2, 4}  # tie with the 3rd kept
    assert kept(filter_probs(p, S(top_k=99, **off))) == {0, 1, 2, 3, 4}
    # top-a 0.2: drop p < 0.2 * 0.5^2 = 0.05 (0.05 stays); 0.5: drop p < 0.125
    assert kept(filter_probs(p, S(top_a=0.2, **off))) == {0, 1, 2, 3, 4}
    assert kept(filter_probs(p, S(top_a=0.5, **off))) == {1, 3}
    # min-p 0.2: drop p < 0.1
    assert kept(filter_probs(p, S(min_p=0.2, **off))) == {1, 2, 3, 4}
    assert kept(filter_probs(p, S(min_p=0.6, **off))) == {1}
    q = filter_probs(p, S(top_p=0.7, top_k=2, min_p=0.3, temperature=0.8))
    np.testing.assert_allclose(q.numpy(), ref_filter(p.numpy(), 0.7, top_k=2, min_p=0.3, temperature=0.8),
                               atol=1e-6)


# ----------------------------------------------------------------------------- drawing

def test_banned_id_never_drawn():
    logits = torch.tensor([5.0, 1.0, 0.5, 4.9, 0.0])  # id 0 is the most likely
    st_ = S(top_p=1.0, banned_ids=(0,))
    q = probs_after_filters(logits, st_)
    assert float(q[0]) == 0.0
    ids = sample(logits.repeat(10_000, 1), st_, torch.Generator().manual_seed(3))
    assert ids.shape == (10_000,) and not (ids == 0).any()
    assert set(ids.tolist()) == {1, 2, 3, 4}


def test_everything_banned_or_nan_is_a_clear_error():
    with pytest.raises(AIWriterError):
        sample(torch.zeros(3), S(banned_ids=(0, 1, 2)))
    with pytest.raises(AIWriterError):
        sample(torch.tensor([0.0, float("nan"), 1.0]), S())
    with pytest.raises(AIWriterError):
        sample(torch.zeros(3), S(banned_ids=(3,)))  # out of the vocab


def test_empirical_frequencies_match_filtered_distribution():
    logits = torch.tensor([2.0, 1.5, 1.0, 0.3, -1.0, -3.0])
    st_ = S(top_p=0.9, temperature=0.8)
    q = probs_after_filters(logits, st_).double().numpy()
    n = 40_000
    ids = sample(logits.repeat(n, 1), st_, torch.Generator().manual_seed(7)).numpy()
    counts = np.bincount(ids, minlength=6)
    assert (counts[q == 0] == 0).all()
    k = q > 0
    chi2 = float((((counts[k] - n * q[k]) ** 2) / (n * q[k])).sum())
    assert chi2 < 18.5, (chi2, counts, q)  # df <= 4: the 0.1% point is 18.47


def test_same_seed_same_draws():
    logits = torch.randn(8, 300, generator=torch.Generator().manual_seed(0))
    a = [sample(logits, S(), torch.Generator().manual_seed(42)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    seq1 = [int(sample(logits[0], S(top_p=0.95), g1)) for _ in range(50)]
    seq2 = [int(sample(logits[0], S(top_p=0.95), g2)) for _ in range(50)]
    assert seq1 == seq2 and len(set(seq1)) > 1


def test_batched_equals_per_row():
    logits = torch.randn(5, 200, generator=torch.Generator().manual_seed(1)) * 3
    nl = torch.tensor([False, True, False, True, True])
    st_ = S(top_p=0.6, top_p_newline=0.9, allow_p=0.01, temperature=0.7)
    batch = probs_after_filters(logits, st_, nl)
    for i in range(5):
        row = probs_after_filters(logits[i], st_, bool(nl[i]))
        assert kept(batch[i]) == kept(row)  # same set; values may differ in the last ulp (vector sums)
        torch.testing.assert_close(batch[i], row, rtol=1e-6, atol=1e-8)
    ids = sample(logits, st_, torch.Generator().manual_seed(9), nl)
    g = torch.Generator().manual_seed(9)
    rows = [int(sample(logits[i], st_, g, bool(nl[i]))) for i in range(5)]
    assert ids.tolist() == rows


def test_draw_is_inverse_cdf_and_skips_zero_probs():
    p = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0])
    ids = draw(p.repeat(2000, 1), torch.Generator().manual_seed(0))
    assert set(ids.tolist()) == {1, 3}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    logits = torch.randn(4, 1000, generator=torch.Generator().manual_seed(2)) * 2
    st_ = S(top_p=0.8, temperature=0.9, banned_ids=(3,))
    qc = probs_after_filters(logits, st_)
    qg = probs_after_filters(logits.cuda(), st_).cpu()
    assert torch.allclose(qc, qg, atol=1e-6)
    a = sample(logits, st_, torch.Generator().manual_seed(4))
    b = sample(logits.cuda(), st_, torch.Generator().manual_seed(4))  # CPU generator, CUDA logits
    assert b.device.type == "cuda" and a.tolist() == b.cpu().tolist()


# ----------------------------------------------------------------------------- penalties

def test_presence_frequency_arithmetic_and_decay():
    text = ["a", "b", " ", "c"]
    st_ = S(presence_penalty=0.4, frequency_penalty=0.3, penalty_decay=0.9, repetition_penalty=0)
    ps = PenaltyState(st_, 4, token_text=text)
    ps.prime([2, 3, 3])  # context: no presence/frequency penalty
    assert torch.equal(ps.penalties(), torch.zeros(4))
    for t in (0, 1, 0, 2):
        ps.update(t)
    # each update decays first, then adds: after a, b, a, " ": a = (1*.9*.9 + 1)*.9, b = 1*.9*.9,
    # " " weighs 0 (rwkv package rule) but is present
    counts = np.array([(0.9 * 0.9 + 1) * 0.9, 0.9 * 0.9, 0.0, 0.0])
    want = 0.4 * np.array([1, 1, 1, 0]) + 0.3 * counts
    np.testing.assert_allclose(ps.penalties().numpy(), want, rtol=1e-6)
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(ps.apply(logits).numpy(), logits.numpy() - want, rtol=1e-6)
    assert torch.equal(logits, torch.tensor([1.0, 2.0, 3.0, 4.0]))  # input untouched


def test_repetition_penalty_ascii_and_cjk_decay():
    chars = ["a", "b", "c", "天", "地"]
    ps = PenaltyState(S(repetition_penalty=1.0), 5, token_text=chars)
    ps.prime([0, 1, 2, 0, 1])  # "abcab"
    # walk back: b(d1,1st) a(d2,1st) c(d3) b(d4,2nd: 1-4*.05=.8) a(d5,2nd: 1-5*.05=.75)
    assert ps.repetition() == pytest.approx({1: 0.8, 0: 0.75})
    cj = PenaltyState(S(repetition_penalty=2.0), 5, token_text=chars)
    cj.prime([3, 3, 4, 3, 3])  # "天天地天天"
    # 天: d1 1st 0; d2 2nd 1-.02; d4 3rd 2-.04; d5 4th 3-.05  -> 5.89 ; 地 once
    assert cj.repetition() == pytest.approx({3: 0.98 + 1.96 + 2.95})
    np.testing.assert_allclose(cj.penalties().numpy(), [0, 0, 0, 2 * 5.89, 0], rtol=1e-6)
    # ASCII decays 5x faster: "a" + 20 others + "a" -> 1 - 22*.05 < 0; CJK at d=22 still counts
    far = PenaltyState(S(repetition_penalty=1.0), 5, token_text=chars)
    far.prime([0] + [1, 4] * 10 + [0])
    assert 0 not in far.repetition()
    far_cjk = PenaltyState(S(repetition_penalty=1.0), 5, token_text=chars)
    far_cjk.prime([3] + [1, 4] * 10 + [3])
    assert far_cjk.repetition()[3] == pytest.approx(1 - 22 * 0.01)


def test_repetition_window_and_generated_tokens():
    ps = PenaltyState(S(repetition_penalty=True), 3, token_text=["x", "y", "z"], window=3)
    ps.prime([0, 0, 1])
    ps.update(2)  # window now [0, 1, 2]: the second 0 fell out
    assert ps.repetition() == {}
    ps.update(2)  # [1, 2, 2]: z at d1, d2 -> 1 - 2*.05
    assert ps.repetition() == pytest.approx({2: 0.9})


def test_apply_penalties_batched():
    st_ = S(presence_penalty=1.0)
    states = [PenaltyState(st_, 3), PenaltyState(st_, 3)]
    states[1].update(2)
    out = apply_penalties(torch.zeros(2, 3), states)
    assert out.tolist() == [[0, 0, 0], [0, 0, -1.0]]


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("field,value", [
    ("temperature", 0.0), ("temperature", -1.0), ("temperature", 10.5), ("temperature", float("nan")),
    ("top_p", 1.5), ("top_p", -0.1), ("top_p", float("inf")), ("top_p_newline", 2.0),
    ("allow_p", -0.01), ("allow_p", 1.1), ("top_a", 1.5), ("min_p", -1.0), ("min_p", float("nan")),
    ("top_k", -1), ("top_k", 2.5), ("top_k", True),
    ("repetition_penalty", -1.0), ("repetition_penalty", float("inf")),
    ("presence_penalty", -0.2), ("frequency_penalty", -0.2), ("frequency_penalty", float("nan")),
    ("penalty_decay", 1.5), ("penalty_decay", -0.1),
    ("banned_ids", (1, -2)), ("banned_ids", ("a",)), ("stop_strings", ("",)), ("stop_strings", (3,)),
    ("temperature", "hot"),
])
def test_validate_rejects(field, value):
    with pytest.raises(AIWriterError) as e:
        S(**{field: value})
    assert field in str(e.value) and e.value.zh and e.value.en


def test_validate_accepts_edges_and_lists():
    s = S(temperature=10, top_p=0, top_p_newline=1, repetition_penalty=True, banned_ids=[1, 2],
          stop_strings=["\n\n"])
    s.validate()
    assert s.banned_ids == (1, 2) and s.stop_strings == ("\n\n",)
    assert hash(s)  # frozen, hashable


# ----------------------------------------------------------------------------- stop strings

def feed_all(m, pieces):
    out, stopped = "", False
    for piece in pieces:
        text, stopped = m.feed(piece)
        out += text
        if stopped:
            break
    return out + m.flush(), stopped


def test_stop_matcher_split_boundaries():
    m = StopMatcher(("\n\n", "END"))
    assert m.feed("abc\n") == ("abc", False)  # "\n" may start "\n\n"
    assert m.feed("\nxyz") == ("", True)
    assert m.feed("more") == ("", True)
    m = StopMatcher(("END",))
    assert m.feed("xE") == ("x", False)
    assert m.feed("N") == ("", False)
    assert m.feed("x") == ("ENx", False)  # not a stop after all: released
    assert m.feed("EN") == ("", False)
    assert m.flush() == "EN"  # end of generation releases the held text


@pytest.mark.parametrize("text,stops,want,stopped", [
    ("once upon a time END rest", ("END",), "once upon a time ", True),
    ("aaab", ("aab",), "a", True),
    ("第一章\n\n第二章", ("\n\n", "第二"), "第一章", True),
    ("no stop here", ("STOP", "xyz"), "no stop here", False),
    ("ab-STOP", ("STOP", "-S"), "ab", True),  # the earliest stop wins
])
def test_stop_matcher_any_split(text, stops, want, stopped):
    assert feed_all(StopMatcher(stops), [text]) == (want, stopped)
    assert feed_all(StopMatcher(stops), list(text)) == (want, stopped)
    for cut in range(len(text) + 1):
        assert feed_all(StopMatcher(stops), [text[:cut], text[cut:]]) == (want, stopped)


# ----------------------------------------------------------------------------- property

@st.composite
def cases(draw_):
    v = draw_(st.integers(2, 40))
    logits = draw_(st.lists(st.floats(-60, 60, allow_nan=False), min_size=v, max_size=v))
    banned = draw_(st.sets(st.integers(0, v - 1), max_size=v - 1))
    unit = st.floats(0, 1)
    s = S(temperature=draw_(st.floats(0.01, 10)), top_p=draw_(unit), top_p_newline=draw_(unit),
          allow_p=draw_(unit), top_a=draw_(unit), top_k=draw_(st.integers(0, v + 2)), min_p=draw_(unit),
          banned_ids=tuple(sorted(banned)))
    return torch.tensor(logits, dtype=torch.float32), s, draw_(st.booleans()), draw_(st.integers(0, 2**31))


@hsettings(max_examples=150, deadline=None)
@given(cases())
def test_property_id_in_range_never_banned(case):
    logits, s, nl, seed = case
    ids = sample(logits.repeat(4, 1), s, torch.Generator().manual_seed(seed), nl)
    assert ids.shape == (4,)
    for i in ids.tolist():
        assert 0 <= i < logits.shape[0] and i not in s.banned_ids
    q = probs_after_filters(logits, s, nl)
    assert math.isclose(float(q.sum()), 1.0, abs_tol=1e-5) and all(float(q[b]) == 0 for b in s.banned_ids)
