"""The response-head parse cache: a hit answers exactly what a fresh, uncached parse answers.

Every check runs on the first sight of a head; byte-identical heads then reuse the result.
These tests hold the cached path to ``parse_head_uncached`` on the broken-child corpus and on
generated heads, and show that a bad head is never cached and that the cache stays bounded.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http import response_reader
from hal0proxy.http.framing import BodyScanner, ChunkedScanner, LengthScanner, UntilCloseScanner
from hal0proxy.http.problems import BadResponse
from hal0proxy.http.response_reader import ResponseReader, parse_head, parse_head_uncached
from tests.hardening.corpus_responses import CORPUS


def _framing(scanner: BodyScanner) -> tuple[str, int]:
    if isinstance(scanner, LengthScanner):
        return "length", scanner.remaining
    return type(scanner).__name__, 0


def _answer(parse: object, head: bytes, method_is_head: bool) -> object:
    assert callable(parse)
    try:
        parsed, scanner = parse(head, method_is_head)
    except BadResponse as problem:
        return ("BadResponse", problem.message)
    fields = (parsed.status, parsed.reason, parsed.version, parsed.headers, parsed.keep_alive, parsed.chunked)
    return (*fields, parsed.raw, _framing(scanner))


def _heads(data: bytes) -> list[bytes]:
    """Every head in ``data`` (interim ones included), as ResponseReader would cut them."""
    heads = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        heads.append(data[:end])
        data = data[end + 4 :]
    return heads or [data]


CORPUS_HEADS = [head for case in CORPUS for head in _heads(case.script.data)]


def test_the_corpus_has_heads() -> None:
    assert len(CORPUS_HEADS) > 40


@pytest.mark.parametrize("head", CORPUS_HEADS)
@pytest.mark.parametrize("method_is_head", [False, True])
def test_cached_parse_answers_like_a_fresh_one(head: bytes, method_is_head: bool) -> None:
    expected = _answer(parse_head_uncached, head, method_is_head)
    # twice: the first call may fill the cache, the second must be answered the same from it
    assert _answer(parse_head, head, method_is_head) == expected
    assert _answer(parse_head, head, method_is_head) == expected


def test_a_hit_gives_fresh_scanners_and_the_same_immutable_head() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked"
    first, scanner_a = parse_head(head, False)
    second, scanner_b = parse_head(head, False)
    assert isinstance(scanner_a, ChunkedScanner) and isinstance(scanner_b, ChunkedScanner)
    assert scanner_a is not scanner_b
    scanner_a.feed(b"5\r\nhello\r\n")
    assert scanner_a.chunks == 1 and scanner_b.chunks == 0  # state is never shared
    # The head itself is shared between hits, so it is immutable: its fields are a tuple.
    assert second is first and isinstance(first.headers, tuple)
    assert first.headers == ((b"content-type", b"text/event-stream"), (b"transfer-encoding", b"chunked"))
    length_head = b"HTTP/1.1 200 OK\r\nContent-Length: 5"
    for _ in range(2):
        parsed, scanner = parse_head(length_head, False)
        assert isinstance(scanner, LengthScanner) and scanner.feed(b"hello!") == 5 and scanner.done
    close_head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain"
    for _ in range(2):
        parsed, scanner = parse_head(close_head, False)
        assert isinstance(scanner, UntilCloseScanner) and not parsed.keep_alive


def test_a_bad_head_is_refused_every_time_and_never_cached() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3"
    for _ in range(3):
        with pytest.raises(BadResponse, match="two different Content-Length"):
            parse_head(head, False)
    assert head not in response_reader._parsed_heads


def test_the_cache_is_bounded_in_entries_and_head_size() -> None:
    for n in range(response_reader._CACHE_MAX_ENTRIES * 3):
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: %d" % n, False)
        assert len(response_reader._parsed_heads) <= response_reader._CACHE_MAX_ENTRIES
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2000 + b"\r\nContent-Length: 0"
    parsed, _ = parse_head(big, False)
    assert parsed.status == 200 and big not in response_reader._parsed_heads


def test_reader_reuses_the_cached_parse_across_responses() -> None:
    wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    for _ in range(3):
        done = ResponseReader(False).feed(wire)
        assert done is not None
        head, scanner, rest = done
        assert head.status == 200 and head.raw == wire[: wire.index(b"\r\n\r\n")]
        assert rest == b"{}" and scanner.feed(rest) == 2 and scanner.done


_FIELDS = st.sampled_from(
    [
        b"Content-Length: 2",
        b"Content-Length: 02",
        b"content-length: 2, 2",
        b"Content-Length: 3",
        b"Content-Length: -1",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip, chunked",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Content-Type: text/event-stream",
        b"Keep-Alive: timeout=5, max=100",
        b"Server: llama.cpp",
        b"X-Odd:  padded \t",
        b" folded",
        b"Bad Name: x",
        b"X-Nul: a\x00b",
    ]
)
_STATUS = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 204", b"HTTP/1.0 200 OK", b"HTTP/1.1 101 Switching", b"HTTP/1.1 304 Not Modified"]
)


@settings(max_examples=300, deadline=None)
@given(status=_STATUS, fields=st.lists(_FIELDS, max_size=6), method_is_head=st.booleans())
def test_generated_heads_cached_like_fresh(status: bytes, fields: list[bytes], method_is_head: bool) -> None:
    head = b"\r\n".join([status, *fields])
    expected = _answer(parse_head_uncached, head, method_is_head)
    assert _answer(parse_head, head, method_is_head) == expected
    assert _answer(parse_head, head, method_is_head) == expected


def test_a_length_body_is_done_exactly_at_its_last_byte_across_reads() -> None:
    scanner = LengthScanner(5)
    assert not scanner.done
    assert scanner.feed(b"he") == 2 and not scanner.done
    assert scanner.feed(b"") == 0 and not scanner.done
    assert scanner.feed(b"llo") == 3 and scanner.done  # the read that ends it exactly
    assert scanner.feed(b"more") == 0 and scanner.done  # nothing past the end belongs to it
    assert LengthScanner(0).done  # an empty body is done before any read
