"""`aiwriter bench`: decode, prefill, batched and first-char speed, side by side with BlinkDL's `rwkv`
package (and, for F1, the original AI-Writer's full-window recompute), on random checkpoints of the
released shapes. Numbers do not depend on the weights' values, so random weights measure real speed.

Every (model, engine) case runs in its own Python process (so the peak memory is that case's own)
unless --quick, which runs tiny shapes in this process, for tests. Measured per case:

  decode     tokens/s of one stream, one token per step (F1: over one whole slide cycle from a
             full 512-id window, i.e. at full context)
  prefill    tokens/s reading a 512-token prompt from an empty state (one call)
  agg B      tokens/s summed over B streams stepped together (the rwkv package has no batched
             RNN step: its B streams run one after another)
  ttfc       seconds from a 2,000-token opening to the first sampled token (prefill + one pick)
  peak RSS   the case process's peak resident memory, MB (includes Python + torch, ~the base)
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import aiwriter

FULL = {
    "rwkv4": dict(vocab=8849, layers=12, embd=768, head=64),
    "rwkv7": dict(vocab=65536, layers=12, embd=768, head=64),
    "f1": dict(vocab=8849, layers=12, embd=768, head=12, ctx=512),
    "prompt": 512, "opening": 2000, "streams": [1, 8, 64], "min_time": 1.5,
}
QUICK = {
    "rwkv4": dict(vocab=200, layers=2, embd=64, head=32),
    "rwkv7": dict(vocab=300, layers=2, embd=64, head=32),
    "f1": dict(vocab=100, layers=2, embd=64, head=4, ctx=32),
    "prompt": 24, "opening": 80, "streams": [1, 8, 64], "min_time": 0.0,
}
ENGINES = {
    "rwkv4": ["aiwriter fp32", "aiwriter bf16", "aiwriter int8", "aiwriter int4", "aiwriter onnx", "aiwriter onnx-int8",
              "rwkv fp32", "rwkv bf16"],
    "rwkv7": ["aiwriter fp32", "aiwriter bf16", "aiwriter int8", "aiwriter int4", "aiwriter onnx", "aiwriter onnx-int8",
              "rwkv fp32", "rwkv bf16"],
    "f1": ["aiwriter fp32", "aiwriter int8", "original fp32"],
}
YARDSTICK = {"rwkv4": "rwkv fp32", "rwkv7": "rwkv fp32", "f1": "original fp32"}
# Decode speed targets: (family, engine, minimum decode ratio to the yardstick). "fastest": the
# fastest load_model mode (fp32, bf16, int8); "fastest+onnx": the same counting the ONNX engines.
TARGETS = [("rwkv4", "fastest", 5.6), ("rwkv4", "fastest+onnx", 5.6), ("rwkv7", "fastest", 3.4),
           ("rwkv7", "fastest+onnx", 3.4), ("rwkv4", "aiwriter fp32", 2.0), ("rwkv7", "aiwriter fp32", 2.0),
           ("f1", "aiwriter fp32", 20.0)]
DECODE_WINDOWS = 3
LOAD_MODEL_MODES = ("aiwriter fp32", "aiwriter bf16", "aiwriter int8", "aiwriter int4")


@dataclass
class BenchSettings:
    """`aiwriter bench`'s settings (aiwriter/commands/bench.py fills them from its flags)."""
    json: bool = False                   # print the JSON report instead of the table
    quick: bool = False                  # tiny shapes, in this process (tests)
    families: str = "rwkv4,rwkv7,f1"     # comma separated
    engines: str | None = None           # comma separated; None: all
    threads: int = 0                     # torch threads; 0: torch's default
    out: str | None = None               # also save the JSON report here
    model: str | None = None             # a real-size model file: bench_big instead of the shapes
    dtypes: str = "int4"                 # with model: comma separated
    prompt: int = 0                      # with model: opening length in tokens


# ----------------------------------------------------------------------------------------------
# Engines: a common surface for every side of the comparison.
#   new(B) -> state for B streams;  step(ids [B], state) -> (logits [B, V], state)
#   prefill(ids, state=None) -> (logits [V], state) for one stream

