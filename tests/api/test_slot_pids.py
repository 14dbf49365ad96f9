"""``/api/slots`` names each loaded slot's child as lemond does: its port and its PID.

Two ways the proxy lost or mixed these up, each a test:

* lemond runs one spawn at a time, but it logs a load request (``(Server) Ensuring model
  loaded: B``, ``Auto-loading model: B``) when the request arrives, before the request waits
  for the spawn in progress (``server.cpp`` ``handle_load`` logs it, then ``router.cpp``
  ``load_model`` waits on ``is_loading_``; lines 5839 and 792-797 in v11.7.0, 3293 and
  241-247 in v10.7.0). The lines of that spawn that name no model (the PID, the child's
  "listening on" port, "is ready!") then follow B's request. The proxy's warm-up loads its
  warm slots concurrently, so the demo's ``embed`` slot is requested while ``primary``
  spawns: exactly this interleaving.
* A child respawned on another port (an option-change reload, or a reload after a crash
  when its old port is taken) is published as ``ModelLoaded`` then ``PortChanged``; the
  second names no PID.

Real processes over loopback: the emulator (fake ``llama-server`` children), the proxy, and
the proxy's own SSE event stream to see every route it published.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

FIRST = "Qwen3-0.6B-GGUF"  # spawns first, slowly
SECOND = "nomic-embed-text-v1-GGUF"  # requested while the first one spawns (another pool)
SLOTS = f"""
[[slot]]
name = "primary"
model = "{FIRST}"
type = "llm"

[[slot]]
name = "embed"
model = "{SECOND}"
type = "embedding"
"""
#: Long enough that the second request surely lands while the first child is starting.
FIRST_LOAD_S = 1.5
#: The proxy re-reads /v1/health every 30 s whatever happens; a PID it learnt from the log
#: shows within a second. Waiting 5 s tells the two apart with room for a slow machine.
PID_SHOWS_WITHIN_S = 5.0


class EventTap:
    """Reads the proxy's ``/api/v1/adapter/events`` in a thread and keeps every entry."""

    def __init__(self, port: int) -> None:
        self.entries: list[dict[str, Any]] = []
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self._conn.request("GET", "/api/v1/adapter/events")
        self._sock = self._conn.sock
        assert self._sock is not None
        self._resp = self._conn.getresponse()
        assert self._resp.status == 200
        assert self._resp.readline() == b"event: snapshot\n"  # subscribed before anything happens
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError, http.client.HTTPException):
            for raw in self._resp:
                if raw.startswith(b"data: {") and b'"slots"' not in raw[:20]:
                    self.entries.append(json.loads(raw[len(b"data: ") :]))

    def of(self, kind: str, model: str) -> list[dict[str, Any]]:
        return [e for e in list(self.entries) if e.get("type") == kind and e.get("model") == model]

    def close(self) -> None:
        # Shut the socket down, not only close it: the reader thread holds its own reference
        # and would otherwise block until the proxy's next keep-alive comment.
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
        self._thread.join(5)
        assert not self._thread.is_alive()


@pytest.fixture
def running() -> Iterator[tuple[EmulatorProcess, ProxyProcess]]:
    emulator = start_emulator(log_level="info")
    try:
        proxy = start_proxy(emulator.base_url, SLOTS)
        try:
            yield emulator, proxy
        finally:
            proxy.stop()
    finally:
        emulator.stop()


def test_a_load_requested_while_another_model_spawns_gets_its_own_port_and_pid(
    running: tuple[EmulatorProcess, ProxyProcess],
) -> None:
    emulator, proxy = running
    tap = EventTap(proxy.port)
    try:
        assert emulator.post("/_emu/slow_load", {"model_name": FIRST, "seconds": FIRST_LOAD_S})[0] == 200
        first = threading.Thread(target=emulator.post, args=("/v1/load", {"model_name": FIRST}))
        first.start()
        # The first child exists and is still loading its model when the second request arrives.
        assert wait_until(lambda: "Process started successfully, PID:" in emulator.log_text(), 10)
        status, _ = emulator.post("/v1/load", {"model_name": SECOND})
        first.join(30)
        assert status == 200 and not first.is_alive()
        lemond = emulator.loaded()
        assert set(lemond) == {FIRST, SECOND}
        first_child = (_port(lemond[FIRST]), lemond[FIRST]["pid"])
        second_child = (_port(lemond[SECOND]), lemond[SECOND]["pid"])
        assert first_child != second_child and all(pid for _, pid in (first_child, second_child))

        def both_shown() -> bool:
            slots = proxy.slots()
            return (slots["primary"]["port"], slots["primary"]["pid"]) == first_child and (
                slots["embed"]["port"],
                slots["embed"]["pid"],
            ) == second_child

        shown = wait_until(both_shown, PID_SHOWS_WITHIN_S)
        # Never published at the other model's child, not even for a moment: a request for
        # the slot would have gone to the wrong model.
        published = [(e["port"], e["pid"]) for e in tap.of("lemond.ModelLoaded", SECOND)]
        assert published and all(port == second_child[0] for port, _ in published), published
        assert shown, proxy.slots()
    finally:
        tap.close()


def test_a_child_respawned_on_another_port_keeps_its_pid(running: tuple[EmulatorProcess, ProxyProcess]) -> None:
    emulator, proxy = running
    assert emulator.post("/v1/load", {"model_name": FIRST})[0] == 200
    loaded = lemond_child(emulator, FIRST)
    assert wait_until(lambda: shown_child(proxy, "primary") == loaded, PID_SHOWS_WITHIN_S), proxy.slots()
    # What an option-change reload does: a new child, on a port other than the old one.
    status, moved = emulator.post("/_emu/respawn", {"model_name": FIRST})
    assert status == 200 and moved["port"] != moved["old_port"] and moved["pid"] != moved["old_pid"]
    respawned = lemond_child(emulator, FIRST)
    assert respawned == (moved["port"], moved["pid"])
    assert wait_until(lambda: shown_child(proxy, "primary") == respawned, PID_SHOWS_WITHIN_S), proxy.slots()


def lemond_child(emulator: EmulatorProcess, model: str) -> tuple[int, int]:
    """(port, pid) of ``model``'s child as lemond's ``/v1/health`` reports it."""
    entry = emulator.loaded()[model]
    return _port(entry), int(entry["pid"])


def shown_child(proxy: ProxyProcess, slot: str) -> tuple[int, int | None]:
    """(port, pid) of ``slot`` as ``/api/slots`` shows it."""
    entry = proxy.slots()[slot]
    return int(entry["port"]), entry["pid"]


def _port(entry: dict[str, Any]) -> int:
    return int(str(entry["backend_url"]).rsplit(":", 1)[1].split("/", 1)[0])
