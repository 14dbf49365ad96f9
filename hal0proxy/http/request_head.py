"""A strict parser for the common request shape, so the hot path need not run h11.

It accepts only what is unambiguous: an HTTP/1.1 request line, well-formed header fields
(RFC 9110 token names, no obs-fold, no control characters in values), exactly one Host,
at most one Content-Length, and no Transfer-Encoding, Expect or Upgrade. Anything else
returns ``SLOW`` and the connection hands the bytes to h11, which stays the authority on
every edge case (chunked bodies, HTTP/1.0, 100-continue, and the precise 4xx for malformed
input). Requests are re-framed towards the child with their own Content-Length, so a head
this parser accepts cannot smuggle a second request to the child.
"""

from __future__ import annotations

import re
from typing import Final

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/1\.1\Z")
_FIELD_NAME = re.compile(_TOKEN + rb"\Z")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Heads with any of these need h11's full treatment.
_SLOW_FIELDS: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})

NEED_MORE: Final = 0
SLOW: Final = 1


class FastHead:
    __slots__ = ("body_start", "content_length", "headers", "keep_alive", "method", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        content_length: int,
        keep_alive: bool,
        body_start: int,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.content_length = content_length
        self.keep_alive = keep_alive
        self.body_start = body_start


def parse_request_head(buf: bytes) -> FastHead | int:
    """``FastHead`` for a complete simple head, ``NEED_MORE`` or ``SLOW``."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return NEED_MORE
    lines = buf[:end].split(b"\r\n")
    match = _REQUEST_LINE.match(lines[0])
    if match is None:
        return SLOW
    headers: list[tuple[bytes, bytes]] = []
    content_length = 0
    seen_length = False
    hosts = 0
    keep_alive = True
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or _FIELD_NAME.match(name) is None:
            return SLOW  # includes obs-fold (leading whitespace) and whitespace before the colon
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value) is not None:
            return SLOW
        name = name.lower()
        if name in _SLOW_FIELDS:
            return SLOW
        if name == b"content-length":
            if seen_length or not value.isdigit() or len(value) > 18:
                return SLOW
            seen_length = True
            content_length = int(value)
        elif name == b"host":
            hosts += 1
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = b"close" not in [t.strip() for t in value.lower().split(b",")]
        headers.append((name, value))
    if hosts != 1:
        return SLOW
    return FastHead(match.group(1), match.group(2), headers, content_length, keep_alive, end + 4)
