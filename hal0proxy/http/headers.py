"""Header hygiene (RFC 9110 §7.6.1) and a cached ``Date`` header.

Header names from h11 arrive lower-cased as bytes, so every set here is lower-case bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from email.utils import formatdate

# Connection-specific headers never forwarded in either direction. ``transfer-encoding`` and
# ``content-length`` are handled by the framing code, not copied blindly.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

_date_cache: tuple[int, bytes] = (0, b"")


def date_header() -> bytes:
    """``date: ...\\r\\n``, formatted at most once per second (formatting is surprisingly slow)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date_cache[1]


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    """Tokens of every ``Connection`` header: they name further hop-by-hop headers."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    return tokens
