"""F2: the 2022 AI-Writer RNN (RWKV-2-era, with a pre-FFN in block 0 and a copy head), see
docs/FORMATS.md.

State per stream (zeros at the start), leading batch dim B:
    sx_att, aa, bb, sx_ffn [B, L, C]   (layer 0 keeps its pre-FFN's last input in sx_att)
    hk [B, T, 256], hk_ids [B, T]      copy-head keys and ids of the last T positions, newest last

A forward of one id is the original RNN step. More ids are a prefill, parallel over time in
chunks of `chunk_len`: within a chunk the wkv sums are a [C, t, t] matrix of decays
w^(i-1-j) = exp(-(i-1-j) * exp(time_decay)), all <= 1, so nothing grows or divides (no w^-t).
Unused copy-key slots are zeros and add exactly 0 to the logits.

eps (added to the wkv denominator): the original's default was 1e-9 (L24_CHN, C=1024); only the
small browser model L6_CHN (C=512) used 1e-16. Rule: 1e-16 for C <= 512, else 1e-9. It only
matters when every k is ~0.
"""
import torch
import torch.nn as nn

from aiwriter.errors import AIWriterError
from aiwriter.models.aiwriter_common import HEAD_QK, layer_norm, linear
from aiwriter.models.rwkv_common import shifted  # token shift: the previous position's input


def default_eps(n_embd: int) -> float:
    """1e-16 up to the L6_CHN size (C=512), else the original's default 1e-9 (L24_CHN, C=1024)."""
    return 1e-16 if n_embd <= 512 else 1e-9


def _mix(x, xx, mix):
    mix = mix.float().view(-1)
    return x * mix + xx * (1 - mix)


