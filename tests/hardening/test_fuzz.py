"""Property-based fuzzing of the two head readers and the chunk scanner (hypothesis).

A fixed budget (``max_examples`` per property, derandomized so a run is repeatable) keeps the
suite's time bounded. Properties: no exception but the documented one escapes, every call
returns (the global pytest timeout catches a hang), a head that is accepted carries no byte
that could split it at a lenient peer, and valid input split at any points reads the same as
in one piece.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hal0proxy.http.errors import ProxyError
from hal0proxy.http.framing import ChunkedScanner, FramingError
from hal0proxy.http.problems import BadResponse
from hal0proxy.http.response_reader import ResponseReader
from hal0proxy.proxy.reader import ConnectionClosed, RequestReader

BUDGET = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_REQUEST_PIECES = [
    b"GET /v1/models HTTP/1.1\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"PRI * HTTP/2.0\r\n",
    b"Host: t\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, Upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b" folded\r\n",
    b"X: a\nb\r\n",
    b"\r\n",
    b"\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffffff\r\n",
    b"5;ext=1\r\n",
    b'{"model":"m"}',
]
_RESPONSE_PIECES = [
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 999 No\r\n",
    b"Content-Length: 2\r\n",
    b"Content-Length: 1_0\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"X: a\x00b\r\n",
    b" folded\r\n",
    b"\r\n",
    b"\n",
    b"{}",
    b"2\r\n{}\r\n",
    b"0\r\n\r\n",
]


def _messages(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    """Plausible protocol text with random bytes mixed in: reaches deep into the parsers."""
    part = st.one_of(st.sampled_from(pieces), st.binary(max_size=12))
    return st.lists(part, max_size=24).map(b"".join)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for point in points:
        out.append(data[last:point])
        last = point
    out.append(data[last:])
    return [p for p in out if p]


@BUDGET
@given(data=_messages(_REQUEST_PIECES), cuts=st.lists(st.integers(0, 10_000), max_size=6), eof=st.booleans())
def test_request_reader_never_raises_anything_else(data: bytes, cuts: list[int], eof: bool) -> None:
    reader = RequestReader(max_header_bytes=4096, max_body_bytes=1024, peer_host="127.0.0.1")
    try:
        for piece in _split(data, cuts):
            reader.feed(piece)
            while (req := reader.next_request()) is not None:
                assert len(req.body) <= 1024
                assert req.http_version in (b"1.0", b"1.1")
                for name, value in req.headers:
                    assert b"\r" not in value and b"\n" not in value and b"\x00" not in value, (name, value)
                if not reader.response_sent():
                    return
        if eof:
            reader.feed_eof()
            reader.next_request()
    except (ProxyError, ConnectionClosed) as exc:
        if isinstance(exc, ProxyError):
            assert 400 <= exc.status < 600


@BUDGET
@given(data=_messages(_RESPONSE_PIECES), cuts=st.lists(st.integers(0, 10_000), max_size=6), is_head=st.booleans())
def test_response_reader_never_raises_anything_else(data: bytes, cuts: list[int], is_head: bool) -> None:
    reader = ResponseReader(method_is_head=is_head, max_head_bytes=4096)
    try:
        for piece in _split(data, cuts):
            done = reader.feed(piece)
            if done is None:
                continue
            head, scanner, rest = done
            assert 200 <= head.status <= 599
            for value in [head.reason, *(v for _, v in head.headers), *(n for n, _ in head.headers)]:
                assert not any(c in value for c in b"\r\n\x00"), value
            if rest:
                used = scanner.feed(rest)
                assert 0 <= used <= len(rest)
            return
    except (BadResponse, FramingError):
        pass


@BUDGET
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_chunk_scanner_on_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    scanner = ChunkedScanner()
    try:
        for piece in _split(data, cuts):
            used = scanner.feed(piece)
            assert 0 <= used <= len(piece)
            if scanner.done:
                return
    except FramingError:
        pass


@BUDGET
@given(
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=8),
    extension=st.sampled_from([b"", b";a=b", b" ;x", b';q="v"']),
    trailer=st.sampled_from([b"", b"X-T: 1\r\n"]),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_chunk_scanner_reads_valid_framing_the_same_in_any_pieces(
    payloads: list[bytes], extension: bytes, trailer: bytes, after: bytes, cuts: list[int]
) -> None:
    encoded = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in payloads) + b"0\r\n" + trailer + b"\r\n"
    scanner = ChunkedScanner(collect_payload=True)
    consumed = 0
    payload = b""
    for piece in _split(encoded + after, cuts):
        used = scanner.feed(piece)
        consumed += used
        payload += scanner.take_payload()
        if scanner.done:
            break
        assert used == len(piece)
    assert scanner.done and consumed == len(encoded)
    assert payload == b"".join(payloads) and scanner.chunks == len(payloads)
