"""Request and response values handed between the connection code and local handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hal0proxy.http.request_head import HeadTemplate


@dataclass(slots=True)
class HttpRequest:
    method: bytes
    target: bytes
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    http_version: bytes = b"1.1"
    peer_host: str | None = None
    # The parse of a head seen before (shared with every request with that head: its content type, a
    # memo for what is derived from the head alone); None for a head parsed in full.
    template: HeadTemplate | None = None

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def peer_is_loopback(self) -> bool:
        host = self.peer_host or ""
        return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


@dataclass(slots=True)
class FullResponse:
    """A complete serialised response (head and body in one buffer)."""

    data: bytes


@dataclass(slots=True)
class StreamResponse:
    """A chunked response produced by an async iterator (SSE for admin event streams)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]
    on_close: Callable[[], None] | None = None
    extra: dict[str, str] = field(default_factory=dict)


LocalResponse = FullResponse | StreamResponse
LocalHandler = Callable[[HttpRequest], Awaitable[LocalResponse]]
