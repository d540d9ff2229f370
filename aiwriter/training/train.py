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

import argparse
import json
import math
import os
import platform
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.training import data as D

CKPT = "ckpt.pt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("数据 / data")
    g.add_argument("--data", nargs="+", required=True,
                   help="训练用的 .txt 文件或文件夹（递归查找 *.txt） / .txt files or folders (searched recursively)")
    g.add_argument("--out", required=True, help="输出文件夹 / output folder")
    g.add_argument("--vocab", default=None, help="使用现成的词表（AI-Writer JSON） / use this vocab file (AI-Writer JSON)")
    g.add_argument("--vocab-coverage", type=float, default=0.9995,
                   help="新词表收录最常用的字，直到覆盖这个比例的文字 / new vocab: the most frequent chars covering this share of the text")
    g.add_argument("--min-count", type=int, default=None,
                   help="新词表只收出现至少 N 次的字（代替 --vocab-coverage） / new vocab: chars seen at least N times (instead of --vocab-coverage)")
    g.add_argument("--eval-file", default=None, help="留出评测文本（不参与训练） / held-out text to evaluate on (never trained on)")
    g.add_argument("--eval-chars", type=int, default=20000, help="评测其前 N 个字 / score its first N chars")
    g.add_argument("--eval-every", type=int, default=500, help="每 N 步评测一次 / evaluate every N steps")
    g = p.add_argument_group("模型 / model")
    g.add_argument("--init", default=None,
                   help="在已有的 RWKV-7 模型上继续训练（沿用其词表；同时给 --vocab 则按字换成新词表） / fine-tune this "
                        "RWKV-7 model (keeps its vocab; with --vocab its rows are carried over to the new vocab by char)")
    g.add_argument("--layers", type=int, default=6, help="层数 / number of layers")
    g.add_argument("--embd", type=int, default=256, help="每个字的向量宽度 / embedding width")
    g.add_argument("--head-size", type=int, default=64, help="注意力头宽度 / head size")
    g.add_argument("--wkv-chunk", type=int, default=32,
                   help="WKV 分块长度（1..64，影响速度，不影响结果） / WKV chunk length (1..64: speed, not results)")
    g = p.add_argument_group("训练 / training")
    g.add_argument("--ctx-len", type=int, default=256, help="训练窗口长度 / training window length")
    g.add_argument("--batch-size", type=int, default=16,
                   help="每步的窗口数（所有进程合计） / windows per step (global, over all processes)")
    g.add_argument("--lr", type=float, default=1e-3, help="最大学习率 / peak learning rate")
    g.add_argument("--lr-final", type=float, default=None, help="最终学习率（默认 lr/10） / final learning rate (default lr/10)")
    g.add_argument("--schedule", choices=["cosine", "linear"], default="cosine", help="学习率衰减方式 / learning-rate decay")
    g.add_argument("--warmup", type=int, default=100, help="预热步数 / warmup steps")
    g.add_argument("--max-steps", type=int, default=None, help="训练步数上限 / stop after N steps")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="训练时间上限（分钟，学习率按时间衰减） / stop after N minutes (the LR decays over this time)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="权重衰减（只用于矩阵） / weight decay (matrices only)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="梯度裁剪（0 关闭） / gradient-norm clip (0: off)")
    g.add_argument("--seed", type=int, default=0, help="随机种子 / random seed")
    g.add_argument("--device", default="cpu", help="cpu 或 cuda / cpu or cuda")
    g.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                   help="计算精度：bf16 为自动混合精度（auto：cuda 用 bf16，cpu 用 fp32） / compute: bf16 autocast (auto: bf16 on cuda, fp32 on cpu)")
    g.add_argument("--save-dtype", choices=["fp32", "bf16"], default="fp32", help="model.pth 的精度 / dtype of model.pth")
    g.add_argument("--save-every", type=int, default=None, help="每 N 步存一次检查点（默认同 --eval-every） / checkpoint every N steps (default: --eval-every)")
    g.add_argument("--resume", action="store_true", help="从 --out 里的 ckpt.pt 接着训练 / continue from ckpt.pt in --out")
    g.add_argument("--threads", type=int, default=None, help="CPU 线程数 / CPU threads")
    g.add_argument("--no-progress", action="store_true", help="不显示进度条 / no progress bar")


# ---------------------------------------------------------------------------------------------
# helpers

def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _plain_args(args) -> dict:
    """The run's settings as JSON-able values (the CLI adds its handler function to args)."""
    return {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}


