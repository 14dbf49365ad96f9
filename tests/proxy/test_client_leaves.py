"""A client that leaves while nothing is being written to it, over real sockets.

When the child is silent (a long prompt evaluation, a stall mid-stream, a cold load), the
proxy writes nothing to the client, so the only sign that the client left is its FIN. The
proxy reads that EOF as the client leaving (nginx's default): the child connection is
aborted at once (llama-server stops generating), the lease is released (the slot's
``in_flight`` drops, so it can be evicted or idle-unloaded), ``client_disconnects_total``
counts it, and the client socket is closed (no CLOSE-WAIT, no descriptor kept).

The proxy runs in front of the lemond emulator, whose children are the fake llama-server,
told by ``X-Emu-Stall: <tokens>,<seconds>`` to go silent for 12 s; every bound below is a
few seconds: wide on 2 shared cores, and still far from the 12 s the proxy would hold the
connections without noticing. (A CLOSE-WAIT is waited out briefly: each scrape of
``/metrics`` is a connection of its own that the test closes just before.)
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest

from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

STALL_S = 12
# "At once", with room for 2 shared cores; the stall (12 s) is what it must stay clear of.
PROMPTLY_S = 5.0
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


def _request(model: str, *, stream: bool = False, stall: str = f"0,{STALL_S}") -> bytes:
    body = json.dumps({"model": model, "stream": stream, **CHAT}).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"X-Emu-Stall: %s\r\nContent-Length: %d\r\n\r\n%s" % (stall.encode(), len(body), body)
    )


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _child_connections(proxy_pid: int, child_port: int) -> int:
    """The proxy's open connections to the child (whatever else talks to the child)."""
    return sum(
        1
        for c in psutil.Process(proxy_pid).net_connections("tcp")
        if c.raddr and c.raddr.port == child_port and c.status == psutil.CONN_ESTABLISHED
    )


def _close_wait(proxy: ProxyProcess) -> int:
    """Client connections the proxy still holds after the client closed its side."""
    return sum(
        1
        for c in psutil.Process(proxy.proc.pid).net_connections("tcp")
        if c.laddr.port == proxy.port and c.status == psutil.CONN_CLOSE_WAIT
    )


