"""What the subcommands share: the bilingual parser, the model flags (one definition, one help
text), their checks, and how a model is loaded for a command. Importing this module must stay
cheap: no torch here (help and argument errors run without it); heavy imports go inside functions."""
from __future__ import annotations

import argparse
import sys

from aiwriter.errors import AIWriterError

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
MAX_THREADS = 1024
BACKENDS = ("torch", "onnx")


class Parser(argparse.ArgumentParser):
    """argparse with its errors in Chinese and English, exit status 2."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"错误：命令行参数有误（{message}）\nError: invalid arguments: {message}\n")


def bilingual(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The -h flag and the section titles in both languages (parsers are made with add_help=False)."""
    p.add_argument("-h", "--help", action="help", help="显示帮助后退出 / show this help and exit")
    p._positionals.title = "参数 / arguments"
    p._optionals.title = "选项 / options"
    return p


def print_error(zh: str, en: str) -> None:
    print(f"错误：{zh}\nError: {en}", file=sys.stderr)


# -- the model flags ---------------------------------------------------------------------------

def add_model_flags(p, *, backend: bool = False, threads: bool = True) -> None:
    """--model, --vocab, --device, --dtype, --threads (and --backend where the command can run an
    ONNX model). Every default is None: the command (or its settings file) decides."""
    p.add_argument("--model", "-m", help="模型文件，或 aiwriter models 列出的名称，或模型文件夹里的文件名（默认：内置模型）/ "
                                         "model file, or a name aiwriter models lists, or a file name in the models "
                                         "folder (default: the embedded model)")
    p.add_argument("--vocab", help="模型的词表文件（默认：模型旁的 同名.json 或 vocab.json）/ the model's vocab file "
                                   "(default: NAME.json or vocab.json beside the model)")
    p.add_argument("--device", help="cpu 或 cuda（默认 cpu）/ cpu or cuda (default: cpu)")
    p.add_argument("--dtype", help="fp32、fp16、bf16（GPU）；int4（CPU 最快）、int8、bf16（CPU 更快）/ "
                                   "fp32, fp16, bf16 (GPU); int4 (fastest on CPU), int8, bf16 (faster on CPU)")
    if backend:
        p.add_argument("--backend", choices=BACKENDS, default="torch",
                       help="推理后端：torch（默认）或 onnx（onnxruntime；模型可以是导出的 .onnx 或任何模型文件）/ "
                            "inference backend: torch (default) or onnx (onnxruntime; an exported .onnx or any model file)")
    if threads:
        p.add_argument("--threads", type=int, help="CPU 线程数（默认：小模型 1，大模型全部核心）/ CPU threads "
                                                    "(default: 1 for small models, all cores for big ones)")


def resolve_model(value: str | None) -> str | None:
    """--model as given: a path, a catalogue name (downloaded into the models folder) or a file
    name found there (aiwriter.hub.local.resolve_model)."""
    from aiwriter.hub.local import resolve_model as resolve
    from aiwriter.paths import models_dir

    return resolve(value, models_dir())


def check_threads(threads: int | None) -> None:
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise AIWriterError(f"--threads 应在 1 到 {MAX_THREADS} 之间", f"--threads must be between 1 and {MAX_THREADS}")


def check_backend(backend: str, dtype) -> None:
    if backend == "onnx" and dtype not in (None, "fp32", "float32"):
        raise AIWriterError("--backend onnx 用导出时的精度，不能再加 --dtype（要 4 位请用 --dtype int4，或 export-onnx --int4）",
                            "--backend onnx runs the precision it was exported with; drop --dtype (for 4-bit use "
                            "--dtype int4, or export-onnx --int4)")


def model_loader(backend: str = "torch"):
    """load(path, vocab=, device=, dtype=) -> engine.Model for the backend (the server's loader too)."""
    from aiwriter.engine import load_model

    if backend == "onnx":
        def load_onnx(path, vocab=None, device="cpu", dtype=None):
            check_backend(backend, dtype)
            return load_model(path, vocab=vocab, backend="onnx")

        return load_onnx
    return load_model


def check_vocab(model) -> None:
    """A model whose vocab cannot encode a newline fails now, with its own message, not mid-run."""
    model.tokenizer.encode("\n")
