"""Tokenizers: text <-> ids, and streaming decode that only ever emits whole characters.

A tokenizer here has: vocab_size, unknown_id (None or an id that sampling must never pick),
encode(str) -> list[int], decode(list[int]) -> str, stream_decoder() -> StreamDecoder.
"""
from __future__ import annotations

import ast
import codecs
import importlib.util
import json
import re
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


# ----------------------------------------------------------------------------------------------
# RWKV World: 65,536 byte-level tokens, encoded by greedy longest match (BlinkDL's rule).

WORLD_VOCAB_FILE = "rwkv_vocab_v20230424.txt"
WORLD_VOCAB_SIZE = 65536
NEOX_VOCAB_FILE = "20B_tokenizer.json"
NEOX_VOCAB_SIZES = (50277, 50304)   # the tokenizer's own size; the size RWKV-4 Pile models pad it to
_WORLD_LINE = re.compile(r"^(\d+) (b?(['\"]).*\3) (\d+)$")
_END = -1  # trie key under which a node keeps the id of the token ending there
_DEFAULT_WORLD = None


class WorldTokenizer(Tokenizer):
    """The RWKV World tokenizer (rwkv_vocab_v20230424): each token is a byte string; text is
    encoded as UTF-8 and cut, from the left, into the longest token that matches. Id 0 is
    <|endoftext|>, which has no bytes; a writer continuing a story never wants it."""

    name = "world"
    unknown_id = 0

    def __init__(self, tokens: dict[int, bytes], vocab_size: int | None = None):
        self.tokens = dict(tokens)
        self.vocab_size = vocab_size or max(self.tokens, default=0) + 1
        self._trie: dict | None = None

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int | None = None) -> "WorldTokenizer":
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise AIWriterError(f"无法读取词表文件 {path}：{e}", f"cannot read vocab file {path}: {e}")
        tokens = {}
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            token = _world_token(line)
            if token is None:
                raise AIWriterError(
                    f"词表 {path} 第 {n} 行不是 RWKV World 格式（编号 词 字节数）",
                    f"vocab {path} line {n} is not in the RWKV World format (id token byte-length)")
            tokens[token[0]] = token[1]
        if not set(bytes([b]) for b in range(256)) <= set(tokens.values()):
            raise AIWriterError(f"词表 {path} 不完整：RWKV World 词表必须含有全部 256 个单字节",
                                f"vocab {path} is incomplete: an RWKV World vocab holds all 256 single bytes")
        return cls(tokens, vocab_size)

    @classmethod
    def default(cls) -> "WorldTokenizer":
        """The vocab file that BlinkDL's `rwkv` package ships (it is not copied into AI-Writer);
        read once per process."""
        global _DEFAULT_WORLD
        if _DEFAULT_WORLD is None:
            _DEFAULT_WORLD = cls._read_default()
        return _DEFAULT_WORLD

    @classmethod
    def _read_default(cls) -> "WorldTokenizer":
        spec = importlib.util.find_spec("rwkv")
        origin = Path(spec.origin).parent if spec is not None and spec.origin else None
        if origin is None or not (origin / WORLD_VOCAB_FILE).is_file():
            raise AIWriterError(
                "这是 RWKV World 模型（词表 65536），它的词表文件来自 rwkv 包。请先运行：pip install rwkv",
                "this is an RWKV World model (vocab 65536); its vocab file comes with the rwkv package. "
                "Install it first: pip install rwkv")
        return cls.from_file(origin / WORLD_VOCAB_FILE, WORLD_VOCAB_SIZE)

    def _root(self) -> dict:
        if self._trie is None:   # built on first use: loading a model should not pay for it
            root: dict = {}
            for i, token in self.tokens.items():
                node = root
                for b in token:
                    node = node.setdefault(b, {})
                node[_END] = i
            self._trie = root
        return self._trie

    def encode_bytes(self, src: bytes) -> list[int]:
        root, out, i, n = self._root(), [], 0, len(src)
        while i < n:
            node, j, best, end = root, i, None, i
            while j < n:
                node = node.get(src[j])
                if node is None:
                    break
                j += 1
                if _END in node:
                    best, end = node[_END], j
            if best is None:   # only a vocab without some single byte; from_file refuses those
                raise AIWriterError(f"词表里没有字节 {src[i]:#04x}", f"byte {src[i]:#04x} is not in the vocab")
            out.append(best)
            i = end
        return out

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8", "surrogatepass"))

    def id_bytes(self, token_id: int) -> bytes:
        return self.tokens.get(int(token_id), b"")

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.id_bytes(i) for i in ids).decode("utf-8", "replace")


def _world_token(line: str) -> tuple[int, bytes] | None:
    """One line of a World vocab: `id repr(token) byte-length`, the token a str or bytes literal.
    Read without eval: a plain quoted string needs no parsing, the rest goes to literal_eval."""
    m = _WORLD_LINE.match(line.rstrip("\r\n"))
    if m is None:
        return None
    lit = m.group(2)
    if lit[0] != "b" and "\\" not in lit:
        token = lit[1:-1].encode("utf-8")
    else:
        try:
            value = ast.literal_eval(lit)
        except (ValueError, SyntaxError):
            return None
        token = value.encode("utf-8") if isinstance(value, str) else value
    if not isinstance(token, bytes) or len(token) != int(m.group(4)):
        return None
    return int(m.group(1)), token


