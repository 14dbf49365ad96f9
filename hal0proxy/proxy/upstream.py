"""Upstream side of the data plane: one Protocol per child connection, pooled per port.

The response head is parsed here (a small RFC 9112 status-line/header parser: h11 would
take ownership of, and copy, every body byte), and the body is handed to the exchange as the
very ``bytes`` objects the transport delivered. Idle connections are watched: the moment the
peer closes one (llama-server closes after every streamed response) it leaves the pool.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

from hal0proxy.http.framing import (
    BodyScanner,
    ChunkedScanner,
    FramingError,
    LengthScanner,
    UntilCloseScanner,
)

MAX_HEAD_BYTES = 64 * 1024


class ConnectFailed(Exception):
    """The child could not be reached at all (refused, unreachable, reset during connect)."""


class ConnectTimeout(Exception):
    """The child did not accept the connection within the connect timeout."""


class ResponseHead:
    __slots__ = ("chunked", "headers", "keep_alive", "reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        version: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        chunked: bool,
    ) -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.chunked = chunked


class Exchange(Protocol):
    """What an upstream connection reports to the request it is serving."""

    def on_head(self, head: ResponseHead, first: bytes) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...
    def on_lost(self) -> None: ...
    def on_failed_before_response(self, reused: bool) -> None: ...


def parse_head(head: bytes, method_is_head: bool) -> tuple[ResponseHead, BodyScanner]:
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
        raise FramingError(f"bad status line {lines[0][:80]!r}")
    version = status_line[0][5:]
    try:
        status = int(status_line[1])
    except ValueError:
        raise FramingError("bad status code") from None
    reason = status_line[2] if len(status_line) > 2 else b""
    headers: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    chunked = False
    conn_tokens: set[bytes] = set()
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise FramingError(f"bad header line {line[:80]!r}")
        name = name.lower()
        value = value.strip()
        headers.append((name, value))
        if name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                raise FramingError("bad content-length") from None
        elif name == b"transfer-encoding":
            chunked = value.lower().rsplit(b",", 1)[-1].strip() == b"chunked"
        elif name == b"connection":
            conn_tokens.update(t.strip().lower() for t in value.split(b","))
    keep_alive = b"close" not in conn_tokens if version == b"1.1" else b"keep-alive" in conn_tokens
    scanner: BodyScanner
    if method_is_head or status in (204, 304) or 100 <= status < 200:
        scanner = LengthScanner(0)
    elif chunked:
        scanner = ChunkedScanner()
    elif content_length is not None:
        scanner = LengthScanner(content_length)
    else:
        scanner = UntilCloseScanner()
        keep_alive = False
    return ResponseHead(status, reason, version, headers, keep_alive, chunked), scanner


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_head_buf",
        "_is_head",
        "_pool",
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
        self._head_buf = b""
        self._is_head = False
        self.keep_alive = True
        self.closed = False
        self.reading_paused = False
        self.requests = 0

    # -- driven by the exchange ------------------------------------------------------------
    def send(self, data: bytes, exchange: Exchange, method_is_head: bool = False) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self.scanner = None
        self._head_buf = b""
        self._is_head = method_is_head
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
            buf = self._head_buf + data if self._head_buf else data
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    self._fail_framing()
                    return
                self._head_buf = buf
                return
            self._head_buf = b""
            try:
                head, scanner = parse_head(buf[:end], self._is_head)
            except FramingError:
                self._fail_framing()
                return
            if 100 <= head.status < 200 and head.status != 101:
                # Interim response (e.g. 100 Continue): not relayed; wait for the real head.
                rest = buf[end + 4 :]
                if rest:
                    self.data_received(rest)
                return
            self.scanner = scanner
            self.keep_alive = head.keep_alive
            # Hand the head over together with the body bytes of the same read, so the
            # client gets both in one vectored write (most JSON answers fit in one read).
            rest = buf[end + 4 :]
            first = rest
            if rest:
                try:
                    used = scanner.feed(rest)
                except FramingError:
                    self._fail_framing()
                    return
                if used < len(rest):
                    first = rest[:used]
                    self.keep_alive = False  # trailing garbage after the body
            exchange.on_head(head, first)
            if self.exchange is exchange and scanner.done:
                self._finish()
            return
        try:
            used = scanner.feed(data)
        except FramingError:
            self.keep_alive = False
            self.abort()
            exchange.on_lost()
            return
        if used:
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
        if scanner is None and not self._head_buf:
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

    def _fail_framing(self) -> None:
        exchange = self.exchange
        self.abort()
        if exchange is not None:
            exchange.on_lost()


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
            raise ConnectTimeout(f"connect to {self.host}:{port} timed out") from None
        except OSError as exc:
            raise ConnectFailed(f"connect to {self.host}:{port} failed: {exc}") from None
        return proto

    def release(self, conn: UpstreamConnection) -> None:
        idle = self._idle.setdefault(conn.port, [])
        if len(idle) >= self.max_idle_per_port:
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
