"""lemond's own OpenAI surface: auto-load on first request, then relay to the child."""

from __future__ import annotations

import json

from openai import OpenAI

from tests.support.emulator import EmulatorProcess

SMALL, EMBED = "Qwen3-0.6B-GGUF", "nomic-embed-text-v1-GGUF"


def test_auto_load_and_stream_through_lemond(fresh: EmulatorProcess) -> None:
    client = OpenAI(base_url=f"{fresh.base_url}/api/v1", api_key="unused", max_retries=0, timeout=60)
    stream = client.chat.completions.create(
        model=SMALL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 4
    assert SMALL in fresh.loaded()
    log = fresh.log_text()
    assert f"[Info] (Server) Auto-loading model: {SMALL}" in log
    assert f"[Info] (Server) Model loaded successfully: {SMALL}" in log
    assert "[Info] (Server) POST /api/v1/chat/completions - Streaming" in log
    assert "[Info] (Server) Streaming completed - 200 OK" in log

    reply = client.chat.completions.create(model=SMALL, messages=[{"role": "user", "content": "x"}], max_tokens=3)
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert fresh.state()["spawns_by_model"] == {SMALL: 1}, "already loaded: no second spawn"
    _, stats = fresh.get("/v1/stats")
    assert stats["request_count_total"] == 2

    emb = client.embeddings.create(model=EMBED, input=["a", "b"])
    assert len(emb.data) == 2


def test_unknown_model_is_404_before_streaming(fresh: EmulatorProcess) -> None:
    body = json.dumps({"model": "nope", "messages": [], "stream": True}).encode()
    status, _, raw = fresh.request("POST", "/v1/chat/completions", body)
    assert status == 404
    assert json.loads(raw)["error"]["code"] == "model_not_found"


def test_crashed_model_is_reloaded_on_request(fresh: EmulatorProcess) -> None:
    assert fresh.post("/v1/load", {"model_name": SMALL})[0] == 200
    pid = fresh.loaded()[SMALL]["pid"]
    fresh.post("/_emu/crash", {"model_name": SMALL})
    body = json.dumps({"model": SMALL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}).encode()
    status, _, raw = fresh.request("POST", "/v1/chat/completions", body)
    assert status == 200 and json.loads(raw)["object"] == "chat.completion"
    assert fresh.loaded()[SMALL]["pid"] != pid
    assert "(state=watchdog_reset)" in fresh.log_text()
