"""Security of `aiwriter serve`: loopback by default, an API key (or an explicit --insecure) off
loopback, the key checked on every API route, CORS opt-in, model names confined to the models
folder (symlinks too), body limits on every route that reads a body, no prompt text in logs."""
import logging
import os
import re

import httpx
import pytest
from test_server_api import GREEDY, double_model, running, server_with

from aiwriter.errors import AIWriterError
from aiwriter.commands import main as cli_main
from aiwriter.server.app import ServerSettings, create_app

KEY = "s3cret-Key_123"
PROMPT_MARK = "甲乙丙甲乙丙甲乙丙甲乙"  # a prompt that must not show up in logs


# ----------------------------------------------------------------------------- exposure

@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5"])
def test_non_loopback_needs_a_key_or_insecure(tmp_path, host):
    with pytest.raises(AIWriterError) as e:
        create_app(ServerSettings(db=str(tmp_path / "d.db"), host=host), model=double_model(), model_name="cycle")
    assert "--api-key" in e.value.en and "--insecure" in e.value.en and "--api-key" in e.value.zh
    for extra in ({"api_key": KEY}, {"insecure": True}):
        app = create_app(ServerSettings(db=str(tmp_path / "d.db"), host=host, **extra), model=double_model(), model_name="c")
        app.state.scheduler.close()
        app.state.store.close()


def test_serve_refuses_a_public_address_before_loading_anything(tmp_path, capsys):
    # the model path does not exist: the refusal must come first, and quickly
    rc = cli_main(["serve", "--host", "0.0.0.0", "--port", "0", "--no-browser", "--db", str(tmp_path / "d.db"),
                       "--model", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert rc == 2 and "错误" in err and "Error" in err and "--api-key" in err and "--insecure" in err
    assert "Traceback" not in err and not (tmp_path / "d.db").exists()


def test_bad_cors_origin_is_a_clear_cli_error(tmp_path, capsys):
    rc = cli_main(["serve", "--cors-origin", "evil.example/path", "--no-browser", "--db", str(tmp_path / "d.db")])
    err = capsys.readouterr().err
    assert rc == 2 and "--cors-origin" in err and "Traceback" not in err


def test_loopback_server_refuses_other_host_names(tmp_path):
    with server_with(tmp_path) as c:
        for host in ("evil.example", "127.0.0.1.evil.example", "192.168.1.5:8266"):
            r = c.get("/api/config", headers={"host": host})
            assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden", host
        assert c.get("/api/config", headers={"host": "localhost:1234"}).status_code == 200


# ----------------------------------------------------------------------------- API key

def api_routes(app):
    """Every (method, path) the app serves under /v1/ and /api/ (from its OpenAPI schema, which
    lists every route of the included routers), path parameters filled in."""
    out = [("GET", "/api/openapi.json"), ("GET", "/api/docs-ui")]
    for path, ops in app.openapi()["paths"].items():
        if path.startswith(("/v1/", "/api/")):
            out += [(m.upper(), re.sub(r"\{[^}]+\}", "1", path)) for m in ops]
    return out


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    with server_with(tmp_path_factory.mktemp("keyed"), api_key=KEY, host="0.0.0.0") as c:
        yield c


def test_every_api_route_wants_the_key(keyed):
    routes = api_routes(keyed.app)
    assert len(routes) >= 20 and ("POST", "/v1/completions") in routes and ("PUT", "/api/docs/1") in routes
    for method, path in routes:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"x-api-key": "s3cret"}, {"authorization": KEY}):
            r = keyed.request(method, path, headers=headers, json={"prompt": "甲"})
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"]["type"] == "unauthorized" and r.headers["www-authenticate"].startswith("Bearer")
    # the page itself holds no data and loads without the key
    assert keyed.get("/").status_code == 200 and keyed.get("/web/app.js").status_code == 200


@pytest.mark.parametrize("headers", [{"authorization": f"Bearer {KEY}"}, {"authorization": f"bearer  {KEY}"},
                                     {"x-api-key": KEY}])
