"""Bad input, the whole list of the hardening issue, against every API that takes a body and the
command line: each gets a clear answer (a 4xx JSON body naming the field, or a CLI message and
exit code), never a 500 or a traceback, and the server keeps serving after each one.
Inputs that are odd but valid (emoji, control chars, chars outside the vocab) are written with
the unknown char and succeed."""
import json
import math
import subprocess
import sys

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from test_server_api import GREEDY, server_with

from aiwriter.commands import main as cli_main
from aiwriter.tokenizer import UNKNOWN_CHAR, CharTokenizer

LONE = "\ud800"
TEN_MB = "a" * (10 * 2**20)
JSON = "application/json"

# the endpoints that take a text, the field holding it, and a minimal valid body
GENERATE = [("/v1/completions", "prompt", {"max_tokens": 2, **GREEDY}),
            ("/api/v1/generate", "prompt", {"max_length": 2, **GREEDY}),
            ("/api/extra/generate/stream", "prompt", {"max_length": 2, **GREEDY})]
TEXTS = GENERATE + [("/api/extra/tokencount", "prompt", {}),
                    ("POST /api/docs", "text", {"title": "t"}),
                    ("PUT /api/docs/DOC", "text", {}),
                    ("/api/docs/DOC/generations", "text", {"model": "m"})]
LENGTH = {"/v1/completions": "max_tokens", "/api/v1/generate": "max_length", "/api/extra/generate/stream": "max_length"}
SEED = {"/v1/completions": "seed", "/api/v1/generate": "sampler_seed", "/api/extra/generate/stream": "sampler_seed"}
STOP = {"/v1/completions": "stop", "/api/v1/generate": "stop_sequence", "/api/extra/generate/stream": "stop_sequence"}


def body(fields: dict) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")


