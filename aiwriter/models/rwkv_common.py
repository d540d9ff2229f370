"""What RWKV-4, RWKV-5 (x052) and RWKV-6 (x060) share: the model skeleton, loading an official
checkpoint, the dtype policy, and the chunked WKV form of the matrix-state versions (5 and 6).
RWKV-7 (its own skeleton and dtype policy) uses the token shift, the ln_x eps and the checks of a
checkpoint's keys and shapes from here.

Parameter names are those of BlinkDL's trainers (emb, blocks.N.ln0/ln1/ln2, blocks.N.att.*,
blocks.N.ffn.*, ln_out, head), so `state_dict()` of a model is an official checkpoint and an
official checkpoint loads with `from_weights` as it is stored on disk (no renaming, no transforms).

Dtype policy: the big matrices (nn.Linear, nn.Embedding) take whatever dtype the engine gives the
module; every other parameter (decays, token-shift mixes, norms, the small v6 LoRA matrices) stays
float32 through `.to()` / `.half()`, and so do the residual stream, the WKV math and the state.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from aiwriter.errors import AIWriterError

LN_X_EPS = 64e-5    # GroupNorm eps of ln_x in v5/v6: 1e-5 * head_size_divisor**2 with the divisor 8
FP16_RESCALE_EVERY = 6    # fp16 only: halve the FFN value input every 6 layers (as the rwkv package does)


def lin(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A matmul in the weight's dtype, result back in float32."""
    return layer(x.to(layer.weight.dtype)).float()


