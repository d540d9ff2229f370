"""Pure model math, one module per family. No files, no text, no I/O here.

Contract every family class follows (engine.py relies on it):

    class Family(torch.nn.Module):
        family: str                 # "aiwriter-v1", "aiwriter-v2", "rwkv4", "rwkv5", "rwkv6", "rwkv7"
        vocab_size: int
        ctx_len: int | None         # None when unbounded (RNN families)

        @classmethod
        def from_weights(cls, w: dict[str, torch.Tensor]) -> "Family"
            # build from a checkpoint's tensors (as stored: fp32/fp16/bf16); shapes give the config

        def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]
            # every tensor has a leading batch dim B; float state kept in float32

        def forward(self, ids: torch.LongTensor, state: dict, all_logits: bool = False)
            -> tuple[torch.Tensor, dict]
            # ids [B, T] (T >= 1; T > 1 is a prefill, parallel or chunked, same numbers as stepping)
            # returns float32 logits [B, V] after the last id ([B, T, V] when all_logits)
            # and a NEW state dict; the input state is never mutated (so branches stay independent)

The engine moves the module with .to(device, dtype); a family computes what must stay exact
(decays, state) in float32 whatever the weight dtype.
"""
import importlib

FAMILIES = {
    "aiwriter-v1": ("aiwriter.models.aiwriter_v1", "AIWriterV1"),
    "aiwriter-v2": ("aiwriter.models.aiwriter_v2", "AIWriterV2"),
    "rwkv4": ("aiwriter.models.rwkv4", "RWKV4"),
    "rwkv5": ("aiwriter.models.rwkv5", "RWKV5"),
    "rwkv6": ("aiwriter.models.rwkv6", "RWKV6"),
    "rwkv7": ("aiwriter.models.rwkv7", "RWKV7"),
}


def family_class(family: str):
    module, name = FAMILIES[family]
    return getattr(importlib.import_module(module), name)
