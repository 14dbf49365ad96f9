"""HTTP/1.0 clients and streamed bodies, and answers that must not wait for a timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.hardening.children import Script, ScriptedChild
from tests.hardening.wire import Conn, request
from tests.support.proxy import ProxyProcess, start_proxy

EVENTS = [b'data: {"i":%d}\n\n' % i for i in range(5)] + [b"data: [DONE]\n\n"]
BODY = b'{"model":"m","stream":true,"messages":[]}'


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[ProxyProcess, ScriptedChild]]:
    split_sse = Script(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS[:3])
        + b"%x\r\n" % len(EVENTS[3]),
        pause_s=0.2,  # a chunk split across two reads at the proxy
        later=EVENTS[3] + b"\r\n" + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS[4:]) + b"0\r\n\r\n",
    )
    child = ScriptedChild(scripts={"split_sse": split_sse}).start()
    proxy = start_proxy("http://127.0.0.1:1", "[limits]\nrequest_timeout_s = 30\n", "--static-route", f"m={child.port}")
    try:
        yield proxy, child
    finally:
        proxy.stop()
        child.stop()


def _post(version: str, script: str) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: t\r\nX-Script: {script}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


@pytest.mark.parametrize("script", ["sse", "split_sse"])
def test_stream_to_http10_client_is_close_delimited(rig: tuple[ProxyProcess, ScriptedChild], script: str) -> None:
    proxy, _ = rig
    conn = Conn(proxy.port)
    conn.send(_post("1.0", script))
    answer = conn.read_answer(b"POST")  # no length, no chunking: read to the close
    conn.close()
    assert answer.status == 200
    assert b"transfer-encoding" not in answer.headers and b"content-length" not in answer.headers
    assert answer.headers[b"connection"] == b"close"
    expected = b"".join(EVENTS) if script == "split_sse" else b"".join(b'data: {"i":%d}\n\n' % i for i in range(5))
    assert answer.body.startswith(expected), answer.body  # the chunk data, without chunk framing


@pytest.mark.parametrize("script", ["sse", "split_sse"])
def test_stream_to_http11_client_stays_chunked(rig: tuple[ProxyProcess, ScriptedChild], script: str) -> None:
    proxy, _ = rig
    conn = Conn(proxy.port)
    conn.send(_post("1.1", script))
    answer = conn.read_answer(b"POST")
    assert answer.status == 200 and answer.headers[b"transfer-encoding"] == b"chunked"
    assert answer.body.endswith(b"data: [DONE]\n\n")
    conn.send(request("GET", "/v1/models"))  # and the connection is still in step
    assert conn.read_answer().status == 200
    conn.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/models HTTP/1.1\nHost: t\n\n",
        b"GET /v1/models HTTP/1.1\r\nHost: t\n\n",
        b"GET /v1/models HTTP/1.1\nHost: t\r\n\r\n",
    ],
    ids=["all_bare_lf", "bare_lf_end", "bare_lf_first"],
)
def test_bare_lf_heads_are_answered_at_once(rig: tuple[ProxyProcess, ScriptedChild], raw: bytes) -> None:
    proxy, _ = rig
    started = time.monotonic()
    conn = Conn(proxy.port)
    conn.send(raw)
    answer = conn.read_answer()
    elapsed = time.monotonic() - started
    assert answer.status == 400 and answer.json()["error"]["code"] == "request.invalid_http"
    assert conn.closed_by_peer()
    conn.close()
    assert elapsed < 5, elapsed  # not the 30 s request timeout


def test_http2_preface_gets_505_at_once(rig: tuple[ProxyProcess, ScriptedChild]) -> None:
    proxy, _ = rig
    conn = Conn(proxy.port)
    # What an HTTP/2 client with prior knowledge sends: the preface and a SETTINGS frame.
    conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    answer = conn.read_answer()
    assert answer.status == 505 and answer.json()["error"]["code"] == "request.http_version"
    assert answer.raw_head.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert conn.closed_by_peer()
    conn.close()
