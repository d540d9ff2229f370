"""Run a model's exported ONNX step (speed/onnx_export.py) through onnxruntime, behind the same
family surface as the PyTorch modules, so engine.Model, the writer and the server use it unchanged
(`engine.load_model(path, backend="onnx")`).

Execution providers (onnxruntime picks the hardware; install the matching onnxruntime package):
  CPUExecutionProvider        every platform (`onnxruntime`)
  DmlExecutionProvider        DirectX 12 GPUs on Windows: AMD, Intel, NVIDIA (`onnxruntime-directml`)
  ROCMExecutionProvider / MIGraphXExecutionProvider   AMD GPUs on Linux (`onnxruntime-rocm` / MIGraphX builds)
  OpenVINOExecutionProvider   Intel CPUs, iGPUs, NPUs (`onnxruntime-openvino`)
  CoreMLExecutionProvider     Apple silicon (in the macOS `onnxruntime` wheel)
  CUDAExecutionProvider       NVIDIA (`onnxruntime-gpu`)
By default the first available of these (in that preference, CPU last) is used; the environment
variable AIWRITER_ORT_PROVIDERS="OpenVINOExecutionProvider,CPUExecutionProvider" overrides it.

A prompt is read one step at a time (the exported graph is one RNN step), so prefill runs at the
decode rate; reading long openings is faster with the PyTorch backend.

Threads: onnxruntime's intra-op pool has torch's thread count unless AIWRITER_ORT_THREADS says
otherwise (on the busy 2-core EPYC of docs/benchmarks.md, 4 threads decoded the 1.5B int4 step
1.3x faster than 2 in one half hour and 0.86x in the next: not a default); its waiting threads
spin while no other program competes for the cores and sleep when one does (speed/spin.py;
AIWRITER_ORT_SPIN=0 or 1 fixes either).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from aiwriter.errors import AIWriterError
from aiwriter.speed.spin import SpinPolicy, run_delay_ns, spin_setting

PREFERENCE = ["DmlExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider",
              "OpenVINOExecutionProvider", "CoreMLExecutionProvider", "CUDAExecutionProvider",
              "CPUExecutionProvider"]


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise AIWriterError("ONNX 后端需要 onnxruntime：pip install onnxruntime",
                            "the ONNX backend needs onnxruntime: pip install onnxruntime")
    return onnxruntime


def pick_providers(available: list[str]) -> list[str]:
    wanted = os.environ.get("AIWRITER_ORT_PROVIDERS")
    if wanted:
        chosen = [p.strip() for p in wanted.split(",") if p.strip()]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise AIWriterError(f"onnxruntime 没有这些执行后端：{', '.join(missing)}（可用：{', '.join(available)}）",
                                f"onnxruntime lacks these execution providers: {', '.join(missing)} "
                                f"(available: {', '.join(available)})")
        return chosen
    return [p for p in PREFERENCE if p in available] or ["CPUExecutionProvider"]


def ort_threads() -> int:
    """onnxruntime's intra-op threads: $AIWRITER_ORT_THREADS, else torch's thread count (one knob
    for both runtimes)."""
    text = os.environ.get("AIWRITER_ORT_THREADS", "").strip()
    if not text:
        return torch.get_num_threads()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise AIWriterError(f"AIWRITER_ORT_THREADS 应为正整数，而不是 {text!r}",
                            f"AIWRITER_ORT_THREADS must be a positive integer, not {text!r}")
    return n


def _file_bytes(path: Path) -> int:
    """A graph's size with its external data file, if any (.data beside it)."""
    data = Path(str(path) + ".data")
    try:
        return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)
    except OSError:
        return 0


