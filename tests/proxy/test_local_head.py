"""HEAD on the proxy's own endpoints, over real sockets: the head only (RFC 9110 §9.3.2).

Each HEAD is pipelined with a ``GET /healthz`` in one write: if any byte of a body followed
the HEAD's head, the GET's answer would be read out of step. The HEAD's Content-Length is the
one the GET of the same resource gets. The proxy runs in front of the lemond emulator so that
every local endpoint (slots, the event stream, the status page, metrics) is there; a second
proxy with API keys checks the proxy-authored ``401`` on ``/v1/*`` (with its
``WWW-Authenticate: Bearer``) the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.wire import Answer, Conn, loopback_request
from tests.support.emulator import EmulatorProcess, start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

CONFIG = """
[[slot]]
name = "primary"
model = "Qwen3-0.6B-GGUF"
warm = true
"""
KEY = "sk-local-head-test"
HEALTH = b'{"status":"ok"}'


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyProcess]:
    emulator: EmulatorProcess = start_emulator()
    try:
        running = start_proxy(emulator.base_url, CONFIG)
        try:
            assert wait_until(lambda: running.request("GET", "/readyz")[0] == 200, 30)
            yield running
        finally:
            running.stop()
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def keyed() -> Iterator[ProxyProcess]:
    # Port 1: nothing is ever forwarded, every request here is refused before routing.
    running = start_proxy("http://127.0.0.1:1", f'api_keys = ["{KEY}"]\n', "--static-route", "m=1")
    try:
        yield running
    finally:
        running.stop()


def _head_then_health(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> Answer:
    """HEAD ``path`` and GET /healthz in one write; both answers read in step."""
    conn = Conn(port)
    try:
        conn.send(loopback_request("HEAD", path, headers=headers) + loopback_request("GET", "/healthz"))
        head = conn.read_answer(b"HEAD")
        follow = conn.read_answer(b"GET")
        assert follow.raw_head.startswith(b"HTTP/1.1 200 OK\r\n"), (head.raw_head, follow.raw_head, conn.buf)
        assert follow.body == HEALTH
        # Still in step: nothing is left over, and the connection takes one more request.
        conn.send(loopback_request("GET", "/healthz"))
        again = conn.read_answer(b"GET")
        assert again.status == 200 and again.body == HEALTH and conn.buf == b""
        return head
    finally:
        conn.close()


def _get(port: int, path: str, headers: list[tuple[str, str]] | None = None) -> Answer:
    conn = Conn(port)
    try:
        conn.send(loopback_request("GET", path, headers=headers))
        return conn.read_answer(b"GET")
    finally:
        conn.close()


# Answers that do not change between the HEAD and the GET: their lengths must be equal.
STABLE = ["/healthz", "/v1/models", "/v1/models/primary", "/", "/ui", "/api/slots/nope", "/api/slots/BAD", "/nowhere"]
# Answers whose bytes move with time (timestamps, counters): a length is all that is checked.
MOVING = ["/api/slots", "/api/slots/primary", "/metrics", "/readyz"]


@pytest.mark.parametrize("path", STABLE)
def test_head_of_a_local_answer_is_its_head_with_the_gets_length(proxy: ProxyProcess, path: str) -> None:
    head = _head_then_health(proxy.port, path)
    get = _get(proxy.port, path)
    assert head.status == get.status
    assert head.raw_head.split(b"\r\n")[0] == get.raw_head.split(b"\r\n")[0]
    assert int(head.headers[b"content-length"]) == len(get.body) > 0
    assert head.headers[b"content-type"] == get.headers[b"content-type"]


@pytest.mark.parametrize("path", MOVING)
def test_head_of_a_changing_local_answer_is_its_head_only(proxy: ProxyProcess, path: str) -> None:
    head = _head_then_health(proxy.port, path)
    assert head.status == 200
    assert int(head.headers[b"content-length"]) > 0


def test_head_of_the_event_stream_is_its_head_and_ends_there(proxy: ProxyProcess) -> None:
    head = _head_then_health(proxy.port, "/api/v1/adapter/events")
    assert head.status == 200
    assert head.headers[b"content-type"] == b"text/event-stream"
    assert head.headers[b"transfer-encoding"] == b"chunked"  # what the GET would get


def test_head_refused_for_a_missing_api_key_is_a_401_head_with_its_challenge(keyed: ProxyProcess) -> None:
    for path in ("/v1/chat/completions", "/v1/models"):
        head = _head_then_health(keyed.port, path)
        assert head.status == 401 and head.headers[b"www-authenticate"] == b"Bearer"
        assert int(head.headers[b"content-length"]) > 0


def test_401_for_a_missing_api_key_names_the_bearer_scheme(keyed: ProxyProcess) -> None:
    """RFC 9110 §11.6.1: a 401 carries WWW-Authenticate; 403 (a wrong key) needs none."""
    conn = Conn(keyed.port)
    try:
        conn.send(loopback_request("POST", "/v1/chat/completions", b'{"model":"m","messages":[]}'))
        refused = conn.read_answer(b"POST")
    finally:
        conn.close()
    assert refused.raw_head.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
    assert refused.headers[b"www-authenticate"] == b"Bearer"
    assert refused.json()["error"]["code"] == "auth.required"
    models = _get(keyed.port, "/v1/models")
    assert models.status == 401 and models.headers[b"www-authenticate"] == b"Bearer"
    wrong = _get(keyed.port, "/v1/models", [("Authorization", "Bearer wrong")])
    assert wrong.status == 403 and b"www-authenticate" not in wrong.headers
    right = _get(keyed.port, "/v1/models", [("Authorization", f"Bearer {KEY}")])
    assert right.status == 200 and b"www-authenticate" not in right.headers
