"""LemondAdapter over real loopback sockets against small fakes: a canned ``/v1/health``
(HTTP) and a scripted log WebSocket. The fakes play a v10.1-v10.7 lemond (the main
port answers the upgrade with 404, so the adapter must use ``websocket_port``); the
emulator-backed scenarios live in test_adapter_emulator.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import pytest

from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.events import LemondEvent, ModelLoaded, ProcessCrashed, Resynced

from .fakes import FakeHTTP, FakeLogServer, Seen, WSPeer


def health_doc(ws_port: int | None, loaded: dict[str, tuple[int, int]]) -> bytes:
    doc: dict[str, object] = {
        "status": "ok",
        "version": "10.7.0",
        "max_models": {"llm": 2, "embedding": 2},
        "all_models_loaded": [
            {"model_name": m, "backend_url": f"http://127.0.0.1:{port}/v1", "pid": pid, "type": "llm"}
            for m, (port, pid) in loaded.items()
        ],
    }
    if ws_port is not None:
        doc["websocket_port"] = ws_port
    return orjson.dumps(doc)


def ts() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def load_lines(model: str, port: int, pid: int) -> list[str]:
    return [
        f"{ts()} [Info] (Server) Ensuring model loaded: {model} ",
        f"{ts()} [Info] (LlamaCpp) Loading model: {model}",
        f"{ts()} [Info] (ProcessManager) Process started successfully, PID: {pid}",
        f"{ts()} [Info] (Process) main: server is listening on http://127.0.0.1:{port} - starting the main loop",
        f"{ts()} [Info] (WrappedServer) llama-server is ready!",
        f"{ts()} [Info] (Router) Model loaded successfully. Total loaded: 1",
    ]


@dataclass
class Rig:
    http: FakeHTTP
    logs: FakeLogServer
    loaded: dict[str, tuple[int, int]]
    ws_port: int | None
    adapter: LemondAdapter
    events: list[LemondEvent]
    seq: int = 0

    def health_calls(self) -> int:
        return sum(1 for s in self.http.seen if s.path == "/v1/health")

    async def peer(self) -> WSPeer:
        p = await asyncio.wait_for(self.logs.peers.get(), 5)
        await p.recv_json()
        return p

    async def say(self, p: WSPeer, lines: list[str]) -> None:
        for line in lines:
            self.seq += 1
            await p.entry(self.seq, line)

    async def wait(self, cond: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.005)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    http = await FakeHTTP().start()
    logs = await FakeLogServer().start()
    r = Rig(http, logs, {"m1": (8001, 101)}, logs.port, None, [])  # type: ignore[arg-type]
    http.routes[("GET", "/v1/health")] = lambda _s: (200, health_doc(r.ws_port, r.loaded), "application/json")
    r.adapter = LemondAdapter(http.base_url, api_key=None, heartbeat_s=30.0, poll_s=0.1, ws_ping_s=2.0)
    r.adapter.subscribe(r.events.append)
    yield r
    await r.adapter.stop()
    await logs.close()
    await http.close()


async def test_start_adopts_health_and_connects_via_websocket_port(rig: Rig) -> None:
    await rig.adapter.start()
    route = rig.adapter.routes.get("m1")
    assert route is not None and route.port == 8001 and route.pid == 101 and route.alive
    p = await rig.peer()
    await p.snapshot([])
    await rig.wait(lambda: rig.adapter.ws_connected)
    assert rig.adapter.ws_url == f"ws://127.0.0.1:{rig.logs.port}/logs/stream"
    assert rig.adapter.last_health is not None and rig.adapter.last_health.max_models["llm"] == 2
    assert isinstance(rig.events[0], Resynced)


async def test_live_log_lines_move_the_route(rig: Rig) -> None:
    await rig.adapter.start()
    p = await rig.peer()
    await p.snapshot([])
    await rig.wait(lambda: rig.adapter.ws_connected)
    await rig.wait(lambda: rig.health_calls() >= 2)  # the post-connect refresh
    seen_at: list[float] = []
    rig.adapter.subscribe(lambda ev: seen_at.append(time.monotonic()) if isinstance(ev, ModelLoaded) else None)
    rig.loaded = {"m1": (8005, 202)}
    await rig.say(p, load_lines("m1", 8005, 202))
    await rig.wait(lambda: (r := rig.adapter.routes.get("m1")) is not None and r.port == 8005)
    route = rig.adapter.routes.get("m1")
    assert route is not None and route.pid == 202 and not route.proven
    loaded = [e for e in rig.events if isinstance(e, ModelLoaded)]
    assert loaded and loaded[-1].observed_at > 0 and seen_at
    # Observed (frame received) -> applied and published: well under the 50 ms SLO.
    assert seen_at[-1] - loaded[-1].observed_at < 0.05
    assert rig.adapter.routes.timings[-1].seconds < 0.05


async def test_crash_line_marks_route_dead(rig: Rig) -> None:
    await rig.adapter.start()
    p = await rig.peer()
    await p.snapshot([])
    await rig.wait(lambda: rig.adapter.ws_connected)
    line = (
        f"{ts()} [Error] (BackendWatchdog) llama-server backend marked unavailable: backend process exited "
        "while watchdog was active; reaped exited backend process PID 101 (exit_code=137)"
    )
    await rig.say(p, [line])
    await rig.wait(lambda: not rig.adapter.routes.get("m1").alive)  # type: ignore[union-attr]
    crash = [e for e in rig.events if isinstance(e, ProcessCrashed)]
    assert crash and crash[-1].pid == 101 and crash[-1].exit_code == 137


async def test_refresh_burst_is_single_flight(rig: Rig) -> None:
    calls_at_start = 0

    async def slow(_s: Seen) -> tuple[int, bytes, str]:
        await asyncio.sleep(0.1)
        return 200, health_doc(rig.ws_port, rig.loaded), "application/json"

    rig.http.routes[("GET", "/v1/health")] = slow
    rig.ws_port = None
    adapter = LemondAdapter(rig.http.base_url, api_key=None, use_websocket=False, poll_s=60, heartbeat_s=60)
    try:
        results = await asyncio.gather(*(adapter.refresh() for _ in range(20)))
        assert all(r is results[0] for r in results)
        assert rig.health_calls() - calls_at_start == 1
        await asyncio.gather(*(adapter.refresh() for _ in range(5)))  # within the TTL: cached
        assert rig.health_calls() == 1
        assert adapter.stats.resyncs == 1
    finally:
        await adapter.stop()


async def test_request_refresh_after_failed_connect_coalesces(rig: Rig) -> None:
    rig.ws_port = None
    adapter = LemondAdapter(rig.http.base_url, api_key=None, use_websocket=False, poll_s=60, heartbeat_s=60)
    await adapter.start()
    try:
        base = rig.health_calls()
        rig.loaded = {"m1": (8009, 303)}
        for _ in range(50):
            adapter.request_refresh(newer_than=time.monotonic())
        await rig.wait(lambda: adapter.routes.get("m1").port == 8009)  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        assert 1 <= rig.health_calls() - base <= 2
    finally:
        await adapter.stop()


async def test_without_websocket_polling_keeps_routes_correct(rig: Rig) -> None:
    rig.ws_port = None  # lemond reports no websocket_port, and the main port says 404
    await rig.adapter.start()
    assert not rig.adapter.ws_connected
    rig.loaded = {"m1": (8002, 111), "m2": (8003, 222)}
    await rig.wait(lambda: "m2" in rig.adapter.routes, timeout=3)
    assert rig.adapter.routes.get("m1").port == 8002  # type: ignore[union-attr]
    rig.loaded = {}
    await rig.wait(lambda: len(rig.adapter.routes) == 0, timeout=3)
    assert not rig.adapter.ws_connected


async def test_restart_clears_then_resyncs(rig: Rig) -> None:
    await rig.adapter.start()
    p = await rig.peer()
    await p.snapshot([])
    await rig.wait(lambda: rig.adapter.ws_connected)
    await rig.say(p, [f"{ts()} [Info] (Server) Ensuring model loaded: m1 "] * 3)
    await asyncio.sleep(0.05)
    rig.loaded = {"m3": (8001, 999)}
    p.abort()
    p2 = await rig.peer()
    await p2.snapshot([])  # fewer entries than before: a new lemond process
    p3 = await rig.peer()
    await p3.snapshot([(1, f"{ts()} [Info] (main) Starting Lemonade Server...")])
    await rig.wait(lambda: "m3" in rig.adapter.routes and "m1" not in rig.adapter.routes)
    assert rig.adapter.stats.restarts == 1


async def test_subscriber_errors_do_not_break_the_pipeline(rig: Rig) -> None:
    def bad(_ev: LemondEvent) -> None:
        raise RuntimeError("boom")

    good: list[LemondEvent] = []
    rig.adapter.subscribe(bad)
    unsubscribe = rig.adapter.subscribe(good.append)
    await rig.adapter.start()
    assert good and isinstance(good[0], Resynced)
    unsubscribe()
    rig.adapter.request_refresh(newer_than=time.monotonic())
    await rig.wait(lambda: rig.health_calls() >= 2)
    await asyncio.sleep(0.05)
    assert len(good) == 1


async def test_usable_route_probes_unproven_ports(rig: Rig) -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    rig.loaded = {"up": (port, 1), "down": (1, 2)}
    rig.ws_port = None
    adapter = LemondAdapter(rig.http.base_url, api_key=None, use_websocket=False, poll_s=60, heartbeat_s=60)
    try:
        await adapter.refresh()
        assert (await adapter.usable_route("up")) is not None
        assert (await adapter.usable_route("down")) is None
        assert (await adapter.usable_route("nope")) is None
        adapter.routes.mark_proven("up", port)
        probes = adapter.validator.probes
        assert (await adapter.usable_route("up")) is not None and adapter.validator.probes == probes
    finally:
        listener.close()
        await adapter.stop()
