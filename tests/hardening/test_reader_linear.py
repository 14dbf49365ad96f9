"""The request reader's cost is linear in what a client sends, however it is split.

The head is measured as a ratio (4x the bytes must cost well under 16x the time), so that test
does not depend on the speed of the machine: quadratic buffering — the buffer rebuilt on every
read — scales by 16 there, linear handling by 4.
"""

from __future__ import annotations

import time

from hal0proxy.http.response_reader import ResponseReader
from hal0proxy.proxy.reader import RequestReader


def _trickled_head_seconds(pad: int) -> float:
    head = b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n"
    best = float("inf")
    for _ in range(3):
        reader = RequestReader(max_header_bytes=65536, max_body_bytes=1 << 20, peer_host=None)
        started = time.perf_counter()
        for i in range(len(head)):
            reader.feed(head[i : i + 1])  # one byte per read: the worst a client can do
            req = reader.next_request()
        best = min(best, time.perf_counter() - started)
        assert req is not None and req.header(b"x-pad") == b"a" * pad
    return best


def _body_in_pieces_seconds(size: int) -> float:
    body = b"b" * size
    head = b"POST /v1/x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % size
    best = float("inf")
    for _ in range(3):
        reader = RequestReader(max_header_bytes=65536, max_body_bytes=1 << 30, peer_host=None)
        started = time.perf_counter()
        reader.feed(head)
        assert reader.next_request() is None
        for i in range(0, size, 4096):
            reader.feed(body[i : i + 4096])
            req = reader.next_request()
        best = min(best, time.perf_counter() - started)
        assert req is not None and len(req.body) == size
    return best


def test_a_head_sent_byte_by_byte_costs_linear_time() -> None:
    small, large = _trickled_head_seconds(12_000), _trickled_head_seconds(48_000)
    assert large / small < 8, (small, large)


def test_a_body_sent_in_small_pieces_costs_linear_time() -> None:
    # A ratio does not separate the two here (16 MB no longer fits the caches 4 MB fits), so an
    # absolute bound with a wide margin: ~0.06 s measured for the list of pieces, ~7.5 s for
    # the buffer rebuilt on every 4 KiB read, on the same (shared, loaded) machine.
    seconds = _body_in_pieces_seconds(16_000_000)
    assert seconds < 1.5, seconds


def _trickled_response_head_seconds(pad: int) -> float:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n"
    best = float("inf")
    for _ in range(3):
        reader = ResponseReader(method_is_head=False)
        started = time.perf_counter()
        for i in range(len(head)):
            done = reader.feed(head[i : i + 1])
        best = min(best, time.perf_counter() - started)
        assert done is not None and done[0].status == 200
    return best


def test_a_child_head_sent_byte_by_byte_costs_linear_time() -> None:
    small, large = _trickled_response_head_seconds(12_000), _trickled_response_head_seconds(48_000)
    assert large / small < 8, (small, large)
