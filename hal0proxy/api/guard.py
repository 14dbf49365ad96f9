"""Who may reach the admin surface from a browser: pure checks of ``Host`` and ``Origin``.

Two attacks reach a loopback-only endpoint through the user's own browser:

- **Cross-site requests.** Any page may send a "simple" ``POST`` (``Content-Type: text/plain``,
  no preflight) to ``http://127.0.0.1:<port>/…``; the browser marks it with the page's
  ``Origin``. A mutating request whose ``Origin`` is not the proxy's own origin (the
  request's ``Host``), or is ``null`` (sandboxed frames, ``file:`` pages), is refused
  whatever credential it carries.
- **DNS rebinding.** A page on ``evil.example`` makes its name resolve to ``127.0.0.1`` and
  then talks to the proxy as a *same-origin* page: the peer is loopback, ``Origin`` matches
  ``Host``, and the page may read every answer. What it cannot change is the ``Host``
  header, which names its own domain. So a request authorised only by coming from loopback
  must name a loopback host.

Nothing here does I/O: the admin API asks and turns a refusal into ``403 auth.forbidden``.
"""

from __future__ import annotations

import ipaddress

__all__ = ["cross_origin_reason", "is_loopback_host", "split_authority"]

_DEFAULT_PORTS = {b"http": 80, b"https": 443}


def split_authority(authority: bytes) -> tuple[str, int | None] | None:
    """``host[:port]`` (a ``Host`` value, or an origin without its scheme) as a lower-case
    host (brackets kept off an IPv6 literal) and a port; ``None`` when it is malformed."""
    try:
        text = authority.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if not text or any(c in text for c in "/\\@?# \t"):
        return None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_raw = text.partition(":")
        port_text = port_text_raw if colon else None
        if ":" in port_text_raw:
            return None
    if not host:
        return None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        return None
    return host, int(port_text)


def is_loopback_host(host_header: bytes | None) -> bool:
    """Whether a ``Host`` header names this machine's loopback interface: ``localhost``,
    ``*.localhost`` (RFC 6761 reserves it for loopback), an IPv4 address in 127.0.0.0/8 or
    ``[::1]``, with any port. An absent header counts as loopback (an HTTP/1.0 client on the
    same machine; a browser always sends one)."""
    if host_header is None:
        return True
    parts = split_authority(host_header)
    if parts is None:
        return False
    host = parts[0].removesuffix(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cross_origin_reason(origin: bytes | None, host_header: bytes | None) -> str | None:
    """Why a mutating request's ``Origin`` is not the proxy's own origin, or ``None`` when
    it is (or when there is no ``Origin``: clients other than browsers do not send one).

    The origin's ``host[:port]`` must equal the ``Host`` header's; a port left out on either
    side is the default port of the origin's scheme (RFC 6454 §4)."""
    if origin is None:
        return None
    value = origin.strip()
    if value.lower() == b"null":
        return "an 'Origin: null' request (sandboxed frame or local file) may not change the proxy"
    scheme, sep, authority = value.partition(b"://")
    scheme = scheme.lower()
    theirs = split_authority(authority) if sep and scheme in _DEFAULT_PORTS else None
    if theirs is None:
        return "the request's Origin header is malformed"
    ours = split_authority(host_header) if host_header is not None else None
    if ours is None:
        return "a cross-origin request (no valid Host header to compare its Origin with) may not change the proxy"
    default = _DEFAULT_PORTS[scheme]
    if theirs[0] != ours[0] or (theirs[1] or default) != (ours[1] or default):
        return "a cross-origin request (its Origin is not this proxy's own origin) may not change the proxy"
    return None
