"""LemondAdapter against the lemond emulator, a real process, over real sockets.

What the latency assertions measure, precisely:

* ``frame→route``: from the moment the WebSocket frame carrying the log line was
  received (the event's ``observed_at``, local monotonic clock) to the moment the
  subscriber saw the event, which is after ``RouteTable.apply``. Same process, same
  clock: exact.
* ``line→route``: from the timestamp the emulator wrote into the log line (local wall
  clock, millisecond resolution, truncated) to the subscriber's wall-clock time. Two
  processes on one machine share that clock; the truncation adds up to 1 ms.

Both must be under 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, ModelLoaded, PortChanged, ProcessCrashed

from .emu import Emu, run_emulator

MODEL = "Qwen3-0.6B-GGUF"
SLO_S = 0.050


@dataclass
class Seen:
    event: LemondEvent
    mono: float
    wall: float


@dataclass
class Watch:
    adapter: LemondAdapter
    emu: Emu
    seen: list[Seen] = field(default_factory=list)
    lines: dict[int, str] = field(default_factory=dict)
    seqs: list[int] = field(default_factory=list)

    def record(self, event: LemondEvent) -> None:
        self.seen.append(Seen(event, time.monotonic(), time.time()))

    async def wait(self, cond: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.005)

    def latency(self, s: Seen) -> tuple[float, float]:
        """(frame→route, line→route) in seconds for one published event."""
        line = self.lines[s.event.seq]
        written = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
        return s.mono - s.event.observed_at, s.wall - written


def tap_lines(watch: Watch) -> None:
    """Record every (seq, line) the adapter receives, to look up the line's timestamp."""
    original = watch.adapter._on_line

    def on_line(seq: int, line: str, observed_at: float, replay: bool) -> None:
        watch.lines[seq] = line
        watch.seqs.append(seq)
        original(seq, line, observed_at, replay)

    watch.adapter._on_line = on_line  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def adapter_on(*emu_args: str, **kw: float | bool) -> AsyncIterator[Watch]:
    async with run_emulator(*emu_args) as emu:
        adapter = LemondAdapter(emu.base_url, api_key=None, **kw)  # type: ignore[arg-type]
        watch = Watch(adapter, emu)
        tap_lines(watch)
        adapter.subscribe(watch.record)
        await adapter.start()
        try:
            yield watch
        finally:
            await adapter.stop()


def port_of(w: Watch, model: str = MODEL) -> int | None:
    route = w.adapter.routes.get(model)
    return route.port if route is not None and route.alive else None


async def connected(w: Watch) -> None:
    await w.wait(lambda: w.adapter.ws_connected)


async def loaded(w: Watch, model: str = MODEL) -> int:
    await w.adapter.client.load(model, timeout=20)
    await w.wait(lambda: (r := w.adapter.routes.get(model)) is not None and r.alive)
    route = w.adapter.routes.get(model)
    assert route is not None
    return route.port


@pytest.fixture
async def watch() -> AsyncIterator[Watch]:
    async with adapter_on() as w:
        await connected(w)
        yield w


async def test_respawn_moves_route_within_50ms_of_the_log_line(watch: Watch) -> None:
    w = watch
    old_port = await loaded(w)
    start = len(w.seen)
    doc = await w.emu.fault("respawn", model_name=MODEL)
    new_port = doc["port"]
    assert new_port != old_port
    await w.wait(lambda: port_of(w) == new_port)
    moves = [
        s
        for s in w.seen[start:]
        if isinstance(s.event, ModelLoaded | PortChanged)
        and getattr(s.event, "port", getattr(s.event, "new_port", None)) == new_port
    ]
    assert moves, [type(s.event).__name__ for s in w.seen[start:]]
    frame, line = w.latency(moves[0])
    assert 0 <= frame < SLO_S, frame
    assert line < SLO_S + 0.001, line
    route = w.adapter.routes.get(MODEL)
    assert route is not None and route.pid == doc["pid"] and route.alive and not route.proven


