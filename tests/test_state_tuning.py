"""State tuning: only the start state changes, it lowers held-out loss, and the written file is
what state_from_file / RWKV-Runner read (the same numbers as during training)."""
import json

import numpy as np
import pytest
import torch

import aiwriter
from aiwriter.commands import main
from aiwriter.models.rwkv5 import RWKV5
from aiwriter.models.rwkv6 import RWKV6
from aiwriter.models.rwkv7 import RWKV7
from aiwriter.state_files import save_time_state
from aiwriter.training.state_tuning import StateTuning, split_heldout, start_time_state, tune_state, window_nats


def skewed_ids(n, V, seed):
    """Ids from a fixed skewed distribution over a few ids: a start state can learn to expect them."""
    g = np.random.default_rng(seed)
    p = np.zeros(V)
    p[[3, 5, 7, 11, 13]] = [0.4, 0.25, 0.15, 0.12, 0.08]
    return g.choice(V, size=n, p=p).astype(np.int64)


@pytest.mark.parametrize("cls", [RWKV7, RWKV6, RWKV5])
def test_tuning_lowers_heldout_loss_and_file_round_trips(tmp_path, cls):
    V, L, C, N = 40, 2, 64, 32
    path = tmp_path / "model.pth"
    torch.save(cls.random_weights(V, L, C, N, seed=1), path)
    model = aiwriter.load_model(path)
    net = model.net
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train, held = split_heldout([skewed_ids(6000, V, 0)], 0.1)
    assert len(held) == 600
    cfg = StateTuning(ctx_len=16, batch_size=8, lr=0.2, lr_final=0.02, max_steps=40, max_cpu_minutes=None,
                      eval_every=20, eval_chars=320, progress=False)
    res = tune_state(net, train, held, cfg, log=lambda m: None)
    assert res.steps == 40 and res.time_state.shape == (L, C // N, N, N)
    assert res.tuned_nats < res.base_nats - 0.05, (res.base_nats, res.tuned_nats)
    for k, v in net.state_dict().items():  # the weights did not move
        assert torch.equal(v, before[k]), k
    assert torch.equal(start_time_state(net), torch.zeros_like(res.time_state))

    out = save_time_state(tmp_path / "style.pth", res.time_state)
    state = model.state_from_file(out)
    ids = held[:17].tolist()
    logits, _ = model.forward(ids[:-1], state)
    direct, _ = net(torch.tensor([ids[:-1]]), {k: v.clone() for k, v in state.data.items()})
    assert torch.allclose(logits, direct[0])
    again, _ = window_nats(net, held, res.time_state, 16)
    assert abs(again - res.tuned_nats) < 1e-9


def test_cli_state_only_writes_a_runner_state_file(tmp_path, capsys):
    data = tmp_path / "book"
    data.mkdir()
    (data / "a.txt").write_text("　　话说天下大势，分久必合，合久必分。" * 40, encoding="utf-8")
    out = tmp_path / "style.pth"
    rc = main(["train", "--state-only", "--init", str(aiwriter.DEFAULT_MODEL), "--data", str(data), "--out", str(out),
               "--max-steps", "2", "--ctx-len", "32", "--batch-size", "2", "--eval-every", "1", "--eval-chars", "64",
               "--no-progress"])
    assert rc == 0
    raw = torch.load(out, weights_only=True)
    assert sorted(raw) == [f"blocks.{i}.att.time_state" for i in range(4)]
    assert raw["blocks.0.att.time_state"].shape == (4, 64, 64)
    report = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert report["steps"] == 2 and report["heldout_nats_per_char_tuned"] > 0
    assert report["batch_size"] == 2 and report["average_from"] is None
    m = aiwriter.load_model()
    assert m.state_from_file(out).start
    # without --batch-size, state tuning takes its own default (8), not the full training's (16)
    assert main(["train", "--state-only", "--init", str(aiwriter.DEFAULT_MODEL), "--data", str(data), "--out",
                 str(tmp_path / "d.pth"), "--max-steps", "1", "--ctx-len", "32", "--state-average-from", "0.5",
                 "--eval-chars", "64", "--no-progress"]) == 0
    report = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert report["batch_size"] == 8 and report["average_from"] == 0.5
    assert report["lr"] == StateTuning.lr == 0.25 and report["lr_final"] == 0.01  # the default --state-lr, 1/25 of it
    assert main(["train", "--state-only", "--init", str(aiwriter.DEFAULT_MODEL), "--data", str(data),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--out" in capsys.readouterr().err


def test_write_state_flag(tmp_path, capsys):
    ts = 0.3 * torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    f = save_time_state(tmp_path / "s.safetensors", ts)
    args = ["write", "从前有座山，", "-n", "1", "-l", "12", "--seed", "3", "--no-state-cache"]
    assert main(args + ["--state", str(f)]) == 0
    with_state = capsys.readouterr().out
    assert main(args) == 0
    without = capsys.readouterr().out
    assert with_state != without
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 8, 8)}, tmp_path / "bad.pth")
    assert main(args + ["--state", str(tmp_path / "bad.pth")]) == 2
    assert "1 layers x [2, 8, 8]" in capsys.readouterr().err


def _tiny_net(tmp_path):
    torch.save(RWKV7.random_weights(40, 2, 64, 32, seed=1), tmp_path / "model.pth")
    return aiwriter.load_model(tmp_path / "model.pth").net


def test_tail_average_is_the_mean_of_the_iterates(tmp_path):
    """average_from=0 over two steps gives the mean of the state after step 1 and after step 2
    (a one-step run takes the same first step: same seed, same windows, same peak lr)."""
    net = _tiny_net(tmp_path)
    train, held = split_heldout([skewed_ids(3000, 40, 0)], 0.1)
    base = dict(ctx_len=16, batch_size=4, lr=0.3, lr_final=0.1, max_cpu_minutes=None, eval_every=10**6,
                eval_chars=64, progress=False)
    quiet = dict(log=lambda m: None)
    one = tune_state(net, train, held, StateTuning(max_steps=1, **base), **quiet).time_state
    two = tune_state(net, train, held, StateTuning(max_steps=2, **base), **quiet).time_state
    avg = tune_state(net, train, held, StateTuning(max_steps=2, average_from=0.0, **base), **quiet).time_state
    assert not torch.allclose(one, two)
    assert torch.allclose(avg, (one + two) / 2, atol=1e-6)
    late = tune_state(net, train, held, StateTuning(max_steps=2, average_from=0.5, **base), **quiet).time_state
    assert torch.allclose(late, two, atol=1e-6)  # only the last iterate is past half the run
