"""`aiwriter train`: train (or fine-tune) an RWKV-7 char model on .txt files.

One process, or several under torchrun (DDP: gloo on CPU, nccl on CUDA). --batch-size is the
GLOBAL batch: each step draws that many random windows from (seed, step) alone and every rank
takes its own disjoint slice, so a run gives the same numbers with 1 or N processes, and a resumed
run sees the same windows it would have seen without the stop.

Files in --out: model.pth (plain state dict, official RWKV-7 keys) + vocab.json, ckpt.pt (weights,
optimizer, step: for --resume), history.json + loss.png (the loss curve), train.json (the facts of
the run), data-cache/ (the packed token ids). Every file is written to a temp name first and then
renamed into place, so a crash never leaves a broken file.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.training import data as D

CKPT = "ckpt.pt"
DISPLAY_SECONDS = 2.0  # the progress bar's step, loss and tok/s are refreshed this often
clock = time.time  # the training loop's clock (tests replace it)


@dataclass
class TrainSettings:
    """Everything a run needs; `aiwriter train` fills it from its flags (aiwriter/commands/train.py)."""
    # data
    data: list[str]
    out: str
    vocab: str | None = None
    vocab_coverage: float = 0.9995
    min_count: int | None = None
    eval_file: str | None = None
    eval_chars: int = 20000
    eval_every: int = 500
    # model
    init: str | None = None
    layers: int = 6
    embd: int = 256
    head_size: int = 64
    wkv_chunk: int = 32
    # training
    ctx_len: int = 256
    batch_size: int = 16
    lr: float = 1e-3
    lr_final: float | None = None
    schedule: str = "cosine"  # or "linear"
    warmup: int = 100
    max_steps: int | None = None
    max_minutes: float | None = None
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    dtype: str = "auto"  # "auto", "fp32" or "bf16" (autocast; the recurrence stays fp32)
    compile: bool = False  # torch.compile the forward pass
    save_dtype: str = "fp32"
    save_every: int | None = None
    resume: bool = False
    threads: int | None = None
    progress: bool = True


# ---------------------------------------------------------------------------------------------
# helpers

def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _plain_args(cfg: TrainSettings) -> dict:
    """The run's settings as JSON-able values."""
    return {k: [str(x) for x in v] if isinstance(v, (list, tuple)) else v for k, v in asdict(cfg).items()}


def _atomic_json(obj, path: Path) -> None:
    D.atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def lr_at(cfg: TrainSettings, step: int, progress: float) -> float:
    """Linear warmup over --warmup steps, then cosine or linear decay to lr_final over the run's
    progress (0..1: the larger of steps done / max_steps and time used / max_minutes)."""
    lr_final = cfg.lr / 10 if cfg.lr_final is None else cfg.lr_final
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "cosine":
        lr = lr_final + (cfg.lr - lr_final) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        lr = cfg.lr + (lr_final - cfg.lr) * p
    if cfg.warmup > 0 and step < cfg.warmup:
        lr *= (step + 1) / cfg.warmup
    return lr


def _progress(cfg: TrainSettings, step: int, elapsed: float) -> float:
    p = 0.0
    if cfg.max_steps:
        p = max(p, step / cfg.max_steps)
    if cfg.max_minutes:
        p = max(p, elapsed / (cfg.max_minutes * 60))
    return p


class RateWindow:
    """When the progress display is due (every `seconds`, and on the first step), and the tokens/s
    since it was last shown. Its window is its own: the history's 10-step window must not reset it,
    or steps faster than seconds/10 would never be shown."""

    def __init__(self, seconds: float):
        self.seconds, self.t, self.tokens = seconds, 0.0, 0

    def start(self, now: float, tokens: int) -> None:
        self.t, self.tokens = now, tokens

    def due(self, now: float, tokens: int, first: bool = False) -> float | None:
        """tokens/s over the window if the display is due now (the window restarts), else None."""
        if not first and now - self.t < self.seconds:
            return None
        rate = (tokens - self.tokens) / max(now - self.t, 1e-9)
        self.start(now, tokens)
        return rate


