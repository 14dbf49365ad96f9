"""Flow control of one client connection, both directions, in one place (uvicorn's shape).

- **Reading** (client → proxy): the connection pauses reading from a client whose pipelined
  input piles up, or who does not read its answers; ``pause_reading``/``resume_reading`` are
  idempotent, so callers state what they want without tracking what was done before.
- **Writing** (proxy → client): the transport reports its write buffer crossing the high and
  low water marks (``pause_writing``/``resume_writing``). While it is above, the source of the
  bytes is paused too: the child connection relaying the response stops reading (so TCP
  pushes back on the child) and a local event stream waits in ``drain``.

No I/O of its own: it only calls the transport and the source it is given.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

__all__ = ["FlowControl", "Pausable", "ReadPausable"]


class ReadPausable(Protocol):
    """What reading can be paused on: a transport."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class Pausable(Protocol):
    """A source of response bytes: the child connection relaying the response."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class FlowControl:
    __slots__ = ("_transport", "_writable", "read_paused", "write_paused")

    def __init__(self, transport: ReadPausable | None = None) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        # Created on first use: only local event streams wait for the client (``drain``).
        self._writable: asyncio.Event | None = None

    def bind(self, transport: ReadPausable) -> None:
        self._transport = transport

    # -- reading: client -> proxy ---------------------------------------------------------
    def pause_reading(self) -> None:
        if not self.read_paused and self._transport is not None:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self._transport is not None:
            self.read_paused = False
            self._transport.resume_reading()

    def set_reading(self, hold: bool) -> None:
        """Pause or resume reading to match ``hold``; nothing happens when it already does."""
        if hold:
            self.pause_reading()
        else:
            self.resume_reading()

    # -- writing: proxy -> client ---------------------------------------------------------
    def pause_writing(self, source: Pausable | None = None) -> None:
        """The client's write buffer is above its high-water mark: hold the source of bytes."""
        self.write_paused = True
        if source is not None:
            source.pause_reading()
        if self._writable is not None:
            self._writable.clear()

    def resume_writing(self, source: Pausable | None = None) -> None:
        self.write_paused = False
        if source is not None:
            source.resume_reading()
        if self._writable is not None:
            self._writable.set()

    async def drain(self) -> None:
        """Return once the client's write buffer is below its low-water mark (or it is gone)."""
        if not self.write_paused:
            return
        if self._writable is None:
            self._writable = asyncio.Event()
        await self._writable.wait()

    def release(self) -> None:
        """The connection is gone: wake whatever waits in ``drain`` (it then sees the close)."""
        self.write_paused = False
        if self._writable is not None:
            self._writable.set()
