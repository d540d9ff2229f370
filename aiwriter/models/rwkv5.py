"""RWKV-5 "Eagle" (x052): the RWKV-5 World models.

Multi-head linear attention with a matrix state per head and a fixed decay per channel:
w = exp(-exp(time_decay)), bonus u = time_faaaa (see rwkv_common.wkv_step for the recurrence),
then a GroupNorm per head (ln_x) and a SiLU gate. The channel mix is RWKV-4's.
A state-tuned file (blocks.N.att.time_state) starts every stream from its learned state.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter.models.rwkv4 import ChannelMix
from aiwriter.models.rwkv_common import (LN_X_EPS, HeadsRWKV, decay_ramp, heads_config, heads_wkv, lin,
                                         random_common, random_linear, shifted)


class TimeMix(nn.Module):
    def __init__(self, n_embd: int, dim_att: int, n_head: int, time_state: bool = False):
        super().__init__()
        H, N = n_head, dim_att // n_head
        self.n_head, self.head_size = H, N
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_g = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_decay = nn.Parameter(torch.empty(H, N))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        if time_state:
            self.time_state = nn.Parameter(torch.empty(H, N, N))
        self.receptance = nn.Linear(n_embd, dim_att, bias=False)
        self.key = nn.Linear(n_embd, dim_att, bias=False)
        self.value = nn.Linear(n_embd, dim_att, bias=False)
        self.gate = nn.Linear(n_embd, dim_att, bias=False)
        self.output = nn.Linear(dim_att, n_embd, bias=False)
        self.ln_x = nn.GroupNorm(H, dim_att, eps=LN_X_EPS)

    def forward(self, x, st):
        B, T, _ = x.shape
        H, N = self.n_head, self.head_size
        prev = shifted(x, st["att_x"])

        def mix(m):
            return x * m + prev * (1 - m)

        r = lin(self.receptance, mix(self.time_mix_r)).view(B, T, H, N)
        k = lin(self.key, mix(self.time_mix_k)).view(B, T, H, N)
        v = lin(self.value, mix(self.time_mix_v)).view(B, T, H, N)
        g = F.silu(lin(self.gate, mix(self.time_mix_g)))
        logw = (-self.time_decay.float().exp()).expand(B, T, H, N)
        y, S = heads_wkv(r, k, v, logw, self.time_faaaa.float(), st["att_kv"])
        y = F.group_norm(y.reshape(B * T, H * N), H, self.ln_x.weight, self.ln_x.bias, LN_X_EPS)
        return lin(self.output, y.view(B, T, H * N) * g), {"att_x": x[:, -1], "att_kv": S}


class RWKV5(HeadsRWKV):
    family = "rwkv5"
    title = "RWKV-5"

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                 dim_att: int | None = None, dim_ffn: int | None = None, time_state: bool = False):
        super().__init__(vocab_size, n_layer, n_embd, head_size, dim_att, dim_ffn,
                         lambda dim_att, n_head: TimeMix(n_embd, dim_att, n_head, time_state), ChannelMix)

    @classmethod
    def config_from_weights(cls, w):
        return heads_config(w, cls.title)

    @classmethod
    def random_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                       seed: int = 0) -> dict[str, torch.Tensor]:
        """Random weights in the official layout. Decays per channel span slow to fast
        (time_decay -6 .. 1.5), bonus and gates random, every matrix dense, activations O(1)."""
        gen = torch.Generator().manual_seed(seed)
        C, H, N = n_embd, n_embd // head_size, head_size
        F_ = int(C * 3.5) // 32 * 32   # the x052 trainer's FFN width
        w = random_common(gen, vocab_size, n_layer, C)
        for i in range(n_layer):
            b = f"blocks.{i}."
            for m in "kvrg":
                w[b + f"att.time_mix_{m}"] = torch.rand(1, 1, C, generator=gen)
            w[b + "att.time_decay"] = decay_ramp(gen, C, i, n_layer).view(H, N)
            w[b + "att.time_faaaa"] = 0.5 * torch.randn(H, N, generator=gen)
            for m in ("receptance", "key", "value", "gate", "output"):
                w[b + f"att.{m}.weight"] = random_linear(gen, C, C)
            w[b + "att.ln_x.weight"] = 1 + 0.2 * torch.randn(C, generator=gen)
            w[b + "att.ln_x.bias"] = 0.1 * torch.randn(C, generator=gen)
            w.update({b + "ffn." + k: v for k, v in ChannelMix.random_weights(gen, C, F_).items()})
        return w
