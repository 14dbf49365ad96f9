"""The forwarding half of a client connection: from a parsed request to a child and back.

A mixin of ``ClientConnection`` (it keeps no state of its own): choosing the child through
the router, the pooled connection and its one safe retry, re-resolution when a child is not
where its route said, and the ``Exchange`` callbacks through which the upstream connection
relays the response.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from hal0proxy.http.errors import ProxyError
from hal0proxy.http.framing import LAST_CHUNK, BodyScanner, ChunkedScanner, encode_chunk
from hal0proxy.http.messages import HttpRequest
from hal0proxy.http.problems import BadResponse
from hal0proxy.proxy.upstream import ConnectFailed, ConnectTimeout, ResponseHead, UpstreamConnection
from hal0proxy.proxy.wire import check_api_key, downstream_head, upstream_request
from hal0proxy.routing.classify import Classified, classify
from hal0proxy.routing.contract import Lease

if TYPE_CHECKING:
    from hal0proxy.proxy.context import ProxyContext

_STREAM_INTERRUPTED = encode_chunk(
    b'data: {"error":{"message":"the model server closed the stream before it finished",'
    b'"type":"upstream_error","code":"upstream.stream_interrupted"}}\n\n'
)
_MAX_REROUTES = 2


class Forwarding:
    """Base of ``ClientConnection``; declares the slot layout of a client connection."""

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
    _ctx: ProxyContext
    _loop: asyncio.AbstractEventLoop
    _transport: asyncio.Transport | None
    _task: asyncio.Task[None] | None
    _timer: asyncio.TimerHandle | None
    _upstream: UpstreamConnection | None
    _lease: Lease | None
    _scanner: BodyScanner | None
    _request_bytes: bytes
    _closed: bool
    _head_sent: bool
    _is_head: bool
    _keep_alive: bool
    _retried: bool
    _resp_chunked: bool
    _resp_sse: bool
    _write_paused: bool
    _status: int
    _ttfb: float

    # -- provided by the connection ----------------------------------------------------------
    def _send_error(self, err: ProxyError) -> None:
        raise NotImplementedError

    def _fail(self, err: ProxyError) -> None:
        raise NotImplementedError

    def _response_done(self) -> None:
        raise NotImplementedError

    def _release_lease(self) -> None:
        raise NotImplementedError

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        raise NotImplementedError

    def _cancel_timer(self) -> None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        raise NotImplementedError

    def on_bad_response(self, problem: BadResponse) -> None:
        raise NotImplementedError  # an Exchange callback, answered by the connection (502)

    def wants_plain_body(self) -> bool:
        raise NotImplementedError  # an Exchange query: de-chunk the body for an HTTP/1.0 client

    # -- forwarding --------------------------------------------------------------------------

    def _dispatch_forward(self, req: HttpRequest) -> None:
        try:
            check_api_key(req, self._ctx.settings.api_keys)
            classified = classify(req.path, req.query, req.header(b"content-type") or b"", req.body)
            lease = self._ctx.router.acquire_now(classified)
        except ProxyError as err:
            self._send_error(err)
            return
        if lease is None:
            self._task = self._spawn(self._forward(req, classified))
            return
        # Fast path: a proven route and an idle pooled connection need no task at all.
        self._lease = lease
        self._request_bytes = upstream_request(req, classified.upstream_path, self._ctx.settings)
        conn = self._ctx.pool.take_idle(lease.port)
        if conn is None:
            self._task = self._spawn(self._connect_and_send(fresh=False))
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
        self._request_bytes = upstream_request(req, classified.upstream_path, self._ctx.settings)
        await self._connect_and_send(fresh=False)

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
                    found = await self._reroute(
                        "the model server is not reachable", {"error": str(exc)}, ask=reroutes < _MAX_REROUTES
                    )
                    if not found:
                        return
                    reroutes += 1
                    fresh = False
                    continue
            if self._closed:
                pool.release(conn)
                self._release_lease()
                self._task = None
                return
            if conn.closed:
                # Accepted, then closed before the request went out: the child died meanwhile.
                found = await self._reroute("the model server closed the connection", ask=reroutes < _MAX_REROUTES)
                if not found:
                    return
                reroutes += 1
                fresh = True
                continue
            self._task = None
            self._send_upstream(conn)
            return

    def _send_upstream(self, conn: UpstreamConnection) -> None:
        self._upstream = conn
        conn.send(self._request_bytes, self, self._is_head)
        if self._write_paused:
            conn.pause_reading()
        self._arm(self._ctx.settings.upstream_first_byte_timeout_s, self._on_first_byte_timeout)

    # -- Exchange callbacks (the upstream connection reports here) ---------------------------
    def on_head(self, head: ResponseHead, first: bytes) -> None:
        self._cancel_timer()
        self._ttfb = time.perf_counter()
        self._status = head.status
        data, sse, self._keep_alive = downstream_head(head, self._keep_alive, self._is_head)
        self._head_sent = True
        self._scanner = self._upstream.scanner if self._upstream is not None else None
        self._resp_chunked = head.chunked
        self._resp_sse = sse
        assert self._transport is not None
        if first:
            self._transport.writelines((data, first))
        else:
            self._transport.write(data)

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
            self._task = self._spawn(self._connect_and_send(fresh=True))
            return
        # The child accepted the connection and died without answering: treat as a stale route.
        self._task = self._spawn(self._reroute_after_death())

    async def _reroute_after_death(self) -> None:
        if await self._reroute("the model server closed the connection"):
            self._retried = True
            await self._connect_and_send(fresh=True)

    async def _reroute(self, message: str, details: dict[str, str] | None = None, *, ask: bool = True) -> bool:
        """The child is not where the lease said: forget its pooled connections, release the
        lease and ask the router where the model is now. True with a fresh lease in place;
        False once the client has been answered (502 when there is nowhere to go)."""
        lease = self._lease
        if lease is None:
            self._task = None
            return False
        self._ctx.pool.drop_port(lease.port)
        self._release_lease()
        self._ctx.stats.reroutes += 1
        new_lease: Lease | None = None
        if ask:
            try:
                new_lease = await self._ctx.router.reroute(lease)
            except ProxyError as err:
                self._task = None
                self._fail(err)
                return False
        if new_lease is None:
            self._task = None
            where = {"slot": lease.slot, "port": lease.port, **(details or {})}
            if ask:  # the router knows no child for it at all (a fixed table): hopeless
                self._fail(ProxyError(502, "dispatch.upstream_unavailable", message, where))
            else:
                # Re-resolved twice and still between children: not garbage from a child (the
                # only 502), so the client is told to come back, the way OpenAI SDKs retry.
                self._fail(ProxyError(503, "slot.loading", message, where, retry_after_s=1))
            return False
        self._lease = new_lease
        return True

    # -- hang watch (proxy.hangwatch samples these; nothing here runs per chunk) ------------
    def progress_mark(self) -> tuple[Lease, tuple[int, int, int]] | None:
        """Which response of which upstream connection, and how far it got; ``None`` when
        no exchange is waiting on a child."""
        upstream, lease = self._upstream, self._lease
        if upstream is None or lease is None:
            return None
        scanner = upstream.scanner
        progress = -1 if scanner is None else (scanner.chunks if isinstance(scanner, ChunkedScanner) else -2)
        return lease, (id(upstream), upstream.requests, progress)

    def end_hung_exchange(self) -> None:
        """The child stopped answering: drop the connection; the loss is handled as for a dead
        child (re-resolved and retried before any byte reached the client, else ended with
        the interrupted event) — never retried on the same child."""
        upstream = self._upstream
        if upstream is None:
            return
        self._retried = True
        if upstream.transport is not None:
            upstream.transport.abort()

    def _on_first_byte_timeout(self) -> None:
        self._timer = None
        upstream = self._upstream
        if upstream is not None and not self._head_sent:
            self._upstream = None
            upstream.abort()
            self._fail(ProxyError(504, "upstream.timeout", "the model server did not answer in time"))
