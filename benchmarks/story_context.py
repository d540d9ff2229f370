"""Prints how long context assembly takes for a 300k-char manuscript with 1,000 lorebook entries
(issue 15 target: < 50 ms). Run: PYTHONPATH=. python benchmarks/story_context.py"""
import random
import statistics
import time

from aiwriter.story import AssemblySettings, Entry, Lorebook, assemble

rng = random.Random(0)
chars = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
paras = []
n = 0
while n < 300_000:
    p = "".join(rng.choice(chars) for _ in range(rng.randint(40, 300))) + "。\n"
    paras.append(p)
    n += len(p)
story = "".join(paras)[:300_000]
entries = []
for i in range(1000):
    keys = ["".join(rng.choice(chars) for _ in range(rng.randint(2, 3))) for _ in range(3)]
    if i % 10 == 0:  # some keys that do occur
        at = rng.randint(len(story) - 15_000, len(story) - 10)
        keys[0] = story[at:at + 2]
    e = Entry(keys=keys, content="".join(rng.choice(chars) for _ in range(rng.randint(20, 200))), name=f"entry{i}",
              order=rng.randint(0, 500))
    if i % 50 == 0:
        e.constant = True
    if i % 7 == 0:
        e.anti_keys = ["".join(rng.choice(chars) for _ in range(2))]
    if i % 13 == 0:
        e.selective, e.secondary_keys = True, [story[-100:-98]]
    if i % 100 == 1:
        e.keys.append(f"/{rng.choice(chars)}[^。]{{0,5}}{rng.choice(chars)}/")
    entries.append(e)
book = Lorebook(memory="这是记忆。" * 40, authors_note="文风古典", entries=entries)


def bench(label, settings, compiled=True):
    comp = book.compile() if compiled else None
    times = []
    for _ in range(15):
        t = time.perf_counter()
        ctx = assemble(story, book, settings, compiled=comp)
        times.append((time.perf_counter() - t) * 1000)
    print(f"{label:58s} median {statistics.median(times):6.1f} ms  max {max(times):6.1f} ms  "
          f"fired {len(ctx.fired())}  chars {ctx.chars_used:,}")


import os
print(f"manuscript {len(story):,} chars, {len(entries)} entries; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
bench("budget 16k (scan depth = budget), compiled once", AssemblySettings(budget=16_000))
bench("budget 16k, validating + compiling the lorebook each time", AssemblySettings(budget=16_000), compiled=False)
bench("budget 64k", AssemblySettings(budget=64_000))
bench("budget 16k, cascade depth 2", AssemblySettings(budget=16_000, cascade_depth=2))
book.scan_depth = len(story)
bench("budget 16k, scanning the whole 300k manuscript", AssemblySettings(budget=16_000))
