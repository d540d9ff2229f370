"""`aiwriter export-onnx MODEL OUT`: one RNN step of a model as an ONNX graph (aiwriter/speed/onnx_export.py;
--int4: speed/int4.write_step), with its vocab beside it."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

NAME = "export-onnx"
HELP = "导出一步 RNN 的 ONNX 模型 / export one RNN step as an ONNX model"
DESCRIPTION = HELP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="模型文件 (.pth / .safetensors) / model file")
    p.add_argument("out", help="输出的 ONNX 文件 / the ONNX file to write")
    p.add_argument("--vocab", help="词表文件（会复制到输出文件旁）/ vocab file (copied beside the output)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--int8", action="store_true",
                      help="矩阵权重存为 int8（每个输出通道一个比例，onnxruntime 动态量化）/ "
                           "int8 matrix weights (per output channel, onnxruntime dynamic quantization)")
    kind.add_argument("--int4", action="store_true",
                      help="矩阵权重存为 4 位（每 128 个一个比例，MatMulNBits，与 --dtype int4 相同）/ "
                           "4-bit matrix weights (blocks of 128, MatMulNBits; as --dtype int4)")


def run(args) -> int:
    from aiwriter.engine import find_vocab, load_model
    from aiwriter.speed.onnx_export import export_onnx

    src, out = Path(args.model), Path(args.out)
    model = load_model(src, vocab=args.vocab)
    if args.int4:
        from aiwriter.speed.int4 import quantize_int4, write_step
        from aiwriter.speed.onnx_export import check_supported

        check_supported(model.net)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_step(quantize_int4(model.net), out)  # the tensors in OUT.data beside it
    else:
        export_onnx(model.net, out, int8=args.int8)
    vocab = Path(args.vocab) if args.vocab else find_vocab(src)
    if vocab is not None and vocab.is_file():
        shutil.copyfile(vocab, out.with_suffix(vocab.suffix if vocab.suffix else ".json"))
    kind = "int8" if args.int8 else "int4" if args.int4 else "fp32"
    print(f"已写出 {out}（{model.family}，{kind}，一步 RNN，状态 {len(model.new_state().data)} 项）/ wrote {out} "
          f"({model.family}, {kind}, one RNN step, {len(model.new_state().data)} state tensors)")
    return 0