class OursEngine:
    def __init__(self, model, batched: bool = True):
        import torch

        self.torch, self.model, self.batched = torch, model, batched

    def new(self, B):
        return self.model.new_state(B)

    def step(self, ids, state):
        return self.model.forward_batch(ids, state)

    def prefill(self, ids, state=None):
        return self.model.forward(ids, state)


class RwkvPackageEngine:
    """The `rwkv` package: one stream per call, so B streams step one after another."""

    batched = False

    def __init__(self, ref):
        import torch

        self.torch, self.ref = torch, ref

    def new(self, B):
        return [None] * B

    def step(self, ids, states):
        out, new = [], []
        for t, s in zip(ids, states):
            logits, s = self.ref.forward([int(t)], s)
            out.append(logits.float())
            new.append(s)
        return self.torch.stack(out), new

    def prefill(self, ids, state=None):
        logits, state = self.ref.forward(list(ids), state)
        return logits.float(), [state]


def _private_rwkv(version: int, jit: bool):
    """rwkv.model as a private module copy: it picks version and JIT from the environment at
    import time (as tests/rwkv_helpers.py does). The env stays set: it reads it at call time too."""
    import rwkv

    os.environ.update({"RWKV_V7_ON": "1" if version == 7 else "0", "RWKV_JIT_ON": "1" if jit else "0",
                       "RWKV_CUDA_ON": "0"})
    spec = importlib.util.spec_from_file_location(f"_bench_rwkv_model_v{version}", Path(rwkv.__file__).parent / "model.py")
    module = importlib.util.module_from_spec(spec)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner
        spec.loader.exec_module(module)
    return module


def make_engine(case: dict):
    import contextlib
    import io

    family, engine, path = case["family"], case["engine"], Path(case["path"])
    side, mode = engine.split(" ")
    if family == "f1":
        import torch

        from aiwriter.engine import Model
        from aiwriter.models.aiwriter_v1 import AIWriterV1
        from aiwriter.tokenizer import CharTokenizer

        net = AIWriterV1.from_weights(torch.load(path, weights_only=True)).eval()
        if mode == "int8":
            from aiwriter.speed.quant import quantize_int8

            quantize_int8(net)
        if side == "original":
            net.exact_window(True)
        tok = CharTokenizer({i: chr(0x4E00 + i) for i in range(net.vocab_size)})
        return OursEngine(Model(net=net, tokenizer=tok, device=torch.device("cpu"), dtype=mode))
    if side == "aiwriter" and mode.startswith("onnx"):
        from aiwriter.engine import load_model

        return OursEngine(load_model(path, dtype="int8" if mode == "onnx-int8" else "fp32", backend="onnx"))
    if side == "aiwriter":  # int4 caches its exported graph: with the scratch checkpoints, not the user's
        from aiwriter.engine import load_model

        with mock.patch.dict(os.environ, AIWRITER_CACHE=str(case["tmp"])):
            return OursEngine(load_model(path, dtype=mode))
    module = _private_rwkv(7 if family == "rwkv7" else 4, jit=not case["quick"])
    with contextlib.redirect_stdout(io.StringIO()):
        if family == "rwkv7":
            ref = module.RWKV_x070(str(path)[:-4], f"cpu {mode}")
        else:
            ref = module.RWKV(str(path), f"cpu {mode}", verbose=False)
    return RwkvPackageEngine(ref)


# ----------------------------------------------------------------------------------------------

