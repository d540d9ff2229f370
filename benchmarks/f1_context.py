"""F1 generation speed with a full context window: the original recompute vs. incremental + slide.

Builds a random F1 model of the released shape (L=12, H=12, C=768, T=512, V=8849) in memory, fills
the window with 512 ids, then generates chars (greedy, the pick does not matter for speed) with
  (a) the original method: every char re-reads the last 512 ids (AIWriterV1.exact_window(True));
  (b) the default: incremental positions, and when the window is full keep the last 256 ids,
      re-read them in one parallel forward, grow again.
(b) is timed over `--chars` chars from a full window (so it includes one slide) and over one
whole slide cycle (T/2 chars: the amortised rate).

    .venv/bin/python benchmarks/f1_context.py [--chars 20] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
"""
import argparse
import time

import torch

from aiwriter.models.aiwriter_v1 import AIWriterV1

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def generate(net, state, first_id, n, device):
    """n greedy chars from `state`; returns chars/s and the final state."""
    ids = torch.tensor([[first_id]], device=device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        logits, state = net(ids, state)
        ids = logits.argmax(-1, keepdim=True)
    sync(device)
    return n / (time.perf_counter() - t0), state


def report(label, rate, what):
    print(f"{label:<48}: {rate:9.2f} chars/s  ({what})")


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="fp32", choices=DTYPES)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    net = AIWriterV1(vocab_size=8849, n_embd=768, n_layer=12, n_head=12, ctx_len=512)
    net = net.to(device=device, dtype=DTYPES[args.dtype]).eval()
    T = net.ctx_len
    prompt = torch.randint(0, net.vocab_size, (1, T), device=device)
    print(f"F1 random model L=12 H=12 C=768 T={T} V=8849, {args.device} {args.dtype}, "
          f"torch threads {torch.get_num_threads()}")

    sync(device)
    t0 = time.perf_counter()
    logits, full = net(prompt, net.new_state())
    sync(device)
    print(f"fill the window ({T} ids, one parallel forward): {time.perf_counter() - t0:.3f} s")
    first = int(logits.argmax())

    generate(net, full, first, 2, device)  # warm-up (allocator, kernels)

    net.exact_window(True)
    exact_rate, _ = generate(net, full, first, args.chars, device)
    report(f"(a) original: recompute the {T} window per char", exact_rate, f"{args.chars} chars")

    net.exact_window(False)
    slide_rate, _ = generate(net, full, first, args.chars, device)
    report(f"(b) incremental + slide (keep {net.keep})", slide_rate, f"{args.chars} chars, one slide")
    cycle_rate, _ = generate(net, full, first, T // 2, device)
    report("(b) over one whole slide cycle", cycle_rate, f"{T // 2} chars, one slide")
    print(f"ratio (b)/(a): {slide_rate / exact_rate:.1f}x over {args.chars} chars, "
          f"{cycle_rate / exact_rate:.1f}x amortised")


if __name__ == "__main__":
    main()
