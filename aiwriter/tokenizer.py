"""Tokenizers: text <-> ids, and streaming decode that only ever emits whole characters.

A tokenizer here has: vocab_size, unknown_id (None or an id that sampling must never pick),
encode(str) -> list[int], decode(list[int]) -> str, stream_decoder() -> StreamDecoder.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path

from aiwriter.errors import AIWriterError

UNKNOWN_CHAR = "\ue083"  # AI-Writer's unknown char: input chars outside the vocab map to it


def clean_context(text: str) -> str:
    """The seed's context cleaning: strip each line (and full-width spaces, \\r), drop empty
    lines, join with \\n, and start with one \\n as the training text did."""
    lines = (line.strip().strip("\u3000\r").strip() for line in text.split("\n"))
    return "\n" + "\n".join(line for line in lines if line)


class StreamDecoder:
    """Feeds ids one at a time; returns only complete UTF-8 characters, holding back the
    bytes of a character split across byte-level tokens until it is whole."""

    def __init__(self, tokenizer: "Tokenizer"):
        self._bytes = tokenizer.id_bytes
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._dec.decode(self._bytes(token_id))

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


class Tokenizer:
    vocab_size: int
    unknown_id: int | None = None
    name: str = "tokenizer"

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def id_bytes(self, token_id: int) -> bytes:
        return self.decode([token_id]).encode("utf-8", "surrogatepass")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class CharTokenizer(Tokenizer):
    """AI-Writer's char vocab: a JSON object id -> char (the original files are UTF-16)."""

    name = "chars"

    def __init__(self, itos: dict[int, str]):
        self.itos = dict(itos)
        self.vocab_size = max(self.itos) + 1 if self.itos else 0
        self.stoi = {ch: i for i, ch in sorted(self.itos.items(), reverse=True)}
        self.unknown_id = self.stoi.get(UNKNOWN_CHAR)

    @classmethod
    def from_file(cls, path: str | Path) -> "CharTokenizer":
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise AIWriterError(f"无法读取词表文件 {path}：{e.strerror}", f"cannot read vocab file {path}: {e.strerror}")
        data = _parse_vocab_json(raw, path)
        try:
            itos = {int(k): v for k, v in data.items()}
        except (AttributeError, ValueError, TypeError):
            raise AIWriterError(f"词表 {path} 不是 {{\"编号\": \"字\"}} 格式", f"vocab {path} is not a {{\"id\": \"char\"}} JSON object")
        if not itos or not all(isinstance(v, str) and len(v) == 1 for v in itos.values()) or min(itos) < 0:
            raise AIWriterError(f"词表 {path} 的每一项必须是一个字", f"every entry of vocab {path} must be one character")
        return cls(itos)

    def encode(self, text: str) -> list[int]:
        unk = self.unknown_id if self.unknown_id is not None else 0
        return [self.stoi.get(ch, unk) for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos.get(int(i), UNKNOWN_CHAR) for i in ids)

    def to_json(self) -> str:
        return json.dumps({str(i): ch for i, ch in sorted(self.itos.items())}, ensure_ascii=False)


def _parse_vocab_json(raw: bytes, path: Path) -> dict:
    """The 2021-22 vocab files are UTF-16 with a BOM; newer ones are UTF-8. Tell them apart by
    the BOM, then by the zero bytes UTF-16 puts beside ASCII."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encodings = ["utf-16"]
    elif raw.startswith(codecs.BOM_UTF8):
        encodings = ["utf-8-sig"]
    elif len(raw) >= 2 and (raw[0] == 0) != (raw[1] == 0):
        encodings = ["utf-16-be" if raw[0] == 0 else "utf-16-le"]
    else:
        encodings = ["utf-8", "utf-16"]
    for enc in encodings:
        try:
            return json.loads(raw.decode(enc))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
    raise AIWriterError(
        f"词表 {path} 不是 UTF-16 或 UTF-8 编码的 JSON",
        f"vocab {path} is not JSON in UTF-16 or UTF-8",
    )


class NoTokenizer(Tokenizer):
    """For a model whose vocab fits no known tokenizer: ids in, logits out still work."""

    name = "none"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def _refuse(self):
        raise AIWriterError(
            f"这个模型的词表大小 {self.vocab_size} 不对应任何已知的分词器，请用 --vocab 指定词表文件",
            f"no known tokenizer has vocab size {self.vocab_size}; pass the vocab file with --vocab",
        )

    def encode(self, text: str) -> list[int]:
        self._refuse()

    def decode(self, ids: list[int]) -> str:
        self._refuse()


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A vocab file named by the user: AI-Writer char JSON (UTF-16 or UTF-8)."""
    return CharTokenizer.from_file(path)


def tokenizer_for_vocab_size(vocab_size: int) -> Tokenizer:
    """The tokenizer a model implies by its vocab size, when no vocab file comes with it."""
    return NoTokenizer(vocab_size)
