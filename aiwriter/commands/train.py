"""`aiwriter train`: the flags of a training run (aiwriter/training/train.py does the work)."""
from __future__ import annotations

import argparse

from aiwriter.commands.common import check_threads

NAME = "train"
HELP = "训练或微调模型 / train or fine-tune a model"
DESCRIPTION = HELP


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


def settings(args):
    """The TrainSettings the parsed flags ask for."""
    from dataclasses import fields

    from aiwriter.training.train import TrainSettings

    values = {f.name: getattr(args, f.name) for f in fields(TrainSettings) if hasattr(args, f.name)}
    values["progress"] = not args.no_progress
    return TrainSettings(**values)


def run(args) -> int:
    check_threads(args.threads)
    from aiwriter.training.train import train

    return train(settings(args))
