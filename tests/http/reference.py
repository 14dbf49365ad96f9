"""Straightforward per-field parsers: the oracles the fast paths in ``hal0proxy.http`` are held to.

They are the parsers the proxy used before its hot path was tightened, written field by field
in Python; a differential test feeds both the same bytes and demands the same answer.
"""

from __future__ import annotations

import re

from hal0proxy.http.problems import BadRequest
from hal0proxy.http.request_head import NEED_MORE, SLOW

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/1\.1\Z")
_FIELD_SECTION = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*")
_FIELD = re.compile(rb"([^:]+):([^\r]*)\r\n")
_SLOW_FIELDS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
_FRAMING_FIELDS = frozenset({b"transfer-encoding", b"content-length"})

# (method, target, headers, content_length, keep_alive, body_start)
Parsed = tuple[bytes, bytes, list[tuple[bytes, bytes]], int, bool, int]


def reference_request_head(buf: bytes) -> Parsed | int:
    """What ``parse_request_head`` must answer, as a plain tuple (or NEED_MORE / SLOW)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if b"\n\n" in buf or b"\n\r\n" in buf:
            raise BadRequest("request head lines must end with CRLF, not a bare LF")
        return NEED_MORE
    line_end = buf.find(b"\r\n", 0, end + 2)
    match = _REQUEST_LINE.match(buf, 0, line_end)
    if match is None or not match.group(2).startswith(b"/"):
        return SLOW  # absolute-form and "*" targets take the general path
    section = buf[line_end + 2 : end + 2]
    if _FIELD_SECTION.fullmatch(section) is None:
        return SLOW
    headers: list[tuple[bytes, bytes]] = []
    content_length = 0
    seen_length = False
    hosts = 0
    keep_alive = True
    for name, value in _FIELD.findall(section):
        value = value.strip(b" \t")
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
        elif name == b"connection":
            if b"close" in [t.strip() for t in value.lower().split(b",")]:
                keep_alive = False  # any Connection field listing "close" ends the connection
        elif b"_" in name and name.replace(b"_", b"-") in _FRAMING_FIELDS:
            return SLOW
        headers.append((name, value))
    if hosts != 1:
        return SLOW
    return match.group(1), match.group(2), headers, content_length, keep_alive, end + 4