def _timed(fn, min_time: float, max_iter: int = 1000, warmup: int = 2):
    """Seconds per call of fn(): after warm-up calls (the rwkv package's TorchScript profiles its
    first calls), repeat until min_time has passed. A first call as long as min_time is the
    measurement itself (the slow engines would otherwise take minutes)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if min_time and first >= min_time:
        return first
    for _ in range(warmup - 1):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= max_iter:
            return dt / n


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux keeps ru_maxrss across exec (a case process
    would report its parent's peak), so /proc's VmHWM, which is per address space, comes first."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def measure(case: dict) -> dict:
    import torch

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    cfg, min_time = case["cfg"], case["min_time"]
    rss_base = _peak_rss_mb()
    t_load = time.perf_counter()
    eng = make_engine(case)
    load_s = time.perf_counter() - t_load
    V = cfg["vocab"]
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, V, (case["prompt"],), generator=g).tolist()
    opening = torch.randint(0, V, (case["opening"],), generator=g).tolist()
    out = {"family": case["family"], "engine": case["engine"], "threads": torch.get_num_threads(), "load_s": load_s,
           "omp_wait_policy": aiwriter.OMP_WAIT_POLICY}

    with torch.inference_mode():
        # prefill: a prompt from an empty state, one call
        out["prefill_tok_s"] = len(prompt) / _timed(lambda: eng.prefill(prompt), min_time, 20)
        # time to first token: opening -> logits -> the first pick
        def first():
            logits, _ = eng.prefill(opening)
            return int(logits.argmax())
        out["ttfc_s"] = _timed(first, min_time, 20)

        # single-stream decode; F1 from a full window over one whole slide cycle (full context)
        if case["family"] == "f1":
            T = cfg["ctx"]
            _, full = eng.prefill(prompt[:T] + opening[: max(0, T - len(prompt))])
            steps = T // 2

            def cycle():
                s, t = full, torch.tensor([1])
                for _ in range(steps):
                    logits, s = eng.step(t, s)
                    t = logits.argmax(-1)
            decode_steps = steps if case["engine"] != "original fp32" else 0
            if decode_steps:
                out["decode_tok_s"] = steps / _timed(cycle, min(min_time, 0.5), 1)  # a cycle: hundreds of steps
            else:  # the original costs a whole window per char: a few chars tell its rate
                state = [full]

                def one():
                    logits, state[0] = eng.step(torch.tensor([1]), state[0])
                out["decode_tok_s"] = 1 / _timed(one, min_time, 8)
            start = eng.prefill(prompt[: T // 2])[1]  # streams mid-window: incremental steps
        else:
            start = None
            state = [eng.new(1)]

            def one():
                logits, state[0] = eng.step(torch.tensor([1]), state[0])
            # best of three windows: on a shared host a burst of other work can halve one window;
            # every engine, yardsticks included, gets the same treatment
            out["decode_tok_s"] = 1 / min(_timed(one, min_time) for _ in range(DECODE_WINDOWS))

        # aggregate over B streams stepped together
        agg = {}
        for B in case["streams"]:
            if case["engine"] == "original fp32" and B > 8 and not case["quick"]:
                agg[str(B)] = None  # 64 full-window recomputes per step: minutes per step
                continue
            if start is not None:
                from aiwriter.engine import State

                st = [State.stack([start] * B) if isinstance(start, State) else start]
            else:
                st = [eng.new(B)]
            ids = torch.ones(B, dtype=torch.long)

            def stepB():
                _, st[0] = eng.step(ids, st[0])
            agg[str(B)] = B / _timed(stepB, min_time, 200)
        out["agg_tok_s"] = agg
    out["peak_rss_mb"] = _peak_rss_mb()
    out["base_rss_mb"] = rss_base
    return out


# ----------------------------------------------------------------------------------------------

def build_checkpoints(shapes: dict, families: list[str], tmp: Path) -> dict[str, Path]:
    import torch

    from aiwriter.models.rwkv4 import RWKV4
    from aiwriter.models.rwkv7 import RWKV7

    paths = {}
    for fam in families:
        c = shapes[fam]
        path = tmp / f"{fam}.pth"
        if fam == "rwkv4":
            w = RWKV4.random_weights(c["vocab"], c["layers"], c["embd"], seed=1)
        elif fam == "rwkv7":
            w = RWKV7.random_weights(c["vocab"], c["layers"], c["embd"], c["head"], seed=1)
        else:
            w = f1_random_weights(c)
        torch.save(w, path)
        del w
        paths[fam] = path
    return paths


def f1_random_weights(c: dict) -> dict:
    """An F1 state dict of the given shape: torch's default init with the time weights of a
    trained model's kind (smooth, positive), so the copy head and windows are exercised."""
    import torch

    from aiwriter.models.aiwriter_v1 import AIWriterV1

    torch.manual_seed(1)
    net = AIWriterV1(c["vocab"], c["embd"], c["layers"], c["head"], c["ctx"])
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def run_case(case: dict, in_process: bool) -> dict:
    if in_process:
        return measure(case)
    # The yardsticks (the rwkv package, the original's method) run as their users ran them, without
    # the passive OpenMP waiting that importing aiwriter asks for (see aiwriter/__init__.py): it
    # would cost them up to 40% of their multi-thread decode speed on an idle machine.
    env = dict(os.environ)
    if case["engine"] in YARDSTICK.values() or case["engine"].startswith("rwkv "):
        env.pop("OMP_WAIT_POLICY", None)
        if aiwriter.USER_OMP_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = aiwriter.USER_OMP_WAIT_POLICY
        code = "import torch; "  # torch (and its OpenMP) loaded before aiwriter: the policy is the user's
    else:
        code = ""
    code += "import json, sys; from aiwriter.bench import measure; print('@@' + json.dumps(measure(json.loads(sys.argv[1]))))"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(case)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"family": case["family"], "engine": case["engine"], "error": " | ".join(tail)}


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": {"aiwriter": os.environ.get("OMP_WAIT_POLICY"),  # what our case processes get
                                "yardsticks": aiwriter.USER_OMP_WAIT_POLICY or "default"},
            "ort_spin": os.environ.get("AIWRITER_ORT_SPIN") or "auto"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        info["cpu"] = platform.processor()
    for pkg in ("rwkv", "onnxruntime"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:
            info[pkg] = None
    return info


def add_ratios(results: list[dict]) -> None:
    for fam, yard in YARDSTICK.items():
        base = next((r for r in results if r["family"] == fam and r["engine"] == yard and "decode_tok_s" in r), None)
        for r in results:
            if r["family"] != fam or "decode_tok_s" not in r or base is None:
                continue
            r["ratio"] = {
                "decode": r["decode_tok_s"] / base["decode_tok_s"],
                "prefill": r["prefill_tok_s"] / base["prefill_tok_s"],
                "ttfc": base["ttfc_s"] / r["ttfc_s"],  # >1: we are faster
                # aggregate against the yardstick's single stream (as the GPU target is stated)
                "agg": {B: (v / base["decode_tok_s"] if v else None) for B, v in r["agg_tok_s"].items()},
            }


def check_targets(results: list[dict]) -> list[dict]:
    out = []
    for fam, engine, need in TARGETS:
        rows = [r for r in results if r["family"] == fam and "ratio" in r and r["engine"].startswith("aiwriter")]
        if engine.startswith("fastest"):
            if engine == "fastest":
                rows = [r for r in rows if r["engine"] in LOAD_MODEL_MODES]
            rows = sorted(rows, key=lambda r: -r["ratio"]["decode"])[:1]
        else:
            rows = [r for r in rows if r["engine"] == engine]
        if rows:
            got = rows[0]["ratio"]["decode"]
            out.append({"family": fam, "target": engine, "engine": rows[0]["engine"], "need": need,
                        "got": round(got, 2), "met": got >= need})
    return out


def _fmt(v, unit=""):
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.3g}{unit}"