def test_the_key_opens_the_apis(keyed, headers):
    r = keyed.post("/v1/completions", json={"prompt": "甲", "max_tokens": 3, **GREEDY}, headers=headers)
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "乙丙。"
    d = keyed.post("/api/docs", json={"title": "t", "text": "x"}, headers=headers)
    assert d.status_code == 201
    assert keyed.get(f"/api/docs/{d.json()['id']}/export", headers=headers).text == "x"
    assert keyed.get("/api/extra/version", headers=headers).status_code == 200


def test_a_non_ascii_key_is_compared_as_utf8_bytes(tmp_path):
    with server_with(tmp_path, api_key="密钥-key") as c:
        assert c.get("/api/status", headers={"x-api-key": "密钥-key".encode()}).status_code == 200
        assert c.get("/api/status", headers={"x-api-key": "密钥-kez".encode()}).status_code == 401


# ----------------------------------------------------------------------------- CORS

def test_cors_is_opt_in_per_origin(tmp_path):
    allowed, other = "http://localhost:5000", "http://evil.example"
    with server_with(tmp_path, cors_origins=(allowed,)) as c:
        pre = c.options("/v1/completions", headers={"origin": allowed, "access-control-request-method": "POST",
                                                    "access-control-request-headers": "content-type"})
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == allowed
        assert "content-type" in pre.headers["access-control-allow-headers"].lower()
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 2, **GREEDY}, headers={"origin": allowed})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == allowed and r.headers["vary"] == "Origin"
        for path in ("/v1/completions", "/api/docs"):
            assert c.post(path, json={"prompt": "甲"}, headers={"origin": other}).status_code == 403
            assert c.options(path, headers={"origin": other, "access-control-request-method": "POST"}).status_code == 403
        assert c.get("/api/docs", headers={"origin": other}).status_code == 403  # reading is refused too
    with server_with(tmp_path, cors_origins=("*",), insecure=True) as c:
        r = c.get("/v1/models", headers={"origin": other})
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"


def test_cors_and_key_together_a_preflight_needs_no_key(tmp_path):
    allowed = "http://localhost:5000"
    with server_with(tmp_path, cors_origins=(allowed,), api_key=KEY) as c:
        pre = c.options("/v1/completions", headers={"origin": allowed, "access-control-request-method": "POST"})
        assert pre.status_code == 204 and "authorization" in pre.headers["access-control-allow-headers"].lower()
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 1}, headers={"origin": allowed})
        # the 401 carries CORS headers, so a browser client can show why
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == allowed
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 1}, headers={"origin": allowed, "x-api-key": KEY})
        assert r.status_code == 200


def test_any_origin_without_a_key_is_refused_unless_insecure(tmp_path, capsys):
    # any web site could read and delete every manuscript: refused, in both languages
    with pytest.raises(AIWriterError) as e:
        create_app(ServerSettings(db=str(tmp_path / "d.db"), cors_origins=("*",)), model=double_model(), model_name="c")
    assert "--api-key" in e.value.en and "--insecure" in e.value.en and "*" in e.value.en
    assert "--api-key" in e.value.zh and "--insecure" in e.value.zh
    rc = cli_main(["serve", "--cors-origin", "*", "--no-browser", "--port", "0", "--db", str(tmp_path / "d.db"),
                       "--model", str(tmp_path / "missing.pth")])
    err = capsys.readouterr().err
    assert rc == 2 and "--insecure" in err and "错误" in err and "Traceback" not in err
    assert not (tmp_path / "d.db").exists()  # refused before anything was opened
    for extra in ({"api_key": KEY}, {"insecure": True}):
        app = create_app(ServerSettings(db=str(tmp_path / "d.db"), cors_origins=("*",), **extra), model=double_model(),
                         model_name="c")
        app.state.scheduler.close()
        app.state.store.close()


# ----------------------------------------------------------------------------- model paths