def _param_groups(net, weight_decay: float):
    """Weight decay on the big matrices only (projections, embedding, head), as RWKV does;
    none on mixing vectors, LoRA factors, norms."""
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and name.endswith(".weight") and "ln" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class _Dist:
    """The process group when launched by torchrun with WORLD_SIZE > 1."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = torch.device(device)
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise AIWriterError("这台机器没有可用的 CUDA GPU，请用 --device cpu", "no CUDA GPU available here; use --device cpu")
            if self.world > 1:
                self.device = torch.device("cuda", self.local)
                torch.cuda.set_device(self.device)
        elif self.device.type != "cpu":
            raise AIWriterError(f"不支持的设备：{device}（可用 cpu 或 cuda）", f"unsupported device: {device} (use cpu or cuda)")
        if self.world > 1:
            import torch.distributed as dist

            self.dist = dist
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0

    def broadcast_object(self, obj):
        if self.world == 1:
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_float(self, x: float) -> float:
        if self.world == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        self.dist.broadcast(t, src=0)
        return float(t[0])

    def average_grads(self, params) -> None:
        """Mean of the gradients over ranks, in one flat all-reduce."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        flat /= self.world
        o = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[o:o + n].view_as(p).clone()
            o += n

    def barrier(self):
        if self.world > 1:
            self.dist.barrier()

    def close(self):
        if self.world > 1 and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _check_args(cfg: TrainSettings, ddp: _Dist) -> None:
    def bad(zh, en):
        raise AIWriterError(zh, en)

    if not 1 <= cfg.wkv_chunk <= 64:
        bad("--wkv-chunk 必须在 1 到 64 之间", "--wkv-chunk must be between 1 and 64")
    for name in ("layers", "embd", "head_size", "ctx_len", "batch_size", "eval_every", "eval_chars"):
        if getattr(cfg, name) < 1:
            bad(f"--{name.replace('_', '-')} 必须是正整数", f"--{name.replace('_', '-')} must be a positive integer")
    if cfg.embd % cfg.head_size:
        bad("--embd 必须是 --head-size 的整数倍", "--embd must be a multiple of --head-size")
    if cfg.batch_size % ddp.world:
        bad(f"--batch-size（{cfg.batch_size}）必须能被进程数 {ddp.world} 整除",
            f"--batch-size ({cfg.batch_size}) must be divisible by the number of processes ({ddp.world})")
    if not cfg.max_steps and not cfg.max_minutes:
        bad("请给出 --max-steps 或 --max-minutes", "give --max-steps or --max-minutes")
    if cfg.lr <= 0:
        bad("--lr 必须大于 0", "--lr must be positive")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        bad(f"输出路径已存在且不是文件夹：{out}", f"output path exists and is not a folder: {out}")


def _autocast(cfg: TrainSettings, device: torch.device):
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


# ---------------------------------------------------------------------------------------------
# the run

def _prepare_data(cfg: TrainSettings, ddp: _Dist, init_tokenizer):
    """Rank 0 reads, builds the vocab and packs; every rank gets (packed path, tokenizer)."""
    from aiwriter.tokenizer import CharTokenizer, load_tokenizer

    msg = None
    if ddp.main:
        try:
            if cfg.eval_file and Path(cfg.eval_file).resolve() in {f.resolve() for f in D.collect_files(cfg.data)}:
                print(f"警告：评测文件 {cfg.eval_file} 也在训练数据里，评测结果会偏低 / warning: the eval file "
                      f"{cfg.eval_file} is also in the training data, so its figure will be too low", file=sys.stderr)
            texts = [t for _, t in D.load_texts(cfg.data)]
            if cfg.vocab:
                tok = load_tokenizer(cfg.vocab)
            elif init_tokenizer is not None:
                tok = init_tokenizer
            else:
                tok = D.build_vocab(texts, coverage=cfg.vocab_coverage, min_count=cfg.min_count)
            out = Path(cfg.out)
            out.mkdir(parents=True, exist_ok=True)
            path = D.pack(texts, tok, out, progress=cfg.progress)
            n_chars = sum(len(t) for t in texts)
            msg = ("ok", str(path), tok.to_json() if isinstance(tok, CharTokenizer) else None, n_chars)
        except AIWriterError as e:
            msg = ("error", e.zh, e.en, 0)
    msg = ddp.broadcast_object(msg)
    if msg[0] == "error":
        raise AIWriterError(msg[1], msg[2])
    _, path, vocab_json, n_chars = msg
    if not ddp.main:
        tok = init_tokenizer if init_tokenizer is not None and not cfg.vocab else CharTokenizer(
            {int(k): v for k, v in json.loads(vocab_json).items()})
    return Path(path), tok, n_chars