def cases():
    """(id, route, raw body, content type, expected: int status or "ok", field the error names)"""
    out = []
    for route, field, base in TEXTS:
        doc_text = field != "prompt" or route == "/api/extra/tokencount"  # an empty text may be saved or counted
        out += [
            ("empty", route, body({**base, field: ""}), JSON, "ok" if doc_text else 400, field),
            ("whitespace", route, body({**base, field: " \n\t\u3000 "}), JSON, "ok" if doc_text else 400, field),
            ("10MB", route, body({**base, field: TEN_MB}), JSON, 413, None),
            ("invalid-utf8", route, body({**base, field: "甲"})[:-4] + b"\xff\xfe\xc0\"}", JSON, 400, None),
            ("utf8-surrogate-bytes", route, body({**base, field: "甲"}).replace("甲".encode(), b"\xed\xa0\x80"), JSON, 400, field),
            ("lone-surrogate", route, json.dumps({**base, field: "甲" + LONE}).encode(), JSON, 400, field),
            ("low-surrogate", route, json.dumps({**base, field: "\udc00甲"}).encode(), JSON, 400, field),
            ("control-chars", route, body({**base, field: "甲\x00\x01\x07\x1b[31m\x7f\u200b乙"}), JSON, "ok", field),
            ("outside-vocab", route, body({**base, field: "龘𠀀ñ\u0301甲"}), JSON, "ok", field),
            ("emoji", route, body({**base, field: "甲😀👩‍👩‍👧🇨🇳"}), JSON, "ok", field),
            ("wrong-type-number", route, body({**base, field: 12}), JSON, 400, field),
            ("wrong-type-object", route, body({**base, field: {"a": 1}}), JSON, 400, field),
            ("wrong-type-bool", route, body({**base, field: True}), JSON, 400, field),
            ("malformed-json", route, b'{"' + field.encode() + b'": "a",}', JSON, 400, None),
            ("truncated-json", route, b'{"' + field.encode() + b'": "a', JSON, 400, None),
            ("not-an-object", route, b'["a"]', JSON, 400, None),
            ("empty-body", route, b"", JSON, 400, None),
            ("text-plain", route, body({**base, field: "甲"}), "text/plain", 415, "content-type"),
            ("form", route, b"prompt=a", "application/x-www-form-urlencoded", 415, "content-type"),
            ("no-content-type", route, body({**base, field: "甲"}), None, 415, "content-type"),
            ("unknown-field", route, body({**base, field: "甲", "max_token": 5}), JSON, 400, "max_token"),
            ("unknown-odd-field", route, body({**base, field: "甲", "x\ny" + LONE: 5}), JSON, 400, "?"),
        ]
    for route, field, base in GENERATE:
        ok = {**base, field: "甲"}
        length = LENGTH[route]
        for i, (name, value) in enumerate([(length, -1), (length, 0), (length, 10**30), (length, 1e308), (length, 2.5),
                                           (length, "10"), ("n", 0), ("n", -3), ("n", 10**6), ("temperature", 1e6),
                                           ("temperature", -0.5), ("top_p", 1.0001), ("top_p", -1e-9), ("top_k", -1),
                                           ("top_k", 2**40), ("min_p", 2), ("presence_penalty", 1e300),
                                           ("repetition_penalty", -1), (SEED[route], "abc"), (SEED[route], 2**80),
                                           (STOP[route], {"a": 1}), (STOP[route], ["a"] * 100), (STOP[route], ["x" * 1000]),
                                           ("model", ["m"]), ("temperature", [1])]):
            if name == "n" and route == "/api/extra/generate/stream" and value == 0:
                continue
            out.append((f"{name}={str(value)[:12]}", route, body({**ok, name: value}), JSON, 400, name))
        for name, raw in [("temperature", b"NaN"), ("top_p", b"Infinity"), ("top_p_newline", b"-Infinity"),
                          ("allow_p", b"1e999"), (length, b"NaN")]:
            raw_body = body(ok)[:-1] + b', "' + name.encode() + b'": ' + raw + b"}"
            out.append((f"{name}={raw.decode()}", route, raw_body, JSON, 400, name))
    docs = [("POST /api/docs", "title", 5), ("POST /api/docs", "title", "   "), ("POST /api/docs", "title", "a\x00b"),
            ("POST /api/docs", "title", "x" * 201), ("PUT /api/docs/DOC", "revision", "1"),
            ("PUT /api/docs/DOC", "revision", -1), ("PUT /api/docs/DOC", "reason", "hack"),
            ("/api/docs/DOC/generations", "settings", [1]), ("/api/docs/DOC/generations", "model", 5),
            ("/api/extra/abort", "genkey", 5), ("/api/extra/generate/check", "genkey", ["k"]),
            ("/api/extra/abort", "gen_key", "k")]
    for route, name, value in docs:
        base = {"text": "x"} if "generations" in route else {}
        out.append((f"{name}={str(value)[:12]!r}", route, body({**base, name: value}), JSON, 400, name))
    return out


CASES = cases()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("input")) as c:  # the default limits (4 MB bodies)
        c.doc = c.post("/api/docs", json={"title": "t", "text": "甲"}).json()["id"]
        yield c


def send(c, route, raw, content_type):
    method, path = route.split(" ") if " " in route else ("POST", route)
    headers = {"content-type": content_type} if content_type else {}
    return c.request(method, path.replace("DOC", str(c.doc)), content=raw, headers=headers)


def test_the_list_covers_every_kind_and_every_route():
    ids = {cid.split("=")[0] for cid, *_ in CASES}
    for kind in ("empty", "whitespace", "10MB", "invalid-utf8", "lone-surrogate", "control-chars", "outside-vocab",
                 "emoji", "max_tokens", "max_length", "temperature", "top_p", "wrong-type-number", "malformed-json",
                 "text-plain", "unknown-field"):
        assert kind in ids, kind
    assert {r for _, r, *_ in CASES} >= {r for r, _, _ in TEXTS} | {"/api/extra/abort", "/api/extra/generate/check"}


@pytest.mark.parametrize("cid,route,raw,content_type,expected,field", CASES,
                         ids=[f"{r.split('/')[-1]}-{c}-{i}" for i, (c, r, *_) in enumerate(CASES)])