def test_model_names_cannot_leave_the_models_folder(tmp_path):
    models, outside = tmp_path / "models", tmp_path / "outside"
    (models / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.pth").write_bytes(b"x")
    (models / "sub" / "ok.pth").write_bytes(b"x")
    os.symlink(outside / "secret.pth", models / "link.pth")          # a file link leading out
    os.symlink(outside, models / "linkdir")                           # a folder link leading out
    os.symlink(models / "sub" / "ok.pth", models / "inside-link.pth")  # a link that stays inside: fine
    os.symlink(models / "loop.pth", models / "loop.pth")              # a link to itself
    loaded = []

    def loader(path, vocab=None, device="cpu", dtype=None):
        loaded.append(path)
        return double_model()

    app = create_app(ServerSettings(db=str(tmp_path / "d.db"), models_dir=str(models)), model=double_model(),
                     loader=loader, model_name="cycle")
    with running(app) as url, httpx.Client(base_url=url) as c:
        names = [m["id"] for m in c.get("/v1/models").json()["data"]]
        assert names == ["cycle", "inside-link.pth", "sub/ok.pth"]
        bad = ["link.pth", "linkdir/secret.pth", "../outside/secret.pth", str(outside / "secret.pth"),
               "sub/../../outside/secret.pth", "./sub/ok.pth", "sub//ok.pth/..", "sub\\ok.pth", "C:secret.pth",
               "sub/ok.pth\x00.txt", "~/secret.pth", "%2e%2e/outside/secret.pth", "", "loop.pth"]
        for name in bad:
            r = c.post("/v1/completions", json={"prompt": "甲", "model": name})
            assert r.status_code in (400, 404) and r.json()["error"]["param"] == "model", name
        assert loaded == []  # nothing outside was ever opened
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 2, "model": "inside-link.pth", **GREEDY})
        assert r.status_code == 200 and loaded == [(models / "sub" / "ok.pth").resolve()]


def test_odd_model_names_are_a_4xx_naming_the_field_and_log_no_path(tmp_path, capfd):
    models = tmp_path / "models"
    models.mkdir()
    (models / "good.pth").write_bytes(b"x")
    loaded = []

    def loader(path, vocab=None, device="cpu", dtype=None):
        loaded.append(path)
        return double_model()

    app = create_app(ServerSettings(db=str(tmp_path / "d.db"), models_dir=str(models)), model=double_model(),
                     loader=loader, model_name="cycle")
    with running(app) as url, httpx.Client(base_url=url) as c:
        cases = {"a" * 300 + ".pth": (400, 404), "sub/" + "a" * 300 + ".pth": (400, 404),
                 ("d/" * 600) + "x.pth": (400, 404), "good.pth/": (404,), "good.pth//": (404,),
                 "sub//good.pth": (400, 404), "GOOD.pth": (404,)}
        for name, statuses in cases.items():
            for path, body in (("/v1/completions", {"prompt": "甲", "model": name}),
                               ("/api/v1/generate", {"prompt": "甲", "model": name})):
                r = c.post(path, json=body)
                assert r.status_code in statuses and r.json()["error"]["param"] == "model", (name[:20], r.text[:200])
        assert loaded == []  # good.pth/ did not force a load
        assert c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 1, "model": "good.pth"}).status_code == 200
    logged = "".join(capfd.readouterr())
    assert "Traceback" not in logged and str(tmp_path) not in logged


# ----------------------------------------------------------------------------- body limits

def test_a_10_mb_body_gets_413_on_every_route_that_reads_one(tmp_path):
    big = b'{"prompt": "' + b"a" * (10 * 2**20) + b'"}'
    with server_with(tmp_path) as c:  # the default 4 MB limit
        doc = c.post("/api/docs", json={"title": "t"}).json()["id"]
        routes = [r for r in api_routes(c.app) if r[0] in ("POST", "PUT") and "restore" not in r[1]]
        assert len(routes) >= 8
        for method, path in routes:
            path = path.replace("/1", f"/{doc}") if path.startswith("/api/docs/") else path
            r = c.request(method, path, content=big, headers={"content-type": "application/json"})
            assert r.status_code == 413, (method, path, r.text[:200])
            assert r.json()["error"]["type"] == "request_too_large"
        r = c.post("/v1/completions", json={"prompt": "甲", "max_tokens": 2, **GREEDY})
        assert r.status_code == 200  # still serving


