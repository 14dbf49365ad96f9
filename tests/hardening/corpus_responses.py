"""The broken-child corpus: exact bytes a child answers with, and what the client must get.

``BAD``: the proxy answers ``502 dispatch.upstream_unavailable`` and never reuses that child
connection. ``CUT``: the head was already relayed when the framing broke, so the client sees
the response end abnormally (closed mid-body), never a body that silently looks complete.
``INTERRUPTED``: an SSE stream broken between two events ends with the stream-interrupted
event and a proper end of the chunked body. ``OK``: unusual but valid — relayed as sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.hardening.children import Script

BAD, CUT, INTERRUPTED, OK = "bad", "cut", "interrupted", "ok"


@dataclass(frozen=True)
class Broken:
    id: str
    script: Script
    outcome: str
    status: int = 502
    body: bytes | None = None  # the exact body the client must receive (OK cases)
    events: int = 1  # INTERRUPTED: complete events the client must receive before the error


def _head(status_line: bytes, *headers: bytes) -> bytes:
    return b"\r\n".join([status_line, *headers]) + b"\r\n\r\n"


def _ok_json(*headers: bytes, status_line: bytes = b"HTTP/1.1 200 OK") -> bytes:
    return _head(status_line, b"Content-Type: application/json", b"Content-Length: 2", *headers) + b"{}"


SSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_JSON = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
EVENT = b'data: {"i":0}\n\n'
EVENT_CHUNK = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)


def _bad(name: str, data: bytes) -> Broken:
    return Broken(name, Script(data), BAD)


CORPUS: list[Broken] = [
    # -- status line
    _bad("status_000", _head(b"HTTP/1.1 000 Zero", b"Content-Length: 0")),
    _bad("status_099", _head(b"HTTP/1.1 099 Low", b"Content-Length: 0")),
    _bad("status_600", _head(b"HTTP/1.1 600 High", b"Content-Length: 0")),
    _bad("status_999", _head(b"HTTP/1.1 999 Very", b"Content-Length: 0")),
    _bad("status_two_digits", _head(b"HTTP/1.1 20 OK", b"Content-Length: 0")),
    _bad("status_not_a_number", _head(b"HTTP/1.1 abc OK", b"Content-Length: 0")),
    _bad("status_ctl_in_reason", _head(b"HTTP/1.1 200 O\x01K", b"Content-Length: 0")),
    _bad("version_http2", _head(b"HTTP/2 200 OK", b"Content-Length: 0")),
    _bad("version_garbage", _head(b"HTTX/1.1 200 OK", b"Content-Length: 0")),
    _bad("no_status_line", b"Content-Length: 2\r\n\r\n{}"),
    # -- framing headers
    _bad("cl_negative", _head(b"HTTP/1.1 200 OK", b"Content-Length: -5") + b"{}"),
    _bad("cl_underscore", _head(b"HTTP/1.1 200 OK", b"Content-Length: 1_0") + b"{}"),
    _bad("cl_hex", _head(b"HTTP/1.1 200 OK", b"Content-Length: 0x2") + b"{}"),
    _bad("cl_plus", _head(b"HTTP/1.1 200 OK", b"Content-Length: +2") + b"{}"),
    _bad("cl_two_different", _head(b"HTTP/1.1 200 OK", b"Content-Length: 2", b"Content-Length: 3") + b"{}"),
    _bad("cl_list_different", _head(b"HTTP/1.1 200 OK", b"Content-Length: 2, 3") + b"{}"),
    _bad(
        "cl_and_te",
        _head(b"HTTP/1.1 200 OK", b"Content-Length: 2", b"Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n",
    ),
    _bad("te_gzip", _head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip") + b"{}"),
    _bad("te_chunked_twice", _head(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked, chunked") + b"0\r\n\r\n"),
    _bad("te_in_http10", _head(b"HTTP/1.0 200 OK", b"Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n\r\n"),
    # -- header syntax (response splitting / injection for lenient clients)
    _bad("bare_lf_in_value", _ok_json(b"X-A: a\nX-Injected: 1")),
    _bad("bare_lf_line_ends", b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}"),
    _bad("bare_cr_in_value", _ok_json(b"X-A: a\rX-Injected: 1")),
    _bad("nul_in_value", _ok_json(b"X-A: a\x00b")),
    _bad("obs_fold", _ok_json(b"X-A: a", b" folded")),
    _bad("space_before_colon", _head(b"HTTP/1.1 200 OK", b"Content-Length : 2") + b"{}"),
    _bad("header_without_colon", _ok_json(b"NoColon")),
    _bad("header_name_with_space", _ok_json(b"X A: 1")),
    _bad("head_70kb", _ok_json(b"X-Big: " + b"a" * 70_000)),
    # -- interim and protocol switches
    _bad("unasked_101", _head(b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade")),
    _bad("interim_flood", _head(b"HTTP/1.1 100 Continue") * 9 + _ok_json()),
    # -- chunked framing, broken in the first read (nothing relayed yet: 502)
    _bad("chunk_size_0x", CHUNKED_JSON + b"0x2\r\n{}\r\n0\r\n\r\n"),
    _bad("chunk_size_negative", CHUNKED_JSON + b"-2\r\n{}\r\n0\r\n\r\n"),
    _bad("chunk_size_underscore", CHUNKED_JSON + b"1_0\r\n0123456789\r\n0\r\n\r\n"),
    _bad("chunk_data_without_crlf", CHUNKED_JSON + b"2\r\n{}XX0\r\n\r\n"),
    _bad("chunk_line_bare_lf", CHUNKED_JSON + b"2\n{}\r\n0\r\n\r\n"),
    _bad("chunk_extension_5kb", CHUNKED_JSON + b"2;" + b"x" * 5000 + b"\r\n{}\r\n0\r\n\r\n"),
    # -- broken after the head went out
    Broken(
        "chunk_data_without_crlf_later",
        Script(CHUNKED_JSON + b"1\r\n{\r\n", pause_s=0.2, later=b"1\r\n}XX0\r\n\r\n"),
        CUT,
        status=200,
    ),
    Broken(
        "cl_body_short_then_close",
        Script(_head(b"HTTP/1.1 200 OK", b"Content-Length: 10") + b"{}", keep_open=False),
        CUT,
        200,
    ),
    Broken(
        "sse_bad_size_between_events",
        Script(SSE + EVENT_CHUNK, pause_s=0.2, later=b"zz\r\n" + EVENT + b"\r\n0\r\n\r\n"),
        INTERRUPTED,
        status=200,
    ),
    Broken(
        "sse_event_then_bad_size_in_one_read",
        Script(SSE + EVENT_CHUNK, pause_s=0.2, later=EVENT_CHUNK + b"zz\r\n" + EVENT + b"\r\n0\r\n\r\n"),
        INTERRUPTED,
        status=200,
        events=2,  # the complete event before the fault in the same read is still relayed
    ),
    # -- unusual but valid: relayed
    Broken("interim_100_then_200", Script(_head(b"HTTP/1.1 100 Continue") + _ok_json()), OK, 200, b"{}"),
    Broken(
        "early_hints_103",
        Script(_head(b"HTTP/1.1 103 Early Hints", b"Link: </a>; rel=preload") + _ok_json()),
        OK,
        200,
        b"{}",
    ),
    Broken("cl_identical_twice", Script(_ok_json(b"Content-Length: 2")), OK, 200, b"{}"),
    Broken("no_reason_phrase", Script(_ok_json(status_line=b"HTTP/1.1 200")), OK, 200, b"{}"),
    Broken(
        "http10_close_delimited",
        Script(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{}", keep_open=False),
        OK,
        200,
        b"{}",
    ),
    Broken("chunk_extension_and_trailer", Script(CHUNKED_JSON + b"2;a=b\r\n{}\r\n0\r\nX-T: 1\r\n\r\n"), OK, 200, b"{}"),
    Broken("trailing_garbage_after_body", Script(_ok_json() + b"GARBAGE"), OK, 200, b"{}"),
    Broken(
        "error_passed_through",
        Script(
            _head(b"HTTP/1.1 400 Bad Request", b"Content-Type: application/json", b"Content-Length: 12")
            + b'{"error":42}'
        ),
        OK,
        400,
        b'{"error":42}',
    ),
]