def test_bad_input_gets_a_clear_answer_and_the_server_keeps_serving(server, cid, route, raw, content_type, expected, field):
    r = send(server, route, raw, content_type)
    text = r.content.decode("utf-8")  # valid UTF-8 whatever came in
    assert "Traceback" not in text and r.status_code != 500
    if expected == "ok":
        assert 200 <= r.status_code < 300, text[:300]
        if route == "/api/extra/tokencount" and cid == "outside-vocab":
            unk = server.model.tokenizer.unknown_id
            assert r.json()["ids"][:-1] == [unk] * (len("龘𠀀ñ\u0301"))  # each char outside the vocab: the unknown char
    else:
        assert r.status_code == expected, text[:300]
        err = r.json()["error"]
        assert err["code"] == expected and err["zh"] and err["en"]
        assert err["param"] == field
        if field and field != "?":
            assert field in err["en"].lower() and field in err["zh"].lower()
        # values are never echoed back
        for needle in ("hack", "abc", "\\ud800", "x\ny", "aaaaaaaaaaaaaaaaaaaa"):
            assert needle not in text
    ok = server.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"] == "乙丙。"


def test_streamed_odd_input_writes_the_unknown_char_never_crashes(server):
    prompt = "甲😀\x00龘"
    with server.stream("POST", "/v1/completions", json={"prompt": prompt, "max_tokens": 4, "stream": True, **GREEDY}) as s:
        assert s.status_code == 200
        raw = s.read().decode()
    assert raw.rstrip().endswith("data: [DONE]")
    ids = server.post("/api/extra/tokencount", json={"prompt": prompt}).json()["ids"]
    unk = server.model.tokenizer.unknown_id
    assert ids == [1, unk, unk, unk]


# ----------------------------------------------------------------------------- the command line

@pytest.fixture
def f2(f2_paths):
    return ["--model", str(f2_paths[0]), "--vocab", str(f2_paths[1])]


CLI_BAD = [
    (["", "--length", "3"], "empty"),
    (["  \u3000\n\t", "--length", "3"], "empty"),
    (["甲", "--length", "0"], "length"),
    (["甲", "--length", "-5"], "length"),
    (["甲", "--length", "abc"], "length"),
    (["甲", "--length", "1e3"], "length"),
    (["甲", "--runs", "0"], "runs"),
    (["甲", "--batch", "-1"], "batch"),
    (["甲", "--top-p", "nan"], "top_p"),
    (["甲", "--temperature", "inf"], "temperature"),
    (["甲", "--temperature", "-1"], "temperature"),
    (["甲", "--top-p", "1.5"], "top_p"),
    (["甲", "--min-p", "-0.1"], "min_p"),
    (["甲", "--top-k", "-1"], "top_k"),
    (["甲", "--seed", "abc"], "seed"),
    (["甲", "--lenght", "5"], "lenght"),
    (["甲", "--stop", ""], "stop"),
]


@pytest.mark.parametrize("args,needle", CLI_BAD, ids=[" ".join(a)[:30] for a, _ in CLI_BAD])
def test_cli_bad_input_is_a_message_and_exit_2(f2, capsys, args, needle):
    try:
        rc = cli_main(["write", *args, *f2, "--runs", "1"] if "--runs" not in args else ["write", *args, *f2])
    except SystemExit as e:  # argparse errors leave through SystemExit
        rc = e.code
    out = capsys.readouterr()
    assert rc == 2, out
    assert "错误" in out.err and "Error" in out.err and needle in out.err, out.err
    assert "Traceback" not in out.err + out.out


