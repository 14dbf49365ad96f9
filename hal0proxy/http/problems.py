"""One exception root for the HTTP layer and the proxy: ``HttpProblem``.

``LocalProblem``: this process misused a reader or writer (a bug here). ``RemoteProblem``:
the peer sent bytes that are not acceptable HTTP/1.1 — a client's request (answered with a
4xx) or a child's response (answered with the one legitimate 502). The other branches are
``http.errors.ProxyError`` (an answer the proxy authors: ``slot.loading``, ``dispatch.no_route``
…), ``http.client.HTTPClientError`` (a call to lemond failed) and the data plane's connect
failures. Every problem carries the status the connection code should answer with and the
error code of DESIGN.md "Errors", so the translation to a response happens in one place
(``http.errors.as_proxy_error``), from data and not from ``isinstance`` chains.
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "BadResponse",
    "HttpProblem",
    "LocalProblem",
    "RemoteProblem",
]


class HttpProblem(Exception):
    """Root of every error the HTTP layer and the proxy raise; not raised directly."""

    status_hint: int = 400
    code: str = "request.invalid_http"

    def __init__(self, message: str, status_hint: int | None = None, code: str | None = None) -> None:
        if type(self) in (HttpProblem, RemoteProblem):
            raise TypeError(f"{type(self).__name__} is abstract: raise one of its subclasses")
        super().__init__(message)
        self.message = message
        if status_hint is not None:
            self.status_hint = status_hint
        if code is not None:
            self.code = code


class LocalProblem(HttpProblem):
    """This process broke the protocol (a programming error, never the peer's fault)."""

    status_hint = 500
    code = "system.internal"


class RemoteProblem(HttpProblem):
    """The peer broke the protocol."""


class BadRequest(RemoteProblem):
    """A client's request head or framing is invalid or ambiguous (RFC 9112)."""

    status_hint = 400
    code = "request.invalid_http"


class BadResponse(RemoteProblem):
    """A child's response head or framing is invalid: the connection must never be reused."""

    status_hint = 502
    code = "dispatch.upstream_unavailable"
