"""load_model(), Model and State: the one door from files to logits.

Model wraps a family module (aiwriter.models) with its tokenizer, device and dtype. State wraps the
family's state dict (tensors with a leading batch dim) so callers can copy, branch and batch it
without knowing the family.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aiwriter.errors import AIWriterError
from aiwriter.formats import detect_family, read_weights
from aiwriter.models import family_class
from aiwriter.models.fast_decode import enable_fast_decode
from aiwriter.models.quant import pack_bf16, quantize_int8
from aiwriter.tokenizer import Tokenizer, load_tokenizer, tokenizer_for_vocab_size

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


class State:
    """A model's recurrent state for B streams. copy() gives an independent branch.

    `start` names where the text read into it began: "" for the model's own start, else the
    digest of the state file it was started from (caches key states by it)."""

    def __init__(self, data: dict[str, torch.Tensor], start: str = ""):
        self.data = data
        self.start = start

    @property
    def batch(self) -> int:
        return next(iter(self.data.values())).shape[0] if self.data else 1

    def copy(self) -> "State":
        return State({k: v.clone() for k, v in self.data.items()}, self.start)

    def repeat(self, n: int) -> "State":
        """n copies of a single-stream state, batched: the runs of one opening branch from it."""
        return State({k: v.repeat_interleave(n, dim=0) for k, v in self.data.items()}, self.start)

    def select(self, index) -> "State":
        """The streams at `index` (an int keeps the batch dim)."""
        if isinstance(index, int):
            index = [index]
        idx = torch.as_tensor(index, dtype=torch.long)
        return State({k: v.index_select(0, idx.to(v.device)) for k, v in self.data.items()})

    @staticmethod
    def stack(states: list["State"]) -> "State":
        keys = states[0].data.keys()
        return State({k: torch.cat([s.data[k] for s in states], dim=0) for k in keys})

    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for v in self.data.values())


@dataclass
class Model:
    net: torch.nn.Module
    tokenizer: Tokenizer
    device: torch.device
    dtype: torch.dtype
    path: Path | None = None

    @property
    def family(self) -> str:
        return self.net.family

    @property
    def vocab_size(self) -> int:
        return self.net.vocab_size

    @property
    def ctx_len(self) -> int | None:
        return self.net.ctx_len

    def new_state(self, batch: int = 1) -> State:
        return State(self.net.new_state(batch))

    def state_from_file(self, path) -> State:
        """The start state of a state file (RWKV-Runner / ChatRWKV `blocks.N.att.time_state`, .pth or
        .safetensors, or a model file holding such keys), for one stream. A state made for another
        model is refused, naming both shapes."""
        from aiwriter.state_files import read_time_state

        return self.state_from_time_state(read_time_state(path), Path(path).name)

    def state_from_time_state(self, ts: torch.Tensor, name: str = "") -> State:
        from aiwriter.state_files import check_fits, state_dict_from_time_state, time_state_digest

        net = getattr(self.net, "torch_net", self.net)
        check_fits(net, ts, name)
        return State(state_dict_from_time_state(net, ts), start=time_state_digest(ts))

    def _ids_tensor(self, ids) -> torch.Tensor:
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.vocab_size):
            raise AIWriterError(
                f"输入编号超出词表范围 [0, {self.vocab_size})", f"token id out of range [0, {self.vocab_size})"
            )
        return t

    @torch.inference_mode()
    def forward(self, ids, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Consume ids (a prefill when several) for one stream: returns float32 logits [V] after
        the last id and the new state. The given state is left unchanged."""
        if state is None:
            state = self.new_state(1)
        if len(ids) == 0:
            raise AIWriterError("没有可读入的内容", "nothing to read: empty id list")
        logits, new = self.net(self._ids_tensor(ids), state.data)
        return logits[0].float(), State(new, state.start)

    @torch.inference_mode()
    def forward_batch(self, ids, state: State) -> tuple[torch.Tensor, State]:
        """One forward for B streams: ids [B] or [B, T] -> logits [B, V] and the new state."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        if t.dim() == 1:
            t = t.unsqueeze(1)
        logits, new = self.net(t, state.data)
        return logits.float(), State(new)

    @torch.inference_mode()
    def logits(self, ids) -> np.ndarray:
        """Logits at every position from an empty state, float32 [n, V] (windowed families: the
        last ctx_len ids)."""
        ids = list(ids)
        if self.ctx_len is not None and len(ids) > self.ctx_len:
            ids = ids[-self.ctx_len:]
        out, _ = self.net(self._ids_tensor(ids), self.net.new_state(1), all_logits=True)
        return out[0].float().cpu().numpy()


def default_model_path() -> Path:
    return Path(__file__).parent / "default_model" / "model.pth"


def _find_vocab(model_path: Path) -> Path | None:
    for candidate in (model_path.with_suffix(".json"), model_path.parent / "vocab.json"):
        if candidate.is_file():
            return candidate
    return None


def load_model(path=None, vocab=None, device: str = "cpu", dtype=None) -> Model:
    """Load any model file the project knows (family told by its keys), with its tokenizer:
    `vocab` if given, else a NAME.json or vocab.json beside the model, else by vocab size."""
    path = Path(path) if path is not None else default_model_path()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AIWriterError(f"未知设备：{device}（可用 cpu 或 cuda）", f"unknown device: {device} (use cpu or cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AIWriterError("这台机器没有可用的 CUDA GPU，请用 --device cpu", "no CUDA GPU available here; use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise AIWriterError(f"不支持的设备：{device}（可用 cpu 或 cuda）", f"unsupported device: {device} (use cpu or cuda)")
    int8 = dtype == "int8"  # int8 matrices, float32 everything else (aiwriter/models/quant.py)
    int4 = dtype == "int4"  # 4-bit matrices, onnxruntime for decoding (aiwriter/int4.py)
    if int4 and dev.type != "cpu":
        raise AIWriterError("int4 只能在 CPU 上用；GPU 请用 fp16 或 bf16", "int4 is a CPU mode; on a GPU use fp16 or bf16")
    if int8 or int4:
        dtype = torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise AIWriterError(f"未知精度：{dtype}（可用 fp32、fp16、bf16、int8、int4）",
                                f"unknown dtype: {dtype} (use fp32, fp16, bf16, int8, int4)")
        dtype = DTYPES[dtype]
    dtype = dtype or torch.float32

    weights = read_weights(path)
    family = detect_family(weights)
    net = family_class(family).from_weights(weights)
    net = net.to(device=dev, dtype=dtype).eval()
    if int8:
        quantize_int8(net)
    elif dtype == torch.bfloat16 and dev.type == "cpu":
        pack_bf16(net)  # oneDNN's reordered bf16 weights: same numbers as torch's bf16 matmul, faster
    enable_fast_decode(net)  # lean one-token step, bit-equal to the family's forward
    if int4:
        from aiwriter.int4 import to_int4

        net = to_int4(net, path)

    vocab_path = Path(vocab) if vocab is not None else _find_vocab(path)
    tokenizer = load_tokenizer(vocab_path) if vocab_path is not None else tokenizer_for_vocab_size(net.vocab_size, near=path.parent)
    if tokenizer.vocab_size > net.vocab_size:
        raise AIWriterError(
            f"词表有 {tokenizer.vocab_size} 项，但模型只有 {net.vocab_size} 个输出，词表与模型不配套",
            f"vocab has {tokenizer.vocab_size} entries but the model has {net.vocab_size} outputs: wrong vocab for this model",
        )
    return Model(net=net, tokenizer=tokenizer, device=dev, dtype=dtype, path=path)


SMALL_MODEL = 30_000_000  # parameters


def configure_threads(model: Model | None, requested: int | None) -> int:
    """Set torch's thread count for a job (onnxruntime sessions made later follow it): `requested`
    if given; else one thread for small models, whose one-token steps are too short for a second
    thread to repay waking it (the embedded model decoded 557 chars/s on one thread against 135
    on two, 2-core Xeon, passive OpenMP waiting); else torch's default. Returns the count."""
    if requested:
        torch.set_num_threads(requested)
    elif model is not None:
        net = getattr(model.net, "torch_net", model.net)
        if hasattr(net, "parameters") and sum(p.numel() for p in net.parameters()) < SMALL_MODEL:
            torch.set_num_threads(1)
    return torch.get_num_threads()