# ----------------------------------------------------------------------------- logs

def _generate(c, prompt):
    r = c.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2, **GREEDY})
    assert r.status_code == 200
    with c.stream("POST", "/api/extra/generate/stream", json={"prompt": prompt, "max_length": 2, **GREEDY}) as s:
        s.read()


def test_logs_carry_sizes_not_prompts(tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO, logger="aiwriter.server")
    with server_with(tmp_path) as c:
        _generate(c, PROMPT_MARK)
        c.model.net.explode = True  # the error path prints a traceback: no prompt in it either
        assert c.post("/v1/completions", json={"prompt": PROMPT_MARK, "max_tokens": 2}).status_code == 500
        c.model.net.explode = False
    logged = caplog.text + "".join(capfd.readouterr())
    assert f"prompt {len(PROMPT_MARK)} chars" in caplog.text and "simulated failure" in logged
    assert PROMPT_MARK not in logged and PROMPT_MARK[:3] not in logged


def test_log_prompts_puts_them_in(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="aiwriter.server")
    with server_with(tmp_path, log_prompts=True) as c:
        _generate(c, PROMPT_MARK)
    assert caplog.text.count(PROMPT_MARK) == 2


def test_a_real_serve_on_all_interfaces_with_a_key(tmp_path):
    # the whole command: binds 0.0.0.0, wants the key, logs one line per request without its text
    from test_hardening_faults import FIXTURES

    import subprocess
    import sys
    import threading
    import time

    cmd = [sys.executable, "-m", "aiwriter", "serve", "--no-browser", "--host", "0.0.0.0", "--port", "0",
           "--api-key", KEY, "--db", str(tmp_path / "d.db"), "--model", str(FIXTURES / "aiwriter-v2-tiny.pth"),
           "--vocab", str(FIXTURES / "aiwriter-v2-vocab.json")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    log: list[str] = []
    try:
        for line in proc.stdout:
            log.append(line)
            m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            if m:
                break
        else:
            raise AssertionError("".join(log))
        threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
        url = m.group(1)
        assert httpx.get(url + "/api/status").status_code == 401
        r = httpx.post(url + "/v1/completions", json={"prompt": "林黛玉" + PROMPT_MARK, "max_tokens": 3},
                       headers={"authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 3
        deadline = time.time() + 10
        while not any("chars, n=1" in x for x in log):
            assert time.time() < deadline, "".join(log)
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(20)
    out = "".join(log)
    assert f"prompt {len(PROMPT_MARK) + 3} chars" in out and PROMPT_MARK not in out and "林黛玉" not in out
    assert "API" in out and KEY not in out  # the banner says a key is needed, and does not print it


def test_the_page_cannot_be_framed_and_runs_only_its_own_files(tmp_path):
    with server_with(tmp_path) as c:
        for path in ("/", "/web/app.js", "/web/style.css", "/api/docs-ui", "/api/openapi.json", "/api/status",
                     "/no-such-page"):
            h = c.get(path).headers
            assert "frame-ancestors 'none'" in h["content-security-policy"] and "default-src 'self'" in h["content-security-policy"]
            assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff", path


def test_no_page_loads_code_from_another_site(tmp_path):
    # the API docs page used to load Swagger UI from a CDN on the API's own origin
    with server_with(tmp_path) as c:
        r = c.get("/api/docs-ui")
        assert "cdn" not in r.text.lower() and "<script src=\"http" not in r.text
        assert c.get("/api/openapi.json").status_code == 200  # the schema itself is still served
        page = c.get("/").text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", page)
