"""The catalogue: BlinkDL's released models known to load in AI-Writer, with where to get them.

Every repo id, file name, size and sha256 below was read from the file's page or its Git LFS
pointer on huggingface.co (as stored by a web crawl; not re-checked online when written). `size` is None where only the rounded size shown
on the page was seen (the table then shows the size estimated from the shape, marked ≈), and
`sha256` is None where the pointer was not seen; downloads are always checked against the hub's own
sha256 (see download.py), these are for reference. BlinkDL removes older files from rwkv7-g1 as
newer G1 versions come out: a file that has gone is a clear "not on the hub" error naming `source`.

The shape (layers, width, vocab) of each release is what its family's module is built from to count
parameters and to estimate the memory each dtype needs (shapes.py, with engine.memory_needed).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

LICENCE = "Apache-2.0"


@dataclass(frozen=True)
class Tokenizer:
    """A tokenizer file the model needs that the `rwkv` package does not ship, saved beside it
    under `save_as` (the name engine.resolve_tokenizer looks for)."""
    repo: str
    filename: str
    save_as: str


# GPT-NeoX-20B's tokenizer, which RWKV-4 Pile / Novel models use (BlinkDL ships it as
# 20B_tokenizer.json in ChatRWKV; tokenizer.tokenizer_for_vocab_size looks for that name).
NEOX_20B = Tokenizer("EleutherAI/gpt-neox-20b", "tokenizer.json", "20B_tokenizer.json")


@dataclass(frozen=True)
class Release:
    name: str                 # what `aiwriter download NAME` and `--model NAME` take
    family: str               # the aiwriter.models family it loads as
    title: str                # e.g. "RWKV-7 G1 1.5B"
    n_layer: int
    n_embd: int
    vocab_size: int
    repo: str                 # Hugging Face repo id
    filename: str             # file in that repo (saved under this name in the models folder)
    size: int | None          # bytes, from the LFS pointer; None where not verified
    sha256: str | None        # from the LFS pointer; None where not seen
    languages: tuple[str, ...]
    note: tuple[str, str]     # (zh, en): what it is for
    revision: str = "main"
    licence: str = LICENCE
    tokenizer: Tokenizer | None = None

    @property
    def source(self) -> str:
        return f"https://huggingface.co/{self.repo}/blob/{self.revision}/{self.filename}"


_WORLD_LANGS = ("zh", "en", "ja", "ko", "fr", "ar", "es", "pt", "100+")  # the card's tags; "100+ languages"
_G1 = ("推理型基座模型（RWKV-7 G1 系列），中英文都能续写", "reasoning base model (RWKV-7 G1 line), writes Chinese and English")
_WORLD = ("多语言基座模型（RWKV-7 World）", "multilingual base model (RWKV-7 World)")
_NOVEL_CHN = ("中文网文续写（100% 中文小说微调）", "Chinese web fiction (fine-tuned on 100% Chinese novels)")
_NOVEL_CHNENG = ("中文网文续写（中文小说 50% + Pile 50%）", "Chinese web fiction (50% Chinese novels + 50% Pile)")

RELEASES: tuple[Release, ...] = (
    # RWKV-7 G1: https://huggingface.co/BlinkDL/rwkv7-g1 (vocab 65536, RWKV World tokenizer)
    Release("rwkv7-g1-0.1b", "rwkv7", "RWKV-7 G1 0.1B", 12, 768, 65536, "BlinkDL/rwkv7-g1",
            "rwkv7-g1-0.1b-20250307-ctx4096.pth", None,  # page: 382 MB
            "854230983f1015407c44274a7a27196ed72007618995b7a7efba3c4a15f69a45", _WORLD_LANGS, _G1),
    Release("rwkv7-g1-0.4b", "rwkv7", "RWKV-7 G1 0.4B", 24, 1024, 65536, "BlinkDL/rwkv7-g1",
            "rwkv7-g1-0.4b-20250324-ctx4096.pth", None, None, _WORLD_LANGS, _G1),  # page: 902 MB
    Release("rwkv7-g1a3-1.5b", "rwkv7", "RWKV-7 G1a3 1.5B", 24, 2048, 65536, "BlinkDL/rwkv7-g1",
            "rwkv7-g1a3-1.5b-20251015-ctx8192.pth", 3055445757,
            "10bf909822e5899a55318996447cf9c935da078c9735a9e6b8afc9a0aa7f89e0", _WORLD_LANGS, _G1),
    Release("rwkv7-g1a-2.9b", "rwkv7", "RWKV-7 G1a 2.9B", 32, 2560, 65536, "BlinkDL/rwkv7-g1",
            "rwkv7-g1a-2.9b-20250924-ctx4096.pth", 5896274949,
            "df5716263b617e7da83590446fb2a98b6663447cfd52e8e9b49e11ce7f4faa3e", _WORLD_LANGS, _G1),
    # The 7.2B in that repo is a G0a3 (pre-training data of the G0 line), not a G1.
    Release("rwkv7-g0a3-7.2b", "rwkv7", "RWKV-7 G0a3 7.2B", 32, 4096, 65536, "BlinkDL/rwkv7-g1",
            "rwkv7-g0a3-7.2b-20251029-ctx8192.pth", 14400009405,
            "a3b13d4f24eb1585647982d59c5a85088342c8ba7248237639d4a0102e05f34b", _WORLD_LANGS, _G1),
    # RWKV-7 World: https://huggingface.co/BlinkDL/rwkv-7-world
    Release("rwkv7-world-0.1b", "rwkv7", "RWKV-7 World 0.1B", 12, 768, 65536, "BlinkDL/rwkv-7-world",
            "RWKV-x070-World-0.1B-v2.8-20241210-ctx4096.pth", None,  # page: 382 MB
            "60c98129b9529963bff2c164b8ab4bd17c19332ae06dc2dcae32aa3a3739295a", _WORLD_LANGS, _WORLD),
    Release("rwkv7-world-0.4b", "rwkv7", "RWKV-7 World 0.4B", 24, 1024, 65536, "BlinkDL/rwkv-7-world",
            "RWKV-x070-World-0.4B-v2.9-20250107-ctx4096.pth", None,  # page: 902 MB
            "c08cf602b33e59a5717b8f0cafaf7f04c50c1c67166e477aa2f47c5ca180da4a", _WORLD_LANGS, _WORLD),
    Release("rwkv7-world-1.5b", "rwkv7", "RWKV-7 World 1.5B", 24, 2048, 65536, "BlinkDL/rwkv-7-world",
            "RWKV-x070-World-1.5B-v3-20250127-ctx4096.pth", None,  # page: 3.06 GB
            "23e13ff62ac6f80b28910ffc230324939e80ddb00b98f892a5951c0da071e700", _WORLD_LANGS, _WORLD),
    Release("rwkv7-world-2.9b", "rwkv7", "RWKV-7 World 2.9B", 32, 2560, 65536, "BlinkDL/rwkv-7-world",
            "RWKV-x070-World-2.9B-v3-20250211-ctx4096.pth", None, None, _WORLD_LANGS, _WORLD),  # page: 5.9 GB
    # RWKV-4 Novel: https://huggingface.co/BlinkDL/rwkv-4-novel (vocab 50277, GPT-NeoX 20B tokenizer)
    Release("rwkv4-novel-3b-chn", "rwkv4", "RWKV-4 Novel 3B Chn", 32, 2560, 50277, "BlinkDL/rwkv-4-novel",
            "RWKV-4-Novel-3B-v1-Chn-20230412-ctx4096.pth", 5969345064,
            "c41e0af2cbc66e94121377680e8224a1504fac6c9ea620c395f0a79281db26e7", ("zh",), _NOVEL_CHN,
            tokenizer=NEOX_20B),
    Release("rwkv4-novel-3b-chneng", "rwkv4", "RWKV-4 Novel 3B ChnEng", 32, 2560, 50277, "BlinkDL/rwkv-4-novel",
            "RWKV-4-Novel-3B-v1-ChnEng-20230412-ctx4096.pth", 5969345064,
            "283c6e6fa10c52a93e9a01d9630f288473267ea152a49c6579b5c0427bdc9c61", ("zh", "en"), _NOVEL_CHNENG,
            tokenizer=NEOX_20B),
    Release("rwkv4-novel-7b-chn", "rwkv4", "RWKV-4 Novel 7B Chn", 32, 4096, 50277, "BlinkDL/rwkv-4-novel",
            "RWKV-4-Novel-7B-v1-Chn-20230426-ctx8192.pth", 14785389864,
            "5fced44febdf80d303250eef9c020f087abded43aaecc8caaea8a9e7f1fb771e", ("zh",), _NOVEL_CHN,
            tokenizer=NEOX_20B),
    Release("rwkv4-novel-7b-chneng", "rwkv4", "RWKV-4 Novel 7B ChnEng", 32, 4096, 50277, "BlinkDL/rwkv-4-novel",
            "RWKV-4-Novel-7B-v1-ChnEng-20230426-ctx8192.pth", 14785389864,
            "bd08c75a296bd193dcfadb993fe06d7f9dd91ca3385231f24c592c89d25cd596", ("zh", "en"), _NOVEL_CHNENG,
            tokenizer=NEOX_20B),
)


def find(name: str) -> Release | None:
    """The release a name means: its catalogue name or its file name (case does not matter)."""
    key = name.strip().lower()
    for r in RELEASES:
        if key in (r.name.lower(), r.filename.lower()):
            return r
    return None


def close_names(name: str, n: int = 3) -> list[str]:
    """Catalogue names that look like `name` (for "did you mean")."""
    names = [r.name for r in RELEASES]
    key = name.strip().lower()
    found = difflib.get_close_matches(key, names, n=n, cutoff=0.5)
    found += [x for x in names if key and key in x and x not in found]
    return found[:n]