async def test_crash_marks_route_dead_within_50ms_of_watchdog_line(watch: Watch) -> None:
    w = watch
    await loaded(w)
    pid = w.adapter.routes.get(MODEL).pid  # type: ignore[union-attr]
    start = len(w.seen)
    await w.emu.fault("crash", model_name=MODEL)
    await w.wait(lambda: (r := w.adapter.routes.get(MODEL)) is None or not r.alive)
    crashes = [s for s in w.seen[start:] if isinstance(s.event, ProcessCrashed)]
    assert crashes, [type(s.event).__name__ for s in w.seen[start:]]
    first = crashes[0].event
    assert isinstance(first, ProcessCrashed)
    assert "watchdog" in w.lines[first.seq].lower() or first.pid == pid
    frame, line = w.latency(crashes[0])
    assert 0 <= frame < SLO_S, frame
    assert line < SLO_S + 0.001, line


async def test_ws_drop_resumes_with_after_seq_and_misses_nothing(watch: Watch) -> None:
    w = watch
    await loaded(w)
    await w.emu.fault("ws_drop")
    # Generate log lines while the client is reconnecting.
    respawn = asyncio.create_task(w.emu.fault("respawn", model_name=MODEL))
    await w.wait(lambda: w.adapter.stats.reconnects >= 1)
    new_port = (await respawn)["port"]
    await w.wait(lambda: port_of(w) == new_port)
    last = (await w.emu.state())["log_seq"]
    await w.wait(lambda: bool(w.seqs) and w.seqs[-1] >= last)
    assert w.seqs == list(range(w.seqs[0], w.seqs[-1] + 1)), "every seq once, in order"
    assert w.adapter.stats.gaps == 0
    stream = w.adapter._stream
    assert stream is not None and stream.stats.reconnects >= 1


async def test_restart_resynchronises(watch: Watch) -> None:
    w = watch
    await loaded(w)
    old_pid = w.adapter.routes.get(MODEL).pid  # type: ignore[union-attr]
    await w.emu.fault("restart")
    await w.wait(lambda: MODEL not in w.adapter.routes)
    # The route can go (health shows lemond empty) a moment before the restart is recognised
    # (seq going backwards on the new stream): wait for the recognition, it must come.
    await w.wait(lambda: any(isinstance(s.event, LemondRestarted) for s in w.seen) or w.adapter.stats.restarts >= 1)
    await w.wait(lambda: w.adapter.ws_connected)
    await w.adapter.client.load(MODEL, timeout=20)
    await w.wait(lambda: (r := w.adapter.routes.get(MODEL)) is not None and r.alive)
    route = w.adapter.routes.get(MODEL)
    assert route is not None and route.pid != old_pid
    health = await w.adapter.client.health()
    assert {m.model: m.port for m in health.loaded} == {MODEL: route.port}


async def test_lemond_10_7_uses_websocket_port() -> None:
    async with adapter_on("--lemond-version", "10.7") as w:
        await connected(w)
        health = w.adapter.last_health
        assert health is not None and health.websocket_port is not None
        assert w.adapter.ws_url == f"ws://127.0.0.1:{health.websocket_port}/logs/stream"
        assert health.websocket_port != w.emu.port
        port = await loaded(w)
        doc = await w.emu.fault("respawn", model_name=MODEL)
        await w.wait(lambda: port_of(w) == doc["port"] != port)


async def test_without_websocket_polling_keeps_routes_correct() -> None:
    async with adapter_on("--no-websocket", poll_s=0.2) as w:
        await asyncio.sleep(0.3)
        assert not w.adapter.ws_connected
        port = await loaded(w)
        doc = await w.emu.fault("respawn", model_name=MODEL)
        assert doc["port"] != port
        await w.wait(lambda: port_of(w) == doc["port"], timeout=5)
        await w.emu.fault("crash", model_name=MODEL)
        await w.wait(lambda: (r := w.adapter.routes.get(MODEL)) is None or not r.alive, timeout=5)
        assert w.adapter.stats.resyncs >= 3
