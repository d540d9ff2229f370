"""State files (RWKV-Runner / ChatRWKV `blocks.N.att.time_state`) against BlinkDL's `rwkv` package.

RWKV-5/6: the package reads time_state keys merged into a model file itself (transposing them);
our loader reads the same tensors from a separate state file, so the layouts are checked
independently. RWKV-7: the package has no loader; it is given the state as RWKV-Runner does
(state[3i+1] = time_state as stored)."""
import pickle

import pytest
import torch
from safetensors.torch import save_file

import aiwriter
from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv4 import RWKV4
from aiwriter.models.rwkv5 import RWKV5
from aiwriter.models.rwkv6 import RWKV6
from aiwriter.models.rwkv7 import RWKV7
from aiwriter.state_files import read_time_state, save_time_state
from rwkv_helpers import assert_close, load_reference, package_model_module


def random_time_state(L, H, N, seed=7):
    return torch.randn(L, H, N, N, generator=torch.Generator().manual_seed(seed)) * 0.5


def state_dict_of(ts):
    return {f"blocks.{i}.att.time_state": ts[i].clone() for i in range(ts.shape[0])}


def run_ours(model, state, ids):
    """Logits of every step from `state`, then the prefill's last logits from the same start."""
    steps, st = [], state.copy()
    for t in ids:
        logits, st = model.forward([t], st)
        steps.append(logits)
    pre, _ = model.forward(ids, state)
    return torch.stack(steps), pre


