"""Training text -> a char vocab -> token ids packed once into a memory-mapped uint16 file.

Text is cleaned the way the writer cleans its context (tokenizer.clean_context), so the model
trains on exactly the shape of text it will later be asked to continue.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from aiwriter.errors import AIWriterError
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer, Tokenizer, clean_context

CACHE_DIR = "data-cache"


def _note(msg: str) -> None:
    print(msg, file=sys.stderr)


def collect_files(paths) -> list[Path]:
    """The .txt files named by `paths` (files, or folders searched recursively), sorted."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() == ".txt")
            except OSError as e:
                raise AIWriterError(f"无法读取文件夹 {p}：{e.strerror}", f"cannot read folder {p}: {e.strerror}")
            if not found:
                raise AIWriterError(f"文件夹 {p} 里没有 .txt 文件", f"no .txt files in folder {p}")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise AIWriterError(f"不是文件或文件夹：{p}", f"not a file or folder: {p}")
        else:
            raise AIWriterError(f"找不到训练数据：{p}", f"training data not found: {p}")
    if not files:
        raise AIWriterError("没有给出训练数据（--data）", "no training data given (--data)")
    return files


def read_text(path: Path) -> str:
    """A text file as str: UTF-8, else GB18030 (with a note). Binary files are refused."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise AIWriterError(f"无法读取文件 {path}：{e.strerror}", f"cannot read file {path}: {e.strerror}")
    if b"\x00" in raw[:65536]:
        raise AIWriterError(
            f"{path} 不是文本文件（含有二进制数据）", f"{path} is not a text file (it holds binary data)"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if e.reason == "unexpected end of data" and e.start >= len(raw) - 3:
            return raw[: e.start].decode("utf-8-sig")  # a file cut inside its last char
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        raise AIWriterError(
            f"{path} 既不是 UTF-8 也不是 GB18030 编码的文本", f"{path} is neither UTF-8 nor GB18030 text"
        )
    _note(f"注意：{path} 不是 UTF-8，按 GB18030 读取 / note: {path} is not UTF-8, read as GB18030")
    return text


def load_texts(paths) -> list[tuple[Path, str]]:
    """(file, cleaned text) for every training file; empty files are skipped with a note."""
    out = []
    for f in collect_files(paths):
        text = clean_context(read_text(f))
        if len(text) <= 1:  # only the leading "\n"
            _note(f"注意：跳过空文件 {f} / note: skipping empty file {f}")
            continue
        out.append((f, text))
    if not out:
        raise AIWriterError("训练数据是空的：所有文件都没有文字", "the training data is empty: no file holds any text")
    return out


def build_vocab(texts, coverage: float = 0.9995, min_count: int | None = None) -> CharTokenizer:
    """A char vocab holding the most frequent chars: those with count >= min_count, or (when it
    is None) the fewest that cover `coverage` of the text. Always holds "\\n" and the unknown
    char, which stands for every other char. Ids in order of frequency."""
    counts: Counter = Counter()
    for t in texts:
        counts.update(t)
    counts.pop(UNKNOWN_CHAR, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if min_count is None:
        total, covered, threshold = sum(counts.values()), 0, 1
        for _, n in ranked:
            if covered >= coverage * total:
                break
            covered += n
            threshold = n
        min_count = threshold
    chars = [ch for ch, n in ranked if n >= min_count]
    if "\n" not in chars:
        chars.append("\n")
    chars.append(UNKNOWN_CHAR)
    return CharTokenizer(dict(enumerate(chars)))


def write_vocab(tokenizer: CharTokenizer, path: Path) -> None:
    atomic_write_bytes(Path(path), tokenizer.to_json().encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _char_table(tokenizer: CharTokenizer) -> np.ndarray:
    """codepoint -> id for every Unicode codepoint (unknown elsewhere), for fast encoding."""
    unk = tokenizer.unknown_id if tokenizer.unknown_id is not None else 0
    table = np.full(0x110000, unk, dtype=np.uint16)
    for ch, i in tokenizer.stoi.items():
        table[ord(ch)] = i
    return table


def encode_fast(text: str, tokenizer: Tokenizer, table: np.ndarray | None = None) -> np.ndarray:
    """Token ids as uint16: a table lookup for char vocabs, tokenizer.encode otherwise."""
    if isinstance(tokenizer, CharTokenizer):
        if table is None:
            table = _char_table(tokenizer)
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        return table[cps]
    return np.asarray(tokenizer.encode(text), dtype=np.uint16)


def data_key(texts, tokenizer: Tokenizer) -> str:
    """A hash of the cleaned text and the vocab: names the packed cache."""
    h = hashlib.sha256()
    vocab = tokenizer.to_json() if hasattr(tokenizer, "to_json") else f"{type(tokenizer).__name__}:{tokenizer.vocab_size}"
    h.update(vocab.encode("utf-8"))
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:20]


def pack(texts, tokenizer: Tokenizer, out_dir: Path, progress: bool = True) -> Path:
    """Encode all texts once into out_dir/data-cache/<key>.bin (uint16); reuse it when present."""
    if tokenizer.vocab_size > 65536:
        raise AIWriterError(
            f"词表有 {tokenizer.vocab_size} 项，超过 65536，无法打包为 uint16",
            f"vocab has {tokenizer.vocab_size} entries, more than the 65536 that uint16 holds",
        )
    cache = Path(out_dir) / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{data_key(texts, tokenizer)}.bin"
    if path.is_file():
        return path
    from aiwriter.progress import progress as progress_bar

    table = _char_table(tokenizer) if isinstance(tokenizer, CharTokenizer) else None
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        bar = progress_bar(total=sum(len(t) for t in texts), unit="char", unit_scale=True, desc="打包 / packing",
                           disable=not progress, file=sys.stderr)
        for t in texts:
            f.write(encode_fast(t, tokenizer, table).tobytes())
            bar.update(len(t))
        bar.close()
    os.replace(tmp, path)
    return path


def open_packed(path: Path) -> np.ndarray:
    return np.memmap(path, dtype=np.uint16, mode="r")


def batch_offsets(n_tokens: int, ctx_len: int, batch: int, seed: int, step: int) -> np.ndarray:
    """Start offsets of the `batch` random windows (ctx_len + 1 tokens each) of one global step.
    Drawn from (seed, step) alone, so a resumed or multi-process run sees the same windows."""
    high = n_tokens - ctx_len - 1
    if high <= 0:
        raise AIWriterError(
            f"训练数据太短：只有 {n_tokens} 个字，至少需要 {ctx_len + 2} 个（或减小 --ctx-len）",
            f"training data too short: {n_tokens} tokens, need at least {ctx_len + 2} (or lower --ctx-len)",
        )
    rng = np.random.default_rng([seed, step])
    return rng.integers(0, high + 1, size=batch)


def get_batch(data: np.ndarray, offsets: np.ndarray, ctx_len: int):
    """(inputs, targets) int64 arrays [len(offsets), ctx_len] read from the memmap."""
    win = np.stack([np.asarray(data[o:o + ctx_len + 1], dtype=np.int64) for o in offsets])
    return win[:, :-1], win[:, 1:]
