"""A small async HTTP/1.1 client on h11 over asyncio streams.

It exists for control-plane calls (lemond's ``/v1/health``, ``/v1/load`` …), not
for the data plane: one TCP connection per call, ``Connection: close``. Control
calls are rare (a heartbeat every 30 s, a load now and then), so a pool would add
state that can go stale (a lemond restart) for no measurable gain, and a fresh
connection can never be a half-dead keep-alive socket.

Errors are reported as :class:`HTTPClientError` subclasses so that callers can map
them once: :class:`ConnectFailed` (nothing was sent), :class:`RequestTimeout`
(the deadline passed; the request may have been processed), and
:class:`ProtocolFailure` (the peer broke HTTP or closed early).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
import orjson

from hal0proxy.http.problems import HttpProblem, RemoteProblem
from hal0proxy.http.sse import SSEEvent, SSEParser

__all__ = [
    "ConnectFailed",
    "HTTPClientError",
    "HTTPStatusError",
    "ProtocolFailure",
    "RequestTimeout",
    "Response",
    "Target",
    "parse_target",
    "request",
    "stream_sse",
]

READ_CHUNK = 64 * 1024
# Control responses are small JSON documents; /v1/models with show_all is the largest
# (a few hundred kB). A bigger body means something is wrong.
DEFAULT_MAX_BODY = 16 * 1024 * 1024

HeaderPairs = Iterable[tuple[str, str]]


class HTTPClientError(HttpProblem):
    """Base class of every error this client raises (under the one root, ``HttpProblem``)."""

    status_hint = 502
    code = "dispatch.upstream_unavailable"


class ConnectFailed(HTTPClientError):
    """The TCP connection could not be opened (refused, unreachable, DNS)."""


class RequestTimeout(HTTPClientError):
    """The call did not finish before its deadline."""

    status_hint = 504
    code = "upstream.timeout"


class ProtocolFailure(HTTPClientError, RemoteProblem):
    """The peer closed early or sent something that is not HTTP/1.1."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k == lname:
                return v
        return None

    def json(self) -> Any:
        """The body parsed with orjson (raises ``orjson.JSONDecodeError``)."""
        return orjson.loads(self.body)