def shifted(x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """Token shift: x of the previous position, [B, T, C]; `last` [B, C] stands before t = 0."""
    return torch.cat([last.unsqueeze(1).to(x.dtype), x[:, :-1]], 1)


# Prefill plan per device: positions per chunk, and elements of the [B, chunks, n, n, width]
# intra-chunk tensors of one segment. The cost of those grows with n, the count of sequential
# steps between chunks shrinks with it. On CPU small in-cache segments win (measured: chunk 8 and
# 256K elements ran T=2000, C=512 about 3x faster than chunk 16 with 8M elements); on a GPU
# fewer, larger launches do.
PREFILL_PLAN = {"cpu": (8, 1 << 18), "cuda": (16, 1 << 24)}


def prefill_plan(device: torch.device) -> tuple[int, int]:
    return PREFILL_PLAN.get(device.type, PREFILL_PLAN["cuda"])


def segments(T: int, batch: int, width: int, device: torch.device, chunk: int | None = None):
    """Split T positions into segments of whole chunks (plus a last, shorter one) whose
    intra-chunk tensors stay within the device's budget.
    Yields (start, stop, n): positions start..stop-1 as (stop - start) / n chunks of n."""
    default_chunk, budget = prefill_plan(device)
    chunk = chunk or default_chunk
    group = max(1, budget // max(1, batch * chunk * chunk * width)) * chunk
    for s0 in range(0, T, group):
        s1 = min(T, s0 + group)
        full = s0 + (s1 - s0) // chunk * chunk
        if full > s0:
            yield s0, full, chunk
        if s1 > full:
            yield full, s1, s1 - full


def ffn_scale(layer_id: int, dtype: torch.dtype) -> float:
    """fp16 only: a power of two that keeps the FFN value matmul of deep layers inside the fp16
    range; it is undone in float32 right after, so the numbers do not change."""
    return 2.0 ** -(layer_id // FP16_RESCALE_EVERY) if dtype == torch.float16 else 1.0


# ----------------------------------------------------------------------------------------------
# WKV of RWKV-5/6 per head, state S [B, H, N, N] (rows: key index, columns: value index), float32:
#     y_t = r_t^T (S_t + diag(u) k_t v_t^T),      S_{t+1} = diag(w_t) S_t + k_t v_t^T
# with w_t = exp(logw_t) in (0, 1): constant over t in v5, data dependent in v6.

def wkv_step(S, r, k, v, logw, u):
    """One position. r, k, v, logw [B, H, N]; u [H, N]. Returns y [B, H, N] and the new state."""
    kv = k.unsqueeze(-1) * v.unsqueeze(-2)
    y = (r.unsqueeze(-2) @ (S + u.unsqueeze(-1) * kv)).squeeze(-2)
    return y, kv + logw.exp().unsqueeze(-1) * S


def wkv_chunked(S, r, k, v, logw, u, chunk: int | None = None):
    """T positions at once; same numbers as wkv_step in a loop.

    The positions are cut into chunks of n. Inside a chunk, with c_t = sum_{s<=t} logw_s
    (restarted at each chunk), the decay from position i to a later t is exp(c_{t-1} - c_i) <= 1,
    so no exponential overflows whatever the decays; the [n, n, N] table of them is the price.
    Every chunk is computed at once from its incoming state; only the states themselves pass
    from chunk to chunk, one multiply-add each.
    r, k, v, logw [B, T, H, N]; u [H, N]. Returns y [B, T, H, N] and the new state."""
    B, T, H, N = r.shape
    ys = []
    for s0, s1, n in segments(T, B, H * N, r.device, chunk):
        def split(x):  # [B, T, H, N] -> [B, H, chunks, n, N]
            return x[:, s0:s1].reshape(B, -1, n, H, N).permute(0, 3, 1, 2, 4)

        rc, kc, vc = split(r), split(k), split(v)
        # Cumulative log decays in float64: a span of weak decays after a strong one is the
        # difference of two large sums, whose float32 rounding (~1e-7 of the sums) would show.
        lw = split(logw).double()
        c = lw.cumsum(3)                    # inclusive
        c_ex = c - lw                       # exclusive: decay of the incoming state at t
        before = torch.ones(n, n, dtype=torch.bool, device=r.device).tril(-1)  # i < t
        gap = (c_ex.unsqueeze(4) - c.unsqueeze(3)).float().masked_fill(~before[..., None], -math.inf)
        att = (rc.unsqueeze(4) * kc.unsqueeze(3) * gap.exp()).sum(-1)         # [B, H, chunks, t, i]
        att = att + torch.diag_embed((rc * u[:, None, None] * kc).sum(-1))     # the bonus u at i = t
        y = att @ vc
        # chunk to chunk: S <- decay * S + kv, with decay and kv from each chunk alone
        decay = c[..., -1, :].float().exp().unsqueeze(-1)                    # [B, H, chunks, N, 1]
        kv = (kc * (c[..., -1:, :] - c).float().exp()).transpose(-1, -2) @ vc  # [B, H, chunks, N, N]
        starts = []
        for j in range(decay.shape[2]):
            starts.append(S)
            S = decay[:, :, j] * S + kv[:, :, j]
        y = y + (rc * c_ex.float().exp()) @ torch.stack(starts, 2)          # what the incoming state gives
        ys.append(y.permute(0, 2, 3, 1, 4).reshape(B, s1 - s0, H, N))
    return torch.cat(ys, 1), S


def heads_wkv(r, k, v, logw, u, S):
    """r, k, v, logw [B, T, H, N] float32; the step form for T = 1, chunks for T > 1."""
    if r.shape[1] == 1:
        y, S = wkv_step(S, r[:, 0], k[:, 0], v[:, 0], logw[:, 0], u)
        return y.unsqueeze(1), S
    return wkv_chunked(S, r, k, v, logw, u)


def initial_wkv(blocks, batch: int, n_head: int, head_size: int, device) -> torch.Tensor:
    """[B, L, H, N, N] zeros, or each layer's time_state (stored [H, value, key]) when present."""
    S = torch.zeros(batch, len(blocks), n_head, head_size, head_size, device=device)
    for i, block in enumerate(blocks):
        ts = getattr(block.att, "time_state", None)
        if ts is not None:
            S[:, i] = ts.float().transpose(-1, -2)
    return S


# ----------------------------------------------------------------------------------------------

class Block(nn.Module):
    """Pre-norm residual block; layer 0 also holds ln0, the norm applied to the embedding."""

    def __init__(self, layer_id: int, n_embd: int, att: nn.Module, ffn: nn.Module):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(n_embd)
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.att = att
        self.ffn = ffn

    def forward(self, x, st):
        dx, s_att = self.att(self.ln1(x), st)
        x = x + dx
        dx, s_ffn = self.ffn(self.ln2(x), st)
        return x + dx, s_att | s_ffn


class RWKVBase(nn.Module):
    """Embedding, blocks, head; the version's Block and state layout come from the subclass."""

    family = "rwkv"
    title = "RWKV"   # for messages
    ctx_len = None

    def forward(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        x = self.blocks[0].ln0(self.emb(ids).float())
        new = {name: [] for name in state}
        for i, block in enumerate(self.blocks):
            x, st = block(x, {name: s[:, i] for name, s in state.items()})
            for name, s in st.items():
                new[name].append(s)
        if not all_logits:
            x = x[:, -1]
        logits = lin(self.head, self.ln_out(x))
        return logits, {name: torch.stack(s, 1) for name, s in new.items()}

    def _apply(self, fn, recurse=True):
        # Keep the exact parameters float32 whatever dtype the module is cast to; a device move
        # still moves them (from the float32 copy held here, so nothing is rounded on the way).
        keep = [(m, name, p.data) for m, name, p in _exact_params(self)]
        super()._apply(fn, recurse)
        for m, name, data in keep:
            p = m._parameters[name]
            if p.dtype != torch.float32:
                p.data = data.to(device=p.device, dtype=torch.float32)
        return self

    @classmethod
    def from_weights(cls, w: dict[str, torch.Tensor]):
        try:
            cfg = cls.config_from_weights(w)
            with torch.device("meta"):
                model = cls(**cfg)
        except (ValueError, IndexError, TypeError) as e:   # shapes that make no model
            raise AIWriterError(f"{cls.title} 模型文件的权重形状不对（{e}）",
                                f"{cls.title} checkpoint has malformed shapes ({e})")
        load_official(model, w, cls.title)
        return model

    @classmethod
    def config_from_weights(cls, w: dict[str, torch.Tensor]) -> dict:
        raise NotImplementedError


class HeadsRWKV(RWKVBase):
    """RWKV-5 and RWKV-6: H heads of size N, an N x N state per head. The two differ only in
    their time-mix and channel-mix modules, which the subclass passes in."""

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, head_size: int,
                 dim_att: int | None, dim_ffn: int | None, time_mix, channel_mix):
        super().__init__()
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.dim_att = dim_att or n_embd
        self.dim_ffn = dim_ffn or int(n_embd * 3.5) // 32 * 32
        if self.dim_att % head_size:
            raise ValueError(f"dim_att {self.dim_att} is not a multiple of head_size {head_size}")
        self.head_size, self.n_head = head_size, self.dim_att // head_size
        self.emb = nn.Embedding(vocab_size, n_embd, _weight=torch.empty(vocab_size, n_embd))  # filled by from_weights
        self.blocks = nn.ModuleList(
            Block(i, n_embd, time_mix(self.dim_att, self.n_head), channel_mix(i, n_embd, self.dim_ffn))
            for i in range(n_layer))
        self.ln_out = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        dev = self.emb.weight.device
        L, C = self.n_layer, self.n_embd
        return {
            "att_x": torch.zeros(batch, L, C, device=dev),
            "att_kv": initial_wkv(self.blocks, batch, self.n_head, self.head_size, dev),
            "ffn_x": torch.zeros(batch, L, C, device=dev),
        }


def _exact_params(model: nn.Module):
    for m in model.modules():
        if not isinstance(m, (nn.Linear, nn.Embedding)):
            for name, p in m.named_parameters(recurse=False):
                yield m, name, p


def load_official(model: nn.Module, w: dict[str, torch.Tensor], title: str) -> None:
    """Fill a model built on the meta device from a checkpoint: names must match exactly, shapes
    up to squeezed/unsqueezed ones ([C] vs [1, 1, C]). Matrices keep the stored float dtype (the
    emb's); everything else becomes float32."""
    own = model.state_dict()
    check_keys(own, w, title)
    emb = w["emb.weight"]
    mat_dtype = emb.dtype if emb.dtype in (torch.float32, torch.float16, torch.bfloat16) else torch.float32
    matrices = {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    tensors = {}
    for n, p in own.items():
        t = reshaped(n, w[n], p, title)
        if not t.is_floating_point():
            raise AIWriterError(f"{title} 权重 {n} 不是浮点数（{t.dtype}）",
                                f"{title} weight {n} is not floating point ({t.dtype})")
        dtype = mat_dtype if n in matrices else torch.float32
        # no copy when the dtype already fits: a big checkpoint is not held twice while loading
        tensors[n] = t.to(dtype=dtype)
    model.load_state_dict(tensors, assign=True)


def check_keys(own: dict, w: dict[str, torch.Tensor], title: str, ignored: frozenset = frozenset()) -> None:
    """The checkpoint's names must be exactly the model's (`ignored` ones may be there too)."""
    missing = [n for n in own if n not in w]
    extra = [n for n in w if n not in own and n not in ignored]
    if missing or extra:
        what = "; ".join(filter(None, [
            f"missing {', '.join(missing[:8])}" if missing else "",
            f"unexpected {', '.join(extra[:8])}" if extra else "",
        ]))
        raise AIWriterError(f"{title} 模型文件的权重不完整或含有未知的键：{what}",
                            f"{title} checkpoint has missing or unknown keys: {what}")


def reshaped(name: str, t: torch.Tensor, p: torch.Tensor, title: str) -> torch.Tensor:
    """A stored tensor in the parameter's shape: the same count of numbers, squeezed or
    unsqueezed ([C] vs [1, 1, C]) as converters store them; anything else is an error."""
    if t.numel() != p.numel():
        raise AIWriterError(f"{title} 权重 {name} 的形状不对：{tuple(t.shape)}，应为 {tuple(p.shape)}",
                            f"{title} weight {name} has shape {tuple(t.shape)}, expected {tuple(p.shape)}")
    return t.detach().reshape(p.shape)


def count_layers(w: dict[str, torch.Tensor]) -> int:
    ids = {int(n.split(".")[1]) for n in w if n.startswith("blocks.") and n.split(".")[1].isdigit()}
    return max(ids) + 1 if ids else 0


def require(w: dict[str, torch.Tensor], names: list[str], title: str) -> None:
    lacking = [n for n in names if n not in w]
    if lacking:
        raise AIWriterError(f"{title} 模型文件缺少权重：{', '.join(lacking)}",
                            f"{title} checkpoint lacks weights: {', '.join(lacking)}")


def random_linear(gen: torch.Generator, out_dim: int, in_dim: int, gain: float = 1.0) -> torch.Tensor:
    return torch.randn(out_dim, in_dim, generator=gen) * (gain / math.sqrt(in_dim))


def heads_config(w: dict[str, torch.Tensor], title: str) -> dict:
    """Shapes of a v5/v6 checkpoint: heads from time_faaaa [H, N], widths from the matrices."""
    require(w, ["emb.weight", "blocks.0.ln0.weight", "blocks.0.att.key.weight", "blocks.0.att.time_faaaa",
                "blocks.0.ffn.key.weight"], title)
    vocab, C = w["emb.weight"].shape
    dim_att = w["blocks.0.att.key.weight"].shape[0]
    faaaa = w["blocks.0.att.time_faaaa"]
    if faaaa.dim() < 2 or faaaa.numel() != dim_att:
        raise AIWriterError(
            f"{title}：time_faaaa 的形状 {tuple(faaaa.shape)} 不是 [头数, 头大小]（不支持 RWKV-5.0/5.1 预览版模型）",
            f"{title}: time_faaaa has shape {tuple(faaaa.shape)}, not [heads, head size] "
            "(RWKV-5.0/5.1 preview models are not supported)")
    cfg = dict(vocab_size=vocab, n_layer=count_layers(w), n_embd=C, head_size=dim_att // faaaa.shape[0],
               dim_att=dim_att, dim_ffn=w["blocks.0.ffn.key.weight"].shape[0],
               time_state="blocks.0.att.time_state" in w)
    return cfg


def decay_ramp(gen: torch.Generator, C: int, layer_id: int, n_layer: int) -> torch.Tensor:
    """time_decay per channel from -6 (slow) to 1.5 (fast: w = e^-4.5 per step), bent by depth."""
    ramp = torch.arange(C) / max(C - 1, 1)
    return -6 + 7.5 * ramp ** (0.7 + 1.3 * layer_id / max(n_layer - 1, 1)) + 0.3 * torch.randn(C, generator=gen)


def random_common(gen: torch.Generator, vocab_size: int, n_layer: int, C: int) -> dict[str, torch.Tensor]:
    """emb, the block norms, ln_out and head: the part every RWKV version shares."""
    w = {"emb.weight": torch.randn(vocab_size, C, generator=gen)}
    for i in range(n_layer):
        for ln in (["ln0", "ln1", "ln2"] if i == 0 else ["ln1", "ln2"]):
            w[f"blocks.{i}.{ln}.weight"] = 1 + 0.2 * torch.randn(C, generator=gen)
            w[f"blocks.{i}.{ln}.bias"] = 0.1 * torch.randn(C, generator=gen)
    w["ln_out.weight"] = 1 + 0.2 * torch.randn(C, generator=gen)
    w["ln_out.bias"] = 0.1 * torch.randn(C, generator=gen)
    w["head.weight"] = random_linear(gen, vocab_size, C)
    return w
