import torch

from aiwriter.sampling import SamplingSettings
from aiwriter.writer import Piece, Writer

GREEDY = SamplingSettings(top_p=0.0, top_p_newline=0.0)


def collect(events):
    texts, results = {}, {}
    for ev in events:
        if isinstance(ev, Piece):
            texts[ev.run] = texts.get(ev.run, "") + ev.text
        else:
            results[ev.run] = ev
    return texts, results


def test_greedy_follows_the_model_and_counts_chars(cycle_model):
    w = Writer(cycle_model)
    r = w.read("甲乙")
    assert r.text == "\n甲乙"  # the seed's cleaning: a leading newline
    texts, results = collect(w.write(r, 2, 7, GREEDY))
    assert texts == {0: "丙。\n甲乙丙。", 1: "丙。\n甲乙丙。"}
    assert all(res.chars == 7 and res.stopped_by == "length" for res in results.values())


def test_runs_branch_from_one_reading_without_rereading(cycle_model):
    w = Writer(cycle_model)
    r = w.read("甲乙丙")
    net = cycle_model.net
    net.calls.clear()
    list(w.write(r, 3, 5, GREEDY))
    list(w.write(r, 2, 5, GREEDY))
    # every call during writing is one token per stream: the opening is never read again
    assert net.calls and all(c == 1 for c in net.calls)


def test_prefix_cache_reads_only_the_new_part(cycle_model):
    w = Writer(cycle_model)
    w.read("甲乙丙。甲乙")
    net = cycle_model.net
    net.calls.clear()
    r2 = w.read("甲乙丙。甲乙丙。甲")
    assert sum(net.calls) == 3  # "丙。甲": only what extends the cached text
    assert r2.state.data["count"].item() == len("\n甲乙丙。甲乙丙。甲")
    net.calls.clear()
    w.read("甲乙丙。甲乙丙。甲")
    assert net.calls == []  # exact hit


