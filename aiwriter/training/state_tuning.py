"""State tuning (文风): train only the initial state of an RWKV-5/6/7 model on one's own text.

Every weight stays frozen; the one trained tensor is the matrix state each stream starts from,
[layers, heads, N, N] in the layout of RWKV-Runner's `blocks.N.att.time_state` (state_files.py),
so the result loads there and in `aiwriter write --state`. Training reads random windows of
ctx_len chars of the training part, each from the tuned state (as a writer starts a new text),
and minimises the mean next-char loss with Adam (cosine lr decay over the step / CPU-time limit).
With average_from, the result is the mean of the iterates from that fraction of the run on
(a tail average: Adam's late steps at a still-large lr mostly add noise, which the mean cancels).

Evaluation is the same use: the held-out part (the last tenth of every file) cut into windows
of ctx_len chars, each read from the start state; mean nats per char over all predicted chars,
with the tuned state and with the model's own start.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.state_files import state_dict_from_time_state, state_shape, time_state_of


@dataclass
class StateTuning:
    ctx_len: int = 256
    batch_size: int = 8
    lr: float = 0.25      # 10 CPU min on 儒林外史: 0.1 / 0.25 / 0.5 / 1.0 gave -0.051 / -0.054 / -0.051 / -0.044
    lr_final: float = 0.01
    max_steps: int | None = None
    max_cpu_minutes: float | None = 10.0   # process CPU time (all threads), the budget
    max_minutes: float | None = None       # wall clock
    eval_every: int = 50
    eval_chars: int = 20000                # held-out chars scored at each evaluation (all at the end)
    heldout_fraction: float = 0.1
    average_from: float | None = None      # average the iterates from this fraction of the run on (Polyak tail average)
    seed: int = 0
    progress: bool = True


@dataclass
class TuneResult:
    time_state: torch.Tensor
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    base_nats: float | None = None       # held-out nats/char from the model's own start (all held-out chars)
    tuned_nats: float | None = None      # ... from the tuned state
    heldout_chars: int = 0


def split_heldout(texts: list[np.ndarray], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training ids, held-out ids): the last `fraction` of every text is held out."""
    train, held = [], []
    for ids in texts:
        cut = len(ids) - int(len(ids) * fraction)
        train.append(ids[:cut])
        held.append(ids[cut:])
    return np.concatenate(train), np.concatenate(held)


def start_time_state(net) -> torch.Tensor:
    """The state a stream starts from now (zeros, or a state file merged into the model)."""
    return time_state_of(net, net.new_state(1))


