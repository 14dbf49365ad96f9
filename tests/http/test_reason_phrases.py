"""Every status the proxy writes itself has the reason phrase RFC 9110 §15 gives it.

The statuses are read from the proxy's own source (each place that answers with a literal
status: ``ProxyError(NNN``, ``status_hint = NNN``, ``LoadFailure(…, NNN``, the response
builders), plus the ones that arrive as values (h11's status hints), so a new status cannot
be added without its phrase. The emulator is not the proxy and is left out.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hal0proxy.http.errors import REASONS, ProxyError, error_response, reason_phrase, simple_response

PACKAGE = Path(__file__).resolve().parents[2] / "hal0proxy"

# RFC 9110 §15 (and §15.2.1 for 100), in its wording: 413 and 422 were renamed from RFC 7231's.
RFC9110_PHRASES: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    426: b"Upgrade Required",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}
# Not in RFC 9110, registered elsewhere: 429 and 431 in RFC 6585 §4 and §5.
OTHER_RFC_PHRASES: dict[int, bytes] = {429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}
STANDARD = RFC9110_PHRASES | OTHER_RFC_PHRASES

_LITERAL_STATUS = re.compile(
    r"(?:ProxyError\(|LoadFailure\([^()]*?, |status_hint\s*=\s*|status\s*=\s*|"
    r"(?:json_response|simple_response|_json)\()\s*([1-5][0-9][0-9])\b"
)
# Statuses that reach a response as values, not literals: h11's error_status_hint for a bad
# request head (400, 431, and 501 for a transfer coding it does not know); /readyz's 503;
# the "100 Continue" interim line.
_AS_VALUES = {100, 400, 431, 501, 503}


def authored_statuses() -> set[int]:
    found = set(_AS_VALUES)
    for path in PACKAGE.rglob("*.py"):
        if "emulator" in path.parts:
            continue
        found.update(int(m) for m in _LITERAL_STATUS.findall(path.read_text()))
    return found


def test_the_source_scan_finds_the_statuses_it_should() -> None:
    # The scan itself must see through the code's shapes, or the next test proves nothing.
    found = authored_statuses()
    assert {401, 403, 404, 405, 408, 413, 500, 502, 504, 505} <= found, sorted(found)


@pytest.mark.parametrize("status", sorted(authored_statuses()))
def test_every_authored_status_has_its_standard_phrase(status: int) -> None:
    assert reason_phrase(status) == STANDARD[status]


@pytest.mark.parametrize("status", sorted(REASONS))
def test_every_phrase_in_the_table_is_the_standard_one(status: int) -> None:
    assert REASONS[status] == STANDARD[status]


def test_a_status_outside_the_table_gets_an_empty_phrase_not_a_made_up_one() -> None:
    # RFC 9112 §4: the reason-phrase may be empty; the space before it stays.
    assert reason_phrase(418) == b""
    assert simple_response(418, b"{}").startswith(b"HTTP/1.1 418 \r\n")


def test_the_505_status_line() -> None:
    err = ProxyError(505, "request.http_version", "HTTP/2.0 is not supported; use HTTP/1.1")
    assert error_response(err, keep_alive=False).startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")


def test_extra_header_fields_of_an_error_are_written_after_the_standard_ones() -> None:
    err = ProxyError(401, "auth.required", "no key", headers=((b"www-authenticate", b"Bearer"),))
    head = error_response(err).split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 401 Unauthorized" and b"www-authenticate: Bearer" in head
    loading = ProxyError(503, "slot.loading", "loading", retry_after_s=3, headers=((b"x-a", b"1"),))
    assert loading.extra_headers() == [(b"x-a", b"1"), (b"retry-after", b"3")]
