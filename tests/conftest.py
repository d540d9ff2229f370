import os
import tempfile
from pathlib import Path

import pytest
import torch

# Tests use tiny models: one thread is faster than two on a shared, busy machine.
torch.set_num_threads(1)

os.environ.setdefault("RWKV_JIT_ON", "0")
# The int4 mode caches exported graphs: never in the user's ~/.cache from tests.
os.environ.setdefault("AIWRITER_CACHE", tempfile.mkdtemp(prefix="aiwriter-test-cache-"))
os.environ.setdefault("RWKV_CUDA_ON", "0")
# `serve` lists the models folder (and "states" beside it) by default: never the user's from tests.
os.environ.setdefault("AIWRITER_MODELS", os.path.join(tempfile.mkdtemp(prefix="aiwriter-test-data-"), "models"))

FIXTURES = Path(__file__).parent / "fixtures"


class CycleNet(torch.nn.Module):
    """A test double for a model family: after id t it strongly predicts nxt[t]. Lets writer
    tests know exactly what greedy sampling writes."""

    family = "test-cycle"
    ctx_len = None

    def __init__(self, nxt: list[int]):
        super().__init__()
        self.nxt = torch.tensor(nxt)
        self.vocab_size = len(nxt)
        self.calls: list[int] = []  # ids consumed per call, to check what was re-read

    def new_state(self, batch: int = 1):
        return {"count": torch.zeros(batch, 1)}

    def forward(self, ids, state, all_logits=False):
        self.calls.append(ids.shape[1])
        logits = torch.nn.functional.one_hot(self.nxt[ids], self.vocab_size).float() * 20.0
        new = {"count": state["count"] + ids.shape[1]}
        return (logits if all_logits else logits[:, -1]), new


@pytest.fixture
def cycle_model():
    from aiwriter.engine import Model
    from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer

    chars = ["\n", "甲", "乙", "丙", "。", UNKNOWN_CHAR]
    # 甲 -> 乙 -> 丙 -> 。 -> \n -> 甲 ... ; the unknown char predicts itself (banned anyway)
    nxt = [1, 2, 3, 4, 0, 5]
    tok = CharTokenizer(dict(enumerate(chars)))
    return Model(net=CycleNet(nxt), tokenizer=tok, device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture
def f2_paths():
    return FIXTURES / "aiwriter-v2-tiny.pth", FIXTURES / "aiwriter-v2-vocab.json"