def _build_net(cfg: TrainSettings, vocab_size: int, device):
    from aiwriter.models.rwkv7 import RWKV7

    if cfg.init:
        from aiwriter.engine import load_model

        m = load_model(cfg.init, device="cpu", dtype=torch.float32)
        if m.family != "rwkv7":
            raise AIWriterError(f"--init 只支持 RWKV-7 模型，这是 {m.family}", f"--init supports RWKV-7 models only; this is {m.family}")
        net, tok = m.net, m.tokenizer
    else:
        w = RWKV7.init_weights(vocab_size, cfg.layers, cfg.embd, head_size=cfg.head_size, seed=cfg.seed)
        net, tok = RWKV7.from_weights(w), None
    net = net.to(device=device, dtype=torch.float32).train()
    net.chunk_len = cfg.wkv_chunk
    for p in net.parameters():
        p.requires_grad_(True)
    return net, tok


@torch.no_grad()
def remap_vocab(net, old, new) -> int:
    """Give `net` (trained with char vocab `old`) the rows of char vocab `new`: a char both hold
    keeps its embedding and head rows; a new char starts from the mean of the old rows, so its
    logit starts average rather than random. Returns how many chars are new."""
    import torch.nn as nn

    emb, head = net.emb.weight, net.head.weight
    rows = [old.stoi.get(new.itos.get(i)) for i in range(new.vocab_size)]
    fresh = [i for i, r in enumerate(rows) if r is None]
    index = torch.tensor([0 if r is None else r for r in rows])
    e, h = emb[index].clone(), head[index].clone()
    if fresh:
        e[fresh], h[fresh] = emb.mean(0), head.mean(0)
    net.emb = nn.Embedding(new.vocab_size, e.shape[1], _weight=e)
    net.head = nn.Linear(h.shape[1], new.vocab_size, bias=False, device=h.device, dtype=h.dtype)
    net.head.weight.copy_(h)
    net.vocab_size = new.vocab_size
    return len(fresh)


def _model_facts(net) -> dict:
    sd = net.state_dict()
    v, c = sd["emb.weight"].shape
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    heads, head_size = sd["blocks.0.att.r_k"].shape
    return {"family": "rwkv7", "vocab_size": int(v), "n_embd": int(c), "n_layer": layers,
            "head_size": int(head_size), "n_head": int(heads), "params": int(sum(t.numel() for t in sd.values()))}


def save_model(net, out: Path, tokenizer, dtype: str = "fp32") -> Path:
    """model.pth (plain state dict, official RWKV-7 keys) + vocab.json beside it."""
    dt = torch.bfloat16 if dtype == "bf16" else torch.float32
    sd = {k: v.detach().to("cpu", dt).contiguous() for k, v in net.state_dict().items()}
    path = out / "model.pth"
    _atomic_torch_save(sd, path)
    if hasattr(tokenizer, "to_json"):
        D.write_vocab(tokenizer, out / "vocab.json")
    return path


