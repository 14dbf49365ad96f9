"""``proxy.wire``: the bytes sent to the child and to the client, fast paths against plain builds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http.headers import HOP_BY_HOP, connection_tokens
from hal0proxy.http.messages import HttpRequest
from hal0proxy.http.response_reader import ResponseHead, parse_head
from hal0proxy.proxy import wire
from hal0proxy.proxy.reader import RequestReader
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.wire import downstream_head, upstream_request


def _plain_upstream(req: HttpRequest, target: bytes, settings: ProxySettings) -> bytes:
    """The request for the child, built one field at a time (the oracle)."""
    drop = set(HOP_BY_HOP) | {b"host", b"content-length", b"expect"} | connection_tokens(req.headers)
    if not settings.forward_conversation_id:
        drop.add(b"x-conversation-id")
    if settings.api_keys:
        drop.add(b"authorization")
    out = req.method + b" " + target + b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"
    for name, value in req.headers:
        if name not in drop:
            out += name + b": " + value + b"\r\n"
    return out + b"content-length: %d\r\n\r\n" % len(req.body) + req.body


_NAMES = st.sampled_from(
    [
        b"host",
        b"content-length",
        b"content-type",
        b"connection",
        b"keep-alive",
        b"x-conversation-id",
        b"authorization",
        b"x-custom",
        b"te",
        b"expect",
        b"accept",
    ]
)
_VALUES = st.sampled_from([b"", b"close", b"keep-alive", b"x-custom, accept", b"application/json", b"Bearer k"])


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    body=st.binary(max_size=40),
    forward=st.booleans(),
    keys=st.booleans(),
)
def test_upstream_request_matches_a_field_by_field_build(
    headers: list[tuple[bytes, bytes]], body: bytes, forward: bool, keys: bool
) -> None:
    req = HttpRequest(b"POST", b"/v1/x", "/v1/x", b"", headers, body)
    settings_ = ProxySettings(forward_conversation_id=forward, api_keys=("k",) if keys else ())
    assert upstream_request(req, b"/v1/y?q=1", settings_) == _plain_upstream(req, b"/v1/y?q=1", settings_)


_SIMPLE_NAMES = _NAMES.filter(lambda name: name not in (b"host", b"content-length", b"expect"))


@settings(max_examples=200, deadline=None)
@given(
    headers=st.lists(st.tuples(_SIMPLE_NAMES, _VALUES), max_size=8),
    bodies=st.lists(st.binary(max_size=40), min_size=2, max_size=4),
    forward=st.booleans(),
    keys=st.booleans(),
    target=st.sampled_from([b"/v1/y?q=1", b"/v1/x"]),
)
def test_a_repeated_head_is_reframed_like_a_fresh_one(
    headers: list[tuple[bytes, bytes]], bodies: list[bytes], forward: bool, keys: bool, target: bytes
) -> None:
    """The head memo of a repeated head (``HeadTemplate.memo``) gives the bytes a full build gives."""
    settings_ = ProxySettings(forward_conversation_id=forward, api_keys=("k",) if keys else ())
    fields = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    for body in bodies:  # the same head but for its Content-Length: a template from the second on
        reader = RequestReader(65536, 1 << 20, None)
        reader.feed(b"POST /v1/x HTTP/1.1\r\nHost: h\r\n%bContent-Length: %d\r\n\r\n%b" % (fields, len(body), body))
        req = reader.next_request()
        assert req is not None and req.body == body
        for _ in range(2):  # the second call is answered from the memo
            assert upstream_request(req, target, settings_) == _plain_upstream(req, target, settings_)
    assert req.template is not None
    # what classification reads of a repeated head comes from its template
    assert req.template.content_type == (req.header(b"content-type") or b"")
    assert (req.template.path, req.template.query) == (req.path, req.query)


def test_upstream_request_without_end_to_end_fields() -> None:
    req = HttpRequest(b"GET", b"/v1/models", "/v1/models", b"", [(b"host", b"a"), (b"connection", b"close")])
    assert upstream_request(req, b"/v1/models", ProxySettings()) == (
        b"GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"
    )


HEADS = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Accel-Buffering: no\r\nTransfer-Encoding: chunked",
    b"HTTP/1.1 200 OK\r\nServer: llama.cpp\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 7",
    b"HTTP/1.0 200 OK\r\nContent-Type: text/plain",
    b"HTTP/1.1 204 No Content",
    b"HTTP/1.1 503\r\nContent-Length: 0",
    b"HTTP/1.1 200 OK\r\nConnection: x-trace, Content-Length\r\nX-Trace: 1\r\nContent-Length: 2",
]


@pytest.mark.parametrize("raw", HEADS)
@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize("is_head", [True, False])
def test_downstream_head_from_the_cache_equals_a_fresh_build(raw: bytes, keep_alive: bool, is_head: bool) -> None:
    head, _ = parse_head(raw, False)
    assert head.raw == raw
    fresh = wire._downstream_head(head, keep_alive, is_head)
    assert downstream_head(head, keep_alive, is_head) == fresh
    assert downstream_head(head, keep_alive, is_head) == fresh  # now from the cache
    unparsed = ResponseHead(head.status, head.reason, head.version, head.headers, head.keep_alive, head.chunked)
    assert unparsed.raw == b"" and downstream_head(unparsed, keep_alive, is_head) == fresh


def test_downstream_head_shape() -> None:
    head, _ = parse_head(HEADS[1], False)
    data, sse, keep_alive = downstream_head(head, True, False)
    assert data == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"x-accel-buffering: no\r\n\r\n"
    )
    assert sse and keep_alive
    head, _ = parse_head(HEADS[4], False)
    data, sse, keep_alive = downstream_head(head, True, False)
    assert data.endswith(b"connection: close\r\n\r\n") and not keep_alive and not sse


def test_fields_the_childs_connection_header_names_are_not_relayed() -> None:
    """RFC 9110 §7.6.1: they are hop-by-hop; the framing field stays (the body is relayed as framed)."""
    head, _ = parse_head(HEADS[-1], False)
    data, _, keep_alive = downstream_head(head, True, False)
    assert data == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n" and keep_alive


def test_downstream_cache_is_bounded() -> None:
    for n in range(wire._DOWNSTREAM_CACHE_MAX * 2):
        head, _ = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % n, False)
        assert downstream_head(head, True, False)[0].endswith(b"content-length: %d\r\n\r\n" % n)
        assert len(wire._downstream_heads) <= wire._DOWNSTREAM_CACHE_MAX


def test_a_large_head_is_relayed_but_not_kept() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 4000 + b"\r\nContent-Length: 0"
    head, _ = parse_head(raw, False)
    data, _, _ = downstream_head(head, True, False)
    assert b"x-big: " + b"a" * 4000 in data
    assert all(key[0] != raw for key in wire._downstream_heads)