class PrefixCache:
    """Saved (logits, state) after reading some ids, so text that extends earlier text starts
    from the longest saved prefix instead of re-reading everything. Keyed by the state the text
    was read from (State.start) and the ids. Bounded by total bytes; least recently used
    entries go first."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        self.max_bytes = max_bytes
        self._entries: dict[tuple[str, tuple[int, ...]], tuple[torch.Tensor, State]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids, logits: torch.Tensor, state: State) -> None:
        key = (state.start, tuple(ids))
        self._entries.pop(key, None)
        self._entries[key] = (logits.clone(), state.copy())
        while len(self._entries) > 1 and self.nbytes() > self.max_bytes:
            self._entries.pop(next(iter(self._entries)))

    def longest_prefix(self, ids, start: str = "") -> tuple[int, torch.Tensor | None, State | None]:
        """(n, logits, state) for the longest saved prefix ids[:n] read from the start state
        `start`; (0, None, None) if none. Returns copies: the caller may advance them freely."""
        ids = tuple(ids)
        best = None
        for key in self._entries:
            s, k = key
            if s == start and len(k) <= len(ids) and (best is None or len(k) > len(best[1])) and ids[: len(k)] == k:
                best = key
        if best is None:
            return 0, None, None
        logits, state = self._entries.pop(best)
        self._entries[best] = (logits, state)  # mark as recently used
        return len(best[1]), logits.clone(), state.copy()

    def nbytes(self) -> int:
        return sum(s.nbytes() + l.numel() * l.element_size() for l, s in self._entries.values())
