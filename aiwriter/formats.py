"""Model files -> tensors, without ever running pickle code from the file.

Plain state dicts (.pth) load with torch.load(weights_only=True); .safetensors with safetensors;
the 2021-22 AI-Writer F1 files (a pickled nn.Module) go through the restricted unpickler in
safe_pickle.py. The family is told apart by keys (see docs/FORMATS.md).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from aiwriter.errors import AIWriterError


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise AIWriterError(f"找不到模型文件：{path}", f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise AIWriterError(f"模型文件是空的：{path}", f"model file is empty: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # Not a plain state dict: an F1 whole-module pickle, or something we must not run.
        from aiwriter.safe_pickle import load_module_weights

        return load_module_weights(path)
    except Exception as e:  # garbage makes torch's unpickler fail in many ways (IndexError, KeyError, struct.error, …)
        raise AIWriterError(
            f"模型文件已损坏或不是 PyTorch 格式：{path}（{type(e).__name__}）",
            f"model file is corrupt or not a PyTorch checkpoint: {path} ({type(e).__name__}: {str(e)[:200]})",
        )
    return _as_state_dict(obj, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise AIWriterError(
            f"safetensors 文件已损坏：{path}", f"corrupt safetensors file: {path} ({str(e)[:200]})"
        )


def _as_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    # Training checkpoints sometimes wrap the weights.
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise AIWriterError(
            f"模型文件里没有权重表：{path}（找到 {type(obj).__name__}）",
            f"no weights found in {path} (found a {type(obj).__name__})",
        )
    weights = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not weights:
        raise AIWriterError(
            f"模型文件里没有张量：{path}", f"no tensors found in {path}: keys {describe_keys(obj)}"
        )
    return weights


def describe_keys(keys, limit: int = 12) -> str:
    keys = sorted(str(k) for k in keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys)} in all)" if len(keys) > limit else "")


def detect_family(weights: dict[str, torch.Tensor]) -> str:
    keys = set(weights)
    if "tok_emb.weight" in keys and "blocks.0.attn.time_w" in keys:
        return "aiwriter-v1"
    if "emb.weight" in keys and "copy_mask" in keys and "head_q.weight" in keys:
        return "aiwriter-v2"
    if "blocks.0.att.r_k" in keys:
        return "rwkv7"
    if "blocks.0.att.time_maa_x" in keys:
        return "rwkv6"
    if "blocks.0.att.time_faaaa" in keys and "blocks.0.att.time_mix_k" in keys:
        return "rwkv5"
    if "blocks.0.att.time_first" in keys and "blocks.0.att.time_mix_k" in keys and "blocks.0.ln0.weight" in keys:
        return "rwkv4"
    raise AIWriterError(
        "无法识别的模型格式（不是 AI-Writer 或 RWKV-4/5/6/7 模型）。文件中的键：" + describe_keys(keys),
        "unrecognized model format (not AI-Writer or RWKV-4/5/6/7). Keys found: " + describe_keys(keys),
    )
