"""The server's states folder: GET /api/states, a per-request `state` on the OpenAI and KoboldAI
routes, refusals that name the field; and the disk state cache across a restart of the app."""
import httpx
import torch

import aiwriter
from aiwriter.server.app import ServerSettings, create_app
from aiwriter.state_files import save_time_state
from test_server_api import running

GREEDY = {"temperature": 0, "repetition_penalty": 0}


def settings(tmp_path, **kw):
    return ServerSettings(db=str(tmp_path / "m.db"), **kw)


def test_states_listed_and_used_per_request(tmp_path):
    models, states = tmp_path / "models", tmp_path / "states"
    models.mkdir()
    (states / "sub").mkdir(parents=True)
    ts = 0.5 * torch.randn(4, 4, 64, 64, generator=torch.Generator().manual_seed(0))
    save_time_state(states / "style.pth", ts)
    save_time_state(states / "sub" / "b.safetensors", -ts)
    torch.save({"blocks.0.att.time_state": torch.zeros(2, 8, 8)}, states / "other.pth")
    (states / "notes.txt").write_text("x")
    model = aiwriter.load_model()
    app = create_app(settings(tmp_path, models_dir=str(models)), model=model)  # states/ beside models/
    try:
        with running(app) as url:
            c = httpx.Client(base_url=url, timeout=120)
            assert c.get("/api/states").json() == {"states": ["other.pth", "style.pth", "sub/b.safetensors"]}
            assert c.get("/api/config").json()["states"] == ["other.pth", "style.pth", "sub/b.safetensors"]
            body = {"prompt": "从前有座山，", "max_tokens": 16, "seed": 1, **GREEDY}
            c.post("/v1/completions", json=body).json()["choices"][0]["text"]
            styled = c.post("/v1/completions", json={**body, "state": "style.pth"}).json()["choices"][0]["text"]
            # the same as reading the opening from that state in-process
            from aiwriter.sampling import SamplingSettings
            from aiwriter.writer import Writer

            w = Writer(model)
            r = w.read("从前有座山，", start=model.state_from_file(states / "style.pth"))
            ids = [int(model.tokenizer.encode(ch)[0]) for ch in styled[:1]]
            assert int(r.logits.argmax()) == ids[0]
            sampled = {**body, "temperature": 1.0, "max_tokens": 32}
            assert c.post("/v1/completions", json={**sampled, "state": "style.pth"}).json()["choices"][0]["text"] != \
                c.post("/v1/completions", json=sampled).json()["choices"][0]["text"]
            k = c.post("/api/v1/generate", json={"prompt": "从前有座山，", "max_length": 16, "sampler_seed": 1,
                                                 "state": "sub/b.safetensors", **GREEDY})
            assert k.status_code == 200 and k.json()["results"][0]["text"]
            for name, status in (("../states/style.pth", 400), ("nope.pth", 404), ("notes.txt", 404), ("other.pth", 422)):
                r = c.post("/v1/completions", json={**body, "state": name})
                assert r.status_code == status, (name, r.text)
                assert r.json()["error"]["param"] == "state"
            assert "2, 8, 8" in r.json()["error"]["message"]
    finally:
        app.state.scheduler.close()
        app.state.store.close()


def test_restart_reuses_states_from_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("AIWRITER_CACHE", str(tmp_path / "cache"))
    text = "　　王冕七岁上死了父亲，他母亲做些针黹，供给他到村学堂里去读书。" * 20
    body = {"prompt": text, "max_tokens": 4, "seed": 1, **GREEDY}
    outs = []
    for extra in ("", "看看三个年头"):
        app = create_app(settings(tmp_path, state_cache_bytes=2**30))
        try:
            with running(app) as url:
                c = httpx.Client(base_url=url, timeout=120)
                outs.append(c.post("/v1/completions", json={**body, "prompt": text + extra}).json())
                outs.append(c.get("/api/status").json())
        finally:
            app.state.scheduler.close()
            app.state.store.close()
    first, cold, _, warm = outs
    assert cold["disk_ids"] == 0 and cold["read_ids"] == cold["prompt_ids"]
    assert warm["disk_ids"] == cold["prompt_ids"] and warm["read_ids"] == warm["prompt_ids"] - cold["prompt_ids"]