def _metric(proxy: ProxyProcess, name: str) -> float:
    text = proxy.request("GET", "/metrics")[2].decode()
    found = re.search(rf"^hal0proxy_{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert found is not None, name
    return float(found.group(1))


def _elapsed_until(predicate: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    assert wait_until(predicate, timeout, 0.01), f"not within {timeout} s"
    return time.monotonic() - started


PRIMARY = "Qwen3-0.6B-GGUF"
COLD = "Qwen3-4B-GGUF"
SLOTS = f"""
[[slot]]
name = "primary"
model = "{PRIMARY}"
warm = true

[[slot]]
name = "chat"
model = "{COLD}"
max_wait_s = 60
"""


@dataclass
class Rig:
    proxy: ProxyProcess
    emulator: EmulatorProcess

    def slot(self, name: str) -> dict[str, Any]:
        return self.proxy.slots()[name]

    @property
    def pid(self) -> int:
        return self.proxy.proc.pid


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    emulator = start_emulator(max_loaded_models=2)
    try:
        proxy = start_proxy(emulator.base_url, SLOTS)
        try:
            running = Rig(proxy, emulator)
            assert wait_until(lambda: running.slot("primary")["state"] == "ready", 30)
            yield running
        finally:
            proxy.stop()
    finally:
        emulator.stop()


@dataclass
class Before:
    child_port: int
    fds: int
    disconnects: float


def _quiet(rig: Rig) -> Before:
    """The primary child is up, the proxy holds no connection to it: the figures before a test."""
    assert wait_until(lambda: rig.slot("primary")["state"] == "ready", 30)
    port = int(rig.slot("primary")["port"])
    assert wait_until(lambda: _child_connections(rig.pid, port) == 0, PROMPTLY_S)
    return Before(port, _open_fds(rig.pid), _metric(rig.proxy, "client_disconnects_total"))


def _assert_all_let_go(rig: Rig, before: Before) -> float:
    """The child connection is closed promptly, and nothing of the exchange is left; how long that took."""
    took = _elapsed_until(lambda: _child_connections(rig.pid, before.child_port) == 0, PROMPTLY_S)
    assert wait_until(lambda: rig.slot("primary")["in_flight"] == 0, PROMPTLY_S)
    assert rig.slot("primary")["state"] != "serving"  # evictable and idle-unloadable again
    assert _metric(rig.proxy, "client_disconnects_total") == before.disconnects + 1
    assert wait_until(lambda: _close_wait(rig.proxy) == 0, PROMPTLY_S)
    assert wait_until(lambda: _open_fds(rig.pid) <= before.fds, PROMPTLY_S), (_open_fds(rig.pid), before.fds)
    assert rig.proxy.proc.poll() is None and rig.proxy.request("GET", "/healthz")[0] == 200
    return took


def _sent(rig: Rig, before: Before, **kwargs: Any) -> socket.socket:
    """A client whose request is at the child, which is silent now; the slot is serving it."""
    sock = socket.create_connection(("127.0.0.1", rig.proxy.port), timeout=10)
    sock.sendall(_request("primary", **kwargs))
    assert wait_until(lambda: _child_connections(rig.pid, before.child_port) == 1, PROMPTLY_S)
    assert rig.slot("primary")["in_flight"] == 1 and rig.slot("primary")["state"] == "serving"
    return sock


def test_a_client_killed_while_the_child_is_silent_ends_the_exchange(rig: Rig) -> None:
    """The audit's ``timeout 1.5 curl …`` with the child silent before its head."""
    before = _quiet(rig)
    sock = _sent(rig, before)
    sock.close()  # what the kernel does for a killed client: FIN, nothing else
    took = _assert_all_let_go(rig, before)
    print(f"child connection closed {took * 1000:.0f} ms after the client left (silent before the head)")


def test_a_client_leaving_mid_stream_while_the_child_is_silent_ends_it(rig: Rig) -> None:
    before = _quiet(rig)
    sock = _sent(rig, before, stream=True, stall=f"3,{STALL_S}")
    got = b""
    while got.count(b"data: ") < 3:  # the stream flowed, and then the child went silent
        data = sock.recv(65536)
        assert data, got
        got += data
    assert got.startswith(b"HTTP/1.1 200 OK\r\n")
    sock.shutdown(socket.SHUT_WR)
    # The proxy ends the stream and closes: what is left for the client to read is the close.
    sock.settimeout(PROMPTLY_S)
    while sock.recv(65536):
        pass
    sock.close()
    took = _assert_all_let_go(rig, before)
    print(f"child connection closed {took * 1000:.0f} ms after the client left (stalled stream)")


def test_a_client_half_closing_after_its_request_gets_no_answer(rig: Rig) -> None:
    """The price of reading EOF as leaving, as nginx does: a client that half-closes once its
    request is sent is not answered; its connection is closed instead."""
    before = _quiet(rig)
    sock = _sent(rig, before)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(PROMPTLY_S)
    assert sock.recv(65536) == b""  # closed, with no byte of an answer
    sock.close()
    _assert_all_let_go(rig, before)


def test_a_client_leaving_while_its_model_loads_stops_waiting_and_the_load_goes_on(rig: Rig) -> None:
    assert rig.emulator.post("/_emu/slow_load", {"model_name": COLD, "seconds": 4})[0] == 200
    open_before = _metric(rig.proxy, "connections_open")
    fds = _open_fds(rig.pid)
    sock = socket.create_connection(("127.0.0.1", rig.proxy.port), timeout=10)
    sock.sendall(_request("chat", stall="0,0"))
    assert wait_until(lambda: rig.slot("chat")["state"] in ("starting", "warming"), PROMPTLY_S)
    assert _metric(rig.proxy, "connections_open") == open_before + 1
    sock.close()
    # The waiter is gone well before the 4 s load ends: its connection is closed, not held.
    took = _elapsed_until(lambda: _metric(rig.proxy, "connections_open") == open_before, 3.0)
    assert rig.slot("chat")["state"] in ("starting", "warming")
    assert wait_until(lambda: _close_wait(rig.proxy) == 0, 2.0)
    # The load itself went on, and the slot is ready for the next client.
    assert wait_until(lambda: rig.slot("chat")["state"] in ("ready", "idle"), 30)
    assert rig.slot("chat")["in_flight"] == 0
    assert wait_until(lambda: _open_fds(rig.pid) <= fds + 1, PROMPTLY_S)  # + the new child's probe, at most
    print(f"the waiter's connection closed {took * 1000:.0f} ms after it left; the load finished")


def test_an_event_subscriber_that_leaves_is_gone_at_once(rig: Rig) -> None:
    proxy = rig.proxy
    open_before = _metric(proxy, "connections_open")
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"GET /api/v1/adapter/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"event: snapshot" not in got:
        data = sock.recv(65536)
        assert data, got
        got += data
    assert _metric(proxy, "connections_open") == open_before + 1
    # Half-closed, not closed: a write to it would still succeed, so only the EOF can tell
    # the proxy (a closed socket would also be found by the next event written to it).
    sock.shutdown(socket.SHUT_WR)
    left = time.monotonic()
    sock.settimeout(3.0)
    while sock.recv(65536):  # events already under way, then the proxy's close
        pass
    closed_after = time.monotonic() - left
    sock.close()
    # Not at the next keep-alive comment (15 s), nor ever for a half-closed client: at once.
    assert wait_until(lambda: _metric(proxy, "connections_open") == open_before, 3.0)
    assert wait_until(lambda: _close_wait(proxy) == 0, 2.0)
    print(f"subscriber's connection closed {closed_after * 1000:.0f} ms after it left")