def train(cfg: TrainSettings) -> int:
    """Run (or resume) one training run; returns 0. Bad input raises AIWriterError."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ddp = _Dist(cfg.device)
    try:
        return _train(cfg, ddp)
    finally:
        ddp.close()


@dataclass
class _Run:
    """What a run holds from its setup to its end: the model and optimizer, the data, and the
    counters a checkpoint saves (step, tokens, elapsed, history)."""
    cfg: TrainSettings
    ddp: _Dist
    out: Path
    net: torch.nn.Module
    forward: object          # `net`, or its torch.compile; same parameters (eval and saving use `net`)
    params: list
    opt: torch.optim.Optimizer
    tok: object
    packed: Path
    data: object             # the packed token ids
    n_chars: int
    facts: dict
    amp: object              # () -> the autocast context of one forward
    eval_ids: object = None
    eval_chars: int | None = None
    bar: object = None       # the progress bar, once the loop starts
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0     # seconds of training, over all resumed parts
    history: dict | None = None

    @property
    def device(self) -> torch.device:
        return self.ddp.device


def _read_checkpoint(cfg: TrainSettings) -> dict | None:
    """--resume: the checkpoint in --out (refused clearly if missing or unreadable); else None."""
    if not cfg.resume:
        return None
    ckpt_path = Path(cfg.out) / CKPT
    if not ckpt_path.is_file():
        raise AIWriterError(f"没有可接续的检查点：{ckpt_path}", f"no checkpoint to resume from: {ckpt_path}")
    try:
        return torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a checkpoint we cannot read is a user-facing problem
        raise AIWriterError(f"检查点已损坏：{ckpt_path}", f"checkpoint is corrupt: {ckpt_path} ({type(e).__name__})")


def _setup(cfg: TrainSettings, ddp: _Dist) -> _Run:
    """The model (new, or --init with its vocab, remapped onto --vocab), the packed data, the
    optimizer, the held-out text; and, with --resume, where the checkpoint left off."""
    from aiwriter.training.evaluate import prepare_text

    _check_args(cfg, ddp)
    ckpt = _read_checkpoint(cfg)
    device = ddp.device
    torch.manual_seed(cfg.seed)
    # --init: the model brings its tokenizer; load it before packing so the data uses that vocab
    net, init_tok = _build_net(cfg, 0, device) if cfg.init else (None, None)
    packed, tok, n_chars = _prepare_data(cfg, ddp, init_tok)
    if net is None:
        net, _ = _build_net(cfg, tok.vocab_size, device)
    elif cfg.vocab:
        if not hasattr(init_tok, "stoi") or not hasattr(tok, "itos"):
            raise AIWriterError("--init 加 --vocab 只支持字级词表", "--init with --vocab needs char vocabs on both sides")
        n_new = remap_vocab(net, init_tok, tok)
        if ddp.main:
            print(f"词表 / vocab: {init_tok.vocab_size} -> {tok.vocab_size} ({n_new} new chars)", file=sys.stderr)
    data = D.open_packed(packed)
    facts = _model_facts(net)
    if tok.vocab_size > facts["vocab_size"]:
        raise AIWriterError("词表比模型的输出多", "the vocab has more entries than the model has outputs")

    opt = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.99), eps=1e-8,
                            fused=False)
    run = _Run(cfg=cfg, ddp=ddp, out=Path(cfg.out), net=net, forward=torch.compile(net) if cfg.compile else net,
               params=[p for p in net.parameters() if p.requires_grad], opt=opt, tok=tok, packed=packed, data=data,
               n_chars=n_chars, facts=facts, amp=_autocast(cfg, device), history={"train": [], "eval": []})
    if ckpt is not None:
        _restore(run, ckpt)
    if cfg.eval_file and ddp.main:
        run.eval_ids, run.eval_chars = prepare_text(D.read_text(Path(cfg.eval_file)), tok, cfg.eval_chars)
    return run


def _restore(run: _Run, ckpt: dict) -> None:
    """Take up a run where its checkpoint left it: weights, optimizer, counters, history, RNG."""
    if ckpt.get("data_key") != run.packed.stem:
        raise AIWriterError("检查点与这次的训练数据或词表不同，无法接续", "the checkpoint was trained on other data or another vocab: cannot resume")
    try:
        run.net.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise AIWriterError("检查点与这次的模型设置不符，无法接续", f"the checkpoint does not fit this model's settings: cannot resume ({str(e)[:200]})")
    run.step, run.tokens, run.elapsed = ckpt["step"], ckpt["tokens"], ckpt["elapsed"]
    run.history = json.loads(ckpt["history"])
    torch.set_rng_state(ckpt["rng"])


def _train_step(run: _Run, lr: float) -> float:
    """One optimizer step at learning rate `lr` on this step's windows (drawn from seed and step
    alone; this rank takes its slice); returns this rank's loss."""
    cfg, ddp, device = run.cfg, run.ddp, run.device
    for group in run.opt.param_groups:
        group["lr"] = lr
    local_b = cfg.batch_size // ddp.world
    offs = D.batch_offsets(len(run.data), cfg.ctx_len, cfg.batch_size, cfg.seed, run.step)
    x, y = D.get_batch(run.data, offs[ddp.rank * local_b:(ddp.rank + 1) * local_b], cfg.ctx_len)
    x = torch.from_numpy(x).to(device)
    y = torch.from_numpy(y).to(device)
    with run.amp():
        logits, _ = run.forward(x, run.net.new_state(local_b), all_logits=True)
    loss = F.cross_entropy(logits.float().reshape(-1, run.facts["vocab_size"]), y.reshape(-1))
    if not torch.isfinite(loss):
        raise AIWriterError(f"第 {run.step} 步损失变成了 {float(loss)}：请降低 --lr", f"loss became {float(loss)} at step {run.step}: lower --lr")
    loss.backward()
    ddp.average_grads(run.params)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    run.step += 1
    run.tokens += cfg.batch_size * cfg.ctx_len
    return float(loss.detach())  # this rank's loss; the logged figure is rank 0's share of the batch


