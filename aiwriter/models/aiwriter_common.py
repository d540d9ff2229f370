"""What the two AI-Writer families (F1 aiwriter_v1, F2 aiwriter_v2) share: the width of the copy
head and the float32 helpers. Activations and state stay float32 whatever the weights' dtype."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter.models.rwkv_common import lin as linear  # a matmul in the weight's dtype, result in float32

HEAD_QK = 256  # copy-head dim; the copy scores are divided by it

__all__ = ["HEAD_QK", "linear", "layer_norm"]


def layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm in float32 (the module's weights may be fp16/bf16)."""
    return F.layer_norm(x, ln.normalized_shape, ln.weight.float(), ln.bias.float(), ln.eps)
