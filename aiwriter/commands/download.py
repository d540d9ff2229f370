"""`aiwriter download NAME`: fetch a catalogue release into the models folder (aiwriter/hub)."""
from __future__ import annotations

import argparse
import sys

from aiwriter.commands.models import add_models_dir, models_folder
from aiwriter.errors import AIWriterError

NAME = "download"
HELP = "下载一个模型到模型文件夹 / download a model into the models folder"
DESCRIPTION = ("从 Hugging Face（或 HF_ENDPOINT 指定的镜像，如 https://hf-mirror.com）下载 aiwriter models 列出的模型："
               "可断点续传，下载后校验。/ download a model that aiwriter models lists from Hugging Face (or the mirror "
               "HF_ENDPOINT names, e.g. https://hf-mirror.com): resumable, verified after download.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="模型名称（见 aiwriter models）/ model name (see aiwriter models)")
    add_models_dir(p)
    p.add_argument("--verify", action="store_true",
                   help="已下载的文件也与 Hub 上的校验和核对一遍 / also check a file already here against the hub's checksum")


def unknown(name: str) -> AIWriterError:
    from aiwriter.hub.catalog import close_names

    hint = close_names(name)
    zh = f"没有名为 {name} 的模型。" + (f"你是不是要找：{'、'.join(hint)}？" if hint else "") + "aiwriter models 列出可下载的模型"
    en = f"no model named {name}. " + (f"Did you mean: {', '.join(hint)}? " if hint else "") + "aiwriter models lists them"
    return AIWriterError(zh, en)


def run(args) -> int:
    from aiwriter.hub.catalog import find
    from aiwriter.hub.download import download, endpoint

    release = find(args.name)
    if release is None:
        raise unknown(args.name)
    folder = models_folder(args)
    print(f"下载 {release.title}（{release.repo}）到 {folder}，来源 {endpoint()} / downloading {release.title} "
          f"({release.repo}) into {folder} from {endpoint()}", file=sys.stderr, flush=True)
    for got in download(release, folder, check_present=args.verify):
        if got.new:
            print(f"已下载并校验 / downloaded and verified: {got.path}")
        else:
            print(f"已在文件夹中 / already here: {got.path}")
    print(f"使用 / use: aiwriter write --model {release.name} …   aiwriter serve --model {release.name}")
    return 0