class ChannelMix(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.ones(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.ones(1, 1, n_embd))
        self.key = nn.Linear(n_embd, 4 * n_embd, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(4 * n_embd, n_embd, bias=False)

    def forward(self, x, sx):
        xx = shifted(x, sx)
        k = torch.square(torch.relu(linear(self.key, _mix(x, xx, self.time_mix_k))))
        r = torch.sigmoid(linear(self.receptance, _mix(x, xx, self.time_mix_r)))
        return r * linear(self.value, k), x[:, -1]


class TimeMix(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.time_decay = nn.Parameter(torch.zeros(n_embd, 1))
        self.time_first = nn.Parameter(torch.zeros(n_embd, 1))
        self.time_mix_k = nn.Parameter(torch.ones(1, 1, n_embd))
        self.time_mix_v = nn.Parameter(torch.ones(1, 1, n_embd))
        self.time_mix_r = nn.Parameter(torch.ones(1, 1, n_embd))
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=False)
        self.receptance = nn.Linear(n_embd, n_embd, bias=False)
        self.output = nn.Linear(n_embd, n_embd, bias=False)

    def forward(self, x, sx, aa, bb, eps):
        xx = shifted(x, sx)
        r = torch.sigmoid(linear(self.receptance, _mix(x, xx, self.time_mix_r)))
        k = torch.exp(torch.clamp(linear(self.key, _mix(x, xx, self.time_mix_k)), max=60))
        v = linear(self.value, _mix(x, xx, self.time_mix_v))
        u = torch.exp(self.time_first.float().view(-1))
        log_w = -torch.exp(self.time_decay.float().view(-1))  # w = exp(log_w) in (0, 1)
        wkv = _wkv_step if x.size(1) == 1 else _wkv_parallel
        a, b, aa, bb = wkv(k * v, k, aa, bb, u, log_w)
        return linear(self.output, r * a / (b + eps)), x[:, -1], aa, bb


def _wkv_step(kv, k, aa, bb, u, log_w):
    """The RNN step: a = aa + u*kv, b = bb + u*k; then aa = w*aa + kv, bb = w*bb + k."""
    w = torch.exp(log_w)
    kv, k = kv[:, 0], k[:, 0]
    a, b = aa + u * kv, bb + u * k
    return a.unsqueeze(1), b.unsqueeze(1), w * aa + kv, w * bb + k


def _wkv_parallel(kv, k, aa, bb, u, log_w):
    """The same sums for t positions at once: the carried state decays by w^i, position j < i
    contributes with w^(i-1-j), position i itself with u."""
    t = kv.size(1)
    i = torch.arange(t, device=kv.device)
    lag = (i[:, None] - 1 - i[None, :]).float()  # [t, t]
    decay = torch.exp(lag.clamp(min=0) * log_w[:, None, None]) * (lag >= 0)  # [C, t, t], 0 where j >= i
    carry = torch.exp(i[:, None].float() * log_w)  # [t, C]: w^i
    a = aa[:, None] * carry + torch.einsum("cij,bjc->bic", decay, kv) + u * kv
    b = bb[:, None] * carry + torch.einsum("cij,bjc->bic", decay, k) + u * k
    # state after the chunk: the same sums one step past its end
    last = torch.exp((t - 1 - i)[:, None].float() * log_w)  # [t, C]: w^(t-1-j)
    w_t = torch.exp(t * log_w)
    aa = aa * w_t + (last * kv).sum(1)
    bb = bb * w_t + (last * k).sum(1)
    return a, b, aa, bb


class Block(nn.Module):
    def __init__(self, n_embd, pre_ffn):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        if pre_ffn:
            self.ffnPre = ChannelMix(n_embd)
        else:
            self.att = TimeMix(n_embd)
        self.ffn = ChannelMix(n_embd)


class AIWriterV2(nn.Module):
    family = "aiwriter-v2"
    ctx_len = None  # an RNN; the copy head looks back `copy_len` positions

    def __init__(self, vocab_size, n_embd, n_layer, copy_len, pre_ffn=True, eps=None, chunk_len=64):
        super().__init__()
        self.vocab_size, self.n_embd, self.n_layer, self.copy_len = vocab_size, n_embd, n_layer, copy_len
        self.eps = eps if eps is not None else default_eps(n_embd)
        self.chunk_len = chunk_len  # prefill chunk: the decay matrix is [C, chunk, chunk]
        self.emb = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, pre_ffn and i == 0) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head_q = nn.Linear(n_embd, HEAD_QK, bias=False)
        self.head_k = nn.Linear(n_embd, HEAD_QK, bias=False)

    @classmethod
    def from_weights(cls, w):
        need = ["emb.weight", "head.weight", "head_q.weight", "head_k.weight", "copy_mask", "ln_out.weight"]
        missing = [k for k in need if k not in w]
        if missing:
            raise AIWriterError("AI-Writer v2 模型缺少权重：" + ", ".join(missing),
                                "AI-Writer v2 model is missing weights: " + ", ".join(missing))
        V, C = w["emb.weight"].shape
        L = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
        net = cls(V, C, L, copy_len=w["copy_mask"].shape[0], pre_ffn="blocks.0.ffnPre.key.weight" in w)
        expected = net.state_dict()
        missing = [k for k in expected if k not in w]
        if missing:
            raise AIWriterError("AI-Writer v2 模型缺少权重：" + ", ".join(missing[:12]),
                                "AI-Writer v2 model is missing weights: " + ", ".join(missing[:12]))
        try:
            net.load_state_dict({k: w[k] for k in expected})
        except RuntimeError as e:
            raise AIWriterError("AI-Writer v2 模型的权重形状不一致", f"AI-Writer v2 weights have inconsistent shapes: {str(e)[:300]}")
        return net

    def new_state(self, batch: int = 1):
        B, L, C, T, dev = batch, self.n_layer, self.n_embd, self.copy_len, self.head.weight.device
        state = {k: torch.zeros(B, L, C, device=dev) for k in ("sx_att", "aa", "bb", "sx_ffn")}
        state["hk"] = torch.zeros(B, T, HEAD_QK, device=dev)
        state["hk_ids"] = torch.zeros(B, T, dtype=torch.long, device=dev)
        return state

    def forward(self, ids, state, all_logits=False):
        outs = []
        for s in range(0, ids.size(1), self.chunk_len):
            chunk = ids[:, s: s + self.chunk_len]
            last_chunk = s + self.chunk_len >= ids.size(1)
            logits, state = self._chunk(chunk, state, "all" if all_logits else ("last" if last_chunk else None))
            outs.append(logits)
        return (torch.cat(outs, dim=1) if all_logits else outs[-1]), state

    def _chunk(self, ids, state, logits_at):
        x = self.emb(ids).float()
        sx_att, aa, bb, sx_ffn = [], [], [], []
        for i, block in enumerate(self.blocks):
            x = layer_norm(block.ln1, x)
            if hasattr(block, "ffnPre"):
                out, sx = block.ffnPre(x, state["sx_att"][:, i])
                a, b = state["aa"][:, i], state["bb"][:, i]
            else:
                out, sx, a, b = block.att(x, state["sx_att"][:, i], state["aa"][:, i], state["bb"][:, i], self.eps)
            x = x + out
            sx_att.append(sx); aa.append(a); bb.append(b)
            x = layer_norm(block.ln2, x)
            out, sx = block.ffn(x, state["sx_ffn"][:, i])
            x = x + out
            sx_ffn.append(sx)
        x = layer_norm(self.ln_out, x)

        T, m = self.copy_len, ids.size(1)
        keys = torch.cat([state["hk"], linear(self.head_k, x)], dim=1)  # [B, T+m]: old window, then new
        key_ids = torch.cat([state["hk_ids"], ids], dim=1)
        new = {"sx_att": torch.stack(sx_att, 1), "aa": torch.stack(aa, 1), "bb": torch.stack(bb, 1),
               "sx_ffn": torch.stack(sx_ffn, 1), "hk": keys[:, -T:], "hk_ids": key_ids[:, -T:]}
        if logits_at is None:
            return None, new

        pos = torch.arange(m, device=x.device)
        if logits_at == "last":
            x, pos = x[:, -1:], pos[-1:]
        logits = linear(self.head, x)
        # copy head: new position i sees the keys at i+1 .. i+T of `keys` (its last T positions)
        c = linear(self.head_q, x) @ keys.transpose(1, 2) / HEAD_QK  # [B, t, T+m]
        j = torch.arange(T + m, device=x.device)
        c = c * ((j[None, :] > pos[:, None]) & (j[None, :] <= pos[:, None] + T))
        logits = logits.scatter_add(2, key_ids[:, None, :].expand_as(c), c)
        return (logits if logits_at == "all" else logits[:, -1]), new
