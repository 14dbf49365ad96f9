"""The log stream: the pure Sequencer, and LogStream against a scripted WebSocket server
over real loopback sockets (ordering, resume, restart, fallback port, auth, pings)."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator

import pytest

from hal0proxy.lemond.logstream import LogStream, LogStreamListener, backoff_delay
from hal0proxy.lemond.sequencer import Sequencer

from .fakes import FakeLogServer, WSPeer

# -- Sequencer (pure) --------------------------------------------------------------------


def test_fresh_subscription_merges_early_entry_and_snapshot() -> None:
    s = Sequencer()
    assert s.begin() is None
    assert s.on_entry(4, "d", 2.0).deliver == []  # arrived before the snapshot: held
    out = s.on_snapshot([(1, "a"), (2, "b"), (3, "c"), (4, "d")], 1.0)
    assert [d.seq for d in out.deliver] == [1, 2, 3, 4] and out.gap is None and not out.restart
    assert [d.seq for d in s.on_entry(5, "e", 3.0).deliver] == [5]
    assert s.on_entry(5, "e", 3.1).deliver == []  # duplicate


def test_resume_overlaps_by_one_and_dedupes() -> None:
    s = Sequencer()
    s.begin()
    s.on_snapshot([(1, "a"), (2, "b")], 1.0)
    assert s.begin() == 1  # after_seq = last - 1: the snapshot must repeat seq 2
    out = s.on_snapshot([(2, "b"), (3, "c")], 2.0)
    assert [d.seq for d in out.deliver] == [3] and out.gap is None and not out.restart


def test_resume_detects_ring_rollover_gap() -> None:
    s = Sequencer()
    s.begin()
    s.on_snapshot([(1, "a"), (2, "b")], 1.0)
    s.begin()
    out = s.on_snapshot([(7, "g"), (8, "h")], 2.0)
    assert out.gap == (3, 7) and [d.seq for d in out.deliver] == [7, 8]


@pytest.mark.parametrize(
    "snapshot",
    [
        [],  # new process has fewer entries than we had seen
        [(2, "different"), (3, "x")],  # same seq, other line
    ],
)
def test_resume_detects_restart(snapshot: list[tuple[int, str]]) -> None:
    s = Sequencer()
    s.begin()
    s.on_snapshot([(1, "a"), (2, "b")], 1.0)
    s.begin()
    out = s.on_snapshot(snapshot, 2.0)
    assert out.restart and out.deliver == []


def test_live_seq_going_backwards_is_restart() -> None:
    s = Sequencer(window=4)
    s.begin()
    s.on_snapshot([(i, f"l{i}") for i in range(1, 20)], 1.0)
    assert s.on_entry(18, "l18", 2.0).restart is False  # a duplicate
    assert s.on_entry(18, "other", 2.0).restart is True
    assert s.on_entry(1, "Starting", 2.0).restart is True  # far behind the window


def test_live_gap_reported_once_and_delivered() -> None:
    s = Sequencer()
    s.begin()
    s.on_snapshot([(1, "a")], 1.0)
    out = s.on_entry(5, "e", 2.0)
    assert out.gap == (2, 5) and [d.seq for d in out.deliver] == [5]


def test_backoff_is_capped_jittered_and_immediate_first() -> None:
    rng = random.Random(1)
    assert backoff_delay(0, initial=0.1, cap=5, rng=rng) == 0.0
    for attempt in range(1, 30):
        base = min(5.0, 0.1 * 2 ** (attempt - 1))
        d = backoff_delay(attempt, initial=0.1, cap=5, rng=rng)
        assert base / 2 <= d <= base


# -- LogStream over sockets --------------------------------------------------------------


class Recorder(LogStreamListener):
    def __init__(self) -> None:
        self.entries: list[tuple[int, str, bool]] = []
        self.connected: list[tuple[str, bool]] = []
        self.dropped: list[str] = []
        self.gaps: list[tuple[int, int]] = []
        self.restarts = 0
        self.changed = asyncio.Event()

    def on_entry(self, seq: int, line: str, observed_at: float, *, replay: bool = False) -> None:
        self.entries.append((seq, line, replay))
        self.changed.set()

    def on_connected(self, url: str, resumed: bool) -> None:
        self.connected.append((url, resumed))
        self.changed.set()

    def on_dropped(self, reason: str) -> None:
        self.dropped.append(reason)
        self.changed.set()

    def on_gap(self, expected: int, got: int) -> None:
        self.gaps.append((expected, got))

    def on_restart(self) -> None:
        self.restarts += 1

    async def until(self, cond: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def server() -> AsyncIterator[FakeLogServer]:
    srv = await FakeLogServer().start()
    yield srv
    await srv.close()


async def peer(srv: FakeLogServer) -> WSPeer:
    return await asyncio.wait_for(srv.peers.get(), 5)


async def test_subscribe_snapshot_entries_in_order(server: FakeLogServer) -> None:
    rec = Recorder()
    ls = LogStream("127.0.0.1", server.port, rec, api_key=None, seed=0)
    ls.start()
    try:
        p = await peer(server)
        assert await p.recv_json() == {"type": "logs.subscribe", "after_seq": None}
        await p.entry(3, "c")  # the live entry beats the snapshot (SPEC §5.2 quirk 1)
        await p.snapshot([(1, "a"), (2, "b"), (3, "c")])
        await p.entry(4, "d")
        await rec.until(lambda: len(rec.entries) == 4)
        assert [(s, r) for s, _, r in rec.entries] == [(1, True), (2, True), (3, True), (4, False)]
        assert rec.connected == [(f"ws://127.0.0.1:{server.port}/logs/stream", False)]
        assert ls.connected
    finally:
        await ls.stop()


async def test_drop_resumes_with_after_seq_and_misses_nothing(server: FakeLogServer) -> None:
    rec = Recorder()
    ls = LogStream("127.0.0.1", server.port, rec, api_key=None, seed=0)
    ls.start()
    try:
        p = await peer(server)
        await p.recv_json()
        await p.snapshot([(1, "a"), (2, "b")])
        await p.entry(3, "c")
        await rec.until(lambda: len(rec.entries) == 3)
        p.abort()
        p2 = await peer(server)
        assert await p2.recv_json() == {"type": "logs.subscribe", "after_seq": 2}
        await p2.entry(5, "e")
        await p2.snapshot([(3, "c"), (4, "d"), (5, "e")])
        await rec.until(lambda: len(rec.entries) == 5)
        assert [s for s, _, _ in rec.entries] == [1, 2, 3, 4, 5]
        assert [r for _, _, r in rec.entries[3:]] == [False, False]  # resumed: news, not history
        assert rec.connected[-1][1] is True and rec.gaps == [] and ls.stats.reconnects == 1
        assert rec.dropped
    finally:
        await ls.stop()


async def test_restart_detected_on_resume_then_full_resubscribe(server: FakeLogServer) -> None:
    rec = Recorder()
    ls = LogStream("127.0.0.1", server.port, rec, api_key=None, seed=0)
    ls.start()
    try:
        p = await peer(server)
        await p.recv_json()
        await p.snapshot([(i, f"old{i}") for i in range(1, 11)])
        await rec.until(lambda: len(rec.entries) == 10)
        p.abort()
        p2 = await peer(server)
        assert (await p2.recv_json())["after_seq"] == 9
        await p2.snapshot([])  # the new process has only 3 entries, all <= 9
        p3 = await peer(server)
        assert (await p3.recv_json())["after_seq"] is None
        await p3.snapshot([(1, "new1"), (2, "new2"), (3, "new3")])
        await rec.until(lambda: len(rec.entries) == 13)
        assert rec.restarts == 1 and [ln for _, ln, _ in rec.entries[10:]] == ["new1", "new2", "new3"]
    finally:
        await ls.stop()


async def test_main_port_404_falls_back_to_websocket_port() -> None:
    main = await FakeLogServer(reject_status=404).start()
    side = await FakeLogServer().start()
    rec = Recorder()
    asked = 0

    async def discover() -> int | None:
        nonlocal asked
        asked += 1
        return side.port

    ls = LogStream("127.0.0.1", main.port, rec, api_key=None, discover_ws_port=discover, seed=0)
    ls.start()
    try:
        p = await peer(side)
        await p.recv_json()
        await p.snapshot([(1, "a")])
        await rec.until(lambda: rec.connected)
        assert ls.use_ws_port and asked == 1 and rec.connected[0][0].endswith(f":{side.port}/logs/stream")
        p.abort()
        p2 = await peer(side)  # sticky: the reconnect goes straight to the WS port
        assert (await p2.recv_json())["after_seq"] == 0
        assert len(main.upgrades) == 1
    finally:
        await ls.stop()
        await main.close()
        await side.close()


async def test_api_key_sent_as_header_and_subprotocol(server: FakeLogServer) -> None:
    ls = LogStream("127.0.0.1", server.port, Recorder(), api_key="k3y", seed=0)
    ls.start()
    try:
        await peer(server)
        up = server.upgrades[0]
        token = base64.urlsafe_b64encode(b"k3y").decode().rstrip("=")
        assert up["authorization"] == "Bearer k3y"
        assert up["_subprotocols"] == f"lemonade-realtime,bearer.{token}"
    finally:
        await ls.stop()


async def test_client_pings_and_detects_dead_socket(server: FakeLogServer) -> None:
    rec = Recorder()
    ls = LogStream("127.0.0.1", server.port, rec, api_key=None, ping_interval=0.2, seed=0)
    ls.start()
    try:
        p = await peer(server)
        await p.recv_json()
        await p.snapshot([(1, "a")])
        await rec.until(lambda: rec.connected)
        # Keep reading (which answers pings) for a while: the connection must stay up.
        with pytest.raises(TimeoutError):
            await p.recv_json(timeout=0.7)
        assert p.pings >= 2 and ls.connected
        # Now stop reading: pings go unanswered and the client must give up and reconnect.
        p2 = await peer(server)
        assert any("pong" in d for d in rec.dropped)
        assert (await p2.recv_json())["after_seq"] == 0
    finally:
        await ls.stop()


async def test_error_frame_causes_reconnect(server: FakeLogServer) -> None:
    rec = Recorder()
    ls = LogStream("127.0.0.1", server.port, rec, api_key=None, seed=0)
    ls.start()
    try:
        p = await peer(server)
        await p.recv_json()
        await p.send({"type": "error", "error": {"message": "Expected logs.subscribe message"}})
        await peer(server)
        assert any("Expected logs.subscribe" in d for d in rec.dropped)
    finally:
        await ls.stop()
