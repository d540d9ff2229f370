"""RWKV-4 (x040): the Pile / Raven / Novel / World v4 models.

Per layer and channel, the time mix keeps a weighted average of past values, stored as
(aa, bb, pp): numerator aa * e^pp, denominator bb * e^pp, with pp the largest exponent seen so the
exponentials never overflow. With w = e^time_decay (decay rate) and u = time_first (bonus):

    wkv_t = (sum_{i<t} e^{k_i - (t-1-i) w} v_i + e^{u + k_t} v_t) / (same without the v's)

T = 1 is one step of this; T > 1 computes it in chunks (see `wkv4_chunked`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from aiwriter.models.rwkv_common import (Block, RWKVBase, count_layers, decay_ramp, ffn_scale, lin,
                                         random_common, random_linear, require, segments, shifted)


def wkv4_step(w, u, k, v, aa, bb, pp):
    """One position. w, u [A]; k, v, aa, bb, pp [B, A]. Returns wkv and the new (aa, bb, pp)."""
    ww = u + k
    p = torch.maximum(pp, ww)
    e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
    y = (e1 * aa + e2 * v) / (e1 * bb + e2)
    ww = pp - w
    p = torch.maximum(ww, k)
    e1, e2 = torch.exp(ww - p), torch.exp(k - p)
    return y, e1 * aa + e2 * v, e1 * bb + e2, p


def wkv4_chunked(w, u, k, v, aa, bb, pp, chunk: int | None = None):
    """T positions at once; same numbers as wkv4_step in a loop.

    The positions are cut into chunks of n. Each output is a weighted average over the incoming
    state and the chunk's earlier positions, computed from the [n, n] table of exponents shifted
    by their max per row (the trick pp plays in the step form): nothing overflows however strong
    the decay. Every chunk is computed at once; only the (aa, bb, pp) state passes from chunk to
    chunk, a few vector ops each.
    k, v [B, T, A]; the rest as in wkv4_step. Returns wkv [B, T, A] and the new state."""
    B, T, A = k.shape
    ys = []
    for s0, s1, n in segments(T, B, A, k.device, chunk):
        kc, vc = k[:, s0:s1].reshape(B, -1, n, A), v[:, s0:s1].reshape(B, -1, n, A)  # [B, chunks, n, A]
        t = torch.arange(n, device=k.device, dtype=k.dtype)
        # each chunk alone: exponents k_i - (n-1-i) w at its end, summed relative to their max
        f = kc - (n - 1 - t).view(n, 1) * w
        f_max = f.amax(2)
        ef = torch.exp(f - f_max.unsqueeze(2))
        f_a, f_b = (ef * vc).sum(2), ef.sum(2)
        starts = []
        for j in range(kc.shape[1]):
            starts.append(torch.stack([aa, bb, pp]))
            fs = pp - n * w
            p = torch.maximum(f_max[:, j], fs)
            e1, e2 = torch.exp(fs - p), torch.exp(f_max[:, j] - p)
            aa, bb, pp = e1 * aa + e2 * f_a[:, j], e1 * bb + e2 * f_b[:, j], p
        sa, sb, sp = torch.stack(starts, 2).unsqueeze(3)                           # [B, chunks, 1, A]
        # exponent of position i in the output at t: k_i - (t-1-i) w for i < t, u + k_t at i = t
        dist = (t.view(n, 1) - 1 - t.view(1, n)).unsqueeze(-1)                     # [t, i, 1]
        e = kc.unsqueeze(2) - dist * w                                             # [B, chunks, t, i, A]
        e = torch.where(torch.eye(n, dtype=torch.bool, device=k.device).unsqueeze(-1), (u + kc).unsqueeze(3), e)
        e = e.masked_fill(dist < -1, -math.inf)                                    # i > t
        es = sp - t.view(n, 1) * w                                                 # incoming state
        m = torch.maximum(e.amax(3), es)
        p, ps = torch.exp(e - m.unsqueeze(3)), torch.exp(es - m)
        num = (p * vc.unsqueeze(2)).sum(3) + ps * sa
        den = p.sum(3) + ps * sb
        ys.append((num / den).reshape(B, s1 - s0, A))
    return torch.cat(ys, 1), aa, bb, pp


class TimeMix(nn.Module):
    def __init__(self, n_embd: int, dim_att: int):
        super().__init__()
        self.time_decay = nn.Parameter(torch.empty(dim_att))
        self.time_first = nn.Parameter(torch.empty(dim_att))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, n_embd))
        self.key = nn.Linear(n_embd, dim_att, bias=False)
        self.value = nn.Linear(n_embd, dim_att, bias=False)
        self.receptance = nn.Linear(n_embd, dim_att, bias=False)
        self.output = nn.Linear(dim_att, n_embd, bias=False)

    def forward(self, x, st):
        prev = shifted(x, st["att_x"])
        mk, mv, mr = self.time_mix_k, self.time_mix_v, self.time_mix_r
        k = lin(self.key, x * mk + prev * (1 - mk))
        v = lin(self.value, x * mv + prev * (1 - mv))
        r = torch.sigmoid(lin(self.receptance, x * mr + prev * (1 - mr)))
        w, u = self.time_decay.float().exp(), self.time_first.float()
        aa, bb, pp = st["att_a"], st["att_b"], st["att_p"]
        if x.shape[1] == 1:
            y, aa, bb, pp = wkv4_step(w, u, k[:, 0], v[:, 0], aa, bb, pp)
            y = y.unsqueeze(1)
        else:
            y, aa, bb, pp = wkv4_chunked(w, u, k, v, aa, bb, pp)
        out = lin(self.output, r * y)
        return out, {"att_x": x[:, -1], "att_a": aa, "att_b": bb, "att_p": pp}


class ChannelMix(nn.Module):
    def __init__(self, layer_id: int, n_embd: int, dim_ffn: int):
        super().__init__()
        self.layer_id = layer_id
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, n_embd))
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    def forward(self, x, st):
        prev = shifted(x, st["ffn_x"])
        mk, mr = self.time_mix_k, self.time_mix_r
        k = torch.relu(lin(self.key, x * mk + prev * (1 - mk))) ** 2
        r = torch.sigmoid(lin(self.receptance, x * mr + prev * (1 - mr)))
        s = ffn_scale(self.layer_id, self.value.weight.dtype)
        return r * lin(self.value, k * s) / s, {"ffn_x": x[:, -1]}

    @staticmethod
    def random_weights(gen: torch.Generator, n_embd: int, dim_ffn: int) -> dict[str, torch.Tensor]:
        """Random weights of one layer's channel mix, keys relative to "blocks.{i}.ffn."."""
        C, F_ = n_embd, dim_ffn
        return {"time_mix_k": torch.rand(1, 1, C, generator=gen), "time_mix_r": torch.rand(1, 1, C, generator=gen),
                "key.weight": random_linear(gen, F_, C), "receptance.weight": random_linear(gen, C, C),
                "value.weight": random_linear(gen, C, F_, gain=0.5)}