def test_cli_bad_opening_files(f2, tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00\xd8\xc0\xaf")  # not UTF-8, UTF-16 with a lone surrogate
    (tmp_path / "empty.txt").write_bytes(b"")
    for path, needle in ((tmp_path / "bad.txt", "not UTF-8"), (tmp_path / "empty.txt", "empty"),
                         (tmp_path / "missing.txt", "cannot read"), (tmp_path, "cannot read")):
        rc = cli_main(["write", "--file", str(path), *f2, "--runs", "1", "--length", "3"])
        err = capsys.readouterr().err
        assert rc == 2 and needle in err and "Traceback" not in err, (path, err)


@pytest.mark.parametrize("opening", ["甲😀👩‍👩‍👧", "林\x01\x1b[31m\x7f黛玉", "龘𠀀ñ\u0301", "林\udcff\udcfe黛"])
def test_cli_odd_openings_are_written(f2, opening):
    # a real process: argv and the terminal's encoding are part of what is tested
    # (a lone surrogate is what Python makes of undecodable bytes in argv)
    r = subprocess.run([sys.executable, "-m", "aiwriter", "write", opening, *f2, "--runs", "1", "--length", "4",
                        "--seed", "1"], capture_output=True, timeout=120,
                       )
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 0, err
    assert "Traceback" not in err and "4 chars" in err and r.stdout


# ----------------------------------------------------------------------------- properties

VOCAB = CharTokenizer(dict(enumerate(["\n", "甲", "乙", "。", UNKNOWN_CHAR, "a", "😀"])))


@hsettings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=60))
def test_property_any_text_encodes_to_valid_ids(text):
    ids = VOCAB.encode(text)
    assert len(ids) == len(text)  # one id per char: nothing dropped, nothing split
    assert all(0 <= i < VOCAB.vocab_size for i in ids)
    known = {ch for ch in VOCAB.stoi}
    assert [i == VOCAB.unknown_id for i in ids] == [ch not in known or ch == UNKNOWN_CHAR for ch in text]
    assert VOCAB.decode(ids) == "".join(ch if ch in known else UNKNOWN_CHAR for ch in text)


@hsettings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=30))
def test_property_decoding_any_ids_gives_text(ids):
    text = VOCAB.decode(ids)
    assert isinstance(text, str) and len(text) == len(ids)
    dec = VOCAB.stream_decoder()
    streamed = "".join(dec.feed(i) for i in ids if 0 <= i < VOCAB.vocab_size) + dec.flush()
    assert streamed == VOCAB.decode([i for i in ids if 0 <= i < VOCAB.vocab_size])


def test_property_world_tokenizer_round_trips_any_text():
    from aiwriter.tokenizer import WorldTokenizer

    world = WorldTokenizer.default()

    @hsettings(max_examples=150, deadline=None)
    @given(st.text(max_size=40))
    def check(text):
        ids = world.encode(text)
        assert all(0 <= i < world.vocab_size for i in ids)
        assert world.decode(ids) == text  # byte-level: every valid string comes back exactly
        dec = world.stream_decoder()
        assert "".join(dec.feed(i) for i in ids) + dec.flush() == text

    check()


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2**70), 2**70), st.booleans(),
                    st.none(), st.text(max_size=3))


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["temperature", "top_p", "top_p_newline", "allow_p", "top_k", "top_a", "min_p",
                                        "repetition_penalty", "presence_penalty", "frequency_penalty", "penalty_decay"]),
                       NUMBERS, max_size=4))
def test_property_request_numbers_are_checked_or_rejected_by_name(fields):
    # what the API does with a body's sampling numbers: valid settings, or an ApiError naming a field
    from aiwriter.server.fields import Fields
    from aiwriter.server.replies import ApiError
    from aiwriter.server.sampling_fields import sampling_from

    try:
        s = sampling_from(Fields(dict(fields)), "stop")
    except ApiError as e:
        assert e.status == 400 and e.param in fields and e.zh and e.en
        return
    for name in ("temperature", "top_p", "top_p_newline", "allow_p", "top_a", "min_p", "penalty_decay"):
        v = getattr(s, name)
        assert math.isfinite(v) and 0 <= v <= (10 if name == "temperature" else 1)


def test_what_sillytavern_sends_is_accepted(server):
    # SillyTavern's KoboldAI request (its getKoboldGenerationData): the fields we do not use are ignored
    body = {"prompt": "甲", "gui_settings": False, "sampler_order": [6, 0, 1, 3, 4, 2, 5], "max_context_length": 4096,
            "max_length": 3, "rep_pen": 1.1, "rep_pen_range": 320, "rep_pen_slope": 0.9, "temperature": 0,
            "tfs": 1, "top_a": 0, "top_k": 0, "top_p": 0.9, "min_p": 0, "typical": 1, "use_world_info": False,
            "singleline": False, "stop_sequence": ["\n\n"], "streaming": False, "can_abort": True, "mirostat": 0,
            "mirostat_tau": 5, "mirostat_eta": 0.1, "use_default_badwordsids": False, "grammar": "",
            "sampler_seed": 7, "api_server": "http://127.0.0.1:8266/api",
            **{f"s{i}": i for i in range(1, 8)}}
    r = server.post("/api/v1/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["text"] == "乙丙。"
