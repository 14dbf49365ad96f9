"""Tiny loopback servers for the lemond adapter's unit tests (HTTP and WebSocket).

They exist so that the client code can be tested over real sockets without the full
emulator: canned HTTP answers per path, and a WebSocket log server whose frames the
test scripts one by one (entry before snapshot, drops, restarts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import h11
import orjson
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, RejectConnection, Request, TextMessage

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lemond"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, bytes, str]  # status, body, content type
Handler = Callable[[Seen], Awaitable[Reply] | Reply]


@dataclass
class FakeHTTP:
    """Answers from ``routes[(method, path)]``; 404 otherwise. Records every request."""

    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> FakeHTTP:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            req: h11.Request | None = None
            body = b""
            while True:
                ev = conn.next_event()
                if ev is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                    continue
                if isinstance(ev, h11.Request):
                    req = ev
                elif isinstance(ev, h11.Data):
                    body += ev.data
                elif isinstance(ev, h11.EndOfMessage | h11.ConnectionClosed):
                    break
            assert req is not None
            seen = Seen(
                req.method.decode(),
                req.target.decode(),
                {k.decode().lower(): v.decode() for k, v in req.headers},
                body,
            )
            self.seen.append(seen)
            handler = self.routes.get((seen.method, seen.path.split("?")[0]))
            if handler is None:
                status, payload, ctype = 404, b'{"error":"nope"}', "application/json"
            else:
                result = handler(seen)
                status, payload, ctype = await result if asyncio.iscoroutine(result) else result  # type: ignore[misc]
            head = h11.Response(
                status_code=status,
                headers=[("Content-Type", ctype), ("Content-Length", str(len(payload)))],
            )
            writer.write(conn.send(head) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
            await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()


def json_reply(status: int, body: bytes) -> Handler:
    return lambda _seen: (status, body, "application/json")


class FakeLogServer:
    """A scripted WebSocket log server. Each accepted connection becomes a ``WSPeer``.

    ``reject_status`` makes the upgrade fail with that HTTP status (a v10.1-v10.7 main port).
    """

    def __init__(self, reject_status: int | None = None) -> None:
        self.reject_status = reject_status
        self.peers: asyncio.Queue[WSPeer] = asyncio.Queue()
        self.upgrades: list[dict[str, str]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> FakeLogServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        while not self.peers.empty():
            self.peers.get_nowait().abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while True:
            data = await reader.read(65536)
            if not data:
                writer.close()
                return
            ws.receive_data(data)
            for ev in ws.events():
                if isinstance(ev, Request):
                    self.upgrades.append({k.decode().lower(): v.decode() for k, v in ev.extra_headers})
                    self.upgrades[-1]["_subprotocols"] = ",".join(ev.subprotocols)
                    if self.reject_status is not None:
                        writer.write(ws.send(RejectConnection(status_code=self.reject_status)))
                        await writer.drain()
                        writer.close()
                        return
                    proto = "lemonade-realtime" if "lemonade-realtime" in ev.subprotocols else None
                    writer.write(ws.send(AcceptConnection(subprotocol=proto)))
                    await writer.drain()
                    await self.peers.put(WSPeer(ws, reader, writer))
                    return


class WSPeer:
    """The server side of one accepted log-stream connection."""

    def __init__(self, ws: WSConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self.pings = 0

    async def recv_json(self, timeout: float = 5.0) -> dict[str, object]:
        async with asyncio.timeout(timeout):
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("client closed")
                self.ws.receive_data(data)
                for ev in self.ws.events():
                    if isinstance(ev, TextMessage):
                        doc = orjson.loads(ev.data)
                        assert isinstance(doc, dict)
                        return doc
                    if isinstance(ev, Ping):
                        self.pings += 1
                        self.writer.write(self.ws.send(ev.response()))
                    if isinstance(ev, CloseConnection):
                        raise ConnectionError("client sent close")

    async def send(self, doc: object) -> None:
        self.writer.write(self.ws.send(TextMessage(data=orjson.dumps(doc).decode())))
        await self.writer.drain()

    async def snapshot(self, entries: list[tuple[int, str]]) -> None:
        await self.send({"type": "logs.snapshot", "entries": [entry(s, ln) for s, ln in entries]})

    async def entry(self, seq: int, line: str) -> None:
        await self.send({"type": "logs.entry", "entry": entry(seq, line)})

    def abort(self) -> None:
        self.writer.transport.abort()


def entry(seq: int, line: str) -> dict[str, object]:
    return {"seq": seq, "line": line, "severity": "Info", "tag": "Router", "timestamp": "2026-08-22 14:00:00.000"}