# ----------------------------------------------------------------------------------------------
# GPT-NeoX 20B (RWKV-4 Pile / Raven / Novel models): a `tokenizers` JSON file.

class NeoXTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` file, as GPT-NeoX's 20B_tokenizer.json. Its byte-level BPE
    tokens spell bytes with GPT-2's printable stand-ins; id_bytes maps them back so a char split
    across tokens is only shown once whole. Id 0 is <|endoftext|>."""

    name = "neox"
    unknown_id = 0

    def __init__(self, tk, byte_level: bool = True):
        self.tk = tk
        self.vocab_size = tk.get_vocab_size(with_added_tokens=True)
        self.byte_level = byte_level
        self._bytes: dict[int, bytes] = {}
        self._added = {i: t for i, t in tk.get_added_tokens_decoder().items()}
        self._byte_of = {ch: b for b, ch in _gpt2_byte_chars().items()}

    @classmethod
    def from_file(cls, path: str | Path) -> "NeoXTokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        try:
            tk = HFTokenizer.from_file(str(path))
            data = json.loads(path.read_text(encoding="utf-8"))
        except Exception as e:  # the tokenizers library raises plain Exception subclasses
            raise AIWriterError(f"无法读取分词器文件 {path}：{str(e)[:200]}",
                                f"cannot read tokenizer file {path}: {str(e)[:200]}")
        decoder = data.get("decoder") or {}
        return cls(tk, byte_level=decoder.get("type") == "ByteLevel")

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text).ids

    def id_bytes(self, token_id: int) -> bytes:
        token_id = int(token_id)
        if token_id not in self._bytes:
            self._bytes[token_id] = self._token_bytes(token_id)
        return self._bytes[token_id]

    def _token_bytes(self, token_id: int) -> bytes:
        added = self._added.get(token_id)
        if added is not None:   # added tokens are literal text; special ones (<|endoftext|>) show nothing
            return b"" if added.special else added.content.encode("utf-8")
        token = self.tk.id_to_token(token_id)
        if token is None:
            return b""
        if self.byte_level and all(ch in self._byte_of for ch in token):
            return bytes(self._byte_of[ch] for ch in token)
        return self.tk.decode([token_id]).encode("utf-8")

    def decode(self, ids: list[int]) -> str:
        if not self.byte_level:
            return self.tk.decode(list(ids))
        return b"".join(self.id_bytes(i) for i in ids).decode("utf-8", "replace")


def _gpt2_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable char table of byte-level BPE: printable Latin-1 bytes stand for
    themselves, the other 68 are moved to U+0100 upwards in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    moved = (b for b in range(256) if b not in table)
    for n, b in enumerate(moved):
        table[b] = chr(256 + n)
    return table


class MissingTokenizer(NoTokenizer):
    """A vocab size that names a known tokenizer whose file is not here: logits still work."""

    def __init__(self, vocab_size: int, zh: str, en: str):
        super().__init__(vocab_size)
        self.zh, self.en = zh, en

    def _refuse(self):
        raise AIWriterError(self.zh, self.en)


def _looks_like_world(raw: bytes) -> bool:
    first = raw.split(b"\n", 1)[0].decode("utf-8", "replace")
    return _WORLD_LINE.match(first.rstrip("\r")) is not None


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A vocab file named by the user: an RWKV World vocab (.txt, `id token length` lines), a
    `tokenizers` JSON (has a "model" key: GPT-NeoX 20B_tokenizer.json), or an AI-Writer char
    JSON (UTF-16 or UTF-8)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise AIWriterError(f"无法读取词表文件 {path}：{e.strerror}", f"cannot read vocab file {path}: {e.strerror}")
    if path.suffix.lower() == ".txt" or _looks_like_world(raw):
        return WorldTokenizer.from_file(path)
    data = _parse_vocab_json(raw, path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return NeoXTokenizer.from_file(path)
    return CharTokenizer.from_file(path)


def tokenizer_for_vocab_size(vocab_size: int, near: str | Path | None = None) -> Tokenizer:
    """The tokenizer a model implies by its vocab size, when no vocab file comes with it:
    65536 -> RWKV World (from the rwkv package); 50277 / 50304 -> GPT-NeoX, from a
    20B_tokenizer.json in the folder `near` (the model's) if there is one."""
    if vocab_size == WORLD_VOCAB_SIZE:
        return WorldTokenizer.default()
    if vocab_size in NEOX_VOCAB_SIZES:
        if near is not None and (Path(near) / NEOX_VOCAB_FILE).is_file():
            return NeoXTokenizer.from_file(Path(near) / NEOX_VOCAB_FILE)
        return MissingTokenizer(
            vocab_size,
            f"这个模型（词表 {vocab_size}）用 GPT-NeoX 的分词器 {NEOX_VOCAB_FILE}：请把它放在模型旁边，或用 --vocab 指定",
            f"this model (vocab {vocab_size}) uses GPT-NeoX's tokenizer {NEOX_VOCAB_FILE}: put it beside the model "
            "or pass it with --vocab")
    return NoTokenizer(vocab_size)
