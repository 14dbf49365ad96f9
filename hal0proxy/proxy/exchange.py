"""One forwarded request's life, from the parsed request to the last byte of the response.

Its states and their legal moves are in ``proxy.exchange_state``; this module carries them
out: routing (``Router.acquire_now``, else ``acquire`` in a task), the pooled connection and
its one safe retry, re-resolution when a child is not where its route said, the callbacks
through which the upstream connection relays the response, the 504 first-byte expiry, the
hang watch's queries, and the endings for a client that went away and for shutdown. The
lease is released exactly once: at the end, or when the router is asked for a new one.
It talks to its client connection only through ``ExchangeOwner``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from hal0proxy.http.errors import ProxyError, as_proxy_error, error_response
from hal0proxy.http.framing import LAST_CHUNK, BodyScanner, ChunkedScanner, encode_chunk
from hal0proxy.http.messages import HttpRequest
from hal0proxy.http.problems import BadResponse
from hal0proxy.proxy.exchange_state import ENDS, LEGAL_MOVES, MAX_REROUTES, ExchangeState, IllegalExchangeMove
from hal0proxy.proxy.timer import FIRST_BYTE, ConnectionTimer
from hal0proxy.proxy.upstream import ChildConnectTimeout, ChildUnreachable, ResponseHead, UpstreamConnection
from hal0proxy.proxy.wire import check_api_key, downstream_head, upstream_request
from hal0proxy.routing.classify import Classified, classify
from hal0proxy.routing.contract import Lease

if TYPE_CHECKING:
    from hal0proxy.proxy.context import ProxyContext
    from hal0proxy.proxy.flow import FlowControl

__all__ = ["Exchange", "ExchangeOwner"]

log = logging.getLogger("hal0proxy.proxy")

_S = ExchangeState
_RECEIVED, _ROUTING, _CONNECTING, _SENT = _S.RECEIVED, _S.ROUTING, _S.CONNECTING, _S.SENT
_HEAD_RELAYED, _DONE, _FAILED, _CANCELLED = _S.HEAD_RELAYED, _S.DONE, _S.FAILED, _S.CANCELLED
_STREAM_INTERRUPTED = encode_chunk(
    b'data: {"error":{"message":"the model server closed the stream before it finished",'
    b'"type":"upstream_error","code":"upstream.stream_interrupted"}}\n\n'
)
_SHUTDOWN_EVENT = encode_chunk(
    b'data: {"error":{"message":"the proxy is shutting down","type":"upstream_error",'
    b'"code":"upstream.stream_interrupted"}}\n\n'
)


class ExchangeOwner(Protocol):
    """What an exchange needs from its client connection."""

    def write(self, data: bytes) -> None: ...  # to the client, unless it is gone
    def answer(self, data: bytes) -> None: ...  # a complete answer of the proxy's own (HEAD: its head only)
    def abort(self) -> None: ...  # cut the client connection: a response under way cannot end honestly

    # The response is complete on the wire: account for it and take the next request.
    def finish_response(self, keep_alive: bool, slot: str | None, status: int, ttfb: float) -> None: ...


class Exchange:
    __slots__ = (
        "_ctx",
        "_flow",
        "_lease",
        "_loop",
        "_owner",
        "_request_bytes",
        "_reroutes",
        "_retried",
        "_scanner",
        "_sse",
        "_state",
        "_task",
        "_timer",
        "_transport",
        "is_head",
        "keep_alive",
        "on_body",
        "req",
        "status",
        "ttfb",
        "upstream",
    )

    def __init__(
        self,
        owner: ExchangeOwner,
        ctx: ProxyContext,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        flow: FlowControl,
        timer: ConnectionTimer,
        req: HttpRequest,
        keep_alive: bool,
    ) -> None:
        self._owner = owner
        self._ctx = ctx
        self._loop = loop
        self._transport = transport
        self._flow = flow
        self._timer = timer  # the connection's; its FIRST_BYTE expiry calls first_byte_timeout
        self._state = _RECEIVED
        self._lease: Lease | None = None
        self._task: asyncio.Task[None] | None = None
        self._request_bytes = b""
        self._scanner: BodyScanner | None = None
        self._sse = False  # the response is a chunked event stream
        self._retried = False
        self._reroutes = 0
        self.req = req
        self.is_head = req.method == b"HEAD"
        self.keep_alive = keep_alive
        self.upstream: UpstreamConnection | None = None
        self.status = 0
        self.ttfb = 0.0
        # What the upstream connection calls with each read of body it relays: the client
        # transport's own write, so an SSE event costs no Python frame of this class.
        self.on_body: Callable[[bytes], None] = transport.write

    @property
    def state(self) -> ExchangeState:
        return self._state

    def _move(self, new: ExchangeState) -> None:
        if new not in LEGAL_MOVES[self._state]:
            raise IllegalExchangeMove(self._state, new)
        self._state = new

    # -- routing and sending -----------------------------------------------------------------
    def start(self) -> None:
        req = self.req
        ctx = self._ctx
        try:
            if ctx.settings.api_keys:
                check_api_key(req, ctx.settings.api_keys)
            template = req.template
            content_type = template.content_type if template is not None else req.header(b"content-type") or b""
            classified = classify(req.path, req.query, content_type, req.body)
            lease = ctx.router.acquire_now(classified)
        except ProxyError as err:
            self._answer_error(err)
            return
        if lease is None:
            self._move(_ROUTING)
            self._task = self._spawn(self._route(classified))
            return
        # Fast path: a proven route and an idle pooled connection need no task at all.
        self._lease = lease
        self._request_bytes = upstream_request(req, classified.upstream_path, ctx.settings)
        conn = ctx.pool.take_idle(lease.port)
        if conn is None:
            self._move(_CONNECTING)
            self._task = self._spawn(self._connect_and_send(fresh=False))
        else:
            self._send(conn)

    async def _route(self, classified: Classified) -> None:
        try:
            lease = await self._ctx.router.acquire(classified)
        except ProxyError as err:
            self._fail(err)
            return
        if self._state in ENDS:  # the client went away meanwhile
            lease.release()
            return
        self._lease = lease
        self._request_bytes = upstream_request(self.req, classified.upstream_path, self._ctx.settings)
        self._move(_CONNECTING)
        await self._connect_and_send(fresh=False)

    async def _connect_and_send(self, fresh: bool) -> None:
        """In CONNECTING: find or open a connection to the lease's child and send the request."""
        pool = self._ctx.pool
        self._reroutes = 0
        while True:
            lease = self._lease
            if lease is None or self._state in ENDS:
                return
            conn = None if fresh else pool.take_idle(lease.port)
            if conn is None:
                try:
                    conn = await pool.connect(lease.port)
                except ChildConnectTimeout as exc:
                    self._fail(as_proxy_error(exc))
                    return
                except ChildUnreachable as exc:
                    # The route is stale (child gone or moved): re-resolve instead of answering 502.
                    if not await self._reroute("the model server is not reachable", {"error": str(exc)}):
                        return
                    fresh = False
                    continue
            if self._state in ENDS:
                pool.release(conn)
                self._release_lease()
                return
            if conn.closed:
                # Accepted, then closed before the request went out: the child died meanwhile.
                if not await self._reroute("the model server closed the connection"):
                    return
                fresh = True
                continue
            self._send(conn)
            return

    async def _reroute(self, message: str, details: dict[str, str] | None = None) -> bool:
        """CONNECTING → ROUTING → CONNECTING after a connect failure, or → FAILED past the cap."""
        ask = self._reroutes < MAX_REROUTES
        self._move(_ROUTING)
        if not await self._ask_router(message, details, ask=ask):
            return False
        self._reroutes += 1
        self._move(_CONNECTING)
        return True

    async def _reroute_after_death(self) -> None:
        """In ROUTING: the child accepted the request and died before answering."""
        if await self._ask_router("the model server closed the connection"):
            self._retried = True
            self._move(_CONNECTING)
            await self._connect_and_send(fresh=True)

    async def _ask_router(self, message: str, details: dict[str, str] | None = None, *, ask: bool = True) -> bool:
        """Forget the stale child's pooled connections, release the lease, ask the router where
        the model is now: True with a fresh lease; False once the client has been answered."""
        lease = self._lease
        if lease is None:
            return False
        self._ctx.pool.drop_port(lease.port)
        self._release_lease()
        self._ctx.stats.reroutes += 1
        new_lease: Lease | None = None
        if ask:
            try:
                new_lease = await self._ctx.router.reroute(lease)
            except ProxyError as err:
                self._fail(err)
                return False
        if self._state in ENDS:  # the client went away meanwhile
            if new_lease is not None:
                new_lease.release()
            return False
        if new_lease is None:
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

    def _send(self, conn: UpstreamConnection) -> None:
        state = self._state  # (_move, inlined on the per-request path: the same table lookup)
        if _SENT not in LEGAL_MOVES[state]:
            raise IllegalExchangeMove(state, _SENT)
        self._state = _SENT
        self.upstream = conn
        conn.send(self._request_bytes, self, self.is_head)
        if self._flow.write_paused:
            conn.pause_reading()  # the client is not reading: the child starts paused
        self._timer.arm(self._ctx.settings.upstream_first_byte_timeout_s, FIRST_BYTE)

    # -- what the upstream connection reports ------------------------------------------------
    def on_head(self, head: ResponseHead, first: bytes) -> None:
        state = self._state  # (_move, inlined on the per-request path: the same table lookup)
        if _HEAD_RELAYED not in LEGAL_MOVES[state]:
            raise IllegalExchangeMove(state, _HEAD_RELAYED)
        self._state = _HEAD_RELAYED
        self._timer.cancel()
        self.ttfb = perf_counter()
        self.status = head.status
        data, sse, self.keep_alive = downstream_head(head, self.keep_alive, self.is_head)
        upstream = self.upstream
        self._scanner = upstream.scanner if upstream is not None else None
        self._sse = sse and head.chunked
        if first:
            self._transport.writelines((data, first))
        else:
            self._transport.write(data)

    def on_end(self) -> None:
        scanner = self._scanner
        if isinstance(scanner, ChunkedScanner):
            self._ctx.stats.chunks_relayed += scanner.chunks
        self.upstream = None
        state = self._state  # (_move, inlined on the per-request path: the same table lookup)
        if _DONE not in LEGAL_MOVES[state]:
            raise IllegalExchangeMove(state, _DONE)
        self._state = _DONE
        self._finish()

    def on_lost(self) -> None:
        self.upstream = None
        self._ctx.stats.streams_interrupted += 1
        if self._state is not _HEAD_RELAYED:
            self._fail(ProxyError(502, "dispatch.upstream_unavailable", "the model server closed the connection"))
        elif self._between_events():
            # Between two events: end the stream as a well-formed SSE error plus chunked end.
            self._owner.write(_STREAM_INTERRUPTED + LAST_CHUNK)
            self._finish(_DONE)
        else:
            # Mid-event or non-SSE: nothing honest can be appended; the client must see a failure.
            self._cut(_FAILED)

    def on_failed_before_response(self, reused: bool) -> None:
        self.upstream = None
        if self._state in ENDS:
            self._release_lease()
            return
        if reused and not self._retried:
            # A kept-alive connection the child had already closed: nothing reached the
            # client, so one retry on a fresh connection is safe.
            self._retried = True
            self._ctx.stats.retries += 1
            self._move(_CONNECTING)
            self._task = self._spawn(self._connect_and_send(fresh=True))
            return
        # The child accepted the connection and died without answering: a stale route.
        self._move(_ROUTING)
        self._task = self._spawn(self._reroute_after_death())

    def on_bad_response(self, problem: BadResponse) -> None:
        """The child broke HTTP (its connection is already dropped): 502, or cut the response."""
        self.upstream = None
        self._ctx.stats.upstream_bad_responses += 1
        log.warning("invalid response from the model server: %s", problem.message)
        if self._state is _HEAD_RELAYED:
            self.on_lost()  # part of the response is out: end it the way a dead child ends it
            return
        self._fail(as_proxy_error(problem))

    def wants_plain_body(self) -> bool:  # de-chunk: an HTTP/1.0 client cannot read chunked coding
        return self.req.http_version == b"1.0"

    # -- what the connection, its timer and the hang watch report -----------------------------
    def first_byte_timeout(self) -> None:
        if self._state is _SENT and self._drop_upstream():
            self._fail(ProxyError(504, "upstream.timeout", "the model server did not answer in time"))

    def client_gone(self) -> None:
        """The client left (its connection is lost, or it sent its FIN while this exchange was
        in flight): stop the child generating, let go of everything. Idempotent."""
        if self._drop_upstream():
            self._ctx.stats.client_disconnects += 1
        if self._state not in ENDS:
            self._move(_CANCELLED)
        self._release_lease()
        self._cancel_task()

    def end_for_shutdown(self) -> None:
        """Shutdown, after the grace: end the exchange as cleanly as its state allows."""
        if self._state in ENDS:
            return
        self.keep_alive = False
        self._drop_upstream()
        self._cancel_task()
        if self._state is not _HEAD_RELAYED:
            self._move(_CANCELLED)
            err = ProxyError(503, "proxy.shutting_down", "the proxy is shutting down", retry_after_s=1)
            self.status = err.status
            self._owner.answer(error_response(err, keep_alive=False))
            self._finish()
        elif self._between_events():
            self._ctx.stats.streams_interrupted += 1
            self._owner.write(_SHUTDOWN_EVENT + LAST_CHUNK)
            self._finish(_CANCELLED)
        else:
            self._cut(_CANCELLED)

    def progress_mark(self) -> tuple[Lease, tuple[int, int, int]] | None:
        """Which response of which child connection, how far it got; ``None``: not waiting on one."""
        upstream, lease = self.upstream, self._lease
        if upstream is None or lease is None:
            return None
        scanner = upstream.scanner
        progress = -1 if scanner is None else (scanner.chunks if isinstance(scanner, ChunkedScanner) else -2)
        return lease, (id(upstream), upstream.requests, progress)

    def end_hung_exchange(self) -> None:
        """The child stopped answering: drop its connection; the loss then ends the exchange as a
        dead child's does (rerouted, or the interrupted event), never retried on that child."""
        upstream = self.upstream
        if upstream is None:
            return
        self._retried = True
        if upstream.transport is not None:
            upstream.transport.abort()

    # -- endings -----------------------------------------------------------------------------
    def _drop_upstream(self) -> bool:
        """Abort the child connection (it must stop generating); False when there is none."""
        upstream = self.upstream
        if upstream is None:
            return False
        self.upstream = None
        upstream.abort()
        return True

    def _between_events(self) -> bool:
        scanner = self._scanner
        return self._sse and scanner is not None and scanner.at_boundary

    def _answer_error(self, err: ProxyError) -> None:
        self._move(_FAILED)
        self.status = err.status
        self._owner.answer(error_response(err, keep_alive=self.keep_alive))
        self._finish()

    def _fail(self, err: ProxyError) -> None:
        if self._state in ENDS:
            self._release_lease()
        elif self._state is _HEAD_RELAYED:
            self._cut(_FAILED)
        else:
            self._answer_error(err)

    def _finish(self, state: ExchangeState | None = None) -> None:
        if state is not None:
            self._move(state)
        lease = self._lease
        if lease is not None:
            self._lease = None
            lease.release()
            self._owner.finish_response(self.keep_alive, lease.slot, self.status, self.ttfb)
        else:
            self._owner.finish_response(self.keep_alive, None, self.status, self.ttfb)

    def _cut(self, state: ExchangeState) -> None:
        self._move(state)
        self._release_lease()
        self._owner.abort()

    def _release_lease(self) -> None:
        lease = self._lease
        if lease is not None:
            self._lease = None
            lease.release()

    # -- tasks (the slow paths only) ---------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coro)
        task.add_done_callback(self._task_done)
        return task

    def _cancel_task(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            if not task.done():
                task.cancel()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None  # (a later task may already have taken its place)
        # A bug must cost one request a 500, never leave a client waiting for ever.
        if task.cancelled() or task.exception() is None:
            return
        log.error("request handling failed", exc_info=task.exception())
        if self._state not in ENDS and self.upstream is None:
            self._fail(ProxyError(500, "system.internal", "internal error while handling the request"))