class HTTPStatusError(HTTPClientError):
    """A streaming call got a non-2xx answer; the full response is attached."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    path: str

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


def parse_target(url: str) -> Target:
    """Split ``http://host:port/path?q`` (or ``(host, port, path)`` in URL form).

    Only plain ``http`` is supported: lemond and its children listen on loopback.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", ""):
        raise ValueError(f"unsupported URL scheme: {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(parts.hostname, parts.port or 80, path)


def _build_head(
    method: str, target: Target, headers: HeaderPairs, body: bytes, content_type: str | None
) -> h11.Request:
    hdrs: list[tuple[str, str]] = [("Host", target.authority), ("Connection", "close")]
    names = {"host", "connection", "content-length"}
    for k, v in headers:
        if k.lower() not in names:
            hdrs.append((k, v))
    if content_type is not None and not any(k.lower() == "content-type" for k, _ in hdrs):
        hdrs.append(("Content-Type", content_type))
    if body or method.upper() in ("POST", "PUT", "PATCH"):
        hdrs.append(("Content-Length", str(len(body))))
    return h11.Request(method=method.upper(), target=target.path, headers=hdrs)


class _Exchange:
    """One request/response on one connection, driven by h11."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(h11.CLIENT)

    async def send(self, head: h11.Request, body: bytes) -> None:
        data = self.conn.send(head) or b""
        if body:
            data += self.conn.send(h11.Data(data=body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self) -> Any:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolFailure(f"bad HTTP from peer: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event
            chunk = await self.reader.read(READ_CHUNK)
            try:
                self.conn.receive_data(chunk)
            except h11.RemoteProtocolError as exc:
                raise ProtocolFailure(f"bad HTTP from peer: {exc}") from exc

    async def read_head(self) -> h11.Response:
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ProtocolFailure("connection closed before a response")
            raise ProtocolFailure(f"unexpected event {type(event).__name__}")

    async def read_body(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise ProtocolFailure(f"response body larger than {limit} bytes")
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(parts)
            elif isinstance(event, h11.ConnectionClosed):
                raise ProtocolFailure("connection closed mid-body")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


def _encode(json: Any, body: bytes) -> tuple[bytes, str | None]:
    if json is not None:
        return orjson.dumps(json), "application/json"
    return body, None


async def _open(target: Target) -> _Exchange:
    try:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    except OSError as exc:
        raise ConnectFailed(f"connect to {target.authority} failed: {exc}") from exc
    return _Exchange(reader, writer)


def _response(head: h11.Response, body: bytes) -> Response:
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers)
    return Response(head.status_code, headers, body)


async def request(
    method: str,
    url: str,
    *,
    json: Any = None,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    timeout: float,
    max_body: int = DEFAULT_MAX_BODY,
) -> Response:
    """Send one request and return the whole response.

    ``timeout`` bounds the entire call (connect, send, head and body). Any status is
    returned as a :class:`Response`; only transport failures raise.
    """
    target = parse_target(url)
    payload, ctype = _encode(json, body)
    head = _build_head(method, target, headers, payload, ctype)
    exchange: _Exchange | None = None
    try:
        async with asyncio.timeout(timeout):
            exchange = await _open(target)
            await exchange.send(head, payload)
            resp = await exchange.read_head()
            data = b"" if method.upper() == "HEAD" else await exchange.read_body(max_body)
            return _response(resp, data)
    except TimeoutError as exc:
        raise RequestTimeout(f"{method} {url} timed out after {timeout}s") from exc
    except (ConnectionError, OSError) as exc:
        if exchange is None:
            raise ConnectFailed(f"connect to {target.authority} failed: {exc}") from exc
        raise ProtocolFailure(f"{method} {url}: connection lost: {exc}") from exc
    finally:
        if exchange is not None:
            exchange.close()


async def stream_sse(
    method: str,
    url: str,
    *,
    json: Any = None,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    timeout: float,
    idle_timeout: float | None = None,
) -> AsyncIterator[SSEEvent]:
    """Send a request and yield the SSE events of a 2xx response as they arrive.

    ``timeout`` bounds connect + response head; ``idle_timeout`` (default: the same)
    bounds each wait for more body bytes, so a long download with steady progress is
    never cut off. A non-2xx answer raises :class:`HTTPStatusError` with the body.
    """
    target = parse_target(url)
    payload, ctype = _encode(json, body)
    hdrs = [*headers, ("Accept", "text/event-stream")]
    head = _build_head(method, target, hdrs, payload, ctype)
    idle = timeout if idle_timeout is None else idle_timeout
    exchange: _Exchange | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                exchange = await _open(target)
                await exchange.send(head, payload)
                resp = await exchange.read_head()
                if not 200 <= resp.status_code < 300:
                    raise HTTPStatusError(_response(resp, await exchange.read_body(DEFAULT_MAX_BODY)))
        except TimeoutError as exc:
            raise RequestTimeout(f"{method} {url}: no response head after {timeout}s") from exc
        parser = SSEParser()
        while True:
            try:
                async with asyncio.timeout(idle):
                    event = await exchange.next_event()
            except TimeoutError as exc:
                raise RequestTimeout(f"{method} {url}: stream idle for {idle}s") from exc
            if isinstance(event, h11.Data):
                for sse in parser.feed(bytes(event.data)):
                    yield sse
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                # A final event without its blank line is dropped, as the SSE spec says.
                return
    except (ConnectionError, OSError) as exc:
        if exchange is None:
            raise ConnectFailed(f"connect to {target.authority} failed: {exc}") from exc
        raise ProtocolFailure(f"{method} {url}: connection lost: {exc}") from exc
    finally:
        if exchange is not None:
            exchange.close()
