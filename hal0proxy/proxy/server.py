"""Start the data-plane listener."""

from __future__ import annotations

import asyncio
import socket

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.downstream import ClientConnection


async def start_listener(ctx: ProxyContext, host: str, port: int) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ClientConnection(ctx), host, port, backlog=4096, reuse_address=True)
    for sock in server.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server


def install_event_loop_policy() -> str:
    """Use uvloop when it is importable; return the loop implementation's name."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency, but stay usable without it
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
