"""Client side of the data plane: one ``asyncio.Protocol`` per client connection.

The connection owns what lives as long as the client does: the transport, the
``RequestReader`` (fast parser for simple heads, h11 for the rest), keep-alive and
pipelining, the one lazy timer (``proxy.timer``: 408, 504 first byte, keep-alive), the
``FlowControl`` of both directions, and the answers the proxy gives itself (``/v1/models``,
local endpoints, errors). A forwarded request is an ``Exchange`` (``proxy.exchange``): at
most one is current, and it reports back through ``finish_response``.

A client that sends faster than it reads: answers stop being taken while its write buffer
is above the high-water mark, pipelined input is bounded (reading pauses past
``pipeline_buffer_bytes``), and at most ``_BURST_REQUESTS`` pipelined requests are answered
per turn of the loop, so one burst cannot stall every other connection. Past
``max_connections`` a new client gets ``503 proxy.overloaded`` and is closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from time import perf_counter
from typing import Any, cast

from hal0proxy.http.errors import ProxyError, error_response, head_only
from hal0proxy.http.messages import FullResponse, HttpRequest, StreamResponse
from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.exchange import Exchange
from hal0proxy.proxy.flow import FlowControl
from hal0proxy.proxy.local import models_answer, refusal, relay_local_stream
from hal0proxy.proxy.reader import ConnectionClosed, RequestReader
from hal0proxy.proxy.timer import IDLE, REQUEST, ConnectionTimer

log = logging.getLogger("hal0proxy.proxy")

# Probes and scrapes are not traffic: counting them would drown the request rate of quiet slots.
_UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Pipelined requests answered in one turn of the loop before yielding to other connections.
# /v1/models costs ~30 µs: 32 of them keep one turn near 1 ms (a 20,000-request burst answered
# in one go stalled every other client for ~0.5 s).
_BURST_REQUESTS = 32


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_buffered",
        "_burst_handle",
        "_closed",
        "_ctx",
        "_ending",
        "_flow",
        "_keep_alive",
        "_local_stream",
        "_loop",
        "_peer_eof",
        "_peer_host",
        "_processing",
        "_reader",
        "_reading_request",
        "_refused",
        "_req",
        "_started",
        "_status",
        "_task",
        "_timer",
        "_transport",
        "exchange",
    )

    def __init__(self, ctx: ProxyContext, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # Shared server state
        self._ctx = ctx
        # Injectable so the protocol tier can drive timers with a clock of its own.
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        # Per-connection state
        self._transport: asyncio.Transport | None = None
        self._peer_host: str | None = None
        self._peer_eof = False  # the client sent FIN while a request was being answered
        self._reader = RequestReader(ctx.settings.max_header_bytes, ctx.settings.max_body_bytes, None)
        self._flow = FlowControl()
        self._buffered = 0  # pipelined bytes received while a request is answered
        self._closed = False
        self._processing = False
        self._reading_request = False  # bytes of a request have arrived, the request is not complete
        self._refused = False  # accepted past the connection cap: answered 503 and closing
        self._burst_handle: asyncio.Handle | None = None
        self._ending = False  # shutdown's last phase is ending this connection
        self._timer = ConnectionTimer(self._loop, self._on_expired)
        # Per-request state
        self._req: HttpRequest | None = None
        self.exchange: Exchange | None = None  # the forwarded request being answered
        self._task: asyncio.Task[None] | None = None  # a local endpoint being answered
        self._local_stream = False  # answering with a local event stream (never ends by itself)
        self._keep_alive = True
        self._status = 0
        self._started = 0.0

    @property
    def busy(self) -> bool:
        """A request is being answered (or its bytes have started arriving)."""
        return self._req is not None or self._reading_request

    def close_when_idle(self) -> None:
        """Shutdown: close now if idle, else after this response. A local event stream never
        ends by itself (waiting would hold shutdown for its grace): it ends now, with its final event."""
        if not self.busy:
            self._close()
        elif self._local_stream:
            self.end_now()

    def end_now(self) -> None:
        """Shutdown, after the grace: a forwarded exchange ends as its state allows
        (``Exchange.end_for_shutdown``); a local answer not started yet gets 503."""
        if self._closed:
            return
        if self._local_stream:
            # Cancelled again if called again: on 3.11 ``asyncio.wait_for`` can swallow a
            # cancellation that coincides with an event; _stream_local also checks the flag.
            self._ending = True
            self._keep_alive = False
            if self._task is not None:
                self._task.cancel()  # _stream_local writes the final event
            return
        if self._ending:
            return
        self._ending = True
        self._keep_alive = False
        if self._req is None:
            self._close()
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.end_for_shutdown()
            return
        task = self._task
        if task is not None:
            self._task = None
            task.cancel()
        self._send_error(ProxyError(503, "proxy.shutting_down", "the proxy is shutting down", retry_after_s=1))

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        settings = self._ctx.settings
        if self._ctx.stats.connections_open >= settings.max_connections:
            self._refuse(settings.max_connections)
            return
        self._transport.set_write_buffer_limits(high=settings.write_high_water, low=settings.write_low_water)
        self._flow.bind(self._transport)
        peer = transport.get_extra_info("peername")
        self._peer_host = peer[0] if isinstance(peer, tuple) else None
        self._reader.peer_host = self._peer_host
        self._ctx.stats.connections_open += 1
        self._ctx.connections.add(self)
        self._timer.arm(settings.keepalive_timeout_s, IDLE)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._reader.feed(data)
        if self._req is not None:
            # A request is in flight: pipelined bytes wait in the reader; bound how many.
            self._buffered += len(data)
            if self._buffered > self._ctx.settings.pipeline_buffer_bytes:
                self._flow.pause_reading()
            return
        first_bytes = not self._reading_request
        self._reading_request = True
        self._process_events()
        if first_bytes and self._reading_request and not self._closed:
            # The 408 clock starts with the first byte of a request; a request complete in
            # this read (the usual case) never needs it, so it is only armed when it is not.
            self._timer.arm(self._ctx.settings.request_timeout_s, REQUEST)

    def eof_received(self) -> bool | None:
        """The client sent FIN. Idle, or in the middle of a request head: the connection closes
        (after answering what the EOF completed or broke). While a forwarded request is in
        flight (waiting for a route or a load, for the child's head, or relaying its body) or a
        local event stream is open, the client has left, as nginx reads it by default
        (``proxy_ignore_client_abort off``, 499): the exchange ends as if the connection were
        lost, so the child connection is aborted at once and llama-server stops generating,
        instead of being held until the child finishes. A client that half-closes after its
        request therefore gets no answer. A local answer being prepared (``/api/slots``, an
        admin load) is still written to the half-open connection, then it closes."""
        if self._refused:
            return None
        self._reader.feed_eof()
        if self._req is None:
            self._process_events()  # a request may have been completed by this EOF
            if self._req is None:
                return None
        self._peer_eof = True
        if self.exchange is not None or self._local_stream:
            self._client_left()
            return None  # the transport closes itself; connection_lost does the rest
        self._keep_alive = False  # nothing pipelined behind it is answered
        return True  # keep the transport half-open while the local answer is produced

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._refused:
            return
        if self._burst_handle is not None:
            self._burst_handle.cancel()
            self._burst_handle = None
        self._ctx.stats.connections_open -= 1
        self._ctx.connections.discard(self)
        self._timer.drop()
        self._client_left()
        self._flow.release()

    def _client_left(self) -> None:
        """End what the client was waiting for (again harmless: an ended exchange ignores it)."""
        exchange = self.exchange
        if exchange is not None:
            # The exchange closes the child connection so it stops generating.
            exchange.client_gone()
        task = self._task
        if task is not None and not task.done():
            task.cancel()

    def pause_writing(self) -> None:
        exchange = self.exchange
        self._flow.pause_writing(exchange.upstream if exchange is not None else None)

    def resume_writing(self) -> None:
        exchange = self.exchange
        self._flow.resume_writing(exchange.upstream if exchange is not None else None)
        if self._req is None and not self._closed and not self._refused:
            # The client caught up with the answers already written: take its next requests.
            self._update_reading()
            self._process_events()

    # ------------------------------------------------------------------ request parsing
    def _process_events(self) -> None:
        """Take the requests the reader has complete, until one is answered asynchronously.

        Every way out leaves reading paused or resumed to match what is buffered."""
        # Responses answered synchronously (errors, /v1/models) call back into this method;
        # the guard turns that recursion into another turn of the loop below, so a long
        # pipeline cannot exhaust the stack.
        if self._processing:
            return
        self._processing = True
        try:
            reader = self._reader
            budget = _BURST_REQUESTS
            while not self._closed:
                if self._flow.write_paused:
                    # The client is not reading its answers: take no more requests until it does
                    # (resume_writing restarts this loop); pipelined input stays bounded meanwhile.
                    self._update_reading()
                    return
                if budget == 0:
                    if self._burst_handle is None:
                        self._burst_handle = self._loop.call_soon(self._continue_burst)
                    self._update_reading()
                    return
                try:
                    req = reader.next_request()
                except ProxyError as err:
                    self.write(error_response(err, keep_alive=False))
                    self._close()
                    return
                except ConnectionClosed:
                    self._close()
                    return
                if reader.send_continue:
                    reader.send_continue = False
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                if req is None:
                    self._update_reading()
                    return
                budget -= 1
                self._req = req
                self._keep_alive = reader.keep_alive
                self._reading_request = False
                self._timer.cancel()
                self._dispatch()
                if self._req is not None:
                    # (_update_reading, inlined for the usual case: nothing piled up, nothing held)
                    flow = self._flow
                    if flow.read_paused or reader.buffered_bytes > self._ctx.settings.pipeline_buffer_bytes:
                        self._update_reading()
                    return  # answered asynchronously; finish_response resumes parsing
        finally:
            self._processing = False

    def _continue_burst(self) -> None:
        self._burst_handle = None
        if self._req is None and not self._closed:
            self._process_events()

    def _update_reading(self) -> None:
        """Pause reading from a client whose input piles up; resume once it is worked off."""
        limit = self._ctx.settings.pipeline_buffer_bytes
        hold = (
            self._reader.buffered_bytes > limit
            or (self._req is not None and self._buffered > limit)
            or (self._req is None and self._flow.write_paused)
        )
        if hold != self._flow.read_paused and not self._closed:
            self._flow.set_reading(hold)

    def _refuse(self, cap: int) -> None:
        self._refused = True
        self._closed = True
        self._ctx.stats.connections_refused += 1
        assert self._transport is not None
        self._transport.write(refusal(cap, self._ctx.stats.connections_refused))
        self._transport.close()

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        req = self._req
        assert req is not None
        self._started = perf_counter()
        path = req.path
        if path.startswith("/api/v1/") and not path.startswith("/api/v1/adapter/"):
            # lemond's documented base is /api/v1: clients moved over from lemond keep working.
            path = req.path = path[4:]
            req.target = req.target[4:]
        if path.startswith("/v1/"):
            if path == "/v1/models" or path.startswith("/v1/models/"):
                if req.method in (b"GET", b"HEAD"):
                    self._answer_models(req)
                    return
            assert self._transport is not None
            exchange = self.exchange = Exchange(
                self, self._ctx, self._loop, self._transport, self._flow, self._timer, req, self._keep_alive
            )
            exchange.start()
        elif self._ctx.local is not None:
            self._task = self._spawn(self._serve_local(req))
        else:
            self._send_error(ProxyError(404, "resource.not_found", f"no such endpoint: {path}", {"path": path}))

    def _answer_models(self, req: HttpRequest) -> None:
        try:
            data = models_answer(req, self._ctx.router, self._ctx.settings.api_keys, self._keep_alive)
        except ProxyError as err:
            self._send_error(err)
            return
        self._status = 200
        self.answer(data)
        self._response_done()

    # ------------------------------------------------------------------ local endpoints
    async def _serve_local(self, req: HttpRequest) -> None:
        assert self._ctx.local is not None
        try:
            response = await self._ctx.local(req)
        except ProxyError as err:
            self._send_error(err)
            return
        if isinstance(response, FullResponse):
            self._status = int(response.data[9:12])
            self.answer(response.data)
        elif self._peer_eof:
            # An event stream for a client that left while it was being set up: never started.
            if response.on_close is not None:
                response.on_close()
            self._close()
            return
        else:
            await self._stream_local(response)
            if self._closed:
                return
        self._response_done()

    async def _stream_local(self, response: StreamResponse) -> None:
        self._status = response.status
        req = self._req
        plain = req is not None and req.http_version == b"1.0"
        if plain:
            self._keep_alive = False
        self._local_stream = True
        try:
            await relay_local_stream(response, self, plain, head_only=req is not None and req.method == b"HEAD")
        finally:
            self._local_stream = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ending(self) -> bool:
        """Shutdown is ending this connection (a local event stream ends with a final event)."""
        return self._ending

    async def drain(self) -> None:
        await self._flow.drain()

    # ------------------------------------------------------------------ what an exchange reports
    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def answer(self, data: bytes) -> None:
        """Write a complete answer the proxy authored itself (a local endpoint's, an error):
        to a HEAD request only its head, with the Content-Length a GET would get."""
        req = self._req
        self.write(head_only(data) if req is not None and req.method == b"HEAD" else data)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------------ completion
    def _send_error(self, err: ProxyError) -> None:
        self._status = err.status
        self.answer(error_response(err, keep_alive=self._keep_alive))
        self._response_done()

    def _response_done(self) -> None:
        """A local answer is complete on the wire."""
        self.finish_response(self._keep_alive, None, self._status, 0.0)

    def finish_response(self, keep_alive: bool, slot: str | None, status: int, ttfb: float) -> None:
        """The response is complete on the wire: account for it, then close or take the next request."""
        req = self._req
        if slot is not None or (req is not None and req.path not in _UNCOUNTED_PATHS):
            started = self._started
            self._ctx.observe(slot, status, perf_counter() - started, ttfb - started if ttfb else None)
        self._req = None
        self.exchange = None
        self._keep_alive = keep_alive
        if self._closed:
            return
        if not keep_alive or self._ctx.draining or not self._reader.response_sent():
            self._timer.cancel()
            self._close()
            return
        self._buffered = 0
        flow = self._flow
        if self._reader.idle:
            self._timer.arm(self._ctx.settings.keepalive_timeout_s, IDLE)
            if not flow.read_paused and not flow.write_paused:
                return  # nothing pipelined and nothing held (the usual case): the next read starts the next request
        else:
            self._reading_request = True  # bytes of the next request came while this one was answered
        self._process_events()  # takes the next request, and resumes reading if it was held
        if self._reading_request and self._req is None and not self._closed:
            # Still incomplete: its 408 clock starts now (it was not read before); blank lines only: idle.
            self._reading_request = not self._reader.idle
            settings = self._ctx.settings
            if self._reading_request:
                self._timer.arm(settings.request_timeout_s, REQUEST)
            else:
                self._timer.arm(settings.keepalive_timeout_s, IDLE)

    # ------------------------------------------------------------------ the one timer
    def _on_expired(self, kind: int) -> None:
        if self._closed:
            return
        if kind == IDLE:
            if self._req is None and not self._reading_request:
                self._close()
        elif kind == REQUEST:
            if self._req is None or (self._task is None and self.exchange is None):
                err = ProxyError(408, "request.timeout", "the request was not received in time")
                self.write(error_response(err, keep_alive=False))
                self._close()
        elif self.exchange is not None:
            self.exchange.first_byte_timeout()

    # ------------------------------------------------------------------ tasks and I/O helpers
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None  # (the next request's task may already have taken its place)
        # A bug must cost one request a 500, never leave a client waiting for ever.
        if task.cancelled() or task.exception() is None:
            return
        log.error("request handling failed", exc_info=task.exception())
        if not self._closed and self._req is not None and self.exchange is None:
            self._send_error(ProxyError(500, "system.internal", "internal error while handling the request"))

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