class RWKV4(RWKVBase):
    family = "rwkv4"
    title = "RWKV-4"

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, dim_att: int | None = None,
                 dim_ffn: int | None = None):
        super().__init__()
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.dim_att = dim_att or n_embd
        self.dim_ffn = dim_ffn or 4 * n_embd
        self.emb = nn.Embedding(vocab_size, n_embd, _weight=torch.empty(vocab_size, n_embd))  # filled by from_weights
        self.blocks = nn.ModuleList(
            Block(i, n_embd, TimeMix(n_embd, self.dim_att), ChannelMix(i, n_embd, self.dim_ffn))
            for i in range(n_layer))
        self.ln_out = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        dev = self.emb.weight.device
        L, C, A = self.n_layer, self.n_embd, self.dim_att
        return {
            "att_x": torch.zeros(batch, L, C, device=dev),
            "att_a": torch.zeros(batch, L, A, device=dev),
            "att_b": torch.zeros(batch, L, A, device=dev),
            "att_p": torch.full((batch, L, A), -1e30, device=dev),  # "no exponent seen yet", as the rwkv package
            "ffn_x": torch.zeros(batch, L, C, device=dev),
        }

    @classmethod
    def config_from_weights(cls, w):
        require(w, ["emb.weight", "blocks.0.ln0.weight", "blocks.0.att.key.weight", "blocks.0.ffn.key.weight"],
                cls.title)
        vocab, C = w["emb.weight"].shape
        return dict(vocab_size=vocab, n_layer=count_layers(w), n_embd=C,
                    dim_att=w["blocks.0.att.key.weight"].shape[0], dim_ffn=w["blocks.0.ffn.key.weight"].shape[0])

    @classmethod
    def random_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                       seed: int = 0) -> dict[str, torch.Tensor]:
        """Random weights in the official layout (head_size is unused: v4 has no heads). Decay
        rates span about the trainer's range, every matrix is dense, activations O(1)."""
        gen = torch.Generator().manual_seed(seed)
        C, F_ = n_embd, 4 * n_embd
        w = random_common(gen, vocab_size, n_layer, C)
        for i in range(n_layer):
            b = f"blocks.{i}."
            w[b + "att.time_decay"] = decay_ramp(gen, C, i, n_layer) + 1.0   # -5 .. 2.5 as the trainer's -5 .. 3
            w[b + "att.time_first"] = math.log(0.3) + 0.5 * torch.randn(C, generator=gen)
            for m in "kvr":
                w[b + f"att.time_mix_{m}"] = torch.rand(1, 1, C, generator=gen)
            for m in ("key", "value", "receptance", "output"):
                w[b + f"att.{m}.weight"] = random_linear(gen, C, C)
            w.update({b + "ffn." + k: v for k, v in ChannelMix.random_weights(gen, C, F_).items()})
        return w
