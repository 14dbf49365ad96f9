"""The answers a client connection gives itself: no transport, no state of its own.

``/v1/models`` (from the router's view), a local event stream written to the connection, and
the refusal of a connection past the connection cap (logged at most once a second).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from hal0proxy.http.errors import ProxyError, error_response, json_response, reason_phrase
from hal0proxy.http.framing import LAST_CHUNK, encode_chunk
from hal0proxy.http.headers import date_header
from hal0proxy.http.messages import HttpRequest, StreamResponse
from hal0proxy.proxy.wire import check_api_key
from hal0proxy.routing.contract import Router

__all__ = ["LocalStreamSink", "models_answer", "refusal", "relay_local_stream", "stream_head"]

log = logging.getLogger("hal0proxy.proxy")

# What an events subscriber receives when shutdown ends it.
_FINAL_LOCAL_EVENT = b'event: shutdown\ndata: {"type":"shutdown","reason":"the proxy is shutting down"}\n\n'
_REFUSAL_LOG_INTERVAL_S = 1.0
_last_refusal_log = 0.0


def models_answer(req: HttpRequest, router: Router, api_keys: tuple[str, ...], keep_alive: bool) -> bytes:
    """``GET /v1/models`` or ``/v1/models/{id}``; raises ``ProxyError`` (401/403/404)."""
    check_api_key(req, api_keys)
    payload = router.models_payload()
    if req.path != "/v1/models":
        wanted = req.path[len("/v1/models/") :]
        found = next((m for m in payload.get("data", ()) if m.get("id") == wanted), None)
        if found is None:
            raise ProxyError(404, "model.not_found", f"model {wanted!r} not found")
        payload = found
    return json_response(200, payload, keep_alive=keep_alive)


def stream_head(response: StreamResponse, plain: bool) -> bytes:
    """The head of a local event stream: chunked, or (``plain``: an HTTP/1.0 client, which
    does not know chunked coding, RFC 9112 §6.1) delimited by the close of the connection."""
    head = [b"HTTP/1.1 %d %s\r\n" % (response.status, reason_phrase(response.status)), date_header()]
    head += [name + b": " + value + b"\r\n" for name, value in response.headers]
    head.append(b"connection: close\r\n\r\n" if plain else b"transfer-encoding: chunked\r\n\r\n")
    return b"".join(head)


class LocalStreamSink(Protocol):
    """The client connection a local event stream is written to."""

    @property
    def closed(self) -> bool: ...  # the client left

    @property
    def ending(self) -> bool: ...  # shutdown is ending the connection

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


async def relay_local_stream(
    response: StreamResponse, sink: LocalStreamSink, plain: bool, *, head_only: bool = False
) -> None:
    """Write a local event stream (head, events, end) until it ends or the connection stops.

    Backpressure: each event waits for the client to drain. Shutdown (``sink.ending``) ends
    the subscription with a final event and a proper end of the body; the response's
    ``on_close`` runs whatever happens. ``head_only`` (a HEAD request, RFC 9110 §9.3.2): the
    head, and the answer ends there; the stream is never read.
    """
    sink.write(stream_head(response, plain))
    if head_only:
        if response.on_close is not None:
            response.on_close()
        return
    finished = False
    try:
        async for piece in response.body:
            if sink.closed or sink.ending:
                break
            sink.write(piece if plain else encode_chunk(piece))
            await sink.drain()
        else:
            finished = True
            if not plain:
                sink.write(LAST_CHUNK)
    except asyncio.CancelledError:
        if not sink.ending:
            raise
    finally:
        if response.on_close is not None:
            response.on_close()
    if sink.ending and not finished and not sink.closed:
        sink.write(_FINAL_LOCAL_EVENT if plain else encode_chunk(_FINAL_LOCAL_EVENT) + LAST_CHUNK)


def refusal(cap: int, refused_so_far: int) -> bytes:
    """``503 proxy.overloaded`` for a client accepted past ``cap`` open connections."""
    global _last_refusal_log
    now = time.monotonic()
    if now - _last_refusal_log >= _REFUSAL_LOG_INTERVAL_S:
        _last_refusal_log = now
        log.warning(
            "connection cap reached (%d open): refusing new clients with 503 (%d refused so far)",
            cap,
            refused_so_far,
        )
    err = ProxyError(503, "proxy.overloaded", f"too many open connections (limit {cap})", retry_after_s=1)
    return error_response(err, keep_alive=False)
