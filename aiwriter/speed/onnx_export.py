"""One RNN step of a model as an ONNX graph, for onnxruntime
(CPU, or the GPUs of any vendor through its execution providers: DirectML on Windows, ROCm /
MIGraphX on AMD, OpenVINO on Intel, CoreML on Apple; see speed/onnx_runtime.py).

Graph: inputs `ids` [B] int64 and one float32 tensor per state entry (the family's state dict, in
its order, each [B, ...]); outputs `logits` [B, V] float32 and `new_<name>` for each state entry.
B is dynamic. The metadata holds what a runner needs besides the graph: the family, the state's
names and its initial value for one stream (JSON + base64), so a runner needs no PyTorch model.
"""
from __future__ import annotations

import base64
import contextlib
import json
import zlib
from pathlib import Path

import torch

from aiwriter.errors import AIWriterError

# Families whose step is an RNN step (the windowed F1/F2 have a growing window, no fixed graph).
SUPPORTED = ("rwkv4", "rwkv5", "rwkv6", "rwkv7")
OPSET = 18
META_PREFIX = "aiwriter."
PROTO_LIMIT = int(1.8 * 2**30)  # bytes of tensors above which files keep them outside (protobuf's 2 GB)


class _Step(torch.nn.Module):
    """ids [B] and the state's tensors in, logits and the new state's tensors out. A class made
    per export would be a reference cycle, and the lean step it closed over, holding the model's
    float tensors, would outlive the export until a garbage collection (700 MB at 1.5B)."""

    def __init__(self, net, one, names):
        super().__init__()
        self.net, self.names = net, names
        self.lean = None if one is net else one  # a plain function, not a second registration of net

    def forward(self, ids, *state):
        logits, new = (self.lean or self.net)(ids.unsqueeze(1), dict(zip(self.names, state)))
        return (logits, *[new[n] for n in self.names])


def _step_module(net):
    """The module traced: one step of `net`, through the lean one-token step where the family has
    one (speed/fast_decode.py: the same values as the family's forward, in shapes that export to
    a third fewer nodes, and onnxruntime's per-node cost falls with them)."""
    from aiwriter.speed.fast_decode import BUILDERS

    names = list(net.new_state(1).keys())
    with torch.no_grad():  # the lean step's derived constants are not part of any graph
        one = BUILDERS[net.family](net) if net.family in BUILDERS else net
    return _Step(net, one, names).eval(), names


@contextlib.contextmanager
def _no_shape_inference(skip: bool):
    """Trace without the exporter's ONNX shape inference (half of the time of tracing a 1.5B
    model's step; onnxruntime infers the shapes itself when it loads the graph). torch.onnx.export
    has no argument for it: its private _export has."""
    if not skip:
        yield
        return
    import functools

    try:
        from torch.onnx._internal.torchscript_exporter import utils
        inner = utils._export
    except (ImportError, AttributeError):  # another torch: trace as usual
        yield
        return
    utils._export = functools.partial(inner, onnx_shape_inference=False)
    try:
        yield
    finally:
        utils._export = inner


@contextlib.contextmanager
def _plain_lerp():
    """Export torch.lerp as a + w * (b - a): three nodes, where the exporter's own form (two
    formulas and a Where, for rounding at w near 1) costs the step some 35 extra nodes. The
    values differ from torch.lerp's in the last bits only."""

    def lerp(g, a, b, w):
        return g.op("Add", a, g.op("Mul", w, g.op("Sub", b, a)))

    torch.onnx.register_custom_op_symbolic("aten::lerp", lerp, OPSET)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::lerp", OPSET)


def _encode_state(state: dict) -> str:
    """{name: [shape without batch, base64(zlib(float32 bytes))]} of a one-stream state."""
    out = {}
    for name, t in state.items():
        arr = t[0].detach().float().cpu().contiguous().numpy()
        out[name] = [list(arr.shape), base64.b64encode(zlib.compress(arr.tobytes(), 6)).decode("ascii")]
    return json.dumps(out)


def decode_state(text: str) -> dict:
    import numpy as np

    out = {}
    for name, (shape, data) in json.loads(text).items():
        out[name] = np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=np.float32).reshape(shape).copy()
    return out


def check_supported(net) -> None:
    if net.family not in SUPPORTED:
        raise AIWriterError(f"{net.family} 模型不能导出为 ONNX（支持：{', '.join(SUPPORTED)}）",
                            f"{net.family} models cannot be exported to ONNX (supported: {', '.join(SUPPORTED)})")


def trace_step(net, export_params: bool = True, target=None, fast: bool = False):
    """Trace one step of a family module with torch.onnx (into `target`, a path, or memory) and
    return (the ModelProto without external data loaded, the traced Step module, the state's
    names), the aiwriter metadata added. Without export_params the module's tensors stay graph
    inputs named as in the Step module (`net.` + the module's own names). fast: without the
    exporter's shape inference (the int4 step, whose shapes onnxruntime infers)."""
    import io
    import warnings

    import onnx

    step, names = _step_module(net)
    B = 2  # not 1, so the batch dim is traced as a variable, not specialised away
    init = net.new_state(B)
    ids = torch.zeros(B, dtype=torch.long)
    inputs = ["ids"] + names
    outputs = ["logits"] + [f"new_{n}" for n in names]
    axes = {n: {0: "batch"} for n in inputs + outputs}
    big = export_params and sum(p.numel() * p.element_size() for p in net.state_dict().values()) > PROTO_LIMIT
    sink = io.BytesIO() if target is None else str(target)
    with torch.no_grad(), warnings.catch_warnings(), _plain_lerp(), _no_shape_inference(fast):
        warnings.simplefilter("ignore")
        torch.onnx.export(step, (ids, *[init[n] for n in names]), sink, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                          external_data=big, export_params=export_params, do_constant_folding=export_params)
    model = onnx.load_from_string(sink.getvalue()) if target is None else onnx.load(str(target), load_external_data=False)
    meta = {"family": net.family, "vocab_size": str(net.vocab_size), "state_names": json.dumps(names),
            "initial_state": _encode_state(net.new_state(1)), "format": "1"}
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    return model, step, names


def export_onnx(net, out: Path, int8: bool = False) -> Path:
    """Write one step of a family module (as load_model builds it) to `out`. int8: the MatMul
    weights become int8 per output channel (onnxruntime's dynamic quantization: the activations
    are quantized per call, MatMulInteger accumulates in int32). (4-bit: speed.int4.write_step.)"""

    try:
        import onnx
    except ImportError:
        raise AIWriterError("导出 ONNX 需要 onnx 包：pip install onnx onnxruntime",
                            "exporting to ONNX needs the onnx package: pip install onnx onnxruntime")
    check_supported(net)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if any(p.dtype != torch.float32 for p in net.parameters()):
        net = net.float()
    model, _, _ = trace_step(net, target=out)
    onnx.save(model, str(out))
    if int8:
        import logging
        import os

        from onnxruntime.quantization import QuantType, quantize_dynamic

        big = sum(p.numel() * 4 for p in net.parameters()) > PROTO_LIMIT
        tmp = str(out.with_name(out.name + ".fp32-tmp"))
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # it suggests a pre-processing step we do not need
        try:
            # MatMul only: the embedding is a lookup (no bandwidth to save), and a quantized
            # Gather would dequantize the whole table every step
            os.replace(out, tmp)
            quantize_dynamic(tmp, str(out), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul"], use_external_data_format=big)
        finally:
            root.setLevel(level)
            if os.path.exists(tmp):
                os.remove(tmp)
    return out
