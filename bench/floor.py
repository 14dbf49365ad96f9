"""The floor of a relay in Python: raw uvloop byte splicing, no HTTP parsing at all.

    python -m bench.floor --route LISTEN_PORT=CHILD_PORT [--route ...]

Every client connection gets its own connection to the child, and the bytes are copied
both ways as they arrive (``transport.write`` of the very object read). No request is
parsed, routed, re-framed, validated or counted: it cannot answer an error, enforce a
limit or pool a connection, so it is not a proxy. It shows what uvloop alone costs per
request and per event on this machine, next to nginx and hal0proxy in ``bench.relay``.

Backpressure: a side whose peer's write buffer is full stops reading until it drains,
so a slow reader cannot make the floor buffer without bound (the same rule the proxy
follows, and part of any honest floor).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys

import uvloop

__all__ = ["main"]


class _Side(asyncio.Protocol):
    """One end of a spliced pair; ``peer`` is the other end once it exists."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []  # bytes read before the peer connected
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
            return
        peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.closed:
            peer.transport.close()

    # the peer's write buffer filled or drained: stop or resume reading this side
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer.closed:
            self.peer.transport.resume_reading()


class _Client(_Side):
    def __init__(self, child_port: int) -> None:
        super().__init__()
        self.child_port = child_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        child = _Side()
        child.peer = self
        self.peer = child
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: child, "127.0.0.1", self.child_port)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        assert child.transport is not None
        if self.closed:
            child.transport.close()
            return
        for data in self.pending:
            child.transport.write(data)
        self.pending = []


async def _serve(routes: list[tuple[int, int]]) -> None:
    loop = asyncio.get_running_loop()
    for listen, child_port in routes:
        await loop.create_server(functools.partial(_Client, child_port), "127.0.0.1", listen, backlog=1024)
    await asyncio.Event().wait()


def _route(text: str) -> tuple[int, int]:
    listen, _, child = text.partition("=")
    return int(listen), int(child)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--route", action="append", type=_route, required=True, help="LISTEN_PORT=CHILD_PORT")
    args = parser.parse_args(argv)
    uvloop.run(_serve(args.route))
    return 0


if __name__ == "__main__":
    sys.exit(main())