def _evaluate(run: _Run) -> float | None:
    """Held-out nats per char of the model now (rank 0, with --eval-file); else None."""
    from aiwriter.training.evaluate import stream_nats

    if run.eval_ids is None:
        return None
    run.net.eval()
    nats = stream_nats(run.net, run.eval_ids, device=run.device, autocast=run.amp())
    run.net.train()
    return nats / run.eval_chars


def _log_eval(run: _Run) -> float | None:
    """Evaluate and add the figure to the history; returns it (None without --eval-file)."""
    ev = _evaluate(run)
    if ev is not None:
        run.history["eval"].append({"step": run.step, "tokens": run.tokens, "elapsed": round(run.elapsed, 1),
                                    "nats_per_char": ev})
    return ev


def _checkpoint(run: _Run, final: bool = False) -> None:
    """Rank 0 writes ckpt.pt (for --resume), history.json, loss.png, model.pth + vocab.json and
    train.json, each atomically."""
    from aiwriter.training.plot import plot_history

    if not run.ddp.main:
        return
    cfg, out, history = run.cfg, run.out, run.history
    _atomic_torch_save({
        "model": {k: v.detach().cpu() for k, v in run.net.state_dict().items()},
        "optimizer": run.opt.state_dict(), "step": run.step, "tokens": run.tokens, "elapsed": run.elapsed,
        "rng": torch.get_rng_state(), "data_key": run.packed.stem, "history": json.dumps(history),
        "args": json.dumps(_plain_args(cfg), ensure_ascii=False),
    }, out / CKPT)
    _atomic_json(history, out / "history.json")
    try:
        plot_history(history, out / "loss.png")
    except Exception as e:  # a plotting failure must never stop training
        run.bar.write(f"loss.png not written: {e}", file=sys.stderr)
    save_model(run.net, out, run.tok, cfg.save_dtype)
    _atomic_json({
        "model": run.facts, "data": [str(p) for p in cfg.data], "data_chars": run.n_chars,
        "data_tokens": int(len(run.data)), "vocab_size": run.tok.vocab_size, "steps": run.step,
        "tokens_seen": run.tokens, "wall_seconds": round(run.elapsed, 1), "world_size": run.ddp.world,
        "device": str(run.device), "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "final": final,
        "last_train_loss": history["train"][-1]["loss"] if history["train"] else None,
        "last_eval": history["eval"][-1] if history["eval"] else None,
        "command": " ".join(sys.argv), "args": _plain_args(cfg),
    }, out / "train.json")


