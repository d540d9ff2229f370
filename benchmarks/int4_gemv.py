"""One-row (M=1) products with 4-bit (and, for reference, 8-bit and float32) weights on this CPU,
against the streaming read bandwidth measured in the same run: which kernel decodes a big model
nearest to the memory's limit?

Each candidate multiplies one activation row by R copies of a matrix of the given shape (R chosen so
that the copies together are far above the last-level cache: a decode step reads every matrix once,
from memory), five passes (two when one takes over a second); GB/s = the bytes of the weights it reads (packed values + scales) /
the time of the best pass (and of the median pass). The weights are random bytes: speed only.

    PYTHONPATH=. python benchmarks/int4_gemv.py [--shapes 2048x2048,8192x2048] [--only ort,torch4]
        [--threads 2] [--json out.json]

Shapes are N x K (out x in) of the RWKV-7 1.5B step: 2048x2048 (attention), 8192x2048 (FFN key),
2048x8192 (FFN value), 65536x2048 (the head).

Candidates:
  ort b{32,64,128,256} a{1,4}  onnxruntime MatMulNBits (symmetric 4-bit, block size, accuracy level;
                               level 4 = int8 activations and products), prepacked, threads not spinning
  ort ... spin                 the same with spinning threads (onnxruntime's default)
  ort ... 1 thread / 2N threads  the same with one thread / twice --threads (the int4 mode's choice for big models)
  torch4 g{32,128} fp32|bf16   torch.ops.aten._weight_int4pack_mm_for_cpu (torch's CPU int4 kernel)
  torch4dyn g128               torch.ops.aten._dyn_quant_matmul_4bit (KleidiAI on Arm; elsewhere its fallback)
  torch8 fp32                  torch.ops.aten._weight_int8pack_mm (int8 weights, per-channel scales)
  fbgemm8                      torch.ops.quantized.linear_dynamic (fbgemm int8, the int8 mode's kernel)
  fp32                         torch.nn.functional.linear (MKL sgemv)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from aiwriter.bench_big import bandwidth_gbs

TARGET_BYTES = 320 * 2**20  # the R copies together: 10x the 32 MB L3 of the EPYC this was written on
PASSES = 5


def copies(nbytes: int) -> int:
    return max(1, -(-TARGET_BYTES // nbytes))


def timed(run, nbytes_pass: int) -> dict:
    t = time.perf_counter()
    run()  # warm-up (first touch, prepacking, thread start)
    times = []
    for _ in range(PASSES if time.perf_counter() - t < 1.0 else 2):  # slow kernels: two passes
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"best_gbs": nbytes_pass / min(times) / 1e9, "median_gbs": nbytes_pass / statistics.median(times) / 1e9,
            "us_per_matrix_best": None}


# ---------------------------------------------------------------------------------------------
# candidates: each returns (a callable doing one pass over R copies, the bytes one pass reads, R)

def ort_nbits(N: int, K: int, block: int, level: int, threads: int, spin: bool):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nb = -(-K // block)
    nbytes = N * nb * block // 2 + N * nb * 4
    R = copies(nbytes)
    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    for r in range(R):
        inits.append(numpy_helper.from_array(rng.integers(0, 256, (N, nb, block // 2), dtype=np.uint8), f"B{r}"))
        inits.append(numpy_helper.from_array((rng.random(N * nb, dtype=np.float32) * 0.01 + 0.001), f"S{r}"))
        nodes.append(helper.make_node("MatMulNBits", ["A", f"B{r}", f"S{r}"], [f"Y{r}"], domain="com.microsoft",
                                      K=K, N=N, bits=4, block_size=block, accuracy_level=level))
        outs.append(helper.make_tensor_value_info(f"Y{r}", TensorProto.FLOAT, [1, N]))
    graph = helper.make_graph(nodes, "gemv", [helper.make_tensor_value_info("A", TensorProto.FLOAT, [1, K])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model, graph, inits
    feeds = {"A": rng.standard_normal((1, K), dtype=np.float32)}
    return (lambda: sess.run(None, feeds)), R * nbytes, R


def torch_int4(N: int, K: int, group: int, dtype: torch.dtype):
    ng = K // group
    nbytes = N * K // 2 + ng * N * 2 * torch.empty(0, dtype=dtype).element_size()
    R = copies(nbytes)
    ws = [(torch.ops.aten._convert_weight_to_int4pack_for_cpu(torch.randint(0, 16, (N, K), dtype=torch.int32), 2),
           (torch.rand(ng, N, 2) * 0.01).to(dtype)) for _ in range(R)]
    x = torch.randn(1, K).to(dtype)
    op = torch.ops.aten._weight_int4pack_mm_for_cpu
    return (lambda: [op(x, w, group, sz) for w, sz in ws]), R * nbytes, R


def torch_dyn4(N: int, K: int, group: int):
    ng = K // group
    pk = torch.ops.aten._dyn_quant_pack_4bit_weight(torch.randint(0, 256, (N, K // 2), dtype=torch.uint8),
                                                    torch.rand(N, ng) * 0.01, None, group, K, N)
    nbytes = pk.numel() * pk.element_size()
    R = copies(nbytes)
    ws = [pk] + [torch.ops.aten._dyn_quant_pack_4bit_weight(torch.randint(0, 256, (N, K // 2), dtype=torch.uint8),
                                                            torch.rand(N, ng) * 0.01, None, group, K, N)
                 for _ in range(R - 1)]
    x = torch.randn(1, K)
    op = torch.ops.aten._dyn_quant_matmul_4bit
    return (lambda: [op(x, w, group, K, N) for w in ws]), R * nbytes, R


def torch_int8(N: int, K: int):
    nbytes = N * K + N * 4
    R = copies(nbytes)
    ws = [(torch.randint(-127, 128, (N, K), dtype=torch.int8), torch.rand(N) * 0.01) for _ in range(R)]
    x = torch.randn(1, K)
    op = torch.ops.aten._weight_int8pack_mm
    return (lambda: [op(x, w, s) for w, s in ws]), R * nbytes, R


def fbgemm_int8(N: int, K: int):
    nbytes = N * K + N * 4
    R = copies(nbytes)
    ws = []
    for _ in range(R):
        q = torch._make_per_channel_quantized_tensor(torch.randint(-127, 128, (N, K), dtype=torch.int8),
                                                     torch.rand(N, dtype=torch.double) * 0.01,
                                                     torch.zeros(N, dtype=torch.long), 0)
        ws.append(torch.ops.quantized.linear_prepack(q, None))
    x = torch.randn(1, K)
    op = torch.ops.quantized.linear_dynamic
    return (lambda: [op(x, w, True) for w in ws]), R * nbytes, R


def fp32(N: int, K: int):
    nbytes = N * K * 4
    R = copies(nbytes)
    ws = [torch.randn(N, K) for _ in range(R)]
    x = torch.randn(1, K)
    return (lambda: [F.linear(x, w) for w in ws]), R * nbytes, R


def candidates(only: set[str] | None, threads: int):
    out = []
    for block in (32, 64, 128, 256):
        out.append((f"ort b{block} a4", "ort", lambda N, K, b=block: ort_nbits(N, K, b, 4, threads, False)))
    for block in (32, 128):
        out.append((f"ort b{block} a1", "ort", lambda N, K, b=block: ort_nbits(N, K, b, 1, threads, False)))
    out.append(("ort b128 a4 spin", "ort", lambda N, K: ort_nbits(N, K, 128, 4, threads, True)))
    out.append(("ort b128 a4 1 thread", "ort", lambda N, K: ort_nbits(N, K, 128, 4, 1, False)))
    out.append((f"ort b128 a4 {2 * threads} threads", "ort", lambda N, K: ort_nbits(N, K, 128, 4, 2 * threads, False)))
    for group in (32, 128):
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            out.append((f"torch4 g{group} {name}", "torch4", lambda N, K, g=group, d=dt: torch_int4(N, K, g, d)))
    out.append(("torch4dyn g128", "torch4dyn", lambda N, K: torch_dyn4(N, K, 128)))
    out.append(("torch8 fp32", "torch8", torch_int8))
    out.append(("fbgemm8", "fbgemm8", fbgemm_int8))
    out.append(("fp32 mkl", "fp32", fp32))
    return [c for c in out if only is None or c[1] in only]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="2048x2048,8192x2048,2048x8192,65536x2048")
    ap.add_argument("--only", default=None, help="kinds: ort,torch4,torch4dyn,torch8,fbgemm8,fp32")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    only = set(args.only.split(",")) if args.only else None
    res = {"load_start": os.getloadavg(), "threads": args.threads, "torch": torch.__version__,
           "bandwidth_start_gbs": bandwidth_gbs(), "rows": []}
    print(f"load {res['load_start'][0]:.2f}; bandwidth {res['bandwidth_start_gbs']:.1f} GB/s; threads {args.threads}",
          flush=True)
    for N, K in shapes:
        for name, _, make in candidates(only, args.threads):
            try:
                run, nbytes, R = make(N, K)
                r = timed(run, nbytes)
                r["us_per_matrix_best"] = nbytes / R / (r["best_gbs"] * 1e9) * 1e6
                del run
            except Exception as e:  # an op missing on this build / CPU
                r = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
                R = 0
            row = {"shape": f"{N}x{K}", "candidate": name, "copies": R, **r}
            res["rows"].append(row)
            if "error" in r:
                print(f"{N}x{K:<6} {name:24s} error {r['error']}", flush=True)
            else:
                print(f"{N}x{K:<6} {name:24s} best {r['best_gbs']:6.2f} GB/s  median {r['median_gbs']:6.2f} GB/s  "
                      f"{r['us_per_matrix_best']:8.0f} us/matrix  (x{R})", flush=True)
    res["bandwidth_end_gbs"] = bandwidth_gbs()
    res["load_end"] = os.getloadavg()
    print(f"load {res['load_end'][0]:.2f}; bandwidth {res['bandwidth_end_gbs']:.1f} GB/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
