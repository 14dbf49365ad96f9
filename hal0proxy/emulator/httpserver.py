"""A small asyncio HTTP/1.1 server on h11, with WebSocket upgrade via wsproto.

Enough for the lemond emulator and the fake llama-server: one request at a time per
connection (no pipelining: reading pauses while a handler runs), keep-alive, fixed-length
and chunked responses, and a hand-off to wsproto for ``Upgrade: websocket``.

Chunked bodies are framed here rather than through ``h11.Data`` so that a streaming handler
can pre-encode whole chunks and write each one with a single ``transport.write``; h11 still
owns the response head and the terminating ``0\\r\\n\\r\\n``, so its state stays correct (its
chunked writer does not count body bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import h11
import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    TextMessage,
)
from wsproto.events import (
    Request as WsRequest,
)

__all__ = [
    "HttpServer",
    "Request",
    "Response",
    "Stream",
    "WebSocket",
    "WsApp",
    "json_response",
]

#: reason phrases, computed once (h11 sends none unless given one)
_REASONS = {int(s): s.phrase.encode() for s in HTTPStatus}

#: request bodies above this are refused; the emulator never needs more
MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


def json_response(
    status: int, payload: object, *, headers: list[tuple[str, str]] | None = None, sort: bool = True
) -> Response:
    option = orjson.OPT_SORT_KEYS if sort else 0
    return Response(status, orjson.dumps(payload, option=option), headers or [])


class WebSocket:
    """A server-side WebSocket after the handshake."""

    __slots__ = ("_conn", "_transport", "closed", "path")

    def __init__(self, conn: WSConnection, transport: asyncio.Transport, path: str) -> None:
        self._conn = conn
        self._transport = transport
        self.closed = False
        self.path = path

    def send_text(self, text: str) -> None:
        if self.closed:
            return
        self._transport.write(self._conn.send(Message(data=text)))

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._transport.write(self._conn.send(CloseConnection(code=code, reason=reason)))
        self._transport.close()

    def abort(self) -> None:
        self.closed = True
        self._transport.abort()


class WsApp:
    """Callbacks for one accepted WebSocket; subclass and override."""

    subprotocols: tuple[str, ...] = ()

    def on_open(self, ws: WebSocket) -> None:
        pass

    def on_text(self, ws: WebSocket, text: str) -> None:
        pass

    def on_close(self, ws: WebSocket) -> None:
        pass


Handler = Callable[[Request, "Stream"], Awaitable[Response | None]]
#: returns an app for a WebSocket path, or None to treat the request as plain HTTP
WsRouter = Callable[[Request], WsApp | None]


class Stream:
    """A streaming (chunked) response, handed to handlers that return None."""

    __slots__ = ("_proto", "close_after", "started")

    def __init__(self, proto: _HttpProtocol) -> None:
        self._proto = proto
        self.started = False
        #: close the connection once the response ended, whatever keep-alive said
        self.close_after = False

    @property
    def disconnected(self) -> bool:
        return self._proto.lost

    def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        head = h11.Response(
            status_code=status,
            headers=[*headers, ("Transfer-Encoding", "chunked")],
            reason=_REASONS.get(status, b""),
        )
        self._proto.write(self._proto.conn.send(head) or b"")
        self.started = True

    def write_framed(self, chunk: bytes) -> None:
        """Write bytes that already carry their chunk framing (``<hex>\\r\\n...\\r\\n``)."""
        self._proto.write(chunk)

    def write_chunk(self, data: bytes) -> None:
        self._proto.write(b"%x\r\n%b\r\n" % (len(data), data))

    @property
    def write_paused(self) -> bool:
        return self._proto.write_paused

    async def drain(self) -> None:
        await self._proto.drain()

    def end(self) -> None:
        if not self._proto.lost:
            self._proto.write(self._proto.conn.send(h11.EndOfMessage()) or b"")


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.conn = h11.Connection(h11.SERVER)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._request: Request | None = None
        self._body = bytearray()
        self._busy = False
        self._ws: WSConnection | None = None
        self._ws_socket: WebSocket | None = None
        self._ws_app: WsApp | None = None
        # wsproto may deliver a text message in fragments; they are joined here
        self._ws_text_parts: list[str] = []

    # -- asyncio.Protocol interface -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence a cast, not a check.
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        self._wake_writer()
        if self._ws_app is not None and self._ws_socket is not None:
            self._ws_socket.closed = True
            app, self._ws_app = self._ws_app, None
            app.on_close(self._ws_socket)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        if self._ws is not None:
            self._ws_receive(data)
            return
        try:
            self.conn.receive_data(data)
        except h11.RemoteProtocolError:
            self._close()
            return
        self._process()

    def eof_received(self) -> bool | None:
        return None

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        if not self.write_paused or self.lost:
            return
        loop = asyncio.get_running_loop()
        self._drain_waiter = loop.create_future()
        await self._drain_waiter

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- HTTP event loop --------------------------------------------------------------------

    def _process(self) -> None:
        while not self._busy and not self.lost:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._send_simple(exc.error_status_hint, b"")
                self._close()
                return
            if isinstance(event, h11.Request):
                self._request = Request(
                    method=event.method.decode(),
                    path="",
                    query="",
                    headers={k.decode().lower(): v.decode("latin-1") for k, v in event.headers},
                )
                target = event.target.decode("latin-1")
                self._request.path, _, self._request.query = target.partition("?")
                self._body = bytearray()
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY_BYTES:
                    self._send_simple(413, b"")
                    self._close()
                    return
            elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                if self._request is None:
                    return
                if event is h11.PAUSED and self.conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL:
                    return
                request, self._request = self._request, None
                request.body = bytes(self._body)
                if self._try_websocket(request):
                    return
                self._busy = True
                if self.transport is not None:
                    self.transport.pause_reading()
                task = asyncio.ensure_future(self._run(request))
                self.server.tasks.add(task)
                task.add_done_callback(self.server.tasks.discard)
                return
            elif event is h11.NEED_DATA:
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    async def _run(self, request: Request) -> None:
        stream = Stream(self)
        try:
            response = await self.server.handler(request, stream)
        except Exception as exc:  # a handler bug must not kill the connection silently
            if not stream.started:
                response = json_response(500, {"error": f"Internal error: {exc!r}"})
            else:
                self._close()
                return
        if self.lost:
            return
        if response is not None:
            self._send_response(request, response)
        if stream.close_after:
            self._close()
            return
        self._finish_cycle()

    def _send_response(self, request: Request, response: Response) -> None:
        headers = [*response.headers]
        if response.body or response.status not in (204, 304):
            headers.append(("Content-Type", response.content_type))
        headers.append(("Content-Length", str(len(response.body))))
        try:
            head = h11.Response(status_code=response.status, headers=headers, reason=_REASONS.get(response.status, b""))
            out = self.conn.send(head) or b""
            if request.method != "HEAD" and response.body:
                out += self.conn.send(h11.Data(data=response.body)) or b""
            out += self.conn.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._close()
            return
        self.write(out)

    def _send_simple(self, status: int, body: bytes) -> None:
        with contextlib.suppress(h11.LocalProtocolError):
            self.write(self.conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")])) or b"")
            self.write(self.conn.send(h11.EndOfMessage()) or b"")

    def _finish_cycle(self) -> None:
        self._busy = False
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            self._close()
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            try:
                self.conn.start_next_cycle()
            except h11.LocalProtocolError:
                self._close()
                return
            if self.transport is not None:
                self.transport.resume_reading()
            self._process()
            return
        self._close()

    # -- WebSocket ----------------------------------------------------------------------

    def _try_websocket(self, request: Request) -> bool:
        if request.header("upgrade").lower() != "websocket" or request.method != "GET":
            return False
        app = self.server.ws_router(request) if self.server.ws_router else None
        if app is None:
            return False
        ws = WSConnection(ConnectionType.SERVER)
        raw_headers = [(k.encode(), v.encode("latin-1")) for k, v in request.headers.items()]
        target = request.path + (f"?{request.query}" if request.query else "")
        ws.initiate_upgrade_connection(raw_headers, target)
        self._ws = ws
        self._ws_app = app
        assert self.transport is not None
        self._ws_socket = WebSocket(ws, self.transport, request.path)
        trailing, _ = self.conn.trailing_data
        self._ws_receive(bytes(trailing))
        return True

    def _ws_receive(self, data: bytes) -> None:
        ws, sock, app = self._ws, self._ws_socket, self._ws_app
        if ws is None or sock is None:
            return
        if data:
            try:
                ws.receive_data(data)
            except Exception:
                sock.abort()
                return
        for event in ws.events():
            if isinstance(event, WsRequest):
                offered = [p for p in event.subprotocols if app is not None and p in app.subprotocols]
                self.write(ws.send(AcceptConnection(subprotocol=offered[0] if offered else None)))
                if app is not None:
                    app.on_open(sock)
            elif isinstance(event, TextMessage):
                if app is not None and not sock.closed:
                    self._ws_text_parts.append(event.data)
                    if event.message_finished:
                        text = "".join(self._ws_text_parts)
                        self._ws_text_parts = []
                        app.on_text(sock, text)
            elif isinstance(event, Ping):
                self.write(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                with contextlib.suppress(Exception):
                    self.write(ws.send(event.response()))
                sock.closed = True
                self._close()


class HttpServer:
    """Listeners sharing one handler; tracks connections and tasks for a clean shutdown."""

    def __init__(self, handler: Handler, ws_router: WsRouter | None = None) -> None:
        self.handler = handler
        self.ws_router = ws_router
        self.connections: set[_HttpProtocol] = set()
        self.tasks: set[asyncio.Future[None]] = set()
        self._servers: list[asyncio.Server] = []

    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _HttpProtocol(self), host, port, reuse_address=True)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def close_connections(self) -> None:
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        self.close_connections()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
