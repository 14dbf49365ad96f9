"""The error envelope shared by every response the proxy authors itself.

``{"error": {"message", "type", "code": "<ns>.<reason>", "details": {...}}}`` is readable by
both the OpenAI SDKs (they look at ``error.message``/``error.type``) and hal0 clients (they
look at ``error.code``/``error.details``). Errors produced by a child are never rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from hal0proxy.http.headers import date_header
from hal0proxy.http.problems import HttpProblem

# The OpenAI SDK maps status codes to exception classes and reads ``type``; keep the types
# close to what OpenAI itself returns for the same status.
_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    500: "server_error",
    502: "upstream_error",
    503: "unavailable_error",
    504: "timeout_error",
}

# The reason phrase of every status the proxy writes itself, as RFC 9110 §15 names it (one
# table: the status line of a local answer, of an error, and of a child's head that came
# without a phrase). A status missing here gets an empty phrase, which RFC 9112 §4 allows.
REASONS: dict[int, bytes] = {
    100: b"Continue",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    413: b"Content Too Large",
    415: b"Unsupported Media Type",
    422: b"Unprocessable Content",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


class ProxyError(HttpProblem):
    """An error the proxy answers itself, with a code from DESIGN.md "Errors"."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        retry_after_s: int | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message, status, code)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details or {})
        self.retry_after_s = retry_after_s
        self.headers = headers  # further fields of the answer (lower-case names), e.g. WWW-Authenticate

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.message, self.details)

    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        # Retry-After only makes sense on 503 (hal0 behaviour; the OpenAI SDK honours it).
        extra = list(self.headers)
        if self.retry_after_s is not None and self.status == 503:
            extra.append((b"retry-after", str(max(1, int(self.retry_after_s))).encode()))
        return extra


def as_proxy_error(problem: HttpProblem) -> ProxyError:
    """The answer to any problem: the one place a problem becomes an error envelope."""
    if isinstance(problem, ProxyError):
        return problem
    return ProxyError(problem.status_hint, problem.code, problem.message)


def error_body(status: int, code: str, message: str, details: Mapping[str, Any] | None = None) -> bytes:
    details = dict(details or {})
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                "code": code,
                "details": details,
            }
        }
    )


def reason_phrase(status: int) -> bytes:
    return REASONS.get(status, b"")


def head_only(response: bytes) -> bytes:
    """The head of a complete serialised response, which is all a HEAD request gets: RFC 9110
    §9.3.2 (no content; the Content-Length stays the one the GET would have)."""
    return response[: response.index(b"\r\n\r\n") + 4]


def simple_response(
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """Serialise a complete response with a Content-Length body in one buffer."""
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status)),
        b"content-type: " + content_type + b"\r\n",
        b"content-length: %d\r\n" % len(body),
        date_header(),
        b"server: hal0proxy\r\n",
    ]
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    for name, value in extra_headers or ():
        parts.append(name + b": " + value + b"\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def error_response(err: ProxyError, keep_alive: bool = True) -> bytes:
    return simple_response(err.status, err.body(), extra_headers=err.extra_headers(), keep_alive=keep_alive)


def json_response(
    status: int,
    payload: Any,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    return simple_response(status, orjson.dumps(payload), extra_headers=extra_headers, keep_alive=keep_alive)
