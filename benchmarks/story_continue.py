"""Continuing a manuscript with story settings, as the page does: each round asks the server for the
assembled context (POST /api/docs/{id}/context) and continues it (POST /v1/completions), then
appends what was written. Prints, per round, the ids in the prompt, how many the model had to read
(the rest came from the prefix cache) and the seconds the request took.

    python benchmarks/story_continue.py                       # the default model, memory + author's note
    python benchmarks/story_continue.py --mode plain          # no story settings: the text itself
    python benchmarks/story_continue.py --mode memory --chars 20000 --rounds 8

The in-memory prefix cache only (the server runs with --no-state-cache).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from state_cache_restart import BOOK, start_server, stop_server  # noqa: E402

MEMORY = "王冕，诸暨县乡村人，七岁上死了父亲，他母亲做些针黹，供给他到村学堂里去读书。" * 4
NOTE = "写得平实，多写人物的言行。"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("plain", "memory", "note", "entry"), default="note")
    ap.add_argument("--chars", type=int, default=12_000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--length", type=int, default=100, help="chars written per round")
    ap.add_argument("--model")
    ap.add_argument("--vocab")
    args = ap.parse_args()
    story = {"plain": {}, "memory": {"memory": MEMORY}, "note": {"memory": MEMORY, "authors_note": NOTE},
             "entry": {"memory": MEMORY, "entries": [{"keys": ["王冕"], "content": "王冕爱画荷花，不愿做官。"}]}}[args.mode]
    text = BOOK.read_text(encoding="utf-8")[: args.chars]
    with tempfile.TemporaryDirectory(prefix="aiwriter-bench-") as tmp:
        proc, url, _ = start_server(args, Path(tmp), ["--no-state-cache"])
        try:
            with httpx.Client(base_url=url, timeout=600) as c:
                doc = c.post("/api/docs", json={"title": "bench"}).json()["id"]
                c.put(f"/api/docs/{doc}/story", json={"story": story}).raise_for_status()
                rows = []
                for i in range(args.rounds):
                    before = c.get("/api/status").json()
                    t0 = time.perf_counter()
                    prompt = c.post(f"/api/docs/{doc}/context", json={"text": text}).json()["text"] if story else text
                    r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": args.length, "seed": i})
                    r.raise_for_status()
                    secs = time.perf_counter() - t0
                    after = c.get("/api/status").json()
                    rows.append({"round": i + 1, "prompt_ids": after["prompt_ids"] - before["prompt_ids"],
                                 "read_ids": after["read_ids"] - before["read_ids"], "seconds": round(secs, 2)})
                    print(json.dumps(rows[-1]), flush=True)
                    text += r.json()["choices"][0]["text"]
        finally:
            stop_server(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
