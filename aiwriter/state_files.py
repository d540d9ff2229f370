"""Initial-state files: the "state tuning" files RWKV-Runner and ChatRWKV users share.

A state file is a dict of `blocks.{i}.att.time_state` tensors, one per layer, each [heads,
head_size, head_size], saved with torch.save (.pth) or safetensors; the same keys may also sit
inside a model file. It replaces the zero matrix state a stream starts from (the token-shift
parts stay zero). Layout: RWKV-7 keeps its state as stored (rows: value index, columns: key
index); RWKV-5/6 keep the transpose (rows: key index), exactly as the `rwkv` package does when it
reads such keys.

Files are read through formats.read_weights: torch.load(weights_only=True) or safetensors, never
pickle code. Here a time state is a float32 tensor [layers, heads, N, N] in the stored layout.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch

from aiwriter.errors import AIWriterError
from aiwriter.formats import read_weights

TIME_STATE_KEY = re.compile(r"^blocks\.(\d+)\.att\.time_state$")
# family -> (state dict key of the matrix state, whether the stored layout is its transpose)
MATRIX_STATE = {"rwkv7": ("wkv", False), "rwkv5": ("att_kv", True), "rwkv6": ("att_kv", True)}


def split_time_state(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """(the other tensors, the time state [L, H, N, N] or None) of a state or model file's dict."""
    found = {int(m.group(1)): t for k, t in weights.items() if (m := TIME_STATE_KEY.match(k))}
    rest = {k: t for k, t in weights.items() if not TIME_STATE_KEY.match(k)}
    if not found:
        return rest, None
    layers = sorted(found)
    if layers != list(range(len(layers))):
        raise AIWriterError(f"状态文件的层不连续：{layers[:12]}", f"the state file's layers are not 0..L-1: {layers[:12]}")
    shapes = {tuple(found[i].shape) for i in layers}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise AIWriterError(f"状态文件的形状不对：{sorted(shapes)[:4]}，每层应为 [头数, 头大小, 头大小]",
                            f"the state file has shapes {sorted(shapes)[:4]}; each layer should be [heads, head size, head size]")
    if not all(found[i].is_floating_point() for i in layers):
        raise AIWriterError("状态文件里的张量不是浮点数", "the state file's tensors are not floating point")
    return rest, torch.stack([found[i].float() for i in layers])


def read_time_state(path: str | Path) -> torch.Tensor:
    """The time state [L, H, N, N] (float32, stored layout) of a state file or a model file holding one."""
    path = Path(path)
    _, ts = split_time_state(read_weights(path))
    if ts is None:
        raise AIWriterError(f"{path.name} 里没有状态（没有 blocks.N.att.time_state）",
                            f"{path.name} holds no state (no blocks.N.att.time_state keys)")
    return ts


def state_shape(net) -> tuple[int, int, int, int]:
    """[L, H, N, N] a time state for this model must have."""
    family = getattr(net, "family", "?")
    if family not in MATRIX_STATE:
        raise AIWriterError(f"{family} 模型不能用状态文件（只有 RWKV-5/6/7 可以）",
                            f"state files are for RWKV-5/6/7 models, not {family}")
    key, _ = MATRIX_STATE[family]
    _, L, H, N, _ = net.new_state(1)[key].shape
    return L, H, N, N


def check_fits(net, ts: torch.Tensor, name: str = "") -> None:
    """Refuse a time state made for another model, naming both shapes."""
    want = state_shape(net)
    if tuple(ts.shape) != want:
        got = f"{ts.shape[0]} 层 × {list(ts.shape[1:])}"
        need = f"{want[0]} 层 × {list(want[1:])}"
        raise AIWriterError(
            f"状态文件{name and ' ' + name}是给另一个模型的：它是 {got}，这个模型需要 {need}",
            f"the state file{name and ' ' + name} is for another model: it is {ts.shape[0]} layers x {list(ts.shape[1:])}, "
            f"this model needs {want[0]} layers x {list(want[1:])}")


def state_dict_from_time_state(net, ts: torch.Tensor, batch: int = 1) -> dict[str, torch.Tensor]:
    """The model's start state (a family state dict, batch B) with `ts` as its matrix state.
    Differentiable in ts (state tuning trains through it)."""
    check_fits(net, ts)
    key, transpose = MATRIX_STATE[net.family]
    data = net.new_state(batch)
    m = ts.to(device=data[key].device, dtype=torch.float32)
    if transpose:
        m = m.transpose(-1, -2)
    data[key] = m.unsqueeze(0).expand(batch, *m.shape).contiguous() if batch > 1 else m.unsqueeze(0)
    return data


def time_state_of(net, data: dict[str, torch.Tensor]) -> torch.Tensor:
    """The matrix state of stream 0 of a family state dict, in the stored layout [L, H, N, N]."""
    key, transpose = MATRIX_STATE[net.family]
    m = data[key][0].float()
    return m.transpose(-1, -2) if transpose else m


def time_state_digest(ts: torch.Tensor) -> str:
    """Content identity of a time state (format and file name do not matter)."""
    t = ts.detach().float().cpu().contiguous()
    h = hashlib.sha256(repr(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.hexdigest()[:32]


def save_time_state(path: str | Path, ts: torch.Tensor) -> Path:
    """Write `ts` [L, H, N, N] as blocks.{i}.att.time_state (what RWKV-Runner loads): torch.save of
    a plain dict for .pth, safetensors for .safetensors. Atomic: a crash leaves the old file."""
    path = Path(path)
    tensors = {f"blocks.{i}.att.time_state": ts[i].detach().float().cpu().contiguous().clone() for i in range(ts.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(tensors, tmp)
        else:
            torch.save(tensors, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
