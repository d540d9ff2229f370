"""F1: the 2021-22 AI-Writer model (RWKV-LM v1 with a copy head), see docs/FORMATS.md.

Everything depends on the absolute position inside a window of at most ctx_len (T) ids: the
time weights W[h,t,u] = time_w[h, T-1-t+u] * time_alpha[h,u] * time_beta[h,t], time_gamma[t] and
time_out[t]. So there is no RNN form, but the forward is causal: while the window only grows,
earlier positions never change. The state therefore caches, per layer, what later positions read
from earlier ones, and a new id costs one position, not a window:

    kva   [B, L, T, n_attn]  time_alpha[u] * k[u] * v[u] for every position u of the window
    sum_k [B, L, n_attn]     running sum of k (the normaliser)
    x1/x2 [B, L, C]          last inputs of the time-mix / channel-mix (for the half shift)
    hk    [B, T, 256]        copy-head keys of every position, with the window's ids in `ids`
    len   [B]                how many positions the window holds

Slide policy (the window is full and another id arrives): keep the most recent `keep` ids
(default T//2), re-read them as a fresh window starting at position 0 in one parallel forward,
and grow incrementally again. The model then always sees a window that starts at position 0,
exactly what it saw in training and what the original computes for a text of that length, only
with a context of T/2..T chars instead of always T. Per char this costs about two positions
instead of T. `keep = T - 1` (see `exact_window`) is the original behaviour: every new char
re-reads the last T ids from scratch, bit-for-bit the original numbers, T times the work.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.models.aiwriter_common import HEAD_QK, layer_norm, linear


def _half_shift(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """First C/2 channels from the previous position (`last` before the first), the rest from here."""
    C = x.size(-1)
    prev = torch.cat([last.unsqueeze(1), x[:, :-1]], dim=1)
    return torch.cat([prev[..., : C // 2], x[..., C // 2:]], dim=-1)


class TimeMix(nn.Module):
    def __init__(self, n_embd, n_attn, n_head, ctx_len):
        super().__init__()
        self.n_head = n_head
        self.time_w = nn.Parameter(torch.ones(n_head, ctx_len))
        self.time_alpha = nn.Parameter(torch.ones(n_head, 1, ctx_len))
        self.time_beta = nn.Parameter(torch.ones(n_head, ctx_len, 1))
        self.time_gamma = nn.Parameter(torch.ones(ctx_len, 1))
        self.key = nn.Linear(n_embd, n_attn)
        self.value = nn.Linear(n_embd, n_attn)
        self.receptance = nn.Linear(n_embd, n_attn)
        self.output = nn.Linear(n_attn, n_embd)

    def forward(self, x, last_x, kva, sum_k, n):
        """x [B,m,C]: the inputs at positions n..n+m-1. kva [B,T,n_attn] holds positions < n; the
        new ones are written into it in place (it is the new state's own copy). Returns the output
        and the new sum_k."""
        B, m, _ = x.shape
        T, H = self.time_w.shape[1], self.n_head
        pos = torch.arange(n, n + m, device=x.device)
        s = _half_shift(x, last_x)
        k = torch.exp(torch.clamp(linear(self.key, s), min=-60, max=30))
        v = linear(self.value, s)
        r = linear(self.receptance, s)

        alpha = self.time_alpha.float()[:, 0, pos].repeat_interleave(k.size(-1) // H, dim=0)  # [n_attn, m]
        kva[:, n: n + m] = k * v * alpha.t()
        sum_k = sum_k.unsqueeze(1) + torch.cumsum(k, dim=1)  # [B, m, n_attn]

        # W[h,t,u] without the beta[t] factor, for the new t against every u <= t
        u = torch.arange(n + m, device=x.device)
        lag = T - 1 - (pos[:, None] - u[None, :])  # [m, n+m]; past T-1 where u > t
        w = self.time_w.float()[:, lag.clamp(max=T - 1)] * (lag <= T - 1)  # causal: u <= t
        kv = kva[:, : n + m].view(B, n + m, H, -1)
        wkv = torch.einsum("htu,buhc->bthc", w, kv) * self.time_beta.float()[:, pos, 0].t()[None, :, :, None]
        wkv = wkv.reshape(B, m, -1)

        out = linear(self.output, torch.sigmoid(r) * wkv / sum_k) * self.time_gamma.float()[pos]
        return out, sum_k[:, -1]


class ChannelMix(nn.Module):
    def __init__(self, n_embd, n_ffn):
        super().__init__()
        hidden = 5 * n_ffn // 2
        self.key = nn.Linear(n_embd, hidden)
        self.value = nn.Linear(n_embd, hidden)
        self.weight = nn.Linear(hidden, n_embd)
        self.receptance = nn.Linear(n_embd, n_embd)

    def forward(self, x, last_x):
        s = _half_shift(x, last_x)
        kv = F.mish(linear(self.key, s)) * linear(self.value, s)
        return torch.sigmoid(linear(self.receptance, s)) * linear(self.weight, kv)


class Block(nn.Module):
    def __init__(self, n_embd, n_attn, n_ffn, n_head, ctx_len):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = TimeMix(n_embd, n_attn, n_head, ctx_len)
        self.mlp = ChannelMix(n_embd, n_ffn)


class AIWriterV1(nn.Module):
    family = "aiwriter-v1"

    def __init__(self, vocab_size, n_embd, n_layer, n_head, ctx_len, n_attn=None, n_ffn=None):
        super().__init__()
        n_attn, n_ffn = n_attn or n_embd, n_ffn or n_embd
        self.vocab_size, self.ctx_len = vocab_size, ctx_len
        self.n_embd, self.n_layer, self.n_attn = n_embd, n_layer, n_attn
        self.keep = ctx_len // 2  # ids kept when the window overflows (ctx_len - 1: the original)
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.blocks = nn.ModuleList(Block(n_embd, n_attn, n_ffn, n_head, ctx_len) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.time_out = nn.Parameter(torch.ones(1, ctx_len, 1))
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.head_q = nn.Linear(n_embd, HEAD_QK)
        self.head_k = nn.Linear(n_embd, HEAD_QK)

    def exact_window(self, exact: bool = True):
        """The original behaviour (every char past a full window re-reads the last T ids) or the
        default slide (keep T//2 ids, then grow incrementally)."""
        self.keep = self.ctx_len - 1 if exact else self.ctx_len // 2

    @classmethod
    def from_weights(cls, w):
        need = ["tok_emb.weight", "blocks.0.attn.time_w", "blocks.0.attn.key.weight", "blocks.0.mlp.key.weight",
                "head.weight", "head_q.weight"]
        missing = [k for k in need if k not in w]
        if missing:
            raise AIWriterError("AI-Writer v1 模型缺少权重：" + ", ".join(missing),
                                "AI-Writer v1 model is missing weights: " + ", ".join(missing))
        V, C = w["tok_emb.weight"].shape
        H, T = w["blocks.0.attn.time_w"].shape
        L = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
        n_attn = w["blocks.0.attn.key.weight"].shape[0]
        n_ffn = w["blocks.0.mlp.key.weight"].shape[0] * 2 // 5
        net = cls(V, C, L, H, T, n_attn, n_ffn)
        expected = net.state_dict()
        missing = [k for k in expected if k not in w]
        if missing:
            raise AIWriterError("AI-Writer v1 模型缺少权重：" + ", ".join(missing[:12]),
                                "AI-Writer v1 model is missing weights: " + ", ".join(missing[:12]))
        try:
            net.load_state_dict({k: w[k] for k in expected})
        except RuntimeError as e:
            raise AIWriterError("AI-Writer v1 模型的权重形状不一致", f"AI-Writer v1 weights have inconsistent shapes: {str(e)[:300]}")
        return net

    def new_state(self, batch: int = 1):
        B, L, T, dev = batch, self.n_layer, self.ctx_len, self.head.weight.device
        z = lambda *shape: torch.zeros(*shape, device=dev)
        return {
            "ids": torch.zeros(B, T, dtype=torch.long, device=dev),
            "len": torch.zeros(B, dtype=torch.long, device=dev),
            "kva": z(B, L, T, self.n_attn), "sum_k": z(B, L, self.n_attn),
            "x1": z(B, L, self.n_embd), "x2": z(B, L, self.n_embd),
            "hk": z(B, T, HEAD_QK),
        }

    def forward(self, ids, state, all_logits=False):
        B = ids.size(0)
        lens = state["len"].tolist()
        if len(set(lens)) > 1:  # streams at different positions: run them one by one
            parts = [self.forward(ids[b: b + 1], {k: v[b: b + 1] for k, v in state.items()}, all_logits)
                     for b in range(B)]
            return torch.cat([p[0] for p in parts]), {k: torch.cat([p[1][k] for p in parts]) for k in state}
        n, T = lens[0], self.ctx_len

        if not all_logits and n + ids.size(1) > T:
            # The state is a function of the window's ids alone: jump to the window the slides
            # would end with and read it in one go, skipping windows nobody asks logits of.
            m = self._window_len_after(n, ids.size(1))
            window = torch.cat([state["ids"][:, :n], ids], dim=1)[:, -m:]
            return self._extend(window, self.new_state(B), "last")

        outs = []
        while ids.size(1):
            if n == T:  # full: slide
                _, state = self._extend(state["ids"][:, T - self.keep:], self.new_state(B), None)
                n = self.keep
            take = min(T - n, ids.size(1))
            logits, state = self._extend(ids[:, :take], state, "all" if all_logits else "last")
            outs.append(logits)
            ids, n = ids[:, take:], n + take
        return (torch.cat(outs, dim=1) if all_logits else outs[-1]), state

    def _window_len_after(self, n, m):
        T = self.ctx_len
        while m:
            if n == T:
                n = self.keep
            take = min(T - n, m)
            n, m = n + take, m - take
        return n

    def _extend(self, ids, state, logits_at):
        """Append ids [B,m] to a window of n (same for every stream) with n + m <= T. Returns
        logits ("all": [B,m,V], "last": [B,V], None: nothing) and the new state."""
        B, m = ids.shape
        n = int(state["len"][0])
        pos = torch.arange(n, n + m, device=ids.device)
        kva = state["kva"].clone()  # the new state's cache; each layer appends its positions
        sum_k, x1, x2 = [], [], []
        x = self.tok_emb(ids).float()
        for i, block in enumerate(self.blocks):
            h = layer_norm(block.ln1, x)
            out, sk = block.attn(h, state["x1"][:, i], kva[:, i], state["sum_k"][:, i], n)
            x = x + out
            x1.append(h[:, -1]); sum_k.append(sk)
            h = layer_norm(block.ln2, x)
            x = x + block.mlp(h, state["x2"][:, i])
            x2.append(h[:, -1])
        x = layer_norm(self.ln_f, x)

        hk = state["hk"].clone()
        hk[:, n: n + m] = linear(self.head_k, x)
        win_ids = state["ids"].clone()
        win_ids[:, n: n + m] = ids
        new = {"ids": win_ids, "len": state["len"] + m, "kva": kva, "sum_k": torch.stack(sum_k, 1),
               "x1": torch.stack(x1, 1), "x2": torch.stack(x2, 1), "hk": hk}
        if logits_at is None:
            return None, new

        if logits_at == "last":
            x, pos = x[:, -1:], pos[-1:]
        logits = linear(self.head, x * self.time_out.float()[0, pos])
        # copy head: position t adds q_t . k_u / 256 to the logit of id_u, for every u <= t
        c = linear(self.head_q, x) @ hk[:, : n + m].transpose(1, 2) / HEAD_QK  # [B, t, n+m]
        c = c.masked_fill(torch.arange(n + m, device=x.device)[None, None, :] > pos[None, :, None], 0)
        logits = logits.scatter_add(2, win_ids[:, None, : n + m].expand_as(c), c)
        return (logits if logits_at == "all" else logits[:, -1]), new
