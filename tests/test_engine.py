import pytest
import torch

from aiwriter import AIWriterError, load_model
from aiwriter.engine import PrefixCache, State


def test_batched_forward_equals_single_streams(f2_paths):
    m = load_model(f2_paths[0], vocab=f2_paths[1])
    ids = m.tokenizer.encode("\n林黛玉笑道")
    logits, st = m.forward(ids)
    # two branches that then read different chars, in one batched forward
    batch = st.repeat(2)
    nxt = m.tokenizer.encode("你我")
    bl, bst = m.forward_batch(nxt, batch)
    for i, t in enumerate(nxt):
        sl, sst = m.forward([t], st)
        torch.testing.assert_close(bl[i], sl, rtol=1e-5, atol=1e-5)
        for k in sst.data:
            torch.testing.assert_close(bst.select(i).data[k], sst.data[k], rtol=1e-5, atol=1e-5)


def test_state_copy_is_independent(f2_paths):
    m = load_model(f2_paths[0], vocab=f2_paths[1])
    _, st = m.forward(m.tokenizer.encode("\n他"))
    before = st.copy()
    branch = st.copy()
    m.forward(m.tokenizer.encode("说"), branch)
    for k in st.data:
        assert torch.equal(st.data[k], before.data[k])
    a, _ = m.forward(m.tokenizer.encode("说"), st.copy())
    b, _ = m.forward(m.tokenizer.encode("说"), st.copy())
    assert torch.equal(a, b)


def test_state_stack_and_select_round_trip():
    s1 = State({"x": torch.ones(1, 3)})
    s2 = State({"x": torch.zeros(1, 3)})
    both = State.stack([s1, s2])
    assert both.batch == 2
    assert torch.equal(both.select(1).data["x"], s2.data["x"])


def test_prefix_cache_longest_shared_start():
    c = PrefixCache()
    st = State({"x": torch.zeros(1)})
    assert c.longest_shared([1, 2, 3]) == 0
    c.put([1, 2, 3, 4, 5], torch.zeros(3), st)
    c.put([1, 2, 7], torch.zeros(3), st)
    assert c.longest_shared([1, 2, 3, 4, 9, 9]) == 4  # parts from the first after 4 ids
    assert c.longest_shared([1, 2, 7, 8]) == 3
    assert c.longest_shared([1, 2, 3]) == 3
    assert c.longest_shared([5, 1]) == 0
    assert c.longest_shared([1, 2, 3, 4], start="other") == 0  # read from another start state


def test_prefix_cache_longest_prefix_and_bound():
    c = PrefixCache(max_bytes=10_000)
    st = State({"x": torch.zeros(1, 100)})  # 400 bytes
    c.put([1, 2], torch.zeros(10), st)
    c.put([1, 2, 3, 4], torch.ones(10), st)
    n, logits, _ = c.longest_prefix([1, 2, 3, 4, 5])
    assert n == 4 and logits[0] == 1
    assert c.longest_prefix([1, 3])[0] == 0
    assert c.longest_prefix([1, 2, 3])[0] == 2
    for i in range(100):
        c.put([9, i], torch.zeros(10), st)
    assert c.nbytes() <= 10_000 and len(c) < 100
    assert c.longest_prefix([9, 99])[0] == 2  # the newest survives


def test_load_errors_are_bilingual(tmp_path, f2_paths):
    with pytest.raises(AIWriterError, match="找不到模型文件"):
        load_model(tmp_path / "nope.pth")
    with pytest.raises(AIWriterError, match="unknown device"):
        load_model(f2_paths[0], vocab=f2_paths[1], device="tpu")
    with pytest.raises(AIWriterError, match="dtype"):
        load_model(f2_paths[0], vocab=f2_paths[1], dtype="int3")
    small = tmp_path / "small.json"
    small.write_text('{"0": "a", "1": "b"}', encoding="utf-8")
    big = tmp_path / "big.json"
    big.write_text("{" + ",".join(f'"{i}": "{chr(0x4e00 + i)}"' for i in range(9000)) + "}", encoding="utf-8")
    with pytest.raises(AIWriterError, match="wrong vocab"):
        load_model(f2_paths[0], vocab=big)


def test_configure_threads(monkeypatch):
    import aiwriter.engine as engine

    before = torch.get_num_threads()
    try:
        small = load_model()  # the embedded model: 6M parameters
        torch.set_num_threads(2)
        assert engine.configure_threads(small, None) == 1  # small: one thread decodes fastest
        torch.set_num_threads(2)
        assert engine.configure_threads(small, 2) == 2  # asked for: kept
        monkeypatch.setattr(engine, "SMALL_MODEL", 1000)
        assert engine.configure_threads(small, None) == 2  # big: torch's default left alone
        assert engine.configure_threads(None, 1) == 1
    finally:
        torch.set_num_threads(before)
