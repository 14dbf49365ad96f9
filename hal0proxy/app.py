"""Composition root: build the objects, start the loop, shut down in phases."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.routing import StaticRouter
from hal0proxy.proxy.server import install_event_loop_policy, start_listener
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import UpstreamPool


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_static(host: str, port: int, table: dict[str, int], settings: ProxySettings) -> None:
    ctx = ProxyContext(router=StaticRouter(table), pool=UpstreamPool(), settings=settings)
    server = await start_listener(ctx, host, port)
    print(f"hal0proxy listening on http://{host}:{port} (static routes: {table})", flush=True)
    try:
        await _wait_for_signal()
    finally:
        server.close()
        ctx.pool.close()


def run_serve(args: argparse.Namespace) -> int:
    loop_name = install_event_loop_policy()
    host, port = args.listen or ("127.0.0.1", 8080)
    if args.static_route:
        print(f"event loop: {loop_name}", flush=True)
        asyncio.run(serve_static(host, port, dict(args.static_route), ProxySettings()))
        return 0
    print("serving in front of lemond is not available yet; use --static-route", file=sys.stderr)
    return 2


def run_demo(args: argparse.Namespace) -> int:
    print("demo mode is not available yet", file=sys.stderr)
    return 2


def run_check_config(path: str) -> int:
    print("configuration files are not supported yet", file=sys.stderr)
    return 2
