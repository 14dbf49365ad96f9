"""Absolute-form request targets (``GET http://host/path``): RFC 9112 §3.2.2 has a server
accept them, route by their path and take the host from the target."""

from __future__ import annotations

import json
import socket

import pytest

from hal0proxy.http.request_head import origin_form
from tests.proxy.test_children import fake
from tests.support.proxy import start_proxy


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (b"http://example.test/healthz", b"/healthz", b"example.test"),
        (b"HTTP://example.test:8080/v1/models?x=1", b"/v1/models?x=1", b"example.test:8080"),
        (b"https://h", b"/", b"h"),
        (b"http://h?q=1", b"/?q=1", b"h"),
    ],
)
def test_origin_form_takes_the_path_and_the_host_from_the_target(target: bytes, path: bytes, host: bytes) -> None:
    got_path, fields = origin_form(target, [(b"host", b"other"), (b"accept", b"*/*")])
    assert got_path == path
    assert fields == [(b"host", host), (b"accept", b"*/*")]


@pytest.mark.parametrize("target", [b"*", b"ftp://h/x", b"http:///x", b"example.test:80"])
def test_other_targets_are_left_as_they_are(target: bytes) -> None:
    fields = [(b"host", b"h")]
    assert origin_form(target, fields) == (target, fields)


def _exchange(port: int, raw: bytes) -> bytes:
    """Send one ``Connection: close`` request; read the whole answer (until the proxy closes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        data = b""
        while piece := sock.recv(65536):
            data += piece
        return data


def test_absolute_form_requests_are_served_and_forwarded() -> None:
    child = fake()
    proxy = start_proxy("http://127.0.0.1:1", "", "--static-route", f"m={child.port}")
    try:
        head = _exchange(
            proxy.port, b"GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 200 "), head
        body = json.dumps({"model": "m", "messages": []}).encode()
        raw = (
            b"POST http://127.0.0.1/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        answer = _exchange(proxy.port, raw)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    finally:
        proxy.stop()
        child.proc.kill()
