"""Slot policy over real sockets: emulator + fake children + the proxy as a subprocess."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.support.emulator import EmulatorProcess, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy, wait_for

SMALL = "Qwen3-0.6B-GGUF"
BIG = "Qwen3-4B-GGUF"


def slot_toml(name: str, model: str, **extra: Any) -> str:
    lines = ["[[slot]]", f'name = "{name}"', f'model = "{model}"']
    for key, value in extra.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def chat(model: str, stream: bool = False, max_tokens: int = 4) -> dict[str, Any]:
    return {"model": model, "stream": stream, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}


def stream_events(
    proxy: ProxyProcess, body: dict[str, Any], on_first: threading.Event | None = None
) -> tuple[int, list[bytes]]:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    events: list[bytes] = []
    buf = b""
    while True:
        piece = resp.read1(65536)
        if not piece:
            break
        buf += piece
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            events.append(event)
            if on_first is not None:
                on_first.set()
    conn.close()
    return resp.status, events


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    emu = start_emulator("--fake-tokens-per-second", "200", max_loaded_models=1)
    yield emu
    emu.stop()


def test_cold_burst_causes_one_load_and_all_wait(emulator: EmulatorProcess) -> None:
    emulator.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 1.0})
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, cold_start="wait", max_wait_s=30)) as proxy:

        def one(_: int) -> int:
            status, _, _ = proxy.request("POST", "/v1/chat/completions", chat("primary"))
            return status

        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, range(50)))
        assert statuses == [200] * 50
        assert emulator.state()["load_requests"].get(SMALL) == 1
        assert emulator.log_text().count(f"Ensuring model loaded: {SMALL}") == 1


def test_reject_mode_answers_503_with_retry_after_and_sdk_retries(emulator: EmulatorProcess) -> None:
    emulator.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 0.8})
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, cold_start="reject")) as proxy:

        def one(_: int) -> tuple[int, dict[str, str], bytes]:
            return proxy.request("POST", "/v1/chat/completions", chat("primary"))

        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(one, range(50)))
        for status, headers, body in results:
            assert status == 503
            assert int(headers["retry-after"]) >= 1
            err = json.loads(body)["error"]
            assert err["code"] == "slot.loading"
            assert err["details"]["slot"] == "primary"
        assert emulator.state()["load_requests"].get(SMALL) == 1
        # The official SDK retries 503 honouring Retry-After, and then succeeds.
        client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused")
        proxy.request("POST", "/api/slots/primary/unload")
        wait_for(lambda: proxy.slots()["primary"]["state"] == "offline", 10)
        reply = client.chat.completions.create(
            model="primary", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        assert reply.choices[0].message.content


def test_a_serving_slot_is_never_evicted_for_another(emulator: EmulatorProcess) -> None:
    config = slot_toml("alpha", SMALL, cold_start="wait", max_wait_s=30) + slot_toml("beta", BIG, cold_start="wait")
    with start_proxy(emulator.base_url, config) as proxy:
        assert proxy.request("POST", "/v1/chat/completions", chat("alpha"))[0] == 200
        first = threading.Event()
        result: dict[str, Any] = {}

        def long_stream() -> None:
            result["alpha"] = stream_events(proxy, chat("alpha", stream=True, max_tokens=300), first)
            result["alpha_done"] = time.monotonic()

        streamer = threading.Thread(target=long_stream)
        streamer.start()
        assert first.wait(10)
        status, _, _ = proxy.request("POST", "/v1/chat/completions", chat("beta"))
        beta_done = time.monotonic()
        streamer.join(30)
        status_a, events = result["alpha"]
        assert status_a == 200
        assert events[-1] == b"data: [DONE]"  # the long stream on alpha was not cut
        assert len([e for e in events if b'"content"' in e]) >= 300
        assert status == 200
        assert beta_done >= result["alpha_done"]  # beta waited for alpha's stream to finish
        log = emulator.log_text()
        assert "evicting LRU" not in log  # lemond never picked a victim itself
        assert f"Unload model called: {SMALL}" in log


def test_short_wait_gets_503_while_the_pool_is_busy(emulator: EmulatorProcess) -> None:
    config = slot_toml("alpha", SMALL) + slot_toml("beta", BIG, cold_start="wait", max_wait_s=0.5)
    with start_proxy(emulator.base_url, config) as proxy:
        first = threading.Event()
        result: dict[str, Any] = {}
        streamer = threading.Thread(
            target=lambda: result.update(alpha=stream_events(proxy, chat("alpha", stream=True, max_tokens=300), first))
        )
        streamer.start()
        assert first.wait(10)
        status, headers, body = proxy.request("POST", "/v1/chat/completions", chat("beta"))
        streamer.join(30)
        assert status == 503 and int(headers["retry-after"]) >= 1
        assert json.loads(body)["error"]["code"] in ("slot.loading", "slot.load_failed")
        assert result["alpha"][1][-1] == b"data: [DONE]"


def test_idle_unload_after_timeout_but_never_mid_request(emulator: EmulatorProcess) -> None:
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, idle_timeout_s=1.0)) as proxy:
        # A stream longer than the idle timeout keeps the slot busy the whole time.
        status, events = stream_events(proxy, chat("primary", stream=True, max_tokens=500))
        assert status == 200 and events[-1] == b"data: [DONE]"
        assert f"Unload model called: {SMALL}" not in emulator.log_text()
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "offline", 10)
        assert f"Unload model called: {SMALL}" in emulator.log_text()
        time.sleep(0.3)  # let the eviction's log line reach the proxy too
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert 'hal0proxy_evictions_total{initiator="proxy",reason="idle"} 1.0' in metrics
        assert 'initiator="lemond"' not in metrics  # counted once, as the proxy's decision


def test_idle_unload_is_journaled(emulator: EmulatorProcess) -> None:
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, idle_timeout_s=1.0)) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=15)
        conn.request("GET", "/api/v1/adapter/events")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == "text/event-stream"
        first = resp.read1(65536)
        assert first.startswith(b"event: snapshot")
        assert proxy.request("POST", "/v1/chat/completions", chat("primary"))[0] == 200
        seen = b""
        deadline = time.monotonic() + 10
        while b"slot.evicted_by_idle_policy" not in seen and time.monotonic() < deadline:
            seen += resp.read1(65536)
        conn.close()
        frame = next(f for f in seen.split(b"\n\n") if b"slot.evicted_by_idle_policy" in f)
        data = json.loads(frame.split(b"data: ", 1)[1])
        assert data["slot"] == "primary" and data["idle_s"] >= 1.0 and "idle" in data["reason"]


def test_evictions_crashes_and_port_drift_are_absorbed(emulator: EmulatorProcess) -> None:
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, warm=True)) as proxy:
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 10)
        client = openai.OpenAI(base_url=proxy.base_url + "/v1", api_key="unused", max_retries=0)
        for fault in ("evict", "crash", "respawn", "evict", "crash"):
            status, _ = emulator.post(f"/_emu/{fault}", {"model_name": SMALL})
            assert status == 200, fault
            reply = client.chat.completions.create(
                model="primary", messages=[{"role": "user", "content": "x"}], max_tokens=2
            )
            assert reply.choices[0].message.content, fault


def test_warm_slots_load_at_start_and_readyz(emulator: EmulatorProcess) -> None:
    emulator.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 1.5})
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, warm=True)) as proxy:
        status, _, body = proxy.request("GET", "/readyz")
        assert status == 503 and json.loads(body)["ready"] is False
        assert wait_for(lambda: proxy.request("GET", "/readyz")[0] == 200, 15)
        assert proxy.request("GET", "/healthz")[0] == 200


def test_unnamed_loaded_model_is_adopted_and_known_model_loads_on_demand(emulator: EmulatorProcess) -> None:
    emulator.post("/v1/load", {"model_name": "nomic-embed-text-v1-GGUF"})
    with start_proxy(emulator.base_url, "") as proxy:
        status, _, body = proxy.request("POST", "/v1/embeddings", {"model": "nomic-embed-text-v1-GGUF", "input": "x"})
        assert status == 200 and json.loads(body)["data"]
        assert emulator.state()["load_requests"].get("nomic-embed-text-v1-GGUF") == 1  # adopted, not reloaded
        status, _, _ = proxy.request("POST", "/v1/chat/completions", chat(SMALL))
        assert status == 200
        ids = {m["id"] for m in proxy.get_json("/v1/models")["data"]}
        assert {SMALL, BIG, "nomic-embed-text-v1-GGUF"} <= ids
        status, _, body = proxy.request("POST", "/v1/chat/completions", chat("no-such-model"))
        assert status == 404 and json.loads(body)["error"]["code"] == "dispatch.no_route"


def test_admin_auth_and_slot_name_validation(emulator: EmulatorProcess, tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    config = f'admin_token_file = "{token_file}"\n' + slot_toml("primary", SMALL)
    with start_proxy(emulator.base_url, config) as proxy:
        for name in ("..", "..%2F..%2Fetc", "a%20b", "a" * 257, "a%00b"):
            status, _, body = proxy.request("POST", f"/api/slots/{name}/load")
            assert status == 400, name
            assert json.loads(body)["error"]["code"] == "slot.invalid_name"
        # Names that could be lemond model names are looked up (after auth) and not found.
        for name in ("UPPER", "-x", "a" * 40):
            status, _, body = proxy.request(
                "POST", f"/api/slots/{name}/load", headers={"Authorization": "Bearer s3cret"}
            )
            assert status == 404 and json.loads(body)["error"]["code"] == "slot.not_found", (name, body)
        assert emulator.state()["load_requests"] == {}  # rejected before any work
        status, _, body = proxy.request("POST", "/api/slots/primary/load")
        assert status == 401 and json.loads(body)["error"]["code"] == "auth.required"
        status, _, body = proxy.request("POST", "/api/slots/primary/load", headers={"Authorization": "Bearer nope"})
        assert status == 403 and json.loads(body)["error"]["code"] == "auth.forbidden"
        status, _, body = proxy.request("POST", "/api/slots/primary/load", headers={"Authorization": "Bearer s3cret"})
        assert status == 200 and json.loads(body)["state"] == "ready"
        status, _, body = proxy.request("GET", "/api/slots/nosuch")
        assert status == 404 and json.loads(body)["error"]["code"] == "slot.not_found"
        one = proxy.get_json("/api/slots/primary")
        assert one["backend_url"].startswith("http://127.0.0.1:") and one["model_id"] == SMALL
        status, _, _ = proxy.request("POST", "/api/slots/primary/unload", headers={"Authorization": "Bearer s3cret"})
        assert status == 200
        assert proxy.slots()["primary"]["state"] == "offline"


def test_admin_unload_drains_streams_in_flight(emulator: EmulatorProcess) -> None:
    with start_proxy(emulator.base_url, slot_toml("primary", SMALL, warm=True)) as proxy:
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 10)
        first = threading.Event()
        result: dict[str, Any] = {}
        streamer = threading.Thread(
            target=lambda: result.update(s=stream_events(proxy, chat("primary", stream=True, max_tokens=300), first))
        )
        streamer.start()
        assert first.wait(10)
        status, _, body = proxy.request("POST", "/api/slots/primary/unload")
        streamer.join(30)
        assert status == 200 and json.loads(body)["state"] == "offline"
        assert result["s"][1][-1] == b"data: [DONE]"  # the stream was not cut by the unload
