"""`aiwriter models`: the releases known to work (aiwriter/hub), what each needs, which are here."""
from __future__ import annotations

import argparse
import json
import unicodedata
from pathlib import Path

NAME = "models"
HELP = "列出可下载的模型及已下载的模型 / list the models you can download and those already here"
DESCRIPTION = ("列出已知可用的 RWKV 模型（大小、各精度所需内存、语言、许可、来源）以及模型文件夹里已有的模型；"
               "用 aiwriter download 名称 下载 / list the RWKV releases known to work (size, memory per dtype, "
               "languages, licence, source) and the models already in the models folder; get one with aiwriter download NAME")
DTYPES = ("fp32", "bf16", "int8", "int4")


def add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models-dir", help="模型文件夹（默认：$AIWRITER_MODELS，或数据文件夹下的 models）/ the models "
                                        "folder (default: $AIWRITER_MODELS, else models in the data folder)")


def models_folder(args) -> Path:
    from aiwriter.paths import models_dir

    return Path(args.models_dir).expanduser() if getattr(args, "models_dir", None) else models_dir()


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_models_dir(p)
    p.add_argument("--json", action="store_true", help="输出 JSON / print JSON")


def width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(width(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c + " " * (w - width(c)) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def _params(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def rows(folder: Path) -> list[dict]:
    from aiwriter.hub import shapes
    from aiwriter.hub.catalog import RELEASES
    from aiwriter.hub.local import status

    out = []
    for r in RELEASES:
        need = shapes.memory_needed(r)
        here_zh, here_en = status(r, folder)
        out.append({"name": r.name, "title": r.title, "family": r.family, "parameters": shapes.parameters(r),
                    "file_size": r.size, "file_size_estimate": shapes.estimated_file_size(r),
                    "memory": {d: need[d] for d in DTYPES}, "languages": list(r.languages), "licence": r.licence,
                    "repo": r.repo, "filename": r.filename, "source": r.source, "note": list(r.note),
                    "present": (folder / r.filename).is_file(), "status": [here_zh, here_en],
                    "tokenizer": f"{r.tokenizer.repo}/{r.tokenizer.filename}" if r.tokenizer else None})
    return out


def run(args) -> int:
    from aiwriter.engine import available_memory
    from aiwriter.hub.download import endpoint
    from aiwriter.hub.local import other_files

    folder = models_folder(args)
    found, others, free = rows(folder), other_files(folder), available_memory()
    if args.json:
        print(json.dumps({"models_dir": str(folder), "endpoint": endpoint(), "available_memory": free,
                          "models": found, "other_files": others}, ensure_ascii=False, indent=1))
        return 0
    header = ["名称 / name", "模型 / model", "参数 / params", "文件 / file", "内存 GB fp32/bf16/int8/int4 / memory",
              "语言 / languages", "许可 / licence", "状态 / here"]
    body = []
    for m in found:
        size = _size(m["file_size"]) if m["file_size"] else "≈" + _size(m["file_size_estimate"])
        mem = "/".join(_gib(m["memory"][d]) for d in DTYPES)
        langs = ",".join(m["languages"])
        here = " / ".join(s for s in m["status"] if s) or "-"
        body.append([m["name"], m["title"], _params(m["parameters"]), size, mem, langs, m["licence"], here])
    print(table(header, body))
    print()
    if free is not None:
        print(f"本机可用内存 {free / 2**30:.1f} GB（各精度所需按 aiwriter 载入时的估算）/ available memory {free / 2**30:.1f} GB "
              f"(the memory column is aiwriter's own load-time estimate)")
    print(f"模型文件夹 / models folder: {folder}{'' if folder.is_dir() else '（还不存在 / not created yet）'}")
    print(f"下载源 / downloads from: {endpoint()}（可用环境变量 HF_ENDPOINT 换成镜像 / set HF_ENDPOINT for a mirror）")
    print("下载 / download: aiwriter download 名称/NAME   使用 / use: aiwriter write --model 名称/NAME …")
    print("\n来源 / sources:")
    for m in found:
        print(f"  {m['name']}: {m['source']}" + (f"  (+ {m['tokenizer']})" if m["tokenizer"] else ""))
    if others:
        print("\n文件夹里的其他模型文件 / other model files in the folder:")
        for name in others:
            print(f"  {name}")
    return 0
