"""What a release needs, from its shape alone (no file): its family's module is built on the meta
device (no memory) with the release's layers, width and vocab, and its tensors are counted by the
project's one memory estimate, engine.memory_needed, the same numbers a load refuses with."""
from __future__ import annotations

from functools import lru_cache

from aiwriter.hub.catalog import Release

BF16_BYTES = 2  # the released .pth files hold bf16 tensors


class _Shapes(dict):
    """name -> meta tensor, with the one method of WeightFile that memory_needed reads."""

    def meta(self, key):
        return self[key]


@lru_cache(maxsize=None)
def _shapes(family: str, vocab_size: int, n_layer: int, n_embd: int) -> _Shapes:
    import torch

    from aiwriter.models import family_class

    with torch.device("meta"):
        net = family_class(family)(vocab_size, n_layer, n_embd)
    return _Shapes(net.state_dict())


def shapes(release: Release) -> _Shapes:
    return _shapes(release.family, release.vocab_size, release.n_layer, release.n_embd)


def parameters(release: Release) -> int:
    return sum(t.numel() for t in shapes(release).values())


def estimated_file_size(release: Release) -> int:
    """Bytes of the tensors as released (bf16); the file adds a few kB of pickle around them."""
    return BF16_BYTES * parameters(release)


def memory_needed(release: Release) -> dict[str, int]:
    """Bytes resident per dtype (fp32, fp16, bf16, int8, int4), as load_model's check counts them."""
    from aiwriter.engine import memory_needed as needed

    return needed(shapes(release), release.family)