def window_nats(net, ids: np.ndarray, time_state: torch.Tensor, ctx_len: int, max_chars: int | None = None,
                batch: int = 16) -> tuple[float, int]:
    """(mean nats per predicted char, chars predicted) over windows of ctx_len + 1 ids of `ids`,
    each read from `time_state` (char vocabs: one char per id)."""
    n_win = (len(ids) - 1) // ctx_len
    if max_chars is not None:
        n_win = min(n_win, max(1, max_chars // ctx_len))
    if n_win < 1:
        raise AIWriterError(f"留出文本太短：不到 {ctx_len + 1} 个字", f"the held-out text is too short: under {ctx_len + 1} chars")
    dev = next(net.parameters()).device if hasattr(net, "parameters") else torch.device("cpu")
    total, count = 0.0, 0
    with torch.inference_mode():
        for w0 in range(0, n_win, batch):
            w = min(batch, n_win - w0)
            win = np.stack([np.asarray(ids[(w0 + i) * ctx_len:(w0 + i) * ctx_len + ctx_len + 1], dtype=np.int64)
                            for i in range(w)])
            x = torch.from_numpy(win[:, :-1]).to(dev)
            y = torch.from_numpy(win[:, 1:]).to(dev)
            logits, _ = net(x, state_dict_from_time_state(net, time_state, w), all_logits=True)
            total += float(F.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
            count += y.numel()
    return total / count, count


def tune_state(net, train_ids: np.ndarray, heldout_ids: np.ndarray, cfg: StateTuning,
               log=lambda msg: print(msg, file=sys.stderr)) -> TuneResult:
    """Train the start state of `net` (an RWKV-5/6/7 family module, weights frozen)."""
    from tqdm import tqdm

    shape = state_shape(net)  # refuses families without a matrix state
    if not (cfg.max_steps or cfg.max_cpu_minutes or cfg.max_minutes):
        raise AIWriterError("请给出步数或时间上限", "give a step or time limit")
    high = len(train_ids) - cfg.ctx_len - 1
    if high <= 0:
        raise AIWriterError(f"训练文本太短：只有 {len(train_ids)} 个字，至少需要 {cfg.ctx_len + 2} 个",
                            f"training text too short: {len(train_ids)} chars, need at least {cfg.ctx_len + 2}")
    for p in net.parameters():
        p.requires_grad_(False)
    dev = next(net.parameters()).device
    ts = start_time_state(net).to(dev).clone().requires_grad_(True)
    assert tuple(ts.shape) == shape
    avg, n_avg = ts.detach().clone(), 0
    opt = torch.optim.Adam([ts], lr=cfg.lr, betas=(0.9, 0.99))
    rng = np.random.default_rng(cfg.seed)
    result = TuneResult(time_state=ts.detach().clone())

    def current():
        return avg if n_avg else ts.detach()

    def evaluate(max_chars):
        return window_nats(net, heldout_ids, current(), cfg.ctx_len, max_chars)[0]

    base_quick = window_nats(net, heldout_ids, start_time_state(net), cfg.ctx_len, cfg.eval_chars)[0]
    log(f"留出 / held-out: {base_quick:.4f} nats/char from the model's own start ({cfg.eval_chars} chars, windows of {cfg.ctx_len})")
    result.history.append({"step": 0, "cpu_s": 0.0, "heldout": base_quick})
    c0, t0 = time.process_time(), time.time()
    budget = cfg.max_cpu_minutes * 60 if cfg.max_cpu_minutes else None
    bar = tqdm(total=cfg.max_steps or int(budget or cfg.max_minutes * 60), unit="step" if cfg.max_steps else "cpu-s",
               disable=not cfg.progress, file=sys.stderr, mininterval=2.0, dynamic_ncols=True, desc="状态 / state")
    step, ema = 0, None
    while True:
        cpu, wall = time.process_time() - c0, time.time() - t0
        if (cfg.max_steps and step >= cfg.max_steps) or (budget and cpu >= budget) or \
                (cfg.max_minutes and wall >= cfg.max_minutes * 60):
            break
        # progress through the run: the nearest of the limits given
        frac = max(step / cfg.max_steps if cfg.max_steps else 0.0, cpu / budget if budget else 0.0,
                   wall / (cfg.max_minutes * 60) if cfg.max_minutes else 0.0)
        lr = cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * min(1.0, frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        offs = rng.integers(0, high + 1, size=cfg.batch_size)
        win = np.stack([np.asarray(train_ids[o:o + cfg.ctx_len + 1], dtype=np.int64) for o in offs])
        x, y = torch.from_numpy(win[:, :-1]).to(dev), torch.from_numpy(win[:, 1:]).to(dev)
        logits, _ = net(x, state_dict_from_time_state(net, ts, cfg.batch_size), all_logits=True)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        if not torch.isfinite(loss):
            raise AIWriterError(f"第 {step} 步损失变成了 {float(loss)}：请降低 --lr", f"loss became {float(loss)} at step {step}: lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if cfg.average_from is not None and frac >= cfg.average_from:
            with torch.no_grad():
                n_avg += 1
                avg.add_((ts.detach() - avg) / n_avg) if n_avg > 1 else avg.copy_(ts.detach())
        lv = loss.item()
        ema = lv if ema is None else 0.95 * ema + 0.05 * lv
        cpu = time.process_time() - c0
        bar.set_postfix(loss=f"{ema:.4f}", lr=f"{lr:.4g}", refresh=False)
        bar.n = step if cfg.max_steps else int(cpu if budget else time.time() - t0)
        bar.refresh()
        if step % cfg.eval_every == 0:
            h = evaluate(cfg.eval_chars)
            result.history.append({"step": step, "cpu_s": round(cpu, 1), "train_loss": round(ema, 4), "heldout": h})
            tqdm.write(f"step {step}  cpu {cpu:.0f}s  train {ema:.4f}  held-out {h:.4f} nats/char "
                       f"({h - base_quick:+.4f} vs own start)", file=sys.stderr)
    bar.close()
    result.steps = step
    result.cpu_seconds = time.process_time() - c0
    result.wall_seconds = time.time() - t0
    result.time_state = current().cpu().clone()
    result.base_nats, result.heldout_chars = window_nats(net, heldout_ids, start_time_state(net), cfg.ctx_len)
    result.tuned_nats, _ = window_nats(net, heldout_ids, result.time_state.to(dev), cfg.ctx_len)
    result.history.append({"step": step, "cpu_s": round(result.cpu_seconds, 1), "train_loss": ema,
                           "heldout_all": result.tuned_nats, "heldout_all_own_start": result.base_nats})
    return result
