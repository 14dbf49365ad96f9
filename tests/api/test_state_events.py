"""The event stream over real sockets: a slot's request flips are coalesced, its last state told.

One client sending requests back to back flips its slot ``ready → serving → ready`` around
each one. The proxy's ``/api/v1/adapter/events`` tells those flips at most every
``FLIP_INTERVAL_S`` and always ends on the state the slot is in. The emulator (fake children),
``hal0proxy serve`` and an SSE subscriber, all over loopback.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Iterator

import pytest

from hal0proxy.control.state_feed import FLIP_INTERVAL_S
from tests.api.test_slot_pids import EventTap
from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

MODEL = "Qwen3-0.6B-GGUF"
SLOTS = f"""
[[slot]]
name = "primary"
model = "{MODEL}"
warm = true
"""
REQUESTS = 60


@pytest.fixture
def running() -> Iterator[tuple[EmulatorProcess, ProxyProcess]]:
    emulator = start_emulator()
    try:
        proxy = start_proxy(emulator.base_url, SLOTS)
        try:
            assert wait_until(lambda: proxy.slots()["primary"]["state"] == "ready", 30), proxy.slots()
            yield emulator, proxy
        finally:
            proxy.stop()
    finally:
        emulator.stop()


def test_back_to_back_requests_are_told_as_a_few_flips_ending_on_ready(
    running: tuple[EmulatorProcess, ProxyProcess],
) -> None:
    _, proxy = running
    tap = EventTap(proxy.port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        body = json.dumps({"model": "primary", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        started = time.monotonic()
        for _ in range(REQUESTS):
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200, response.read()
            response.read()
        elapsed = time.monotonic() - started
        conn.close()

        def told() -> list[tuple[str, str]]:
            return [(e["previous"], e["state"]) for e in tap.entries if e.get("type") == "slot.state"]

        # The trailing publish comes one interval after the last flip; a slow machine gets room.
        assert wait_until(lambda: told() and told()[-1][1] == "ready", 10 * FLIP_INTERVAL_S + 5), told()
        flips = told()
        # At most one flip per interval, plus the first at once and the trailing one: far fewer
        # than the two per request that were sent before (120 here).
        assert 2 <= len(flips) <= 2 * (elapsed / FLIP_INTERVAL_S + 2), (len(flips), elapsed)
        assert len(flips) < REQUESTS, flips
        assert flips[0] == ("ready", "serving")
        for (_, was), (previous, _) in itertools.pairwise(flips):
            assert previous == was, flips  # each event's previous is the state told before it
        assert proxy.slots()["primary"]["state"] == "ready"
    finally:
        tap.close()
