"""RWKV-7 "Goose" (x070), for inference and training.

Parameter names are those of BlinkDL's trainers, so `state_dict()` of this module is an official
checkpoint (the `rwkv` package loads it) and an official checkpoint loads with `from_weights`.

Per layer, the time mix keeps a matrix state S [H, N, N] (rows: value index, columns: key index) and
runs a generalised delta rule for each position t:

    S_t = S_{t-1} (diag(w_t) + a_t b_t^T) + v_t k_t^T,      y_t = S_t r_t

with a = -kk, b = kk * iclr (kk the normalised key, iclr the "in-context learning rate") and the
decay w = exp(-0.606531 * sigmoid(.)) in (exp(-0.6065), 1). T = 1 is one step of this; T > 1 runs
it in chunks (see `wkv7_chunked`): matrix ops inside a chunk, one small matmul between chunks.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from aiwriter.errors import AIWriterError
from aiwriter.models.rwkv_common import LN_X_EPS, check_keys, count_layers, require, reshaped, shifted

# LN_X_EPS: the GroupNorm eps of ln_x, the same as v5/v6 (the rwkv package uses it for every head size)
DECAY_SCALE = 0.606531  # exp(-0.5): log-decay = -DECAY_SCALE * sigmoid(.), as the official kernels clamp it
MAX_CHUNK = 64          # 1/decay over a chunk must stay far from float32 overflow: exp(0.6065 * 64) ~ 7e16


def lora_dims(n_embd: int) -> dict[str, int]:
    """Low-rank widths as the official RWKV-7 trainer picks them: round(f * sqrt(C) / 32) * 32, at
    least 32, with f = 2.5 (decay w), 2.5 (iclr a), 1.7 (value residual v), 5 (gate g).
    C=768 gives 64, 64, 32, 128, the widths of the released 0.1B models."""
    def width(f):
        return max(32, int(round(f * n_embd ** 0.5 / 32) * 32))
    return {"w": width(2.5), "a": width(2.5), "v": width(1.7), "g": width(5.0)}


# ----------------------------------------------------------------------------------------------
# The WKV recurrence. Inputs [B, T, H, N] float32, state [B, H, N, N] float32; returns y [B, T, H, N]
# and the new state. Pure functions of their arguments, differentiable, nothing mutated.

def wkv7_step(S, r, w, k, v, a, b):
    """One position: S [..., N, N]; r, v, a as columns [..., N, 1], w (the decay itself, not its
    log), k, b as rows [..., 1, N]; returns the column y = S r and the new S. The two rank-1
    updates (S a) b^T + v k^T are one rank-2 product: a pass over the state fewer, which is what
    a one-token step spends its time on besides the weights."""
    S = S * w + torch.cat([S @ a, v], -1) @ torch.cat([b, k], -2)
    return S @ r, S


def wkv7_scan(S, r, logw, k, v, a, b):
    """Reference form: one position at a time."""
    ys, w = [], logw.exp()
    for t in range(r.shape[1]):
        rt, vt, at = (x[:, t].unsqueeze(-1) for x in (r, v, a))  # columns
        wt, kt, bt = (x[:, t].unsqueeze(-2) for x in (w, k, b))  # rows
        y, S = wkv7_step(S, rt, wt, kt, vt, at, bt)
        ys.append(y.squeeze(-1))
    return torch.stack(ys, 1), S


def head_norm(y, N: int, weight, bias):
    """ln_x: each head's N channels normalized on their own (GroupNorm with H groups, as a
    layer norm over the last axis of y [..., H, N], which exports without shape arithmetic),
    then the per-channel affine (weight, bias [H, N])."""
    return F.layer_norm(y, (N,), eps=LN_X_EPS) * weight + bias


def wkv7_chunked(S, r, logw, k, v, a, b, chunk: int = 32):
    """Same numbers as wkv7_scan, in chunks of `chunk` positions (at most 64).

    Inside a chunk, with G_t = prod_{s<=t} w_s (the decay since the chunk start) and
    u_t = S_{t-1} a_t, the state is S_t = (S_0 + sum_{s<=t} u_s (b_s/G_s)^T + v_s (k_s/G_s)^T) G_t.
    So the u's solve a unit lower-triangular system, and y and the chunk's end state are matmuls:
    y = Q S_0^T + Y0, S_end = S_0 M + D. Every product of a 1/G_s with a G_t has s <= t (a decay
    <= 1) or is masked out, and chunk <= 64 keeps 1/G below exp(0.6065 * 64) ~ 7e16, finite in fp32.
    All chunks are prepared at once; only S_end = S_0 M + D runs chunk after chunk.
    """
    B, T, H, N = r.shape
    L = max(1, min(chunk, MAX_CHUNK, T))
    nc = -(-T // L)
    pad = nc * L - T

    def split(x):  # [B, T, H, N] -> [B, H, nc, L, N]; padding is an identity step (w=1, k=v=a=b=r=0)
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
        return x.view(B, nc, L, H, N).permute(0, 3, 1, 2, 4)

    r, logw, k, v, a, b = map(split, (r, logw, k, v, a, b))
    lg = logw.cumsum(-2)                          # log G_t
    inv = (-lg).exp()                             # 1 / G_t
    g_end = lg[..., -1:, :].exp()                 # G at the chunk end
    a_hat = a * (lg - logw).exp()                 # G_{t-1} a_t
    r_hat = r * lg.exp()                          # G_t r_t
    b_til, k_til = b * inv, k * inv               # b_s / G_s, k_s / G_s

    # One matmul for the four [L, L] interaction blocks (row t, column s):
    # [[a_hat.b_til, a_hat.k_til] (s < t), [r_hat.b_til, r_hat.k_til] (s <= t)]
    ones = torch.ones(L, L, dtype=torch.bool, device=r.device)
    mask = torch.cat([ones.tril(-1), ones.tril()]).repeat(1, 2)
    P = torch.where(mask, torch.cat([a_hat, r_hat], -2) @ torch.cat([b_til, k_til], -2).mT, r.new_zeros(()))
    m_ab, m_ak, c_rb, c_rk = P[..., :L, :L], P[..., :L, L:], P[..., L:, :L], P[..., L:, L:]

    # u = A_inv (a_hat S_0^T + m_ak v) with A_inv = (I - m_ab)^-1
    eye = torch.eye(L, dtype=r.dtype, device=r.device)
    A_inv = torch.linalg.solve_triangular(eye - m_ab, eye.expand_as(m_ab), upper=False, unitriangular=True)
    E = c_rb @ A_inv
    q = r_hat + E @ a_hat                         # y = q S_0^T + y0
    y0 = (E @ m_ak + c_rk) @ v
    Fb = A_inv.mT @ (b_til * g_end)               # S_end = S_0 M + D
    M = torch.diag_embed(g_end.squeeze(-2)) + a_hat.mT @ Fb
    D = v.mT @ (m_ak.mT @ Fb + k_til * g_end)

    starts = []
    for c in range(nc):
        starts.append(S)
        S = S @ M[:, :, c] + D[:, :, c]
    S0 = torch.stack(starts, 2)                   # [B, H, nc, N, N] the state entering each chunk
    y = q @ S0.mT + y0                            # [B, H, nc, L, N]
    y = y.permute(0, 2, 3, 1, 4).reshape(B, nc * L, H, N)[:, :T]
    return y, S


# ----------------------------------------------------------------------------------------------

class TimeMix(nn.Module):
    def __init__(self, layer_id: int, n_embd: int, head_size: int, dims: dict[str, int]):
        super().__init__()
        C, N = n_embd, head_size
        H = C // N
        self.layer_id, self.n_head, self.head_size = layer_id, H, N

        def vec():
            return nn.Parameter(torch.empty(1, 1, C))

        def mat(i, o):
            return nn.Parameter(torch.empty(i, o))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.w1, self.w2 = vec(), mat(C, dims["w"]), mat(dims["w"], C)
        self.a0, self.a1, self.a2 = vec(), mat(C, dims["a"]), mat(dims["a"], C)
        if layer_id > 0:  # value residual: layers > 0 mix in the first layer's v
            self.v0, self.v1, self.v2 = vec(), mat(C, dims["v"]), mat(dims["v"], C)
        self.g1, self.g2 = mat(C, dims["g"]), mat(dims["g"], C)
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance = nn.Linear(C, C, bias=False)
        self.key = nn.Linear(C, C, bias=False)
        self.value = nn.Linear(C, C, bias=False)
        self.output = nn.Linear(C, C, bias=False)
        self.ln_x = nn.GroupNorm(H, C, eps=LN_X_EPS)

    def forward(self, x, x_prev, S, v_first, mode: str, chunk: int):
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        prev = shifted(x, x_prev)  # token shift
        mix = torch.stack([self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g])
        xr, xw, xk, xv, xa, xg = torch.lerp(x, prev, mix).unbind(0)  # x + (prev - x) * x_*, in one op

        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        logw = -DECAY_SCALE * torch.sigmoid((self.w0 + torch.tanh(xw @ self.w1) @ self.w2).float())
        iclr = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)
        g = torch.sigmoid(xg @ self.g1) @ self.g2
        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1)
        k = k * (1 + (iclr - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = torch.lerp(v, v_first.to(v.dtype), torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2).to(v.dtype))

        def heads(t):
            return t.float().view(B, T, H, N)

        args = (S, heads(r), logw.view(B, T, H, N), heads(k), heads(v), -kk.float(), (kk * iclr.view(B, T, H, N)).float())
        # The recurrence stays float32 even under bf16 autocast: bf16 matmuls here lose the state's
        # precision (and ran ~8x slower on CPU).
        with torch.autocast(device_type=x.device.type, enabled=False):
            if T == 1 or mode == "scan":
                y, S = wkv7_scan(*args)
            else:
                y, S = wkv7_chunked(*args, chunk=chunk)

        # In the weights' dtype, then in the activations' dtype.
        w = self.ln_x.weight
        y = head_norm(y.to(w.dtype), N, w.view(H, N), self.ln_x.bias.view(H, N)).to(x.dtype).view(B, T, C)
        bonus = (r.view(B, T, H, N) * k.view(B, T, H, N) * self.r_k).sum(-1, keepdim=True) * v.view(B, T, H, N)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), x[:, -1], S, v_first


class ChannelMix(nn.Module):
    def __init__(self, n_embd: int, dim_ffn: int):
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, n_embd))
        self.key = nn.Linear(n_embd, dim_ffn, bias=False)
        self.value = nn.Linear(dim_ffn, n_embd, bias=False)

    def forward(self, x, x_prev):
        prev = shifted(x, x_prev)
        k = torch.relu(self.key(torch.lerp(x, prev, self.x_k))) ** 2
        return self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, layer_id: int, n_embd: int, head_size: int, dim_ffn: int, dims: dict[str, int]):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(n_embd)
        self.att = TimeMix(layer_id, n_embd, head_size, dims)
        self.ffn = ChannelMix(n_embd, dim_ffn)


class RWKV7(nn.Module):
    family = "rwkv7"
    ctx_len = None

    def __init__(self, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                 dim_ffn: int | None = None, dims: dict[str, int] | None = None):
        super().__init__()
        if n_embd % head_size:
            raise ValueError(f"n_embd {n_embd} is not a multiple of head_size {head_size}")
        self.vocab_size, self.n_layer, self.n_embd, self.head_size = vocab_size, n_layer, n_embd, head_size
        self.n_head = n_embd // head_size
        self.dim_ffn = dim_ffn or 4 * n_embd
        self.dims = dict(dims or lora_dims(n_embd))
        self.wkv_mode = "chunked"  # "chunked" or "scan" (the plain loop, for checks and benchmarks)
        self.chunk_len = 32  # fastest on CPU of 16/32/64 (training shapes)
        # _weight skips nn.Embedding's random init, which on the meta device pulls in a slow
        # one-time torch import (about 0.7 s of a cold load_model).
        self.emb = nn.Embedding(vocab_size, n_embd, _weight=torch.empty(vocab_size, n_embd))
        self.blocks = nn.ModuleList(Block(i, n_embd, head_size, self.dim_ffn, self.dims) for i in range(n_layer))
        self.ln_out = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        # a state-tuned start (blocks.N.att.time_state merged into the model file), [L, H, N, N]
        # float32 as stored (rows: value index); not a parameter, so state_dict() stays official
        self.time_state: torch.Tensor | None = None

    # -- contract ------------------------------------------------------------------------------

    def new_state(self, batch: int = 1) -> dict[str, torch.Tensor]:
        dev = self.emb.weight.device
        L, C, H, N = self.n_layer, self.n_embd, self.n_head, self.head_size
        wkv = torch.zeros(batch, L, H, N, N, device=dev)
        if self.time_state is not None:
            wkv[:] = self.time_state.to(dev)
        return {
            "att_x": torch.zeros(batch, L, C, device=dev),
            "wkv": wkv,
            "ffn_x": torch.zeros(batch, L, C, device=dev),
        }

    def forward(self, ids: torch.Tensor, state: dict, all_logits: bool = False):
        x = self.blocks[0].ln0(self.emb(ids))
        att_x, wkv, ffn_x = [], [], []
        v_first = None
        for i, blk in enumerate(self.blocks):
            dx, sx, S, v_first = blk.att(blk.ln1(x), state["att_x"][:, i], state["wkv"][:, i].float(),
                                         v_first, self.wkv_mode, self.chunk_len)
            x = x + dx
            dx, fx = blk.ffn(blk.ln2(x), state["ffn_x"][:, i])
            x = x + dx
            att_x.append(sx.float())
            wkv.append(S)
            ffn_x.append(fx.float())
        if not all_logits:
            x = x[:, -1]
        logits = self.head(self.ln_out(x)).float()
        return logits, {"att_x": torch.stack(att_x, 1), "wkv": torch.stack(wkv, 1), "ffn_x": torch.stack(ffn_x, 1)}

    # -- checkpoints ---------------------------------------------------------------------------

    @classmethod
    def from_weights(cls, w: dict[str, torch.Tensor]) -> "RWKV7":
        ts = sorted((int(n.split(".")[1]), n) for n in w if n.startswith("blocks.") and n.endswith(".att.time_state"))
        if ts:
            start = [w[n] for _, n in ts]
            w = {n: t for n, t in w.items() if not n.endswith(".att.time_state")}
        cfg = _config_from_weights(w)
        with torch.device("meta"):
            model = cls(**cfg)
        dtype = w["emb.weight"].dtype if w["emb.weight"].is_floating_point() else torch.float32
        own = model.state_dict()
        # v0/v1/v2 of layer 0 are unused (no value residual there), as in the rwkv package
        check_keys(own, w, "RWKV-7", ignored=frozenset({"blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2"}))
        tensors = {n: reshaped(n, w[n], p, "RWKV-7").to(dtype=dtype, copy=True) for n, p in own.items()}
        model.load_state_dict(tensors, assign=True)
        if ts:
            want = (model.n_head, model.head_size, model.head_size)
            if [i for i, _ in ts] != list(range(model.n_layer)) or any(tuple(t.shape) != want for t in start):
                raise AIWriterError(
                    f"RWKV-7 模型文件里的 time_state 与模型不符：应为 {model.n_layer} 层 × {list(want)}",
                    f"RWKV-7 checkpoint: its time_state does not fit the model ({model.n_layer} layers x {list(want)})")
            model.time_state = torch.stack([t.float() for t in start])
        return model

    @classmethod
    def random_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                       seed: int = 0) -> dict[str, torch.Tensor]:
        """Random weights in the official layout, scaled so activations stay O(1) and every part of
        the layer matters (for tests and benchmarks; not a training init)."""
        return dict(cls.iter_random_weights(vocab_size, n_layer, n_embd, head_size, seed))

    @classmethod
    def iter_random_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64, seed: int = 0):
        """random_weights one (name, float32 tensor) at a time, so a 7B shape can be written
        without holding it all."""
        with torch.device("meta"):
            model = cls(vocab_size, n_layer, n_embd, head_size)
        gen = torch.Generator().manual_seed(seed)
        C = n_embd

        def rand(*shape):
            return torch.rand(*shape, generator=gen)

        def randn(*shape):
            return torch.randn(*shape, generator=gen)

        for n, p in model.state_dict().items():
            s, leaf = p.shape, n.rsplit(".", 1)[-1]
            if n.endswith(("ln0.weight", "ln1.weight", "ln2.weight", "ln_out.weight", "ln_x.weight")):
                t = 1 + 0.2 * randn(*s)
            elif leaf == "bias":
                t = 0.1 * randn(*s)
            elif leaf.startswith("x_"):
                t = rand(*s)
            elif leaf == "w0":
                t = -3 + 6 * rand(*s)                 # decays over the whole allowed range
            elif leaf in ("a0", "v0"):
                t = randn(*s)
            elif leaf in ("w1", "a1", "v1", "g1"):
                t = randn(*s) / math.sqrt(C)
            elif leaf in ("w2", "a2", "v2", "g2"):
                t = randn(*s) / math.sqrt(s[0])
            elif leaf == "k_k":
                t = 0.5 + rand(*s)
            elif leaf == "k_a":
                t = 0.5 + rand(*s)
            elif leaf == "r_k":
                t = 0.5 * randn(*s)
            elif n == "emb.weight":
                t = randn(*s)
            else:                                      # Linear weights [out, in]
                t = randn(*s) / math.sqrt(s[1])
            yield n, t.float()

    @classmethod
    def init_weights(cls, vocab_size: int, n_layer: int, n_embd: int, head_size: int = 64,
                     seed: int = 0, dim_ffn: int | None = None) -> dict[str, torch.Tensor]:
        """A training initialisation after RWKV-7's published scheme (see init_params). dim_ffn
        defaults to 4 * n_embd, as in the released RWKV-7 models (the newest official trainer
        defaults to 3.5 * n_embd rounded down to a multiple of 32; both load anywhere)."""
        model = cls(vocab_size, n_layer, n_embd, head_size, dim_ffn=dim_ffn)
        init_params(model, seed)
        return {n: t.detach().clone() for n, t in model.state_dict().items()}


def _config_from_weights(w: dict[str, torch.Tensor]) -> dict:
    require(w, ["emb.weight", "blocks.0.att.r_k", "blocks.0.att.w1", "blocks.0.att.a1", "blocks.0.att.g1",
                "blocks.0.ffn.key.weight"], "RWKV-7")
    try:
        vocab, C = w["emb.weight"].shape
        H, N = w["blocks.0.att.r_k"].shape
        n_layer = count_layers(w)
        dims = {"w": w["blocks.0.att.w1"].shape[-1], "a": w["blocks.0.att.a1"].shape[-1],
                "g": w["blocks.0.att.g1"].shape[-1],
                "v": w["blocks.1.att.v1"].shape[-1] if "blocks.1.att.v1" in w else lora_dims(C)["v"]}
        dim_ffn = w["blocks.0.ffn.key.weight"].shape[0]
    except (ValueError, IndexError) as e:
        raise AIWriterError(f"RWKV-7 模型文件的权重形状不对（{e}）", f"RWKV-7 checkpoint has malformed shapes ({e})")
    if H * N != C:
        raise AIWriterError(f"RWKV-7 模型：头数×头大小 {H}×{N} 不等于宽度 {C}",
                            f"RWKV-7 checkpoint: heads x head size {H}x{N} != n_embd {C}")
    return dict(vocab_size=vocab, n_layer=n_layer, n_embd=C, head_size=N, dim_ffn=dim_ffn,
                dims={k: int(v) for k, v in dims.items()})


@torch.no_grad()
def init_params(model: RWKV7, seed: int = 0) -> RWKV7:
    """RWKV-7's training init, written from its published description:
    - token-shift mixes x_* ramp over channels, stronger in early layers (1 - (i/C)^(p * (1 - l/L)));
    - decay w0: per channel from -6 (slow) to 0 (fast), bent by depth, plus a per-head zigzag;
      iclr a0, value-residual v0, k_k, k_a, r_k: the published constants with small ramps;
    - LoRA down-projections (w1/a1/v1/g1) zero, up-projections orthogonal with gain 0.1;
    - receptance / value / ffn.key orthogonal, att.key orthogonal x0.1, att.output and
      ffn.value zero (every block starts as the identity), ln_x weight ((l+1)/L)^0.7;
    - emb uniform(+-1e-4), head orthogonal with gain 0.5*sqrt(V/C) (0.5 when V <= C)."""
    gen = torch.Generator().manual_seed(seed)
    C, L, N, V = model.n_embd, model.n_layer, model.head_size, model.vocab_size

    def ortho_(p, gain):
        p.copy_(nn.init.orthogonal_(torch.empty(p.shape), gain=gain, generator=gen))

    n = torch.arange(C, dtype=torch.float64)
    ramp = (n / C).view(1, 1, C)
    linear = (n / (C - 1) - 0.5).view(1, 1, C)
    zig = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)
    zig = (zig * zig.abs()).view(1, 1, C)

    for i, blk in enumerate(model.blocks):
        depth = i / max(L - 1, 1)        # 0 .. 1
        shallow = 1.0 - i / L            # 1 .. ~0
        att = blk.att
        for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            getattr(att, name).copy_(1.0 - ramp ** (p * shallow))
        decay = -6 + 6 * (n / (C - 1)) ** (1 + depth ** 0.3)
        att.w0.copy_(decay.view(1, 1, C) + 0.5 + 2.5 * zig)
        att.a0.copy_(-0.19 + 0.3 * zig + 0.4 * linear)
        att.k_k.copy_(0.71 - 0.1 * linear)
        att.k_a.fill_(1.02)
        att.r_k.fill_(-0.04)
        lora = [("w1", "w2"), ("a1", "a2"), ("g1", "g2")]
        if i > 0:
            att.v0.copy_(0.73 - 0.4 * linear)
            lora.append(("v1", "v2"))
        for down, up in lora:
            getattr(att, down).zero_()
            ortho_(getattr(att, up), 0.1)
        ortho_(att.receptance.weight, 1.0)
        ortho_(att.key.weight, 0.1)
        ortho_(att.value.weight, 1.0)
        att.output.weight.zero_()
        att.ln_x.weight.fill_(((i + 1) / L) ** 0.7)
        att.ln_x.bias.zero_()
        blk.ffn.x_k.copy_(1.0 - ramp ** (shallow ** 4))
        ortho_(blk.ffn.key.weight, 1.0)
        blk.ffn.value.weight.zero_()
        for ln in (blk.ln1, blk.ln2, getattr(blk, "ln0", None)):
            if ln is not None:
                ln.weight.fill_(1.0)
                ln.bias.zero_()
    model.ln_out.weight.fill_(1.0)
    model.ln_out.bias.zero_()
    model.emb.weight.copy_(torch.rand(V, C, generator=gen) * 2e-4 - 1e-4)
    ortho_(model.head.weight, 0.5 * math.sqrt(V / C) if V > C else 0.5)
    return model
