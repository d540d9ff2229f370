"""`aiwriter export-onnx MODEL OUT`: one RNN step of a model as an ONNX graph (aiwriter/onnx_export.py)."""
from __future__ import annotations

import argparse

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
    from aiwriter.onnx_export import export_model_file

    model = export_model_file(args.model, args.out, vocab=args.vocab, int8=args.int8, int4=args.int4)
    kind = "int8" if args.int8 else "int4" if args.int4 else "fp32"
    n = len(model.new_state().data)
    print(f"已写出 {args.out}（{model.family}，{kind}，一步 RNN，状态 {n} 项）/ wrote {args.out} "
          f"({model.family}, {kind}, one RNN step, {n} state tensors)")
    return 0