class OnnxNet:
    """The family contract (family, vocab_size, ctx_len, new_state, __call__) over an ONNX step."""

    ctx_len = None

    def __init__(self, path: Path, providers: list[str] | None = None, save_optimized: Path | None = None,
                 save_data_name: str | None = None, optimized: bool = False):
        """save_optimized: also write the graph as onnxruntime optimized it, with its prepacked
        weights, to this file (its tensors into `save_data_name` beside it, default the file's
        name + .data); optimized: `path` is such a file (no optimizer pass, the prepacked weights
        are mapped from its .data instead of being packed again)."""
        from aiwriter.speed.onnx_export import META_PREFIX, decode_state

        self.path, self.optimized = Path(path), optimized
        self._providers = providers or pick_providers(_ort().get_available_providers())
        spin = spin_setting()
        # auto (unset): decided as the session runs (speed/spin.py), where reopening it is cheap (a
        # mapped, already optimized step, or a small graph) and its threads are CPU threads; not
        # for the one-off session that packs a cache entry
        auto = (spin is None and save_optimized is None and self._providers == ["CPUExecutionProvider"]
                and (optimized or _file_bytes(self.path) < self.REOPEN_BYTES) and run_delay_ns() is not None)
        self.session = self._open(bool(spin) or auto, save_optimized, save_data_name)
        self._spin_policy = SpinPolicy(spinning=True) if auto else None
        self.providers = self.session.get_providers()
        meta = {k[len(META_PREFIX):]: v for k, v in self.session.get_modelmeta().custom_metadata_map.items()
                if k.startswith(META_PREFIX)}
        if "family" not in meta:
            raise AIWriterError(f"{path} 不是 aiwriter export-onnx 导出的模型（缺少元数据）",
                                f"{path} was not written by aiwriter export-onnx (its metadata is missing)")
        self.meta = meta  # the file's aiwriter metadata, prefix removed
        self.family, self.vocab_size = meta["family"], int(meta["vocab_size"])
        self.names = json.loads(meta["state_names"])
        self._init = decode_state(meta["initial_state"])

    REOPEN_BYTES = 256 * 2**20  # graphs above this that onnxruntime must optimize are not reopened

    def _open(self, spinning: bool, save_optimized: Path | None = None, save_data_name: str | None = None):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if self.optimized
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        self.threads = opts.intra_op_num_threads = ort_threads()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        if save_optimized is not None:
            opts.log_severity_level = 3  # its note that the file suits this machine only: it is keyed by the CPU
            opts.optimized_model_filepath = str(save_optimized)
            for key, value in (("session.optimized_model_external_initializers_file_name",
                                save_data_name or Path(save_optimized).name + ".data"),
                               ("session.optimized_model_external_initializers_min_size_in_bytes", "1024"),
                               ("session.save_external_prepacked_constant_initializers", "1")):
                opts.add_session_config_entry(key, value)
        try:
            return ort.InferenceSession(str(self.path), opts, providers=self._providers)
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise AIWriterError(f"无法打开 ONNX 模型 {self.path}：{e}", f"cannot open ONNX model {self.path}: {e}")

    @property
    def spinning(self) -> bool:
        return self.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"

    def _reopen(self, spinning: bool) -> None:
        """From the thread that runs the model (the server has one: server/scheduler.py)."""
        self.session = None  # its threads and mapped weights go first: never two sessions at once
        self.session = self._open(spinning)

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        return {n: torch.from_numpy(np.repeat(self._init[n][None], batch, 0)) for n in self.names}

    def __call__(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        feeds = {n: state[n].float().cpu().numpy() for n in self.names}
        steps = ids.cpu().numpy()
        outs, session, start = [], self.session, time.perf_counter()
        for t in range(steps.shape[1]):
            feeds["ids"] = np.ascontiguousarray(steps[:, t])
            res = session.run(None, feeds)
            outs.append(res[0])
            feeds.update(zip(self.names, res[1:]))
        if self._spin_policy is not None:
            change = self._spin_policy.observe(time.perf_counter() - start)
            if change is not None:
                self._reopen(change)
        new = {n: torch.from_numpy(feeds[n]) for n in self.names}
        logits = np.stack(outs, 1) if all_logits else outs[-1]
        return torch.from_numpy(logits), new
