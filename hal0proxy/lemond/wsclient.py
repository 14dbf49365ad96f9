"""A minimal WebSocket client: wsproto over asyncio streams.

Just enough for lemond's log stream: open (with optional subprotocols and extra
headers), send text, receive whole text messages, answer server pings, and detect a
dead peer with client pings. lemond never pings on its own and its TCP keepalive
needs ~30 s to notice a dead socket (SPEC.md §5.2), so liveness is the client's job:
when nothing has arrived for ``ping_interval`` seconds a Ping is sent, and if nothing
(not even the Pong) arrives in the next ``ping_interval`` the connection is declared
dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

__all__ = ["WSClosed", "WSConnectFailed", "WSDead", "WSError", "WSRejected", "WebSocketClient"]

READ_CHUNK = 64 * 1024
# A snapshot frame holds up to 5000 log entries (lemond's ring), a few MB at most.
MAX_MESSAGE = 32 * 1024 * 1024


class WSError(Exception):
    """Base class of this module's errors."""


class WSConnectFailed(WSError):
    """TCP connect or the opening handshake failed for transport reasons."""


class WSRejected(WSError):
    """The server answered the upgrade with a normal HTTP response (e.g. 404, 401)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"WebSocket upgrade rejected with HTTP {status}")
        self.status = status


class WSClosed(WSError):
    """The connection ended (close frame, EOF or reset)."""


class WSDead(WSClosed):
    """No bytes, not even a Pong, within two ping intervals."""


class WebSocketClient:
    """One client connection. Create with :meth:`connect`; not reusable after close."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ws: WSConnection,
        *,
        ping_interval: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._ws = ws
        self._ping_interval = ping_interval
        self._messages: deque[tuple[str, float]] = deque()
        self._parts: list[str] = []
        self._size = 0
        self._ping_outstanding = False
        self._closed = False
        self.subprotocol: str | None = None
        # Local monotonic time of the last bytes received; stamps messages.
        self.last_rx = time.monotonic()

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        path: str,
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] = (),
        timeout: float = 5.0,
        ping_interval: float = 5.0,
    ) -> WebSocketClient:
        """Open TCP and complete the opening handshake (raises WSRejected/WSConnectFailed)."""
        ws = WSConnection(ConnectionType.CLIENT)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port)
                req = Request(
                    host=f"{host}:{port}",
                    target=path,
                    subprotocols=list(subprotocols),
                    extra_headers=[(k.encode(), v.encode()) for k, v in headers],
                )
                writer.write(ws.send(req))
                await writer.drain()
                client = cls(reader, writer, ws, ping_interval=ping_interval)
                await client._handshake()
                return client
        except TimeoutError as exc:
            if writer is not None:
                writer.close()
            raise WSConnectFailed(f"ws://{host}:{port}{path}: handshake timed out") from exc
        except (OSError, RemoteProtocolError, LocalProtocolError) as exc:
            if writer is not None:
                writer.close()
            raise WSConnectFailed(f"ws://{host}:{port}{path}: {exc}") from exc
        except WSError:
            if writer is not None:
                writer.close()
            raise

    async def _handshake(self) -> None:
        while True:
            data = await self._reader.read(READ_CHUNK)
            self._ws.receive_data(data or None)
            for event in self._ws.events():
                if isinstance(event, AcceptConnection):
                    self.subprotocol = event.subprotocol
                    return
                if isinstance(event, RejectConnection):
                    raise WSRejected(event.status_code)
                if isinstance(event, RejectData):
                    continue
            if not data:
                raise WSConnectFailed("connection closed during the opening handshake")

    # -- sending ----------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        await self._send(TextMessage(data=text))

    async def _send(self, event: Event) -> None:
        if self._closed:
            raise WSClosed("connection is closed")
        try:
            self._writer.write(self._ws.send(event))
            await self._writer.drain()
        except (OSError, LocalProtocolError) as exc:
            self._abort()
            raise WSClosed(f"send failed: {exc}") from exc

    # -- receiving --------------------------------------------------------------------

    async def recv(self) -> tuple[str, float]:
        """Return the next text message and the monotonic time its last byte arrived."""
        while not self._messages:
            if self._closed:
                raise WSClosed("connection is closed")
            await self._fill()
        return self._messages.popleft()

    async def _fill(self) -> None:
        try:
            async with asyncio.timeout(self._ping_interval):  # not wait_for: see adapter's heartbeat
                data = await self._reader.read(READ_CHUNK)
        except TimeoutError:
            if self._ping_outstanding:
                self._abort()
                raise WSDead(f"no data and no pong for {2 * self._ping_interval:.1f}s") from None
            self._ping_outstanding = True
            await self._send(Ping(payload=b"hal0"))
            return
        except OSError as exc:
            self._abort()
            raise WSClosed(f"read failed: {exc}") from exc
        if not data:
            self._abort()
            raise WSClosed("peer closed the connection")
        self.last_rx = time.monotonic()
        self._ping_outstanding = False
        try:
            self._ws.receive_data(data)
            for event in self._ws.events():
                await self._on_event(event)
        except RemoteProtocolError as exc:
            self._abort()
            raise WSClosed(f"protocol error: {exc}") from exc

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, TextMessage):
            self._parts.append(event.data)
            self._size += len(event.data)
            if self._size > MAX_MESSAGE:
                self._abort()
                raise WSClosed(f"message larger than {MAX_MESSAGE} bytes")
            if event.message_finished:
                self._messages.append(("".join(self._parts), self.last_rx))
                self._parts, self._size = [], 0
        elif isinstance(event, Ping):
            await self._send(event.response())
        elif isinstance(event, CloseConnection):
            with contextlib.suppress(WSClosed):
                await self._send(event.response())
            self._abort()
            raise WSClosed(f"server closed ({event.code}: {event.reason or ''})")
        elif isinstance(event, BytesMessage | Pong):
            pass  # lemond sends text only; a Pong already counted as liveness

    # -- closing ----------------------------------------------------------------------

    def _abort(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._writer.close()

    async def close(self) -> None:
        """Send a close frame if possible, then drop the socket (does not wait for the reply)."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._writer.write(self._ws.send(CloseConnection(code=1000)))
        self._abort()

    @property
    def closed(self) -> bool:
        return self._closed
