"""Upstream side of the data plane: one Protocol per child connection, pooled per port.

The response head is read by ``http.response_reader`` (strict RFC 9112; h11 would take
ownership of, and copy, every body byte), and the body is handed to the exchange as the very
``bytes`` objects the transport delivered. A child that breaks the protocol is reported to
the exchange (502) and its connection is dropped, never pooled again. Idle connections are watched: the moment the
peer closes one (llama-server closes after every streamed response) it leaves the pool.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from hal0proxy.http.framing import BodyScanner, ChunkedScanner, FramingError, UntilCloseScanner
from hal0proxy.http.problems import BadResponse, HttpProblem
from hal0proxy.http.response_reader import ResponseHead, ResponseReader

__all__ = ["ChildConnectTimeout", "ChildUnreachable", "Exchange", "ResponseHead", "UpstreamConnection", "UpstreamPool"]


class ChildUnreachable(HttpProblem):
    """The child could not be reached at all (refused, unreachable, reset during connect).

    Usually a stale route (the child is gone or moved): the exchange re-resolves it, and
    answers with the status hint only when there is nowhere else to go.
    """

    status_hint = 502
    code = "dispatch.upstream_unavailable"


class ChildConnectTimeout(HttpProblem):
    """The child did not accept the connection within the connect timeout."""

    status_hint = 504
    code = "upstream.timeout"


class Exchange(Protocol):
    """What an upstream connection reports to the request it is serving."""

    def on_head(self, head: ResponseHead, first: bytes) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...
    def on_lost(self) -> None: ...
    def on_failed_before_response(self, reused: bool) -> None: ...
    def on_bad_response(self, problem: BadResponse) -> None: ...
    def wants_plain_body(self) -> bool: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_plain",
        "_pool",
        "_reader",
        "closed",
        "exchange",
        "keep_alive",
        "port",
        "reading_paused",
        "requests",
        "scanner",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, port: int) -> None:
        self._pool = pool
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.scanner: BodyScanner | None = None
        self._reader = ResponseReader(False)  # reads the head of each response in turn
        self._plain = False  # de-chunk this response's body (the client speaks HTTP/1.0)
        self.keep_alive = True
        self.closed = False
        self.reading_paused = False
        self.requests = 0

    # -- driven by the exchange ------------------------------------------------------------
    def send(self, data: bytes, exchange: Exchange, method_is_head: bool = False) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.scanner = None
        self._reader.expect(method_is_head)
        self.requests += 1
        self.transport.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection now (client went away: the child must stop generating)."""
        self.exchange = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._pool.forget(self)

    # -- asyncio callbacks -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the peer is confused; never reuse it.
            self.abort()
            return
        scanner = self.scanner
        if scanner is None:
            try:
                complete = self._reader.feed(data)
            except BadResponse as problem:
                self._reject(problem)
                return
            if complete is None:
                return
            head, scanner, rest = complete
            self._plain = head.chunked and exchange.wants_plain_body()
            if self._plain:
                # An HTTP/1.0 client cannot read chunked coding: relay the chunk data only, as a
                # body delimited by the close of the client connection (cold path: it copies).
                scanner = ChunkedScanner(collect_payload=True)
                head = ResponseHead(head.status, head.reason, head.version, head.headers, head.keep_alive, False)
            self.scanner = scanner
            self.keep_alive = head.keep_alive
            # Hand the head over together with the body bytes of the same read, so the
            # client gets both in one vectored write (most JSON answers fit in one read).
            first = rest
            if rest:
                try:
                    used = scanner.feed(rest)
                except FramingError as exc:
                    self._reject(BadResponse(f"the model server sent invalid chunked framing: {exc.message}"))
                    return
                if used < len(rest):
                    first = rest[:used]
                    self.keep_alive = False  # trailing garbage after the body
                if self._plain:
                    first = scanner.take_payload()  # type: ignore[union-attr]
            exchange.on_head(head, first)
            if self.exchange is exchange and scanner.done:
                self._finish()
            return
        try:
            used = scanner.feed(data)
        except FramingError as exc:
            if exc.valid_bytes and not self._plain:
                exchange.on_body(data[: exc.valid_bytes])  # the complete chunks before the fault
            self._reject(BadResponse(f"the model server sent invalid chunked framing: {exc.message}"))
            return
        if self._plain:
            payload = scanner.take_payload()  # type: ignore[union-attr]
            if payload:
                exchange.on_body(payload)
        elif used:
            exchange.on_body(data if used == len(data) else data[:used])
        if scanner.done and self.exchange is exchange:
            if used < len(data):
                self.keep_alive = False  # trailing garbage after the body
            self._finish()

    def eof_received(self) -> bool | None:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        scanner = self.scanner
        if scanner is None and not self._reader.started:
            exchange.on_failed_before_response(self.requests > 1)
        elif isinstance(scanner, UntilCloseScanner):
            exchange.on_end()
        else:
            exchange.on_lost()

    # -- internals --------------------------------------------------------------------------
    def _finish(self) -> None:
        exchange = self.exchange
        self.exchange = None
        self.scanner = None
        if self.reading_paused:
            self.resume_reading()
        if self.keep_alive and not self.closed:
            self._pool.release(self)
        else:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._pool.forget(self)
        if exchange is not None:
            exchange.on_end()

    def _reject(self, problem: BadResponse) -> None:
        # The child broke the protocol: this connection is desynchronised and must never be
        # reused; the exchange answers 502 (or cuts a response already under way).
        exchange = self.exchange
        self.keep_alive = False
        self.abort()
        if exchange is not None:
            exchange.on_bad_response(problem)


class UpstreamPool:
    """Keep-alive connections per child port (children are always on 127.0.0.1)."""

    def __init__(self, host: str = "127.0.0.1", connect_timeout_s: float = 5.0, max_idle_per_port: int = 256):
        self.host = host
        self.connect_timeout_s = connect_timeout_s
        self.max_idle_per_port = max_idle_per_port
        self._idle: dict[int, list[UpstreamConnection]] = {}
        self.connects = 0

    def take_idle(self, port: int) -> UpstreamConnection | None:
        idle = self._idle.get(port)
        while idle:
            conn = idle.pop()  # LIFO: the most recently used connection is the likeliest alive
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def connect(self, port: int) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        self.connects += 1
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self, port), self.host, port),
                self.connect_timeout_s,
            )
        except TimeoutError:
            raise ChildConnectTimeout("timed out connecting to the model server") from None
        except OSError as exc:
            raise ChildUnreachable(f"connect to {self.host}:{port} failed: {exc}") from None
        return proto

    def release(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.port)
        if idle is None:  # (not setdefault: its default list would be built on every call)
            idle = self._idle[conn.port] = []
        elif len(idle) >= self.max_idle_per_port:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
            return
        idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        idle = self._idle.get(conn.port)
        if idle and conn in idle:
            idle.remove(conn)

    def drop_port(self, port: int) -> None:
        """Close every idle connection to ``port`` (its child is gone or moved)."""
        for conn in self._idle.pop(port, []):
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()

    def idle_count(self, port: int | None = None) -> int:
        if port is not None:
            return len(self._idle.get(port, ()))
        return sum(len(v) for v in self._idle.values())

    def close(self) -> None:
        for port in list(self._idle):
            self.drop_port(port)
