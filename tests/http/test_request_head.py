"""The fast request-head parser against its field-by-field oracle (``tests/http/reference.py``).

Bytes in, the same answer out: the hostile-request corpus, hand-picked edges, and heads
hypothesis builds from the fields that steer the parser (framing, Host, Connection, names
with ``_``, odd case and whitespace, repeats).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hal0proxy.http.problems import BadRequest
from hal0proxy.http.request_head import SLOW, FastHead, parse_request_head
from tests.hardening import corpus_requests
from tests.http.reference import reference_request_head


def _answer(buf: bytes) -> object:
    first = _parse_once(buf)
    assert _parse_once(buf) == first  # the second parse may come from the template table
    return first


def _parse_once(buf: bytes) -> object:
    try:
        parsed = parse_request_head(buf)
    except BadRequest as problem:
        return ("BadRequest", problem.message)
    if isinstance(parsed, FastHead):
        return parsed.method, parsed.target, parsed.headers, parsed.content_length, parsed.keep_alive, parsed.body_start
    return parsed


def _expected(buf: bytes) -> object:
    try:
        return reference_request_head(buf)
    except BadRequest as problem:
        return ("BadRequest", problem.message)


def _corpus() -> list[bytes]:
    raws = []
    for value in vars(corpus_requests).values():
        if isinstance(value, list | tuple):
            raws += [case.raw for case in value if hasattr(case, "raw")]
    return raws


def test_the_corpus_has_cases() -> None:
    assert len(_corpus()) > 100


@pytest.mark.parametrize("raw", _corpus())
def test_hostile_corpus_parses_like_the_oracle(raw: bytes) -> None:
    assert _answer(raw) == _expected(raw)


OPENAI_SDK = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: gzip, deflate\r\n"
    b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
    b"User-Agent: OpenAI/Python 1.99.9\r\nX-Stainless-Lang: python\r\nAuthorization: Bearer unused\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


def test_a_client_head_is_split_into_lowered_names_and_stripped_values() -> None:
    parsed = parse_request_head(OPENAI_SDK)
    assert isinstance(parsed, FastHead)
    assert parsed.method == b"POST" and parsed.target == b"/v1/chat/completions"
    assert parsed.headers[:3] == [
        (b"host", b"127.0.0.1:8080"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
    ]
    assert (b"authorization", b"Bearer unused") in parsed.headers  # values keep their case
    assert parsed.content_length == 2 and parsed.keep_alive
    assert OPENAI_SDK[parsed.body_start :] == b"{}"
    assert _answer(OPENAI_SDK) == _expected(OPENAI_SDK)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([b"Host: a", b"Content-Length: 5", b"content-length: 5"], SLOW),  # repeated length
        ([b"Host: a", b"Content_Length: 5"], SLOW),  # imitates a framing field
        ([b"Host: a", b"transfer_encoding: chunked"], SLOW),
        ([b"Host: a", b"Expect: 100-continue"], SLOW),
        ([b"Host: a", b"UPGRADE: websocket"], SLOW),
        ([b"Host: a", b"Host: b"], SLOW),
        ([b"Content-Length: 1"], SLOW),  # no Host
        ([b"Host: a", b"Content-Length: +5"], SLOW),
        ([b"Host: a", b"Content-Length: 1234567890123456789"], SLOW),  # 19 digits
        ([b"Host: a", b"X-Host: b", b"X-Content-Length: 9"], None),  # names that only end alike
        ([b"Host: a", b"Connection: keep-alive", b"Connection: Close"], None),
        ([b"Host: a", b"Connection: closed"], None),  # not the close token
        ([b"Host: a", b"Via: close", b"Connection: upgrade"], None),
        ([b"Host:a", b"Content-Length:\t 0 \t", b"X-Empty:", b"X-Pad:   \t"], None),
    ],
)
def test_edges_parse_like_the_oracle(fields: list[bytes], expected: int | None) -> None:
    raw = b"POST /v1/x HTTP/1.1\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    assert _answer(raw) == _expected(raw)
    if expected is not None:
        assert _answer(raw) == expected
    else:
        assert isinstance(parse_request_head(raw), FastHead)


_NAMES = st.sampled_from(
    [
        b"Host",
        b"host",
        b"HOST",
        b"Content-Length",
        b"content-length",
        b"Content_Length",
        b"Transfer-Encoding",
        b"transfer_encoding",
        b"Connection",
        b"CONNECTION",
        b"Expect",
        b"Upgrade",
        b"Content-Type",
        b"X-Stainless-Lang",
        b"x_under_score",
        b"Authorization",
        b"X-Connection",
    ]
)
_VALUES = st.sampled_from(
    [
        b"",
        b"0",
        b"12",
        b" 7 ",
        b"\t3",
        b"-1",
        b"1_0",
        b"0x10",
        b"close",
        b"Close",
        b"keep-alive, close",
        b"closed",
        b"keep-alive",
        b"chunked",
        b"application/json",
        b"a:b",
        b" spaced  value \t",
        b"\xc3\xa9t\xc3\xa9",
    ]
)
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES, st.sampled_from([b":", b": ", b":\t", b" :"])), max_size=8)
_LINES = st.sampled_from(
    [b"POST /v1/chat/completions HTTP/1.1", b"GET /a?b=c HTTP/1.1", b"POST /x HTTP/1.0", b"post /y HTTP/1.1"]
)


@settings(max_examples=400, deadline=None)
@given(line=_LINES, fields=_FIELDS, ending=st.sampled_from([b"\r\n\r\n", b"\r\n\r\nbody", b"\r\n", b"\n\n"]))
def test_generated_heads_parse_like_the_oracle(
    line: bytes, fields: list[tuple[bytes, bytes, bytes]], ending: bytes
) -> None:
    raw = line + b"".join(b"\r\n" + name + sep + value for name, value, sep in fields) + ending
    assert _answer(raw) == _expected(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_like_the_oracle(junk: bytes) -> None:
    raw = b"POST / HTTP/1.1\r\nHost: a\r\n" + junk + b"\r\n\r\n"
    assert _answer(raw) == _expected(raw)


_LENGTH_VALUES = st.sampled_from(
    [b"0", b"5", b"12", b" 7 ", b"\t3", b"007", b"123456789012345678", b"1234567890123456789", b"-1", b"1 2", b"x", b""]
)


_BENIGN_FIELDS = st.lists(
    st.tuples(
        st.sampled_from([b"Content-Type", b"X-Stainless-Lang", b"Authorization", b"Connection", b"x_under_score"]),
        _VALUES,
        st.sampled_from([b":", b": ", b":\t"]),
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(
    line=_LINES,
    before=_BENIGN_FIELDS,
    after=_BENIGN_FIELDS,
    name=st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"]),
    values=st.lists(_LENGTH_VALUES, min_size=2, max_size=4),
)
def test_heads_differing_only_in_content_length_parse_like_the_oracle(
    line: bytes,
    before: list[tuple[bytes, bytes, bytes]],
    after: list[tuple[bytes, bytes, bytes]],
    name: bytes,
    values: list[bytes],
) -> None:
    """The template table answers a head seen before with another length exactly as a full parse."""

    def fields(items: list[tuple[bytes, bytes, bytes]]) -> bytes:
        return b"".join(b"\r\n" + n + sep + v for n, v, sep in items)

    accepted = 0
    for value in values:
        raw = line + fields(before) + b"\r\nHost: a\r\n" + name + b":" + value + fields(after) + b"\r\n\r\nbody"
        answer = _answer(raw)  # parsed twice: from the second sight on, the template is kept
        assert answer == _expected(raw)
        accepted += isinstance(answer, tuple) and answer[0] != "BadRequest"
    if line.endswith(b"HTTP/1.1") and line.startswith((b"POST", b"GET")):
        valid = [v for v in values if v.strip(b" \t").isdigit() and len(v.strip(b" \t")) <= 18]
        assert accepted == len(valid)  # every head with a valid length took the fast path


def test_a_template_hit_takes_the_new_length_and_a_fresh_header_list() -> None:
    def raw(length: int) -> bytes:
        return OPENAI_SDK.replace(b"Content-Length: 2\r\n\r\n{}", b"Content-Length: %d\r\n\r\n" % length)

    parse_request_head(raw(2))  # first sight; the template is kept from the second on
    first = parse_request_head(raw(2))
    second = parse_request_head(raw(12345))
    assert isinstance(first, FastHead) and isinstance(second, FastHead)
    assert first.content_length == 2 and second.content_length == 12345
    assert (b"content-length", b"12345") in second.headers and (b"content-length", b"2") in first.headers
    assert first.headers is not second.headers
    assert second.body_start == len(raw(12345))
    first.headers.clear()
    third = parse_request_head(raw(3))
    assert isinstance(third, FastHead) and len(third.headers) == len(second.headers)
    assert parse_request_head(raw(2).replace(b"Content-Length: 2", b"Content-Length: 2x")) == SLOW


def test_the_template_table_is_bounded() -> None:
    from hal0proxy.http import request_head

    for n in range(request_head._CACHE_MAX_ENTRIES * 2):
        parsed = parse_request_head(b"GET /v1/models?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        assert isinstance(parsed, FastHead) and parsed.target == b"/v1/models?n=%d" % n
        assert len(request_head._templates) <= request_head._CACHE_MAX_ENTRIES
    long_head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: " + b"v" * 5000 + b"\r\n\r\n"
    assert isinstance(parse_request_head(long_head), FastHead)
    assert all(len(key) <= request_head._CACHE_MAX_KEY_BYTES for key in request_head._templates)


_SPELLINGS = [b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Content-length"]


@pytest.mark.parametrize("first", _SPELLINGS)
@pytest.mark.parametrize("second", [None, *_SPELLINGS])
def test_every_spelling_and_a_repeated_length_field_parse_like_the_oracle(first: bytes, second: bytes | None) -> None:
    """The template key cuts the length value wherever its field is, however it is spelled; a
    head with two length fields (any spellings, either order) is never answered from a template."""
    for value, other in [(b"5", b"5"), (b"17", b"5"), (b"5", b"17"), (b"5", b"5"), (b"123", b"123")]:
        repeat = b"" if second is None else second + b": " + other + b"\r\n"
        raw = b"POST /v1/x HTTP/1.1\r\nHost: a\r\n" + first + b": " + value + b"\r\n" + repeat + b"\r\nhello"
        for _ in range(3):
            assert _answer(raw) == _expected(raw)
