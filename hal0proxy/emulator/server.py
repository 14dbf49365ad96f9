"""Composition of the emulator: listeners, WebSocket routing, banner, watchdog, restart, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from hal0proxy.emulator import pool
from hal0proxy.emulator.children import port_is_free
from hal0proxy.emulator.config import EmulatorConfig
from hal0proxy.emulator.faults import FaultApi
from hal0proxy.emulator.handlers import LemondApi
from hal0proxy.emulator.httpserver import HttpServer, Request, Response, Stream, WebSocket, WsApp, json_response
from hal0proxy.emulator.launch import LaunchPlan
from hal0proxy.emulator.logs import LogHub, stdout_echo
from hal0proxy.emulator.logstream import WS_PATHS_ALL, WS_PATHS_LEGACY, LogStreamApp
from hal0proxy.emulator.residency import EvictionEngine, EvictionSettings
from hal0proxy.emulator.router import FaultPlan, Router
from hal0proxy.emulator.views import not_found_body

__all__ = ["Emulator"]


class Emulator:
    def __init__(self, config: EmulatorConfig, plan: LaunchPlan | None = None) -> None:
        self.config = config
        self.logs = LogHub(level=config.log_level, echo=stdout_echo() if config.echo_logs else None)
        self.router = Router(config, self.logs, plan or LaunchPlan())
        self.sockets: set[WebSocket] = set()
        self.faults = FaultApi(self.router, self.sockets, self.restart)
        self.api = LemondApi(self.router, self.logs, lambda: self.websocket_port, self.faults.handle)
        self.main_server = HttpServer(self.api.handle, self._main_ws_route)
        self.ws_server = HttpServer(self._ws_port_http, self._ws_port_route)
        self.port = config.port
        self.websocket_port: int | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._eviction: asyncio.Future[None] | None = None

    # -- WebSocket routing -------------------------------------------------------------------

    def _main_ws_route(self, request: Request) -> WsApp | None:
        release = self.config.release
        if self.config.websocket and release.ws_on_main_port and request.path in WS_PATHS_ALL:
            return LogStreamApp(self.logs, self.sockets)
        return None

    def _ws_port_route(self, request: Request) -> WsApp | None:
        paths = WS_PATHS_ALL if self.config.release.ws_on_main_port else WS_PATHS_LEGACY
        if request.path in paths:
            return LogStreamApp(self.logs, self.sockets)
        return None

    async def _ws_port_http(self, request: Request, stream: Stream) -> Response | None:
        return json_response(404, not_found_body(request.path))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        if config.websocket:
            self.websocket_port = pool.choose_port(
                config.websocket_port_base, lambda p: port_is_free(p, config.bind_host)
            )
        try:
            self.port = await self.main_server.listen(config.bind_host, config.port)
        except OSError:
            self.logs.error(
                "Server",
                f"Port {config.port} on {config.bind_host} is already in use. Another Lemonade server (lemond) "
                "is likely already running on this port. This instance will now exit.",
            )
            raise
        if self.websocket_port is not None:
            self.websocket_port = await self.ws_server.listen(config.bind_host, self.websocket_port)
        self.banner()
        self._watchdog = asyncio.ensure_future(self.router.run_watchdog())
        if config.release.has_residency_controls:
            settings = EvictionSettings(
                auto_evict=config.auto_evict,
                evict_idle_timeout_s=config.evict_idle_timeout_s,
                downsize_idle_timeout_s=config.downsize_idle_timeout_s,
                interval_s=config.eviction_interval_s,
            )
            self._eviction = asyncio.ensure_future(EvictionEngine(self.router, settings).run())

    def banner(self) -> None:
        """The startup lines of log_lines.txt §1."""
        config, log = self.config, self.logs
        log.info("main", "Starting Lemonade Server...")
        log.info("main", f"  Version: {config.release.version}")
        log.info("main", f"  Cache dir: {config.cache_dir}")
        log.info("main", f"  Config dir: {config.cache_dir}")
        log.info("main", f"  Port: {self.port}")
        log.info("main", f"  Host: {config.host}")
        log.info("main", f"  Log level: {config.log_level}")
        log.info("main", "  Telemetry: disabled")
        if self.websocket_port is not None:
            log.info("WebSocket", f"Configured port: {self.websocket_port}")
        log.info("Server", f"Starting HTTP server on {config.host}:{self.port}")
        log.info("Server", f"Host resolution: IPv4={config.bind_host}, IPv6=::1")
        if self.websocket_port is not None:
            log.info("WebSocket", f"Server started on port {self.websocket_port}")
            log.info("Server", f"WebSocket server started on port {self.websocket_port}")
        log.info("Server", f"Binding IPv4 HTTP server to {config.bind_host}:{self.port}...")
        log.info("Server", f"IPv4 HTTP server listening on {config.bind_host}:{self.port}")
        log.info("Server", "Unable to broadcast my existance please use a RFC1918 IPv4,")
        log.info("Server", "or hostname that resolves to RFC1918 IPv4.")

    async def restart(self) -> None:
        """What a client sees when lemond restarts: sockets drop, children die, seq restarts."""
        for ws in list(self.sockets):
            ws.abort()
        self.sockets.clear()
        router = self.router
        router.kill_all_now()
        router.faults = FaultPlan()
        router.catalog = {m.name: m for m in self.config.catalog}
        router.downloaded = {m.name for m in self.config.catalog if m.downloaded}
        router.max_loaded = self.config.max_loaded_models
        router.load_requests.clear()
        router.spawns.clear()
        self.logs.reset()
        self.banner()

    async def shutdown(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._eviction is not None:
            self._eviction.cancel()
        for ws in list(self.sockets):
            ws.abort()
        children = [b.child for b in self.router.backends.values()]
        # Stop every child in parallel, with a short grace: shutting down must not take 5 s per model.
        await asyncio.gather(*(child.terminate(grace=2.0) for child in children), return_exceptions=True)
        self.router.backends.clear()
        await self.main_server.close()
        await self.ws_server.close()

    async def run(self) -> int:
        """Serve until SIGTERM or SIGINT, then stop every child."""
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def on_signal() -> None:
            if not stop.done():
                stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            await self.start()
        except OSError:
            return 1
        try:
            await stop
        finally:
            with contextlib.suppress(Exception):
                await self.shutdown()
        return 0
