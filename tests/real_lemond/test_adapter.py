"""The proxy's lemond layer (client, health parser, log stream, adapter) against the real lemond.

One real lemond per version (``max_loaded_models = 1``, models ``alpha`` and ``beta``,
real llama-server children). The v10.7.0 differences checked here: the log WebSocket only
on ``websocket_port``, the older ``/v1/health`` shape, no watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest

from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.client import LemondClient
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, ModelLoaded
from hal0proxy.lemond.health import port_from_backend_url
from tests.support.real_lemond import RealLemond
from tests.support.ws import WSClient, WSRejected

# A cold lemond build runs inside the first fixture.
pytestmark = pytest.mark.timeout(3900)

# Keys of one all_models_loaded[] entry, per version (measured; see RECIPE §6).
ENTRY_KEYS = {
    "11.7.0": {
        "backend_alive", "backend_health", "backend_url", "checkpoint", "device", "is_busy", "is_streaming",
        "last_use", "loaded", "max_context_window", "model_name", "pid", "pinned", "recipe", "recipe_options",
        "residency_class", "slot_pool", "status", "type", "watchdog_reset",
    },
    "10.7.0": {
        "backend_url", "checkpoint", "device", "last_use", "model_name", "pid", "recipe", "recipe_options", "type",
    },
}  # fmt: skip


@pytest.fixture(autouse=True)
def nothing_loaded(lemond: RealLemond) -> None:
    """Each test starts from an empty pool, whatever the previous one left behind."""
    lemond.post("/v1/unload", {})


async def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def adapter_on(lem: RealLemond) -> AsyncIterator[tuple[LemondAdapter, list[LemondEvent]]]:
    adapter = LemondAdapter(lem.base_url, api_key=None, heartbeat_s=30.0)
    seen: list[LemondEvent] = []
    adapter.subscribe(seen.append)
    await adapter.start()
    try:
        await wait_for(lambda: adapter.ws_connected, 15, "the log stream")
        yield adapter, seen
    finally:
        await adapter.stop()


async def test_health_shape_and_load_unload(lemond: RealLemond) -> None:
    client = LemondClient(lemond.base_url, None)
    with contextlib.suppress(Exception):
        await client.unload(None, timeout=30)
    idle = await client.health()
    assert idle.version == lemond.version
    assert idle.websocket_port == lemond.websocket_port
    assert idle.loaded == () and idle.model_loaded is None
    assert idle.max_models["llm"] == 1

    doc = await client.load("alpha", timeout=60)
    assert doc["status"] == "success", doc
    snap = await client.health()
    alpha = snap.get("alpha")
    assert alpha is not None, snap
    raw = lemond.health()
    (entry,) = raw["all_models_loaded"]
    assert set(entry) == ENTRY_KEYS[lemond.version]
    # /v1/health names the model by its public name even though the log lines say extra.alpha.
    assert entry["model_name"] == "alpha" and raw["model_loaded"] == "alpha"
    assert alpha.port == port_from_backend_url(entry["backend_url"]) and alpha.pid == entry["pid"]
    assert alpha.type == "llm" and alpha.recipe == "llamacpp"
    assert entry["checkpoint"] == str(lemond.models_dir / "alpha.gguf")
    # The child really serves on that port.
    status, _, body = _child_get(alpha.port, "/health")
    assert status == 200, body

    await client.unload("alpha", timeout=60)
    assert (await client.health()).loaded == ()


def _child_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_log_websocket_location(lemond: RealLemond) -> None:
    with WSClient(lemond.websocket_port) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": None})
        assert ws.recv_json()["type"] == "logs.snapshot"
    if lemond.ws_on_main_port:
        with WSClient(lemond.port) as ws:
            ws.send_json({"type": "logs.subscribe", "after_seq": None})
            assert ws.recv_json()["type"] == "logs.snapshot"
    else:
        with pytest.raises((WSRejected, OSError)), WSClient(lemond.port) as ws:
            ws.send_json({"type": "logs.subscribe", "after_seq": None})
            ws.recv_json(timeout=3)


async def test_adapter_finds_the_stream_and_follows_loads(lemond: RealLemond) -> None:
    async with adapter_on(lemond) as (adapter, _seen):
        expected_port = lemond.port if lemond.ws_on_main_port else lemond.websocket_port
        assert adapter.ws_url is not None and f":{expected_port}/" in adapter.ws_url, adapter.ws_url
        await adapter.client.load("alpha", timeout=60)
        port = lemond.loaded()["alpha"]["backend_url"]

        def alpha_routed() -> bool:
            route = adapter.routes.get("alpha")
            return route is not None and route.alive and f":{route.port}/" in port

        await wait_for(alpha_routed, 5, "a live route for alpha")
        # LRU eviction by lemond itself (max_loaded_models = 1): alpha's route must go.
        await adapter.client.load("beta", timeout=60)
        beta_url = lemond.loaded()["beta"]["backend_url"]
        await wait_for(lambda: (r := adapter.routes.get("alpha")) is None or not r.alive, 5, "alpha's route to go")
        await wait_for(
            lambda: (r := adapter.routes.get("beta")) is not None and r.alive and f":{r.port}/" in beta_url,
            5,
            "a live route for beta",
        )
        await adapter.client.unload(None, timeout=60)
        await wait_for(lambda: (r := adapter.routes.get("beta")) is None or not r.alive, 5, "beta's route to go")


async def test_a_load_requested_while_another_model_spawns_does_not_take_its_child(lemond: RealLemond) -> None:
    """lemond prints ``Ensuring model loaded: beta`` as the request arrives, in the middle of
    alpha's spawn lines; beta's load then waits for alpha's. Each model's ``ModelLoaded`` must
    name its own child: beta's never alpha's PID (a slot would be routed to the other model)."""
    async with adapter_on(lemond) as (adapter, seen):
        before = len(lemond.log_lines())
        first = asyncio.create_task(adapter.client.load("alpha", timeout=60))
        # alpha's child is being started when beta's request arrives
        spawning = "Loading model: extra.alpha"
        await wait_for(lambda: any(spawning in line for line in lemond.log_lines()[before:]), 30, "alpha's spawn")
        await adapter.client.load("beta", timeout=90)
        await first
        survivor = lemond.loaded()["beta"]  # max_loaded_models = 1: beta's load evicted alpha
        beta_pid, beta_port = survivor["pid"], port_from_backend_url(survivor["backend_url"])

        def loaded(model: str) -> list[ModelLoaded]:
            return [e for e in seen if isinstance(e, ModelLoaded) and e.model.removeprefix("extra.") == model]

        await wait_for(lambda: bool(loaded("beta")), 5, "beta's ModelLoaded")
        assert [(e.port, e.pid) for e in loaded("beta")] == [(beta_port, beta_pid)], seen
        assert [e.pid for e in loaded("alpha")] and beta_pid not in [e.pid for e in loaded("alpha")], seen
        await adapter.client.unload(None, timeout=60)


def test_snapshot_entries_and_resume(lemond: RealLemond) -> None:
    with WSClient(lemond.websocket_port) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": None})
        snap = ws.recv_json()
        assert snap["type"] == "logs.snapshot"
        seqs = [e["seq"] for e in snap["entries"]]
        assert seqs and seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert set(snap["entries"][0]) == {"line", "seq", "severity", "tag", "timestamp"}
        last = seqs[-1]
        status, _ = lemond.post("/v1/load", {"model_name": "alpha"})
        assert status == 200
        entries = []
        deadline = time.monotonic() + 20
        while not any("Model loaded successfully" in e["line"] for e in entries):
            assert time.monotonic() < deadline, entries
            frame = ws.recv_json()
            assert frame["type"] == "logs.entry", frame
            entries.append(frame["entry"])
        new_seqs = [e["seq"] for e in entries]
        assert new_seqs[0] == last + 1 and new_seqs == list(range(last + 1, last + 1 + len(new_seqs)))
        assert any("Loading model: extra.alpha" in e["line"] for e in entries)
    # Resume: only entries after the given seq come back, in the snapshot frame.
    with WSClient(lemond.websocket_port) as ws:
        ws.send_json({"type": "logs.subscribe", "after_seq": last})
        resumed = ws.recv_json()
        assert resumed["type"] == "logs.snapshot"
        assert [e["seq"] for e in resumed["entries"]][: len(new_seqs)] == new_seqs
        assert all(e["seq"] > last for e in resumed["entries"])
    lemond.post("/v1/unload", {})


async def test_seq_resets_after_a_restart(lemond: RealLemond) -> None:
    async with adapter_on(lemond) as (adapter, seen):
        lemond.stop()
        lemond.start()
        await wait_for(lambda: any(isinstance(e, LemondRestarted) for e in seen), 20, "LemondRestarted")
        await wait_for(lambda: adapter.ws_connected, 20, "the stream to reconnect")
        with WSClient(lemond.websocket_port) as ws:
            ws.send_json({"type": "logs.subscribe", "after_seq": None})
            snap = ws.recv_json()
        assert snap["entries"][0]["seq"] == 1
        # The stream still drives routes after the restart.
        await adapter.client.load("beta", timeout=60)
        await wait_for(lambda: (r := adapter.routes.get("beta")) is not None and r.alive, 5, "beta's route")
        await adapter.client.unload(None, timeout=60)
