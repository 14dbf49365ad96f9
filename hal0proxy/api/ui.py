"""The live status page: one static HTML file shipped in the package, served at ``/`` and ``/ui``.

The page has no build step, no framework and no third-party origin: its script reads
``/api/slots``, ``/metrics`` and the SSE stream ``/api/v1/adapter/events`` of the same listener.
The only thing decided per request is whether it shows the load/unload buttons: to a loopback
peer, or to a request that carries the admin token. The buttons only save typing: the admin
endpoints check the token (or the loopback peer) themselves on every call.

The Content-Security-Policy allows exactly the page's own inline script and style (by hash,
computed once at import) and connections to its own origin, and forbids framing, so a page on
another origin cannot click the buttons through an invisible frame.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from functools import lru_cache
from importlib import resources

from hal0proxy.http.errors import simple_response
from hal0proxy.http.messages import FullResponse, HttpRequest

__all__ = ["UI_PATHS", "may_administer", "page_bytes", "status_page"]

UI_PATHS = frozenset({"/", "/ui"})
ADMIN_MARKER = b'data-admin="__ADMIN__"'
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.S)


@lru_cache(maxsize=1)
def _template() -> bytes:
    page = resources.files("hal0proxy.api").joinpath("static", "status.html").read_bytes()
    if page.count(ADMIN_MARKER) != 1:  # a broken package is a bug, not a request error
        raise RuntimeError("status.html lost its admin marker")
    return page


def _csp_hash(content: bytes) -> bytes:
    return b"'sha256-" + base64.b64encode(hashlib.sha256(content).digest()) + b"'"


@lru_cache(maxsize=1)
def _security_headers() -> list[tuple[bytes, bytes]]:
    sources: dict[bytes, list[bytes]] = {b"script": [], b"style": []}
    for kind, content in _INLINE.findall(_template()):
        sources[kind].append(_csp_hash(content))
    policy = b"; ".join(
        [
            b"default-src 'none'",
            b"script-src " + b" ".join(sources[b"script"]),
            b"style-src " + b" ".join(sources[b"style"]),
            b"connect-src 'self'",
            b"img-src 'self' data:",
            b"base-uri 'none'",
            b"form-action 'none'",
            b"frame-ancestors 'none'",
        ]
    )
    return [
        (b"content-security-policy", policy),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-cache"),
    ]


def may_administer(peer_is_loopback: bool, authorization: bytes | None, admin_token: str | None) -> bool:
    """Whether the page shows the admin buttons: loopback peer, or the admin bearer token."""
    if peer_is_loopback:
        return True
    if admin_token is None or authorization is None or not authorization.lower().startswith(b"bearer "):
        return False
    return hmac.compare_digest(authorization[7:].strip(), admin_token.encode())


def page_bytes(admin: bool) -> bytes:
    """The page with its admin switch set."""
    return _template().replace(ADMIN_MARKER, b'data-admin="1"' if admin else b'data-admin="0"')


def status_page(req: HttpRequest, admin_token: str | None) -> FullResponse:
    admin = may_administer(req.peer_is_loopback, req.header(b"authorization"), admin_token)
    return FullResponse(
        simple_response(
            200,
            page_bytes(admin),
            content_type=b"text/html; charset=utf-8",
            extra_headers=_security_headers(),
        )
    )