class _LossLog:
    """The running figures between two history entries: the loss EMA the bar shows, and the
    10-step window (tokens, time, mean loss) each history entry sums up."""

    def __init__(self, now: float):
        self.ema: float | None = None
        self.tokens, self.t, self.loss, self.n = 0, now, 0.0, 0

    def add(self, loss: float, tokens: int) -> None:
        self.ema = loss if self.ema is None else 0.98 * self.ema + 0.02 * loss
        self.tokens += tokens
        self.loss += loss
        self.n += 1

    def entry(self, run: _Run, lr: float, now: float) -> dict:
        """The history entry of the window ending now; the window restarts."""
        e = {"step": run.step, "tokens": run.tokens, "elapsed": round(run.elapsed, 1), "loss": self.loss / self.n,
             "lr": lr, "tok_per_s": round(self.tokens / max(now - self.t, 1e-9), 1)}
        self.tokens, self.t, self.loss, self.n = 0, now, 0.0, 0
        return e


def _done(run: _Run) -> bool:
    """Whether the run has reached --max-steps or --max-minutes."""
    cfg = run.cfg
    return bool((cfg.max_steps and run.step >= cfg.max_steps) or (cfg.max_minutes and run.elapsed >= cfg.max_minutes * 60))


def _finish(run: _Run) -> None:
    """Rank 0: a last evaluation (unless this step has one), the final checkpoint, the summary line."""
    if run.ddp.main:
        history = run.history
        if not history["eval"] or history["eval"][-1]["step"] != run.step:
            _log_eval(run)
        _checkpoint(run, final=True)
        last = history["eval"][-1]["nats_per_char"] if history["eval"] else None
        print(f"完成 / done: {run.step} steps, {run.tokens:,} tokens, {run.elapsed / 60:.1f} min"
              + (f", held-out {last:.4f} nats/char" if last is not None else "")
              + f" -> {run.out / 'model.pth'}", file=sys.stderr)
    run.ddp.barrier()


def _train(cfg: TrainSettings, ddp: _Dist) -> int:
    """The loop: set up, then step until --max-steps or --max-minutes, with the progress bar, the
    10-step history, evaluation every --eval-every and a checkpoint every --save-every steps."""
    from aiwriter.progress import progress as progress_bar

    run = _setup(cfg, ddp)
    facts = run.facts
    if ddp.main:
        print(f"模型 / model: RWKV-7 L{facts['n_layer']} C{facts['n_embd']} V{facts['vocab_size']}, "
              f"{facts['params'] / 1e6:.2f}M params; data {len(run.data):,} tokens; world {ddp.world}; "
              f"device {run.device}; threads {torch.get_num_threads()}", file=sys.stderr)
    save_every = cfg.save_every or cfg.eval_every
    use_time = not cfg.max_steps
    run.bar = bar = progress_bar(total=int(cfg.max_minutes * 60) if use_time else cfg.max_steps,
                                 initial=int(run.elapsed) if use_time else run.step, unit="s" if use_time else "step",
                                 disable=not cfg.progress or not ddp.main, file=sys.stderr, mininterval=2.0,
                                 dynamic_ncols=True)
    shown = RateWindow(DISPLAY_SECONDS)  # the bar's figures: its own window, apart from the history's
    elapsed0, t_start = run.elapsed, clock()
    log = _LossLog(clock())
    shown.start(clock(), run.tokens)
    while True:
        run.elapsed = ddp.broadcast_float(elapsed0 + clock() - t_start)
        if _done(run):
            break
        lr = lr_at(cfg, run.step, _progress(cfg, run.step, run.elapsed))
        log.add(_train_step(run, lr), cfg.batch_size * cfg.ctx_len)
        step = run.step
        now = clock()
        run.elapsed = elapsed0 + now - t_start
        if ddp.main:
            bar.update(max(0, int(run.elapsed) - bar.n) if use_time else 1)
            rate = shown.due(now, run.tokens, first=step == 1)
            if rate is not None:
                bar.set_postfix_str(f"step {step} loss {log.ema:.3f} lr {lr:.2e} {rate:.0f} tok/s")
        if step % 10 == 0 or step == 1:
            run.history["train"].append(log.entry(run, lr, now))
        if step % cfg.eval_every == 0 and ddp.main:
            ev = _log_eval(run)
            if ev is not None:
                bar.write(f"step {step} | tokens {run.tokens:,} | {run.elapsed / 60:.1f} min | loss {log.ema:.4f} | "
                          f"held-out {ev:.4f} nats/char", file=sys.stderr)
        if step % save_every == 0:
            _checkpoint(run)
    bar.close()
    _finish(run)
    return 0
