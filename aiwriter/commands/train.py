"""`aiwriter train`: the flags of a training run (aiwriter/training/train.py does the work)."""
from __future__ import annotations

import argparse

from aiwriter.commands.common import check_threads

NAME = "train"
HELP = "训练或微调模型 / train or fine-tune a model"
DESCRIPTION = HELP


class _Given(argparse.Action):
    """Stores the value and notes that the flag was given (--state-only has its own defaults)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are written here rather than read from TrainSettings: that module loads torch, and
    # `aiwriter train --help` must not. tests/test_commands.py checks that the two agree.
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
    g.add_argument("--batch-size", type=int, default=16, action=_Given,
                   help="每步的窗口数（所有进程合计；--state-only 默认 8） / windows per step (global, over all "
                        "processes; default 8 with --state-only)")
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
    g.add_argument("--save-dtype", choices=["fp32", "bf16"], default="fp32", help="model.pth 的精度 / dtype of model.pth")
    g.add_argument("--save-every", type=int, default=None, help="每 N 步存一次检查点（默认同 --eval-every） / checkpoint every N steps (default: --eval-every)")
    g.add_argument("--resume", action="store_true", help="从 --out 里的 ckpt.pt 接着训练 / continue from ckpt.pt in --out")
    g.add_argument("--no-progress", action="store_true", help="不显示进度 / no progress display")
    g = p.add_argument_group("速度 / speed")
    g.add_argument("--device", default="cpu", help="cpu 或 cuda（默认 cpu）/ cpu or cuda (default: cpu)")
    g.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                   help="计算精度：bf16 为自动混合精度，递推保持 fp32（auto：cuda 用 bf16，cpu 用 fp32） / compute: bf16 "
                        "autocast, the recurrence stays fp32 (auto: bf16 on cuda, fp32 on cpu)")
    g.add_argument("--compile", action="store_true", help="用 torch.compile 编译前向（需要 C 编译器） / torch.compile the "
                                                          "forward pass (needs a C compiler)")
    g.add_argument("--threads", type=int, default=None, help="CPU 线程数（默认：全部核心）/ CPU threads (default: all cores)")
    g = p.add_argument_group("只训练初始状态（文风）/ state tuning")
    g.add_argument("--state-only", action="store_true",
                   help="只训练 --init 模型的初始状态，写出 RWKV-Runner 能读的状态文件 --out（.pth 或 .safetensors）/ "
                        "train only the initial state of the --init model (RWKV-5/6/7) and write a state file --out "
                        "(.pth or .safetensors) that RWKV-Runner loads")
    g.add_argument("--state-lr", type=float, default=0.25,
                   help="--state-only 的最大学习率（默认 0.25，--lr-final 默认其 1/25）/ "
                        "peak learning rate with --state-only (default 0.25; --lr-final defaults to 1/25 of it)")
    g.add_argument("--state-average-from", type=float, default=1.0,
                   help="--state-only 从训练进度的这个比例起（如 0.5），对状态取平均作为结果（默认 1：不平均；实测没有帮助）/ with "
                        "--state-only, the result is the average of the states from this fraction of the run on, e.g. 0.5 "
                        "(default 1: off; it did not help when measured)")
    g.add_argument("--max-cpu-minutes", type=float, default=None,
                   help="--state-only 的 CPU 时间上限（分钟，所有线程合计；默认 10）/ CPU-time limit with --state-only, in minutes, "
                        "all threads (default 10)")


def settings(args):
    """The TrainSettings the parsed flags ask for."""
    from dataclasses import fields

    from aiwriter.training.train import TrainSettings

    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)}
    values.pop("state_only", None)
    values["progress"] = not args.no_progress
    return TrainSettings(**values)


def run(args) -> int:
    check_threads(args.threads)
    if getattr(args, "state_only", False):
        return run_state_only(args)
    from aiwriter.training.train import train

    return train(settings(args))


def run_state_only(args) -> int:
    """`aiwriter train --state-only --init MODEL --data DIR --out style.pth`."""
    import json
    import os
    import platform
    import sys
    from pathlib import Path

    import numpy as np
    import torch

    from aiwriter.engine import load_model
    from aiwriter.errors import AIWriterError
    from aiwriter.state_files import save_time_state
    from aiwriter.tokenizer import clean_context
    from aiwriter.training import data as D
    from aiwriter.training.state_tuning import StateTuning, split_heldout, tune_state

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.init:
        raise AIWriterError("--state-only 需要 --init 模型", "--state-only needs --init MODEL")
    out = Path(args.out)
    if out.suffix not in (".pth", ".safetensors"):
        raise AIWriterError("--state-only 的 --out 是一个状态文件：请用 .pth 或 .safetensors 结尾",
                            "with --state-only, --out is a state file: end it in .pth or .safetensors")
    model = load_model(args.init, vocab=args.vocab, device=args.device)
    texts = [D.read_text(f) for f in D.collect_files(args.data)]
    ids = [D.encode_fast(clean_context(t), model.tokenizer).astype(np.int64) for t in texts]
    train_ids, held = split_heldout(ids, 0.1)
    lr = args.state_lr
    batch_size = args.batch_size if getattr(args, "batch_size_given", False) else StateTuning.batch_size
    cfg = StateTuning(ctx_len=args.ctx_len, batch_size=batch_size, lr=lr,
                      lr_final=args.lr_final if args.lr_final is not None else lr / 25,
                      max_steps=args.max_steps, max_minutes=args.max_minutes,
                      max_cpu_minutes=args.max_cpu_minutes if args.max_cpu_minutes is not None
                      else (None if (args.max_steps or args.max_minutes) else 10.0),
                      eval_every=args.eval_every, eval_chars=args.eval_chars, seed=args.seed,
                      average_from=args.state_average_from if args.state_average_from < 1 else None,
                      progress=not args.no_progress)
    print(f"模型 / model {Path(args.init).name} ({model.family}); 训练 / train {len(train_ids):,} chars, "
          f"留出 / held-out {len(held):,} chars (last tenth of each file); threads {torch.get_num_threads()}",
          file=sys.stderr)
    res = tune_state(model.net, train_ids, held, cfg)
    save_time_state(out, res.time_state)
    report = {"init": str(args.init), "family": model.family, "data": [str(p) for p in args.data],
              "train_chars": int(len(train_ids)), "heldout_chars": res.heldout_chars, "ctx_len": cfg.ctx_len,
              "batch_size": cfg.batch_size, "lr": cfg.lr, "lr_final": cfg.lr_final, "average_from": cfg.average_from,
              "steps": res.steps,
              "cpu_seconds": round(res.cpu_seconds, 1), "wall_seconds": round(res.wall_seconds, 1),
              "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
              "heldout_nats_per_char_own_start": res.base_nats, "heldout_nats_per_char_tuned": res.tuned_nats,
              "history": res.history}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, out.with_suffix(".json"))
    print(f"已写出 {out} / wrote {out}: held-out {res.base_nats:.4f} -> {res.tuned_nats:.4f} nats/char "
          f"({res.tuned_nats - res.base_nats:+.4f}), {res.steps} steps, {res.cpu_seconds / 60:.1f} CPU min",
          file=sys.stderr)
    return 0