def table(report: dict) -> str:
    streams = report["streams"]
    head = ["engine", "decode tok/s", "prefill tok/s"] + [f"{B} streams tok/s" for B in streams] + ["first char s", "peak RSS MB"]
    lines = []
    for fam in report["families"]:
        c = report["shapes"][fam]
        shape = f"{c['layers']}L-{c['embd']} vocab {c['vocab']}" + (f" T{c['ctx']}" if "ctx" in c else "")
        lines += ["", f"{fam} ({shape}); ratios (×) against {YARDSTICK[fam]}", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for r in report["results"]:
            if r["family"] != fam:
                continue
            if "error" in r or "skipped" in r:
                lines.append(f"| {r['engine']} | " + r.get("error", r.get("skipped", ""))[:120] + " |")
                continue
            ra = r.get("ratio")

            def x(v, key=None, B=None):
                if v is None:
                    return "—"
                if ra is None:
                    return _fmt(v)
                q = ra["agg"].get(B) if B else ra[key]
                return f"{_fmt(v)} ({q:.2f}×)" if q else _fmt(v)
            cells = [r["engine"], x(r["decode_tok_s"], "decode"), x(r["prefill_tok_s"], "prefill")]
            cells += [x(r["agg_tok_s"].get(str(B)), B=str(B)) for B in streams]
            cells += [x(r["ttfc_s"], "ttfc"), f"{r['peak_rss_mb']:,.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
    if report["targets"]:
        lines += ["", "decode targets:"]
        for t in report["targets"]:
            lines.append(f"  {t['family']:6s} {t['target']:13s} ({t['engine']:18s}) need ≥ {t['need']}×, "
                         f"got {t['got']}×: " + ("met" if t["met"] else "NOT met"))
    return "\n".join(lines)


def run(args: BenchSettings) -> int:
    from aiwriter.errors import AIWriterError

    if getattr(args, "model", None):
        from aiwriter import bench_big

        res = bench_big.bench_model(args.model, [d.strip() for d in args.dtypes.split(",") if d.strip()], prompt=args.prompt)
        res["machine"] = machine()
        print(json.dumps(res, indent=1) if args.json else bench_big.table(res))
        if args.out:
            Path(args.out).write_text(json.dumps(res, indent=1), encoding="utf-8")
        return 0

    shapes = QUICK if args.quick else FULL
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in ENGINES]
    if bad:
        raise AIWriterError(f"未知的模型：{', '.join(bad)}（可用 rwkv4、rwkv7、f1）",
                            f"unknown families: {', '.join(bad)} (use rwkv4, rwkv7, f1)")
    only = [e.strip() for e in args.engines.split(",")] if args.engines else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    saved_env = {k: os.environ.get(k) for k in ("RWKV_V7_ON", "RWKV_JIT_ON", "RWKV_CUDA_ON")}
    with tempfile.TemporaryDirectory(prefix="aiwriter-bench-") as tmp:
        paths = build_checkpoints(shapes, families, Path(tmp))
        for fam in families:
            for engine in ENGINES[fam]:
                if only and engine not in only:
                    continue
                case = {"family": fam, "engine": engine, "path": str(paths[fam]), "tmp": tmp, "cfg": shapes[fam],
                        "prompt": shapes["prompt"], "opening": shapes["opening"], "streams": shapes["streams"],
                        "min_time": shapes["min_time"], "quick": bool(args.quick), "threads": args.threads}
                if "onnx" in engine and importlib.util.find_spec("onnxruntime") is None:
                    results.append({"family": fam, "engine": engine, "skipped": "onnxruntime not installed"})
                    continue
                if not args.json:
                    print(f"… {fam} {engine}", file=sys.stderr, flush=True)
                results.append(run_case(case, in_process=args.quick))
    for k, v in saved_env.items():  # the in-process (--quick) rwkv package cases set them
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    add_ratios(results)
    report = {"machine": machine(), "quick": bool(args.quick), "families": families,
              "shapes": {f: shapes[f] for f in families}, "prompt": shapes["prompt"], "opening": shapes["opening"],
              "streams": shapes["streams"], "results": results, "targets": check_targets(results)}
    text = json.dumps(report, ensure_ascii=False, indent=1)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    if args.json:
        print(text)
    else:
        m = report["machine"]
        print(f"{m.get('cpu')} · {m['cpus']} CPUs · torch {m['torch']} ({m['torch_threads']} threads) · rwkv {m['rwkv']}"
              f" · onnxruntime {m['onnxruntime']} · OpenMP waiting: aiwriter {m['omp_wait_policy']['aiwriter']},"
              f" yardsticks {m['omp_wait_policy']['yardsticks']} · onnxruntime spinning: {m.get('ort_spin', 'auto')}")
        print(table(report))
    return 1 if any("error" in r for r in results) else 0
