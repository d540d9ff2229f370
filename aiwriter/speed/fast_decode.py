"""A lean one-token step for RWKV-4 and RWKV-7: the same math as the families' forward, with the
per-call Python work taken out (module calls, attribute look-ups, dict building, [B, 1, C] shapes,
constants such as exp(time_decay) and 1 - mix recomputed every step).

On CPU a 12-layer step spends a few milliseconds in that Python work; with int8 or bf16 weights,
whose matmuls are fast, that is a large share of a token. The lean step computes every float
with the same operations in the same order as the family's forward, so its results equal the
reference path bit for bit (the tests check it), whatever the weight format (nn.Linear,
Int8Linear, PackedBF16Linear: each is called as the family calls it).

The same step is what the ONNX export traces (speed/onnx_export.py: the int4 mode's decoding
graph), so its shapes are chosen for a small graph as well: at the RWKV-7 1.5B shape the step
has ~1,930 nodes after onnxruntime's optimizer where the family's forward gave ~3,130, and the
int4 decode got ~6 % faster (AVX2 EPYC, quiet, interleaved A/B).

`FastDecoder(net)` sits beside a module (engine.Model keeps one): a call with one id per stream
takes the lean step; everything else (prefill, all_logits) goes to the family's own forward. The
step holds references to the module's layers and tensors plus a few constants derived from them,
and rebuilds itself when those parameters change or a layer is swapped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from aiwriter.models.rwkv4 import wkv4_step
from aiwriter.models.rwkv_common import ffn_scale


def _caller(layer):
    """layer(x) without nn.Module.__call__'s hooks machinery; input cast to the weight dtype and
    output to float32 as rwkv_common.lin does."""
    fwd = layer.forward
    dtype = layer.weight.dtype
    if dtype == torch.float32:
        return lambda x: fwd(x).float()
    return lambda x: fwd(x.to(dtype)).float()


def _ln(m):
    return (m.normalized_shape, m.weight, m.bias, m.eps)


def rwkv4_step(net):
    """Build step(ids [B, 1], state) -> (logits [B, V], new state) for an RWKV4 module."""
    emb = net.emb.weight
    ln0 = _ln(net.blocks[0].ln0)
    layers = []
    for i, b in enumerate(net.blocks):
        a, f = b.att, b.ffn
        layers.append((
            _ln(b.ln1), _ln(b.ln2),
            a.time_mix_k, 1 - a.time_mix_k, a.time_mix_v, 1 - a.time_mix_v, a.time_mix_r, 1 - a.time_mix_r,
            a.time_decay.float().exp(), a.time_first.float(),
            _caller(a.key), _caller(a.value), _caller(a.receptance), _caller(a.output),
            f.time_mix_k, 1 - f.time_mix_k, f.time_mix_r, 1 - f.time_mix_r,
            _caller(f.key), _caller(f.receptance), _caller(f.value), ffn_scale(i, f.value.weight.dtype),
        ))
    ln_out, head = _ln(net.ln_out), _caller(net.head)

    def step(ids, state):
        # Shapes stay [B, 1, C] as in the family's forward: the same kernels, the same bits. Slices
        # and cat (not index + unsqueeze and stack) keep the ONNX export of this step small.
        x = F.layer_norm(F.embedding(ids, emb).float(), *ln0)
        sx, sa, sb, sp, sf = state["att_x"], state["att_a"], state["att_b"], state["att_p"], state["ffn_x"]
        ax, aa, bb, pp, fx = [], [], [], [], []
        for i, (l1, l2, mk, omk, mv, omv, mr, omr, w, u, Wk, Wv, Wr, Wo, fk, ofk, fr, ofr, Fk, Fr, Fv, s) in enumerate(layers):
            h = F.layer_norm(x, *l1)
            prev = sx[:, i:i + 1]
            k = Wk(h * mk + prev * omk)
            v = Wv(h * mv + prev * omv)
            r = torch.sigmoid(Wr(h * mr + prev * omr))
            y, a1, b1, p1 = wkv4_step(w, u, k[:, 0], v[:, 0], sa[:, i], sb[:, i], sp[:, i])
            x = x + Wo(r * y.unsqueeze(1))
            ax.append(h), aa.append(a1), bb.append(b1), pp.append(p1)
            h = F.layer_norm(x, *l2)
            prev = sf[:, i:i + 1]
            k = torch.relu(Fk(h * fk + prev * ofk)) ** 2
            r = torch.sigmoid(Fr(h * fr + prev * ofr))
            x = x + (r * Fv(k * s) / s if s != 1.0 else r * Fv(k))
            fx.append(h)
        logits = head(F.layer_norm(x[:, 0], *ln_out))
        return logits, {"att_x": torch.cat(ax, 1), "att_a": torch.stack(aa, 1), "att_b": torch.stack(bb, 1),
                        "att_p": torch.stack(pp, 1), "ffn_x": torch.cat(fx, 1)}

    return step


def rwkv7_step(net):
    """Build step(ids [B, 1], state) -> (logits [B, V], new state) for an RWKV7 module."""
    from aiwriter.models.rwkv7 import DECAY_SCALE, head_norm, wkv7_step

    emb = net.emb.weight
    ln0 = _ln(net.blocks[0].ln0)
    H, N, C = net.n_head, net.head_size, net.n_embd
    layers = []
    for i, b in enumerate(net.blocks):
        a, f = b.att, b.ffn
        mix = torch.cat([a.x_r, a.x_w, a.x_k, a.x_v, a.x_a, a.x_g], 1)  # [1, 6, C]
        v_mix = (a.v0, a.v1, a.v2) if i > 0 else None
        layers.append((
            _ln(b.ln1), _ln(b.ln2), mix, a.w0, a.w1, a.w2, a.a0, a.a1, a.a2, v_mix, a.g1, a.g2, a.k_k, a.k_a, a.r_k,
            a.receptance.forward, a.key.forward, a.value.forward, a.output.forward, a.ln_x.weight, a.ln_x.bias,
            f.x_k, f.key.forward, f.value.forward,
        ))
    ln_out, head = _ln(net.ln_out), net.head.forward

    def col(t):  # a vector of the state's products: [B, 1, C] -> [B, 1, H, N, 1]
        return t.float().view(-1, 1, H, N, 1)

    def row(t):  # -> [B, 1, H, 1, N]
        return t.float().view(-1, 1, H, 1, N)

    def step(ids, state):
        # Mirrors RWKV7.forward and TimeMix.forward for T = 1: the same values, in shapes that
        # export to few ONNX nodes (the int4 and ONNX modes run this step's graph): -1 for the
        # batch (no per-view shape arithmetic), [B, 1, ...] kept (slices and cat, not index,
        # squeeze and stack), the state's vectors as columns [..., N, 1] or rows [..., 1, N].
        x = F.layer_norm(F.embedding(ids, emb), *ln0)
        sx, S_all, sf = state["att_x"], state["wkv"], state["ffn_x"]
        att_x, wkv, ffn_x = [], [], []
        v_first = None
        for i, (l1, l2, mix, w0, w1, w2, a0, a1, a2, v_mix, g1, g2, k_k, k_a, r_k, Wr, Wk, Wv, Wo, lxw, lxb,
                fmix, Fk, Fv) in enumerate(layers):
            h = F.layer_norm(x, *l1)
            prev = sx[:, i:i + 1].to(h.dtype)
            xr, xw, xk, xv, xa, xg = torch.lerp(h, prev, mix).split(1, 1)
            r, k, v = Wr(xr), Wk(xk), Wv(xv)
            logw = -DECAY_SCALE * torch.sigmoid((w0 + torch.tanh(xw @ w1) @ w2).float())
            iclr = torch.sigmoid(a0 + (xa @ a1) @ a2)
            g = torch.sigmoid(xg @ g1) @ g2
            kk = (k * k_k).view(-1, 1, H, N)
            kk = kk / kk.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # F.normalize without its expand_as
            k = k * (1 + (iclr - 1) * k_a)
            if v_mix is None:
                v_first = v
            else:
                v0, v1, v2 = v_mix
                v = torch.lerp(v, v_first, torch.sigmoid(v0 + (xv @ v1) @ v2))
            y, S = wkv7_step(S_all[:, i:i + 1].float(), col(r), row(logw).exp(), row(k), col(v), col(-kk),
                             row(kk * iclr.view(-1, 1, H, N)))
            y = head_norm(y.view(-1, 1, H, N).to(h.dtype), N, lxw.view(H, N), lxb.view(H, N)).view(-1, 1, C)
            bonus = (r.view(-1, 1, H, N) * k.view(-1, 1, H, N) * r_k).sum(-1, keepdim=True) * v.view(-1, 1, H, N)
            x = x + Wo((y + bonus.view(-1, 1, C)) * g)
            att_x.append(h.float()), wkv.append(S)
            h = F.layer_norm(x, *l2)
            prev = sf[:, i:i + 1].to(h.dtype)
            x = x + Fv(torch.relu(Fk(torch.lerp(h, prev, fmix))) ** 2)
            ffn_x.append(h.float())
        logits = head(F.layer_norm(x[:, 0], *ln_out)).float()
        return logits, {"att_x": torch.cat(att_x, 1), "wkv": torch.cat(wkv, 1), "ffn_x": torch.cat(ffn_x, 1)}

    return step


BUILDERS = {"rwkv4": rwkv4_step, "rwkv7": rwkv7_step}


def _derived_from(net):
    """The parameters whose values the step caches in derived constants (1 - mix, exp(decay))."""
    names = ("time_mix_", "time_decay", "time_first", ".x_")
    return [p for n, p in net.named_parameters() if any(k in n for k in names)]


class FastDecoder:
    """The lean one-token step of a module, kept beside it (never installed on it: the module holds
    no reference back, so dropping the model frees it at once, without a garbage-collector pass).

    `decoder(ids, state)` with ids [B, 1] returns what `net(ids, state)` returns, bit for bit. The
    step is rebuilt on the next call whenever a cached parameter changed (an optimizer step,
    load_state_dict, a device move) or a layer was swapped (quantize_int8, pack_bf16); with
    autograd on, the family's own forward runs."""

    def __init__(self, net):
        if not self.supports(net):
            raise ValueError(f"no lean step for {getattr(net, 'family', type(net).__name__)}")
        self.net = net
        self._build = BUILDERS[net.family]
        self._step, self._sig, self._watched, self._layers = None, None, [], []

    @staticmethod
    def supports(net) -> bool:
        return isinstance(net, torch.nn.Module) and getattr(net, "family", None) in BUILDERS

    def _signature(self):
        if any(parent._modules.get(name) is not child for parent, name, child in self._layers):
            return None  # a layer was swapped
        return tuple((p._version, p.data_ptr()) for p in self._watched)

    def _make(self) -> None:
        net = self.net
        self._layers = [(parent, name, child) for parent in net.modules() for name, child in parent._modules.items()]
        self._watched = _derived_from(net)
        with torch.no_grad():  # the derived constants are not part of any graph
            self._step = self._build(net)
        self._sig = self._signature()

    def __call__(self, ids, state):
        if ids.shape[1] != 1 or torch.is_grad_enabled():
            return self.net(ids, state)
        if self._step is None or self._signature() != self._sig:
            self._make()
        return self._step(ids, state)
