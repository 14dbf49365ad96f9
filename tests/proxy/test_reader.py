"""The request reader: fast parser for simple heads, h11 for the rest, limits for both."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http.errors import ProxyError
from hal0proxy.http.request_head import NEED_MORE, SLOW, FastHead, parse_request_head
from hal0proxy.proxy.reader import RequestReader

SIMPLE = b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-A:  b \r\n\r\n{}"


def test_simple_head_is_parsed_fast() -> None:
    head = parse_request_head(SIMPLE)
    assert isinstance(head, FastHead)
    assert head.method == b"POST" and head.target == b"/v1/chat/completions?x=1"
    assert head.content_length == 2 and head.keep_alive
    assert (b"x-a", b"b") in head.headers
    assert SIMPLE[head.body_start :] == b"{}"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.0\r\nHost: a\r\n\r\n",  # HTTP/1.0
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",  # duplicate length
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",  # no Host
        b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  folded\r\n\r\n",  # obs-fold
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",  # space before colon
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n",
        b"POST  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GARBAGE\r\n\r\n",
    ],
)
def test_anything_unusual_goes_to_h11(raw: bytes) -> None:
    assert parse_request_head(raw) is SLOW


def test_incomplete_head_needs_more() -> None:
    assert parse_request_head(SIMPLE[:20]) is NEED_MORE


def test_connection_close_is_honoured() -> None:
    head = parse_request_head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n")
    assert isinstance(head, FastHead) and not head.keep_alive


def reader() -> RequestReader:
    return RequestReader(max_header_bytes=4096, max_body_bytes=1000, peer_host="127.0.0.1")


def test_pipeline_mixing_fast_and_h11_requests() -> None:
    r = reader()
    chunked = b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    r.feed(SIMPLE + chunked + SIMPLE)
    first = r.next_request()
    assert first is not None and first.body == b"{}" and first.path == "/v1/chat/completions"
    assert r.response_sent()
    second = r.next_request()
    assert second is not None and second.body == b"abc" and second.path == "/c"
    assert r.response_sent()
    third = r.next_request()
    assert third is not None and third.body == b"{}"
    assert r.response_sent()
    assert r.next_request() is None and r.idle


def test_byte_by_byte_delivery() -> None:
    r = reader()
    got = None
    for i in range(len(SIMPLE)):
        r.feed(SIMPLE[i : i + 1])
        got = r.next_request()
        assert got is None or i == len(SIMPLE) - 1
    assert got is not None and got.body == b"{}"


def test_limits_apply_on_both_paths() -> None:
    r = reader()
    r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
    with pytest.raises(ProxyError) as err:
        r.next_request()
    assert err.value.status == 413
    r = reader()
    r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"a" * 1024 + b"\r\n")
    with pytest.raises(ProxyError) as err:
        r.next_request()
    assert err.value.status == 413
    r = reader()
    r.feed(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 5000)
    with pytest.raises(ProxyError) as err:
        r.next_request()
    assert err.value.status == 431


def test_h11_reports_malformed_input_precisely() -> None:
    r = reader()
    r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    with pytest.raises(ProxyError) as err:
        r.next_request()
    assert err.value.status == 400 and err.value.code == "request.invalid_http"


def test_expect_continue_is_signalled() -> None:
    r = reader()
    r.feed(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert r.next_request() is None
    assert r.send_continue
    r.feed(b"{}")
    req = r.next_request()
    assert req is not None and req.body == b"{}"


def test_http10_closes_after_response() -> None:
    r = reader()
    r.feed(b"GET /v1/models HTTP/1.0\r\n\r\n")
    assert r.next_request() is not None
    assert not r.keep_alive
    assert not r.response_sent()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    r = reader()
    r.feed(data)
    try:
        while r.next_request() is not None:
            if not r.response_sent():
                break
    except ProxyError as err:
        assert 400 <= err.status < 500
    except Exception as exc:  # only the documented clean-close signal may escape
        assert type(exc).__name__ == "ConnectionClosed"