def test_read_reports_progress_from_the_cached_prefix_to_the_end(cycle_model, monkeypatch):
    import aiwriter.writer as W

    monkeypatch.setattr(W, "PREFILL_CHUNK", 4)
    w = Writer(cycle_model)
    w.read("甲乙丙。甲乙")
    seen = []
    w.read("甲乙丙。甲乙丙。甲乙丙。甲", progress=lambda done, total: seen.append((done, total)))
    total = len("\n甲乙丙。甲乙丙。甲乙丙。甲")
    # first call before any chunk: where the cached text ends; then every chunk; last: all read
    assert seen[0] == (len("\n甲乙丙。甲乙"), total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (total, total)
    assert len(seen) >= 3


def test_text_with_a_note_inserted_near_the_end_reads_only_from_where_it_parts(cycle_model):
    """An author's note (or a lorebook entry) a few hundred chars before the end: each new text
    parts from the one before at about that place. The state kept there is reused next time."""
    w = Writer(cycle_model)
    net = cycle_model.net
    texts = ["甲乙丙。" * n + "乙乙" + "甲乙丙。" * 5 for n in (40, 41, 42)]
    w.read(texts[0])
    net.calls.clear()
    r = w.read(texts[1])
    assert sum(net.calls) == len("\n" + texts[1])  # nothing to reuse yet: read whole, kept where it parts from texts[0]
    assert w.cache.longest_prefix(w.model.tokenizer.encode("\n" + "甲乙丙。" * 40 + "甲"))[0] == 1 + 160
    net.calls.clear()
    r = w.read(texts[2])
    assert w.last_reused == 1 + 160 and sum(net.calls) == len(texts[2]) - 160
    assert r.state.data["count"].item() == len("\n" + texts[2])  # the same state as read from the start
    # texts that share little keep no extra state
    w2 = Writer(cycle_model)
    w2.read("甲乙丙。" * 10 + "乙")
    w2.read("甲乙丙。" * 10 + "丙")
    assert len(w2.cache) == 2


def test_a_mostly_new_text_keeps_its_state_a_chunk_before_the_end(cycle_model):
    """A first read (or a story window that moved): the next prompt inserts its note a few hundred
    chars before ITS end, so it still agrees with this one up to TAIL_KEEP ids before the end."""
    import random

    from aiwriter.writer import TAIL_KEEP

    rng = random.Random(0)
    a = "".join(rng.choice("甲乙丙。") for _ in range(3000))
    w = Writer(cycle_model)
    w.read(a)
    net = cycle_model.net
    net.calls.clear()
    b = a[:2700] + "\n丙丙\n" + a[2700:] + "甲乙"
    r = w.read(b)
    n = len(w.model.tokenizer.encode("\n" + b))
    assert w.last_reused == 1 + 3000 - TAIL_KEEP and sum(net.calls) == n - w.last_reused
    assert r.state.data["count"].item() == n


def test_stop_string_ends_a_run_before_it(cycle_model):
    w = Writer(cycle_model)
    r = w.read("甲")
    s = SamplingSettings(top_p=0.0, top_p_newline=0.0, stop_strings=("。\n",))
    texts, results = collect(w.write(r, 1, 50, s))
    assert texts[0] == "乙丙"
    assert results[0].stopped_by == "stop"


def test_unknown_char_is_never_written(cycle_model):
    w = Writer(cycle_model)
    r = w.read("\ue083")  # the model predicts the unknown char after it, but it is banned
    texts, _ = collect(w.write(r, 4, 20, SamplingSettings(), torch.Generator().manual_seed(0)))
    assert all("\ue083" not in t and len(t) == 20 for t in texts.values())


def test_same_seed_same_text_on_a_real_model(f2_paths):
    from aiwriter import load_model

    m = load_model(f2_paths[0], vocab=f2_paths[1])
    w = Writer(m)
    r = w.read("林黛玉")

    def go(seed):
        texts, _ = collect(w.write(r, 2, 15, SamplingSettings(), torch.Generator().manual_seed(seed)))
        return texts

    a, b, c = go(7), go(7), go(8)
    assert a == b and a != c
    assert all(len(t) == 15 for t in a.values())


def test_bad_counts_are_clear_errors(cycle_model):
    import pytest

    from aiwriter.errors import AIWriterError

    w = Writer(cycle_model)
    r = w.read("甲")
    with pytest.raises(AIWriterError):
        list(w.write(r, 1, 0, GREEDY))
    with pytest.raises(AIWriterError):
        w.read(" \n\u3000 ")


def _batch_texts(batch, owners_texts):
    while len(batch):
        step = batch.step()
        assert not step.failed
        for owner, s, piece in step.pieces:
            owners_texts[owner][s.run] += piece


def test_a_batch_gives_each_group_its_own_seeded_text_whoever_shares_it(f2_paths):
    # the server's scheduler steps many requests in one Batch, pauses some (take) and resumes
    # them (put); each request's text must be what Writer.write gives it alone with its seed
    from aiwriter import load_model
    from aiwriter.writer import Batch, Stream

    model = load_model(f2_paths[0], vocab=f2_paths[1])
    w = Writer(model)
    settings = SamplingSettings(repetition_penalty=1.0)
    alone = {}
    for opening, seed in (("林黛玉", 7), ("宝玉笑道", 8)):
        texts, _ = collect(w.write(w.read(opening), 2, 20, settings, torch.Generator().manual_seed(seed)))
        alone[opening] = [texts[0], texts[1]]
    batch = Batch(model)
    got = {"林黛玉": ["", ""], "宝玉笑道": ["", ""]}
    for opening, seed in (("林黛玉", 7), ("宝玉笑道", 8)):
        r = w.read(opening)
        batch.add(r, [Stream(model, r, 20, settings, run=i) for i in range(2)], owner=opening,
                  generator=torch.Generator().manual_seed(seed))
    for _ in range(5):
        step = batch.step()
        for owner, s, piece in step.pieces:
            got[owner][s.run] += piece
    parked = batch.take("林黛玉")  # paused for a while: the other one goes on alone
    assert len(batch) == 2 and len(parked.streams) == 2
    for _ in range(4):
        for owner, s, piece in batch.step().pieces:
            got[owner][s.run] += piece
    batch.put(parked)
    _batch_texts(batch, got)
    assert got == alone
