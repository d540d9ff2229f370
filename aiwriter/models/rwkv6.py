"""RWKV-6 "Finch" (x060): the RWKV-6 World models.

RWKV-5's multi-head matrix state, with data-dependent token shift and decay: a low-rank MLP of the
shifted input (time_maa_w1/w2) sets how much of the previous position each of w, k, v, r, g
mixes in, and another (time_decay_w1/w2) moves the decay per position:
w_t = exp(-exp(time_decay + tanh(xw_t @ td_w1) @ td_w2)). The recurrence is rwkv_common.wkv_step.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter.models.rwkv_common import (LN_X_EPS, HeadsRWKV, decay_ramp, ffn_scale, heads_config, heads_wkv,
                                         lin, random_common, random_linear, require, shifted)


class TimeMix(nn.Module):
    def __init__(self, n_embd: int, dim_att: int, n_head: int, mix_lora: int, decay_lora: int,
                 time_state: bool = False):
        super().__init__()
        C, H, N = n_embd, n_head, dim_att // n_head
        self.n_head, self.head_size = H, N
        self.time_maa_x = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_w = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_k = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_v = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_r = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_g = nn.Parameter(torch.empty(1, 1, C))
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * mix_lora))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, mix_lora, C))
        self.time_decay = nn.Parameter(torch.empty(1, 1, dim_att))
        self.time_decay_w1 = nn.Parameter(torch.empty(C, decay_lora))
        self.time_decay_w2 = nn.Parameter(torch.empty(decay_lora, dim_att))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))
        if time_state:
            self.time_state = nn.Parameter(torch.empty(H, N, N))
        self.receptance = nn.Linear(C, dim_att, bias=False)
        self.key = nn.Linear(C, dim_att, bias=False)
        self.value = nn.Linear(C, dim_att, bias=False)
        self.gate = nn.Linear(C, dim_att, bias=False)
        self.output = nn.Linear(dim_att, C, bias=False)
        self.ln_x = nn.GroupNorm(H, dim_att, eps=LN_X_EPS)

    def forward(self, x, st):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        dx = shifted(x, st["att_x"]) - x
        # data-dependent mixes: 5 low-rank corrections (for w, k, v, r, g) of the static time_maa_*
        lora = torch.tanh((x + dx * self.time_maa_x) @ self.time_maa_w1).view(B, T, 5, -1)
        mw, mk, mv, mr, mg = torch.einsum("btfd,fdc->fbtc", lora, self.time_maa_w2).unbind(0)
        xw = x + dx * (self.time_maa_w + mw)
        r = lin(self.receptance, x + dx * (self.time_maa_r + mr)).view(B, T, H, N)
        k = lin(self.key, x + dx * (self.time_maa_k + mk)).view(B, T, H, N)
        v = lin(self.value, x + dx * (self.time_maa_v + mv)).view(B, T, H, N)
        g = F.silu(lin(self.gate, x + dx * (self.time_maa_g + mg)))
        decay = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        logw = -decay.exp().view(B, T, H, N)
        y, S = heads_wkv(r, k, v, logw, self.time_faaaa.float(), st["att_kv"])
        y = F.group_norm(y.reshape(B * T, H * N), H, self.ln_x.weight, self.ln_x.bias, LN_X_EPS)
        return lin(self.output, y.view(B, T, H * N) * g), {"att_x": x[:, -1], "att_kv": S}


class ChannelMix(nn.Module):
    def __init__(self, layer_id: int, n_embd: int, dim_ffn: int):
        super().__init__()
        self.layer_id = layer_id
        self.time_maa_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_maa_r = nn.Parameter(torch.empty(1, 1, n_embd))
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    def forward(self, x, st):
        dx = shifted(x, st["ffn_x"]) - x
        k = torch.relu(lin(self.key, x + dx * self.time_maa_k)) ** 2
        r = torch.sigmoid(lin(self.receptance, x + dx * self.time_maa_r))
        s = ffn_scale(self.layer_id, self.value.weight.dtype)
        return r * lin(self.value, k * s) / s, {"ffn_x": x[:, -1]}


class RWKV6(HeadsRWKV):
    family = "rwkv6"
    title = "RWKV-6"

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                 dim_att: int | None = None, dim_ffn: int | None = None, mix_lora: int = 32,
                 decay_lora: int = 64, time_state: bool = False):
        super().__init__(vocab_size, n_layer, n_embd, head_size, dim_att, dim_ffn,
                         lambda dim_att, n_head: TimeMix(n_embd, dim_att, n_head, mix_lora, decay_lora, time_state),
                         ChannelMix)

    @classmethod
    def config_from_weights(cls, w):
        require(w, ["blocks.0.att.time_maa_w1", "blocks.0.att.time_decay_w1"], cls.title)
        cfg = heads_config(w, cls.title)
        cfg["mix_lora"] = w["blocks.0.att.time_maa_w1"].shape[-1] // 5
        cfg["decay_lora"] = w["blocks.0.att.time_decay_w1"].shape[-1]
        return cfg

    @classmethod
    def random_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                       seed: int = 0) -> dict[str, torch.Tensor]:
        """Random weights in the official layout (LoRA widths 32 and 64, FFN 3.5 C as the trainer
        picks for small models). The LoRAs are large enough that the data-dependent shift and
        decay really vary per position; decays span slow to fast."""
        gen = torch.Generator().manual_seed(seed)
        C, H, N = n_embd, n_embd // head_size, head_size
        F_, D_mix, D_decay = int(C * 3.5) // 32 * 32, 32, 64
        w = random_common(gen, vocab_size, n_layer, C)
        for i in range(n_layer):
            b = f"blocks.{i}."
            for m in "xwkvrg":
                w[b + f"att.time_maa_{m}"] = torch.rand(1, 1, C, generator=gen)
            w[b + "att.time_maa_w1"] = random_linear(gen, 5 * D_mix, C).T.contiguous()   # [C, 5 D], x @ w1
            w[b + "att.time_maa_w2"] = random_linear(gen, 5 * C, D_mix, gain=0.3).view(5, C, D_mix).mT.contiguous()
            w[b + "att.time_decay"] = decay_ramp(gen, C, i, n_layer).view(1, 1, C)
            w[b + "att.time_decay_w1"] = random_linear(gen, D_decay, C).T.contiguous()
            w[b + "att.time_decay_w2"] = random_linear(gen, C, D_decay, gain=0.5).T.contiguous()
            w[b + "att.time_faaaa"] = 0.5 * torch.randn(H, N, generator=gen)
            for m in ("receptance", "key", "value", "gate", "output"):
                w[b + f"att.{m}.weight"] = random_linear(gen, C, C)
            w[b + "att.ln_x.weight"] = 1 + 0.2 * torch.randn(C, generator=gen)
            w[b + "att.ln_x.bias"] = 0.1 * torch.randn(C, generator=gen)
            w[b + "ffn.time_maa_k"] = torch.rand(1, 1, C, generator=gen)
            w[b + "ffn.time_maa_r"] = torch.rand(1, 1, C, generator=gen)
            w[b + "ffn.key.weight"] = random_linear(gen, F_, C)
            w[b + "ffn.receptance.weight"] = random_linear(gen, C, C)
            w[b + "ffn.value.weight"] = random_linear(gen, C, F_, gain=0.5)
        return w
