"""Client side of the data plane: one ``asyncio.Protocol`` per client connection.

``RequestReader`` turns bytes into requests (a strict fast parser for simple heads, h11 in
the server role for everything else) and enforces keep-alive and pipelining rules.
Responses are not serialised through h11: a forwarded response is the child's head (minus
hop-by-hop headers) followed by the child's body bytes, written as the objects received.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import cast

from hal0proxy.http.errors import ProxyError, error_response, json_response, reason_phrase
from hal0proxy.http.framing import LAST_CHUNK, BodyScanner, ChunkedScanner, encode_chunk
from hal0proxy.http.headers import HOP_BY_HOP, connection_tokens, date_header
from hal0proxy.http.messages import FullResponse, HttpRequest, StreamResponse
from hal0proxy.proxy.classify import Classified, classify
from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.reader import ConnectionClosed, RequestReader
from hal0proxy.proxy.routing import Lease
from hal0proxy.proxy.upstream import ConnectFailed, ConnectTimeout, ResponseHead, UpstreamConnection

_STREAM_INTERRUPTED = encode_chunk(
    b'data: {"error":{"message":"the model server closed the stream before it finished",'
    b'"type":"upstream_error","code":"upstream.stream_interrupted"}}\n\n'
)
_REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_MAX_REROUTES = 2
# Probes and scrapes are not traffic: counting them would drown the request rate of quiet slots.
_UNCOUNTED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "_buffered",
        "_can_write",
        "_closed",
        "_ctx",
        "_head_sent",
        "_is_head",
        "_keep_alive",
        "_lease",
        "_loop",
        "_paused_reading",
        "_peer_host",
        "_processing",
        "_reader",
        "_reading_request",
        "_req",
        "_request_bytes",
        "_resp_chunked",
        "_resp_sse",
        "_retried",
        "_scanner",
        "_started",
        "_status",
        "_task",
        "_timer",
        "_transport",
        "_ttfb",
        "_upstream",
        "_write_paused",
    )

    def __init__(self, ctx: ProxyContext) -> None:
        self._ctx = ctx
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._peer_host: str | None = None
        self._reader = RequestReader(ctx.settings.max_header_bytes, ctx.settings.max_body_bytes, None)
        self._req: HttpRequest | None = None
        self._buffered = 0
        self._busy_reset()
        self._closed = False
        self._paused_reading = False
        self._processing = False
        self._write_paused = False
        self._reading_request = False
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._can_write: asyncio.Event | None = None

    def _busy_reset(self) -> None:
        self._upstream: UpstreamConnection | None = None
        self._lease: Lease | None = None
        self._head_sent = False
        self._resp_chunked = False
        self._resp_sse = False
        self._retried = False
        self._keep_alive = True
        self._is_head = False
        self._request_bytes = b""
        self._scanner: BodyScanner | None = None
        self._status = 0
        self._started = 0.0
        self._ttfb = 0.0

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        settings = self._ctx.settings
        self._transport.set_write_buffer_limits(high=settings.write_high_water, low=settings.write_low_water)
        peer = transport.get_extra_info("peername")
        self._peer_host = peer[0] if isinstance(peer, tuple) else None
        self._reader = RequestReader(settings.max_header_bytes, settings.max_body_bytes, self._peer_host)
        self._ctx.stats.connections_open += 1
        self._arm(settings.keepalive_timeout_s, self._on_idle_timeout)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        if self._req is None and not self._reading_request:
            self._reading_request = True
            self._arm(self._ctx.settings.request_timeout_s, self._on_request_timeout)
        if self._req is not None:
            # A request is in flight: pipelined bytes wait in the reader; bound how many.
            self._buffered += len(data)
            if self._buffered > self._ctx.settings.pipeline_buffer_bytes and not self._paused_reading:
                self._paused_reading = True
                assert self._transport is not None
                self._transport.pause_reading()
            return
        self._process_events()

    def eof_received(self) -> bool | None:
        self._reader.feed_eof()
        if self._req is None:
            self._process_events()  # a request may have been completed by this EOF
        # Keep the transport half-open while a response is still being produced.
        return self._req is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._ctx.stats.connections_open -= 1
        self._cancel_timer()
        upstream = self._upstream
        if upstream is not None:
            # The client is gone: close the child connection now so it stops generating.
            self._upstream = None
            upstream.abort()
            self._ctx.stats.client_disconnects += 1
        self._release_lease()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._can_write is not None:
            self._can_write.set()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._upstream is not None:
            self._upstream.pause_reading()
        if self._can_write is not None:
            self._can_write.clear()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._upstream is not None:
            self._upstream.resume_reading()
        if self._can_write is not None:
            self._can_write.set()

    # ------------------------------------------------------------------ request parsing
    def _process_events(self) -> None:
        # Responses answered synchronously (errors, /v1/models) call back into this method;
        # the guard turns that recursion into another turn of the loop below, so a long
        # pipeline cannot exhaust the stack.
        if self._processing:
            return
        self._processing = True
        try:
            self._process_loop()
        finally:
            self._processing = False

    def _process_loop(self) -> None:
        reader = self._reader
        while not self._closed:
            try:
                req = reader.next_request()
            except ProxyError as err:
                self._write_and_close(error_response(err, keep_alive=False))
                return
            except ConnectionClosed:
                self._close()
                return
            if reader.send_continue:
                reader.send_continue = False
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if req is None:
                return
            self._req = req
            self._keep_alive = reader.keep_alive
            self._reading_request = False
            self._cancel_timer()
            self._dispatch()
            if self._req is not None:
                return  # answered asynchronously; _response_done resumes parsing

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self) -> None:
        req = self._req
        assert req is not None
        self._started = time.perf_counter()
        self._is_head = req.method == b"HEAD"
        path = req.path
        if path.startswith("/v1/"):
            if path == "/v1/models" or path.startswith("/v1/models/"):
                if req.method in (b"GET", b"HEAD"):
                    self._answer_models(req)
                    return
            self._dispatch_forward(req)
        elif self._ctx.local is not None:
            self._task = self._loop.create_task(self._serve_local(req))
        else:
            self._send_error(ProxyError(404, "resource.not_found", f"no such endpoint: {path}", {"path": path}))

    def _check_api_key(self, req: HttpRequest) -> None:
        keys = self._ctx.settings.api_keys
        if not keys:
            return
        value = req.header(b"authorization")
        if value is None or not value.lower().startswith(b"bearer "):
            raise ProxyError(401, "auth.required", "an API key is required (Authorization: Bearer ...)")
        given = value[7:].strip()
        if not any(hmac.compare_digest(given, k.encode()) for k in keys):
            raise ProxyError(403, "auth.forbidden", "the API key is not valid")

    def _answer_models(self, req: HttpRequest) -> None:
        try:
            self._check_api_key(req)
        except ProxyError as err:
            self._send_error(err)
            return
        payload = self._ctx.router.models_payload()
        if req.path != "/v1/models":
            wanted = req.path[len("/v1/models/") :]
            found = next((m for m in payload.get("data", ()) if m.get("id") == wanted), None)
            if found is None:
                self._send_error(ProxyError(404, "model.not_found", f"model {wanted!r} not found"))
                return
            payload = found
        self._status = 200
        self._write(json_response(200, payload, keep_alive=self._keep_alive))
        self._response_done()

    def _dispatch_forward(self, req: HttpRequest) -> None:
        try:
            self._check_api_key(req)
            classified = classify(req.path, req.query, req.header(b"content-type") or b"", req.body)
            lease = self._ctx.router.acquire_now(classified)
        except ProxyError as err:
            self._send_error(err)
            return
        if lease is None:
            self._task = self._loop.create_task(self._forward(req, classified))
            return
        # Fast path: a proven route and an idle pooled connection need no task at all.
        self._lease = lease
        self._request_bytes = self._build_upstream_request(req, classified.upstream_path)
        conn = self._ctx.pool.take_idle(lease.port)
        if conn is None:
            self._task = self._loop.create_task(self._connect_and_send(fresh=False))
        else:
            self._send_upstream(conn)

    async def _forward(self, req: HttpRequest, classified: Classified) -> None:
        try:
            self._lease = await self._ctx.router.acquire(classified)
        except ProxyError as err:
            self._task = None
            self._send_error(err)
            return
        if self._closed:
            self._release_lease()
            return
        self._request_bytes = self._build_upstream_request(req, classified.upstream_path)
        await self._connect_and_send(fresh=False)

    def _build_upstream_request(self, req: HttpRequest, target: bytes) -> bytes:
        drop = _REQUEST_DROP | connection_tokens(req.headers)
        settings = self._ctx.settings
        parts = [req.method, b" ", target, b" HTTP/1.1\r\nhost: 127.0.0.1\r\n"]
        for name, value in req.headers:
            if name in drop:
                continue
            if name == b"x-conversation-id" and not settings.forward_conversation_id:
                continue
            if name == b"authorization" and settings.api_keys:
                continue  # the proxy's key is not the child's business
            parts.append(name + b": " + value + b"\r\n")
        parts.append(b"content-length: %d\r\n\r\n" % len(req.body))
        parts.append(req.body)
        return b"".join(parts)

    async def _connect_and_send(self, fresh: bool) -> None:
        pool = self._ctx.pool
        reroutes = 0
        while True:
            lease = self._lease
            if lease is None or self._closed:
                self._task = None
                return
            conn = None if fresh else pool.take_idle(lease.port)
            if conn is None:
                try:
                    conn = await pool.connect(lease.port)
                except ConnectTimeout:
                    self._task = None
                    self._fail(ProxyError(504, "upstream.timeout", "timed out connecting to the model server"))
                    return
                except ConnectFailed as exc:
                    # The route is stale (child gone or moved): re-resolve instead of answering 502.
                    pool.drop_port(lease.port)
                    self._release_lease()
                    self._ctx.stats.reroutes += 1
                    new_lease: Lease | None = None
                    if reroutes < _MAX_REROUTES:
                        try:
                            new_lease = await self._ctx.router.reroute(lease)
                        except ProxyError as err:
                            self._task = None
                            self._fail(err)
                            return
                    if new_lease is None:
                        self._task = None
                        self._fail(
                            ProxyError(
                                502,
                                "dispatch.upstream_unavailable",
                                "the model server is not reachable",
                                {"slot": lease.slot, "port": lease.port, "error": str(exc)},
                            )
                        )
                        return
                    self._lease = new_lease
                    reroutes += 1
                    fresh = False
                    continue
            if self._closed:
                pool.release(conn)
                self._release_lease()
                self._task = None
                return
            self._task = None
            self._send_upstream(conn)
            return

    def _send_upstream(self, conn: UpstreamConnection) -> None:
        self._upstream = conn
        conn.send(self._request_bytes, self, self._is_head)
        if self._write_paused:
            conn.pause_reading()
        self._arm(self._ctx.settings.upstream_first_byte_timeout_s, self._on_first_byte_timeout)

    # ------------------------------------------------------------------ Exchange callbacks
    def on_head(self, head: ResponseHead, first: bytes) -> None:
        self._cancel_timer()
        self._ttfb = time.perf_counter()
        self._status = head.status
        parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason or reason_phrase(head.status))]
        sse = False
        has_accel = False
        has_length = False
        for name, value in head.headers:
            if name in HOP_BY_HOP:
                continue
            if name == b"content-type":
                sse = value.startswith(b"text/event-stream")
            elif name == b"x-accel-buffering":
                has_accel = True
            elif name == b"content-length":
                has_length = True
            parts.append(name + b": " + value + b"\r\n")
        if head.chunked:
            parts.append(b"transfer-encoding: chunked\r\n")
        elif not has_length and not self._is_head and head.status not in (204, 304):
            self._keep_alive = False  # close-delimited body: only the close can end it downstream
        if sse and not has_accel:
            parts.append(b"x-accel-buffering: no\r\n")
        if not self._keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        self._head_sent = True
        self._scanner = self._upstream.scanner if self._upstream is not None else None
        self._resp_chunked = head.chunked
        self._resp_sse = sse
        assert self._transport is not None
        if first:
            self._transport.writelines((b"".join(parts), first))
        else:
            self._transport.write(b"".join(parts))

    def on_body(self, data: bytes) -> None:
        self._transport.write(data)  # type: ignore[union-attr]

    def on_end(self) -> None:
        scanner = self._scanner
        if isinstance(scanner, ChunkedScanner):
            self._ctx.stats.chunks_relayed += scanner.chunks
        self._upstream = None
        self._response_done()

    def on_lost(self) -> None:
        self._upstream = None
        self._ctx.stats.streams_interrupted += 1
        if not self._head_sent:
            self._fail(ProxyError(502, "dispatch.upstream_unavailable", "the model server closed the connection"))
            return
        scanner = self._scanner
        if self._resp_sse and self._resp_chunked and scanner is not None and scanner.at_boundary:
            # Between two events: end the stream as a well-formed SSE error plus chunked end.
            self._write(_STREAM_INTERRUPTED + LAST_CHUNK)
            self._response_done()
        else:
            # Mid-event or non-SSE: nothing honest can be appended; the client must see a failure.
            self._abort()

    def on_failed_before_response(self, reused: bool) -> None:
        self._upstream = None
        if self._closed:
            self._release_lease()
            return
        if reused and not self._retried:
            # A kept-alive connection the child had already closed (llama-server closes after
            # every stream): nothing reached the client, so one retry on a fresh connection is safe.
            self._retried = True
            self._ctx.stats.retries += 1
            self._task = self._loop.create_task(self._connect_and_send(fresh=True))
            return
        # The child accepted the connection and died without answering: treat as a stale route.
        lease = self._lease
        if lease is not None:
            self._ctx.pool.drop_port(lease.port)
        self._task = self._loop.create_task(self._reroute_after_death())

    async def _reroute_after_death(self) -> None:
        lease = self._lease
        self._release_lease()
        new_lease = None
        if lease is not None:
            try:
                new_lease = await self._ctx.router.reroute(lease)
            except ProxyError as err:
                self._task = None
                self._fail(err)
                return
        if new_lease is None:
            self._task = None
            self._fail(ProxyError(502, "dispatch.upstream_unavailable", "the model server closed the connection"))
            return
        self._lease = new_lease
        self._retried = True
        await self._connect_and_send(fresh=True)

    # ------------------------------------------------------------------ local endpoints
    async def _serve_local(self, req: HttpRequest) -> None:
        assert self._ctx.local is not None
        try:
            response = await self._ctx.local(req)
        except ProxyError as err:
            self._task = None
            self._send_error(err)
            return
        if isinstance(response, FullResponse):
            self._task = None
            self._status = int(response.data[9:12])
            self._write(response.data)
            self._response_done()
            return
        await self._stream_local(response)

    async def _stream_local(self, response: StreamResponse) -> None:
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._status = response.status
        head = [b"HTTP/1.1 %d %s\r\n" % (response.status, reason_phrase(response.status)), date_header()]
        head += [name + b": " + value + b"\r\n" for name, value in response.headers]
        head.append(b"transfer-encoding: chunked\r\n\r\n")
        self._write(b"".join(head))
        try:
            async for piece in response.body:
                if self._closed:
                    break
                self._write(encode_chunk(piece))
                if self._write_paused:
                    await self._can_write.wait()
            else:
                self._write(LAST_CHUNK)
        finally:
            if response.on_close is not None:
                response.on_close()
            self._can_write = None
            self._task = None
        if not self._closed:
            self._response_done()

    # ------------------------------------------------------------------ completion
    def _send_error(self, err: ProxyError) -> None:
        self._status = err.status
        self._write(error_response(err, keep_alive=self._keep_alive))
        self._response_done()

    def _fail(self, err: ProxyError) -> None:
        if self._closed:
            self._release_lease()
            return
        if self._head_sent:
            self._abort()
        else:
            self._send_error(err)

    def _response_done(self) -> None:
        lease = self._lease
        slot = lease.slot if lease is not None else None
        self._release_lease()
        req = self._req
        if slot is not None or (req is not None and req.path not in _UNCOUNTED_PATHS):
            now = time.perf_counter()
            ttfb = self._ttfb - self._started if self._ttfb else None
            self._ctx.observe(slot, self._status, now - self._started, ttfb)
        self._cancel_timer()
        keep_alive = self._keep_alive
        self._req = None
        self._busy_reset()
        if self._closed:
            return
        if not keep_alive or not self._reader.response_sent():
            self._close()
            return
        self._buffered = 0
        if self._paused_reading:
            self._paused_reading = False
            assert self._transport is not None
            self._transport.resume_reading()
        self._arm(self._ctx.settings.keepalive_timeout_s, self._on_idle_timeout)
        self._process_events()

    def _release_lease(self) -> None:
        lease = self._lease
        if lease is not None:
            self._lease = None
            lease.release()

    # ------------------------------------------------------------------ timers and I/O helpers
    def _arm(self, delay: float, callback: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle_timeout(self) -> None:
        self._timer = None
        if self._req is None and not self._reading_request:
            self._close()

    def _on_request_timeout(self) -> None:
        self._timer = None
        if self._req is None or (self._task is None and self._upstream is None and self._lease is None):
            err = ProxyError(408, "request.timeout", "the request was not received in time")
            self._write_and_close(error_response(err, keep_alive=False))

    def _on_first_byte_timeout(self) -> None:
        self._timer = None
        upstream = self._upstream
        if upstream is not None and not self._head_sent:
            self._upstream = None
            upstream.abort()
            self._fail(ProxyError(504, "upstream.timeout", "the model server did not answer in time"))

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    def _write_and_close(self, data: bytes) -> None:
        self._write(data)
        self._close()

    def _close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def _abort(self) -> None:
        self._release_lease()
        if self._transport is not None:
            self._transport.abort()
