"""One model, one slot: lemond's internal names (``extra.<m>``, ``user.<m>``) and the public
names clients use resolve to the same route.

Real lemond prints ``extra.tiny`` in its log lines for a model ``/v1/models`` and
``/v1/health`` call ``tiny``. Driven over real sockets with the scripted lemond of
``tests/lemond/fakes.py`` (a real HTTP server and a real WebSocket log stream).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.names import ModelNames
from tests.lemond.fakes import FakeHTTP, FakeLogServer, WSPeer
from tests.lemond.test_adapter import health_doc, load_lines


class Lemond:
    def __init__(self, http: FakeHTTP, logs: FakeLogServer) -> None:
        self.http, self.logs = http, logs
        self.loaded: dict[str, tuple[int, int]] = {"tiny": (8001, 101)}
        self.seq = 0


@pytest.fixture
async def lemond() -> AsyncIterator[Lemond]:
    http = await FakeHTTP().start()
    logs = await FakeLogServer().start()
    fake = Lemond(http, logs)
    http.routes[("GET", "/v1/health")] = lambda _s: (200, health_doc(logs.port, fake.loaded), "application/json")
    models = {"object": "list", "data": [{"id": "tiny"}, {"id": "user.Custom-GGUF"}]}
    http.routes[("GET", "/v1/models")] = lambda _s: (200, orjson.dumps(models), "application/json")
    yield fake
    await logs.close()
    await http.close()


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_log_lines_with_the_internal_name_move_the_public_route(lemond: Lemond) -> None:
    adapter = LemondAdapter(lemond.http.base_url, api_key=None, poll_s=0.1)
    try:
        await adapter.start()
        peer: WSPeer = await asyncio.wait_for(lemond.logs.peers.get(), 5)
        await peer.recv_json()
        await peer.snapshot([])
        await _until(lambda: adapter.ws_connected)
        lemond.loaded = {"tiny": (8005, 202)}
        for line in load_lines("extra.tiny", 8005, 202):
            lemond.seq += 1
            await peer.entry(lemond.seq, line)
        await _until(lambda: (r := adapter.routes.get("tiny")) is not None and r.port == 8005)
        assert "extra.tiny" not in adapter.routes  # one child, one route
        assert set(adapter.routes.snapshot()) == {"tiny"}
    finally:
        await adapter.stop()


def test_name_rules() -> None:
    names = ModelNames()
    names.learn(["tiny", "user.Custom-GGUF", "Qwen3-0.6B-GGUF", "extra.clash"])
    assert names.to_public("extra.tiny") == "tiny"
    assert names.to_public("extra.unknown") == "unknown"  # discovered models are public bare
    assert names.to_public("user.Custom-GGUF") == "user.Custom-GGUF"  # public under its prefix
    assert names.to_public("builtin.Qwen3-0.6B-GGUF") == "Qwen3-0.6B-GGUF"
    assert names.to_public("user.Other") == "user.Other"  # bare form never seen: left alone
    assert names.to_public("extra.clash") == "extra.clash"  # a collision keeps lemond's public name