def _atomic_json(obj, path: Path) -> None:
    D.atomic_write_bytes(path, (json.dumps(obj, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def lr_at(args, step: int, progress: float) -> float:
    """Linear warmup over --warmup steps, then cosine or linear decay to lr_final over the run's
    progress (0..1: the larger of steps done / max_steps and time used / max_minutes)."""
    lr_final = args.lr / 10 if args.lr_final is None else args.lr_final
    p = min(max(progress, 0.0), 1.0)
    if args.schedule == "cosine":
        lr = lr_final + (args.lr - lr_final) * 0.5 * (1 + math.cos(math.pi * p))
    else:
        lr = args.lr + (lr_final - args.lr) * p
    if args.warmup > 0 and step < args.warmup:
        lr *= (step + 1) / args.warmup
    return lr


def _progress(args, step: int, elapsed: float) -> float:
    p = 0.0
    if args.max_steps:
        p = max(p, step / args.max_steps)
    if args.max_minutes:
        p = max(p, elapsed / (args.max_minutes * 60))
    return p


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


def _check_args(args, ddp: _Dist) -> None:
    def bad(zh, en):
        raise AIWriterError(zh, en)

    if not 1 <= args.wkv_chunk <= 64:
        bad("--wkv-chunk 必须在 1 到 64 之间", "--wkv-chunk must be between 1 and 64")
    for name in ("layers", "embd", "head_size", "ctx_len", "batch_size", "eval_every", "eval_chars"):
        if getattr(args, name) < 1:
            bad(f"--{name.replace('_', '-')} 必须是正整数", f"--{name.replace('_', '-')} must be a positive integer")
    if args.embd % args.head_size:
        bad("--embd 必须是 --head-size 的整数倍", "--embd must be a multiple of --head-size")
    if args.batch_size % ddp.world:
        bad(f"--batch-size（{args.batch_size}）必须能被进程数 {ddp.world} 整除",
            f"--batch-size ({args.batch_size}) must be divisible by the number of processes ({ddp.world})")
    if not args.max_steps and not args.max_minutes:
        bad("请给出 --max-steps 或 --max-minutes", "give --max-steps or --max-minutes")
    if args.lr <= 0:
        bad("--lr 必须大于 0", "--lr must be positive")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        bad(f"输出路径已存在且不是文件夹：{out}", f"output path exists and is not a folder: {out}")


def _autocast(args, device: torch.device):
    dtype = args.dtype
    if dtype == "auto":
        dtype = "bf16" if device.type == "cuda" else "fp32"
    if dtype == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


# ---------------------------------------------------------------------------------------------
# the run

def _prepare_data(args, ddp: _Dist, init_tokenizer):
    """Rank 0 reads, builds the vocab and packs; every rank gets (packed path, tokenizer)."""
    from aiwriter.tokenizer import CharTokenizer, load_tokenizer

    msg = None
    if ddp.main:
        try:
            if args.eval_file and Path(args.eval_file).resolve() in {f.resolve() for f in D.collect_files(args.data)}:
                print(f"警告：评测文件 {args.eval_file} 也在训练数据里，评测结果会偏低 / warning: the eval file "
                      f"{args.eval_file} is also in the training data, so its figure will be too low", file=sys.stderr)
            texts = [t for _, t in D.load_texts(args.data)]
            if args.vocab:
                tok = load_tokenizer(args.vocab)
            elif init_tokenizer is not None:
                tok = init_tokenizer
            else:
                tok = D.build_vocab(texts, coverage=args.vocab_coverage, min_count=args.min_count)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            path = D.pack(texts, tok, out, progress=not args.no_progress)
            n_chars = sum(len(t) for t in texts)
            msg = ("ok", str(path), tok.to_json() if isinstance(tok, CharTokenizer) else None, n_chars)
        except AIWriterError as e:
            msg = ("error", e.zh, e.en, 0)
    msg = ddp.broadcast_object(msg)
    if msg[0] == "error":
        raise AIWriterError(msg[1], msg[2])
    _, path, vocab_json, n_chars = msg
    if not ddp.main:
        tok = init_tokenizer if init_tokenizer is not None and not args.vocab else CharTokenizer(
            {int(k): v for k, v in json.loads(vocab_json).items()})
    return Path(path), tok, n_chars


def _build_net(args, vocab_size: int, device):
    from aiwriter.models.rwkv7 import RWKV7

    if args.init:
        from aiwriter.engine import load_model

        m = load_model(args.init, device="cpu", dtype=torch.float32)
        if m.family != "rwkv7":
            raise AIWriterError(f"--init 只支持 RWKV-7 模型，这是 {m.family}", f"--init supports RWKV-7 models only; this is {m.family}")
        net, tok = m.net, m.tokenizer
    else:
        w = RWKV7.init_weights(vocab_size, args.layers, args.embd, head_size=args.head_size, seed=args.seed)
        net, tok = RWKV7.from_weights(w), None
    net = net.to(device=device, dtype=torch.float32).train()
    net.chunk_len = args.wkv_chunk
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


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    ddp = _Dist(args.device)
    try:
        return _train(args, ddp)
    finally:
        ddp.close()


def _train(args, ddp: _Dist) -> int:
    from tqdm import tqdm

    from aiwriter.training.evaluate import prepare_text, stream_nats
    from aiwriter.training.plot import plot_history

    _check_args(args, ddp)
    out = Path(args.out)
    device = ddp.device
    ckpt_path = out / CKPT
    ckpt = None
    if args.resume:
        if not ckpt_path.is_file():
            raise AIWriterError(f"没有可接续的检查点：{ckpt_path}", f"no checkpoint to resume from: {ckpt_path}")
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # a checkpoint we cannot read is a user-facing problem
            raise AIWriterError(f"检查点已损坏：{ckpt_path}", f"checkpoint is corrupt: {ckpt_path} ({type(e).__name__})")

    torch.manual_seed(args.seed)
    # --init: the model brings its tokenizer; load it before packing so the data uses that vocab
    net, init_tok = _build_net(args, 0, device) if args.init else (None, None)
    packed, tok, n_chars = _prepare_data(args, ddp, init_tok)
    if net is None:
        net, _ = _build_net(args, tok.vocab_size, device)
    elif args.vocab:
        if not hasattr(init_tok, "stoi") or not hasattr(tok, "itos"):
            raise AIWriterError("--init 加 --vocab 只支持字级词表", "--init with --vocab needs char vocabs on both sides")
        n_new = remap_vocab(net, init_tok, tok)
        if ddp.main:
            print(f"词表 / vocab: {init_tok.vocab_size} -> {tok.vocab_size} ({n_new} new chars)", file=sys.stderr)
    data = D.open_packed(packed)
    facts = _model_facts(net)
    if tok.vocab_size > facts["vocab_size"]:
        raise AIWriterError("词表比模型的输出多", "the vocab has more entries than the model has outputs")

    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(_param_groups(net, args.weight_decay), lr=args.lr, betas=(0.9, 0.99), eps=1e-8,
                            fused=False)
    step, tokens, elapsed0 = 0, 0, 0.0
    history = {"train": [], "eval": []}
    if ckpt is not None:
        if ckpt.get("data_key") != packed.stem:
            raise AIWriterError("检查点与这次的训练数据或词表不同，无法接续", "the checkpoint was trained on other data or another vocab: cannot resume")
        try:
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise AIWriterError("检查点与这次的模型设置不符，无法接续", f"the checkpoint does not fit this model's settings: cannot resume ({str(e)[:200]})")
        step, tokens, elapsed0 = ckpt["step"], ckpt["tokens"], ckpt["elapsed"]
        history = json.loads(ckpt["history"])
        torch.set_rng_state(ckpt["rng"])

    eval_ids = eval_chars = None
    if args.eval_file and ddp.main:
        eval_ids, eval_chars = prepare_text(D.read_text(Path(args.eval_file)), tok, args.eval_chars)
    amp = _autocast(args, device)
    local_b = args.batch_size // ddp.world
    save_every = args.save_every or args.eval_every
    V = facts["vocab_size"]

    def evaluate() -> float | None:
        if eval_ids is None:
            return None
        net.eval()
        nats = stream_nats(net, eval_ids, device=device, autocast=amp())
        net.train()
        return nats / eval_chars

    def checkpoint(final: bool = False) -> None:
        if not ddp.main:
            return
        _atomic_torch_save({
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(), "step": step, "tokens": tokens, "elapsed": elapsed,
            "rng": torch.get_rng_state(), "data_key": packed.stem, "history": json.dumps(history),
            "args": json.dumps(_plain_args(args), ensure_ascii=False),
        }, ckpt_path)
        _atomic_json(history, out / "history.json")
        try:
            plot_history(history, out / "loss.png")
        except Exception as e:  # a plotting failure must never stop training
            tqdm.write(f"loss.png not written: {e}", file=sys.stderr)
        save_model(net, out, tok, args.save_dtype)
        _atomic_json({
            "model": facts, "data": [str(p) for p in args.data], "data_chars": n_chars,
            "data_tokens": int(len(data)), "vocab_size": tok.vocab_size, "steps": step,
            "tokens_seen": tokens, "wall_seconds": round(elapsed, 1), "world_size": ddp.world,
            "device": str(device), "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(), "final": final,
            "last_train_loss": history["train"][-1]["loss"] if history["train"] else None,
            "last_eval": history["eval"][-1] if history["eval"] else None,
            "command": " ".join(sys.argv), "args": _plain_args(args),
        }, out / "train.json")

    if ddp.main:
        print(f"模型 / model: RWKV-7 L{facts['n_layer']} C{facts['n_embd']} V{V}, {facts['params'] / 1e6:.2f}M params; "
              f"data {len(data):,} tokens; world {ddp.world}; device {device}; threads {torch.get_num_threads()}",
              file=sys.stderr)
    use_time = not args.max_steps
    bar = tqdm(total=int(args.max_minutes * 60) if use_time else args.max_steps,
               initial=int(elapsed0) if use_time else step, unit="s" if use_time else "step",
               disable=args.no_progress or not ddp.main, file=sys.stderr, mininterval=2.0, dynamic_ncols=True)
    t_start = time.time()
    elapsed = elapsed0
    ema, win_tokens, win_t, win_loss, win_n = None, 0, time.time(), 0.0, 0
    while True:
        elapsed = ddp.broadcast_float(elapsed0 + time.time() - t_start)
        if (args.max_steps and step >= args.max_steps) or (args.max_minutes and elapsed >= args.max_minutes * 60):
            break
        lr = lr_at(args, step, _progress(args, step, elapsed))
        for group in opt.param_groups:
            group["lr"] = lr
        offs = D.batch_offsets(len(data), args.ctx_len, args.batch_size, args.seed, step)
        x, y = D.get_batch(data, offs[ddp.rank * local_b:(ddp.rank + 1) * local_b], args.ctx_len)
        x = torch.from_numpy(x).to(device)
        y = torch.from_numpy(y).to(device)
        with amp():
            logits, _ = net(x, net.new_state(local_b), all_logits=True)
        loss = F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))
        if not torch.isfinite(loss):
            raise AIWriterError(f"第 {step} 步损失变成了 {float(loss)}：请降低 --lr", f"loss became {float(loss)} at step {step}: lower --lr")
        loss.backward()
        ddp.average_grads(params)
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        tokens += args.batch_size * args.ctx_len
        lv = float(loss.detach())  # this rank's loss; the logged figure is rank 0's share of the batch
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        win_tokens += args.batch_size * args.ctx_len
        win_loss += lv
        win_n += 1
        now = time.time()
        elapsed = elapsed0 + now - t_start
        if ddp.main:
            if use_time:
                bar.update(max(0, int(elapsed) - bar.n))
            else:
                bar.update(1)
            if now - win_t >= 2.0 or step == 1:
                bar.set_postfix_str(f"step {step} loss {ema:.3f} lr {lr:.2e} {win_tokens / (now - win_t):.0f} tok/s")
        if step % 10 == 0 or step == 1:
            history["train"].append({"step": step, "tokens": tokens, "elapsed": round(elapsed, 1),
                                     "loss": win_loss / win_n, "lr": lr,
                                     "tok_per_s": round(win_tokens / max(now - win_t, 1e-9), 1)})
            win_tokens, win_t, win_loss, win_n = 0, now, 0.0, 0
        if step % args.eval_every == 0 and ddp.main:
            ev = evaluate()
            if ev is not None:
                history["eval"].append({"step": step, "tokens": tokens, "elapsed": round(elapsed, 1), "nats_per_char": ev})
                bar.write(f"step {step} | tokens {tokens:,} | {elapsed / 60:.1f} min | loss {ema:.4f} | "
                          f"held-out {ev:.4f} nats/char", file=sys.stderr)
        if step % save_every == 0:
            checkpoint()
    bar.close()
    if ddp.main:
        if not history["eval"] or history["eval"][-1]["step"] != step:
            ev = evaluate()
            if ev is not None:
                history["eval"].append({"step": step, "tokens": tokens, "elapsed": round(elapsed, 1), "nats_per_char": ev})
        checkpoint(final=True)
        last = history["eval"][-1]["nats_per_char"] if history["eval"] else None
        print(f"完成 / done: {step} steps, {tokens:,} tokens, {elapsed / 60:.1f} min"
              + (f", held-out {last:.4f} nats/char" if last is not None else "")
              + f" -> {out / 'model.pth'}", file=sys.stderr)
    ddp.barrier()
    return 0