@pytest.mark.parametrize("cls,version", [(RWKV5, 5), (RWKV6, 6)])
def test_v5_v6_state_file_matches_package_reading_merged_keys(tmp_path, cls, version):
    V, L, C, N = 90, 2, 64, 32
    weights = cls.random_weights(V, L, C, N, seed=11)
    ts = random_time_state(L, C // N, N)
    merged = tmp_path / "merged.pth"
    torch.save({**weights, **state_dict_of(ts)}, merged)
    plain = tmp_path / "model.pth"
    torch.save(weights, plain)
    state_file = tmp_path / "style.pth"
    torch.save(state_dict_of(ts), state_file)

    ref = load_reference(merged)
    model = aiwriter.load_model(plain)
    state = model.state_from_file(state_file)
    assert state.start  # named by its content
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    ref_state, ref_steps = None, []
    for t in ids:
        logits, ref_state = ref.forward([t], ref_state)
        ref_steps.append(logits)
    ours_steps, ours_pre = run_ours(model, state, ids)
    assert_close(ours_steps, torch.stack(ref_steps), f"RWKV-{version} logits after a state file")
    assert_close(ours_pre, ref_steps[-1], f"RWKV-{version} prefill after a state file")
    # the state matters: from zeros the logits differ
    zero_steps, _ = run_ours(model, model.new_state(), ids[:3])
    assert (zero_steps[0] - ours_steps[0]).abs().max() > 1e-2
    # the same keys merged into our model file give the same start
    merged_model = aiwriter.load_model(merged)
    for k in state.data:
        assert_close(merged_model.new_state().data[k], state.data[k], f"merged {k}")


def test_v7_state_file_matches_package_given_the_state(tmp_path):
    V, L, C, N = 90, 2, 64, 32
    H = C // N
    weights = RWKV7.random_weights(V, L, C, N, seed=12)
    plain = tmp_path / "model.pth"
    torch.save(weights, plain)
    ts = random_time_state(L, H, N)
    state_file = tmp_path / "style.pth"
    torch.save(state_dict_of(ts), state_file)

    ref = package_model_module(v7=True, jit=True).RWKV_x070(str(plain)[:-4], "cpu fp32")
    ref_state = ref.generate_zero_state()
    for i in range(L):
        ref_state[3 * i + 1] = ts[i].clone()  # as stored, as RWKV-Runner gives it
    model = aiwriter.load_model(plain)
    state = model.state_from_file(state_file)
    ids = torch.randint(0, V, (40,), generator=torch.Generator().manual_seed(4)).tolist()
    ref_steps = []
    for t in ids:
        logits, ref_state = ref.forward([t], ref_state)
        ref_steps.append(logits.clone())
    ours_steps, ours_pre = run_ours(model, state, ids)
    assert_close(ours_steps, torch.stack(ref_steps), "RWKV-7 logits after a state file")
    assert_close(ours_pre, ref_steps[-1], "RWKV-7 prefill after a state file")
    zero_steps, _ = run_ours(model, model.new_state(), ids[:3])
    assert (zero_steps[0] - ours_steps[0]).abs().max() > 1e-2

    # merged into the model file: load_model starts every stream from it
    merged = tmp_path / "merged.pth"
    torch.save({**weights, **state_dict_of(ts)}, merged)
    m2 = aiwriter.load_model(merged)
    assert torch.equal(m2.new_state().data["wkv"][0], ts)
    logits, _ = m2.forward(ids)
    assert_close(logits, ours_pre, "merged RWKV-7")
    # and the merged file works as a state file too
    assert torch.equal(read_time_state(merged), ts)


def test_safetensors_and_saved_files_round_trip(tmp_path):
    V, L, C, N = 60, 2, 64, 32
    torch.save(RWKV7.random_weights(V, L, C, N, seed=1), tmp_path / "model.pth")
    model = aiwriter.load_model(tmp_path / "model.pth")
    ts = random_time_state(L, C // N, N, seed=2)
    save_file(state_dict_of(ts), str(tmp_path / "s.safetensors"))
    a = model.state_from_file(tmp_path / "s.safetensors")
    save_time_state(tmp_path / "saved.pth", ts)
    save_time_state(tmp_path / "saved.safetensors", ts)
    for p in ("saved.pth", "saved.safetensors"):
        b = model.state_from_file(tmp_path / p)
        assert b.start == a.start and torch.equal(b.data["wkv"], a.data["wkv"])
    # what RWKV-Runner does with the file: torch.load, keys blocks.N.att.time_state
    raw = torch.load(tmp_path / "saved.pth", weights_only=True)
    assert sorted(raw) == [f"blocks.{i}.att.time_state" for i in range(L)]
    assert raw["blocks.0.att.time_state"].shape == (C // N, N, N)


def test_state_for_another_model_is_refused_naming_both_shapes(tmp_path):
    torch.save(RWKV7.random_weights(60, 2, 64, 32, seed=1), tmp_path / "model.pth")
    model = aiwriter.load_model(tmp_path / "model.pth")
    torch.save(state_dict_of(random_time_state(3, 4, 16)), tmp_path / "other.pth")
    with pytest.raises(AIWriterError) as e:
        model.state_from_file(tmp_path / "other.pth")
    assert "3 layers x [4, 16, 16]" in e.value.en and "2 layers x [2, 32, 32]" in e.value.en
    assert "other.pth" in e.value.en
    torch.save({"emb.weight": torch.zeros(3, 3)}, tmp_path / "none.pth")
    with pytest.raises(AIWriterError, match="no state"):
        model.state_from_file(tmp_path / "none.pth")


def test_families_without_a_matrix_state_refuse(tmp_path):
    torch.save(RWKV4.random_weights(60, 2, 64, seed=1), tmp_path / "v4.pth")
    torch.save(state_dict_of(random_time_state(2, 2, 32)), tmp_path / "s.pth")
    model = aiwriter.load_model(tmp_path / "v4.pth")
    with pytest.raises(AIWriterError, match="RWKV-5/6/7"):
        model.state_from_file(tmp_path / "s.pth")


class _Boom:
    def __reduce__(self):
        return (eval, ("__import__('pathlib').Path(%r).write_text('ran')" % str(_Boom.marker),))


def test_state_file_pickle_code_never_runs(tmp_path):
    torch.save(RWKV7.random_weights(60, 2, 64, 32, seed=1), tmp_path / "model.pth")
    model = aiwriter.load_model(tmp_path / "model.pth")
    _Boom.marker = tmp_path / "marker"
    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"blocks.0.att.time_state": _Boom()}, f)
    with pytest.raises(AIWriterError):
        model.state_from_file(bad)
    assert not _Boom.marker.exists()
