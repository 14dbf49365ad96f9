"""Composition root: build the objects, start the loop, shut down in phases."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from hal0proxy.api.admin import AdminApi
from hal0proxy.config import (
    LISTEN_RULE,
    URL_RULE,
    Config,
    ConfigError,
    SlotConfig,
    load_config,
    parse_lemond_url,
    parse_listen,
    problem_line,
)
from hal0proxy.control.controller import ControlHooks, Controller
from hal0proxy.http.errors import ProxyError, json_response, simple_response
from hal0proxy.http.messages import FullResponse, HttpRequest, LocalResponse
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.metrics import Metrics
from hal0proxy.proxy.context import ProxyContext
from hal0proxy.proxy.hangwatch import HangSettings, HangWatch
from hal0proxy.proxy.server import install_event_loop_policy, start_listener
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import UpstreamPool
from hal0proxy.reload import plan_reload
from hal0proxy.routing.contract import Router, StaticRouter

log = logging.getLogger("hal0proxy")

# Descriptors kept free beyond two per client connection (client + child): the listener,
# lemond's HTTP and WebSocket connections, log files, and room for the children's pools.
_FD_RESERVE = 64


def fit_connection_cap(cap: int) -> int:
    """Raise RLIMIT_NOFILE so ``cap`` connections fit; if it cannot, lower the cap instead.

    Past the descriptor limit accept() fails and a client only sees a reset, with nothing
    logged; a cap below the limit turns that into a counted, logged 503.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * cap + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < want:
        fitted = max(1, (soft - _FD_RESERVE) // 2)
        log.warning("descriptor limit %d fits %d client connections, not %d: capping there", soft, fitted, cap)
        return fitted
    return cap


def settings_from(config: Config) -> ProxySettings:
    limits = config.limits
    return ProxySettings(
        max_body_bytes=limits.max_body_bytes,
        max_header_bytes=limits.max_header_bytes,
        request_timeout_s=limits.request_timeout_s,
        keepalive_timeout_s=limits.keepalive_timeout_s,
        upstream_connect_timeout_s=limits.upstream_connect_timeout_s,
        upstream_first_byte_timeout_s=limits.upstream_first_byte_timeout_s,
        pipeline_buffer_bytes=limits.pipeline_buffer_bytes,
        max_connections=fit_connection_cap(limits.max_connections),
        forward_conversation_id=config.forward_conversation_id,
        api_keys=config.api_keys,
    )


def hang_settings_from(config: Config) -> HangSettings:
    policy = config.policy
    return HangSettings(
        hang_after_s=policy.hang_after_s,
        probe_interval_s=policy.hang_probe_interval_s,
        probe_timeout_s=policy.hang_probe_timeout_s,
        probe_failures=policy.hang_probe_failures,
    )


def host_port(host: str, port: int) -> str:
    """``host:port`` as a URL authority: an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ListenError(Exception):
    """The listening socket could not be opened; the message is the one line to print."""


def _listen_reason(exc: OSError) -> str:
    """``address already in use`` rather than uvloop's or asyncio's long wording."""
    # A name that does not resolve carries a resolver code, not an errno: keep its own text.
    code = None if isinstance(exc, socket.gaierror) else exc.errno
    reason = os.strerror(code) if code else (exc.strerror or str(exc))
    return reason[:1].lower() + reason[1:]


def _install_signal_handlers(on_reload: Callable[[], None] | None = None) -> asyncio.Event:
    """Installed before the proxy starts, so a SIGTERM during start-up is kept, not lost."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_reload is not None:
        loop.add_signal_handler(signal.SIGHUP, on_reload)
    return stop


class Proxy:
    """The running system: listener, data plane, control coroutine, admin API, metrics."""

    def __init__(self, config: Config, static_routes: dict[str, int] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.controller: Controller | None = None
        router: Router
        if static_routes:
            router = StaticRouter(static_routes)
        else:
            adapter = LemondAdapter(
                config.lemond_url,
                api_key=os.environ.get("LEMONADE_API_KEY") or None,
                on_route_stable=self.metrics.route_stable,
            )
            self.controller = Controller(config, adapter)
            self.controller.hooks = ControlHooks(
                load_measured=self.metrics.observe_load,
                recovered=self.metrics.observe_recovery,
                evicted=self.metrics.count_eviction,
            )
            router = self.controller
        settings = settings_from(config)
        self.ctx = ProxyContext(
            router=router,
            pool=UpstreamPool(connect_timeout_s=settings.upstream_connect_timeout_s),
            settings=settings,
            observe=self.metrics.observe_request,
        )
        self.hang_watch = HangWatch(self.ctx, hang_settings_from(config))
        if self.controller is not None:
            self.ctx.local = AdminApi(self.controller, config.admin_token, metrics=self._render_metrics)
            self.metrics.bind(self.controller.stats_snapshot, self.ctx.stats)
        else:
            self.ctx.local = self._static_ops
            self.metrics.bind(None, self.ctx.stats)
        self.server: asyncio.Server | None = None

    async def _static_ops(self, req: HttpRequest) -> LocalResponse:
        """With static routes there is no control plane: only liveness and metrics."""
        if req.path == "/healthz":
            return FullResponse(json_response(200, {"status": "ok"}))
        if req.path == "/metrics":
            content_type, body = self.metrics.render()
            return FullResponse(simple_response(200, body, content_type=content_type))
        raise ProxyError(404, "resource.not_found", f"no such endpoint: {req.path}", {"path": req.path})

    def _render_metrics(self) -> tuple[bytes, bytes]:
        return self.metrics.render()

    async def start(self) -> None:
        """Listen first, so a port that cannot be had stops the start before anything else runs.

        Raises:
            ListenError: the socket could not be bound (in use, permission denied, no such address).
        """
        host, port = self.config.listen
        try:
            self.server = await start_listener(self.ctx, host, port)
        except OSError as exc:
            raise ListenError(f"cannot listen on {host_port(host, port)}: {_listen_reason(exc)}") from None
        self.hang_watch.start()
        if self.controller is not None:
            await self.controller.start()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def urls(self) -> list[str]:
        """Where the proxy listens, with the real port (the kernel's choice for port 0). A name
        bound to several addresses with port 0 gets a port per address: each is named then."""
        assert self.server is not None
        host, _ = self.config.listen
        bound = [sock.getsockname() for sock in self.server.sockets]
        if len({addr[1] for addr in bound}) == 1:
            return [f"http://{host_port(host, int(bound[0][1]))}"]
        return [f"http://{host_port(str(addr[0]), int(addr[1]))}" for addr in bound]

    def reload(self, loaded: Config) -> None:
        """SIGHUP: apply what can change while running; name what needs a restart."""
        plan = plan_reload(self.config, loaded)
        self.config = plan.config
        self.ctx.settings = settings_from(plan.config)
        self.ctx.pool.connect_timeout_s = self.ctx.settings.upstream_connect_timeout_s
        self.hang_watch.update(hang_settings_from(plan.config))
        if self.controller is not None:
            self.controller.config = plan.config
            self.controller.registry.defaults.idle_timeout_s = plan.config.policy.idle_timeout_s
            for cfg in plan.config.slots:
                slot = self.controller.registry.get(cfg.name)
                if slot is not None and slot.config != cfg:
                    slot.config = cfg
        log.info("configuration reloaded; applied: %s", ", ".join(plan.applied) or "nothing changed")
        if plan.needs_restart:
            log.warning("configuration reload: these changes need a restart: %s", ", ".join(plan.needs_restart))

    async def stop(self, grace_s: float | None = None) -> None:
        """Phased shutdown: stop accepting; end event subscriptions (final event); let responses
        in flight finish within the grace; then end the rest (a final stream-interrupted event
        where the stream allows it), stop the control plane and drop idle child connections."""
        grace = self.config.limits.shutdown_grace_s if grace_s is None else grace_s
        if self.server is not None:
            self.server.close()
        self.ctx.draining = True
        for conn in list(self.ctx.connections):
            conn.close_when_idle()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.ctx.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.ctx.connections):
            conn.end_now()
        await asyncio.sleep(0)  # let cancelled event streams write their final event
        for conn in list(self.ctx.connections):
            conn.close_when_idle()
        await self.hang_watch.stop()
        if self.controller is not None:
            await self.controller.stop()
        self.ctx.pool.close()


async def serve(
    config: Config,
    static_routes: dict[str, int] | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> None:
    proxy = Proxy(config, static_routes)

    def on_reload() -> None:
        assert reload_config is not None
        try:
            loaded = reload_config()
        except ConfigError as exc:
            log.error("configuration reload refused, the running configuration stays:\n%s", exc)
            return
        proxy.reload(loaded)

    stop = _install_signal_handlers(on_reload if reload_config is not None else None)
    try:
        await proxy.start()
        target = f"static routes {static_routes}" if static_routes else f"lemond at {config.lemond_url}"
        print(f"hal0proxy listening on {', '.join(proxy.urls())} in front of {target}", flush=True)
        await stop.wait()
    finally:
        await proxy.stop()


def _config_from_args(args: argparse.Namespace) -> Config:
    """The file's configuration with ``--listen`` and ``--lemond`` on top, checked like the file's keys.

    Raises:
        ConfigError: the file or a flag is invalid (one line per problem).
    """
    config = load_config(args.config) if args.config else Config()
    problems = []
    if args.listen is not None:
        listen = parse_listen(args.listen)
        if listen is None:
            problems.append(problem_line("--listen", LISTEN_RULE, args.listen))
        else:
            config = dataclasses.replace(config, listen=listen)
    if args.lemond is not None:
        lemond_url = parse_lemond_url(args.lemond)
        if lemond_url is None:
            problems.append(problem_line("--lemond", URL_RULE, args.lemond))
        else:
            config = dataclasses.replace(config, lemond_url=lemond_url)
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def _setup_logging() -> None:
    level = os.environ.get("HAL0PROXY_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_serve(args: argparse.Namespace) -> int:
    _setup_logging()
    try:
        config = _config_from_args(args)
    except ConfigError as exc:
        print(f"hal0proxy: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    install_event_loop_policy()
    reload_config = (lambda: _config_from_args(args)) if args.config else None
    try:
        asyncio.run(serve(config, dict(args.static_route) or None, reload_config))
    except ListenError as exc:  # a valid configuration that cannot run here: exit 1, not 2
        print(f"hal0proxy: {exc}", file=sys.stderr)
        return 1
    return 0


DEMO_SLOTS = (
    SlotConfig(name="primary", model="Qwen3-0.6B-GGUF", type="llm", warm=True, idle_timeout_s=600),
    SlotConfig(name="chat", model="Qwen3-4B-GGUF", type="llm"),
    SlotConfig(name="embed", model="nomic-embed-text-v1-GGUF", type="embedding", warm=True),
    SlotConfig(name="rerank", model="bge-reranker-v2-m3-GGUF", type="reranking"),
)


def _wait_http(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return True
        time.sleep(0.1)
    return False


def run_demo(args: argparse.Namespace) -> int:
    _setup_logging()
    host, port = args.listen
    emu_port = args.emulator_port
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hal0proxy.emulator",
            "--port",
            str(emu_port),
            "--quiet",
            "--unload-pause-seconds",
            "0.5",
        ],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        if not _wait_http(f"http://127.0.0.1:{emu_port}/live", 20):
            print("hal0proxy demo: the lemond emulator did not start", file=sys.stderr)
            return 1
        config = Config(listen=(host, port), lemond_url=f"http://127.0.0.1:{emu_port}", slots=DEMO_SLOTS)
        base = f"http://{host_port(host, port)}"
        print(
            f"lemond emulator on http://127.0.0.1:{emu_port} (fake llama-server children)\n"
            f"try:\n"
            f"  curl -N {base}/v1/chat/completions -d "
            '\'{"model":"primary","stream":true,"messages":[{"role":"user","content":"hi"}]}\'\n'
            f"  curl {base}/api/slots\n"
            f"  curl -N {base}/api/v1/adapter/events\n"
            f"  curl {base}/metrics",
            flush=True,
        )
        install_event_loop_policy()
        try:
            asyncio.run(serve(config))
        except ListenError as exc:
            print(f"hal0proxy demo: {exc}", file=sys.stderr)
            return 1
        return 0
    finally:
        emulator.terminate()
        try:
            emulator.wait(10)
        except subprocess.TimeoutExpired:
            emulator.kill()


def run_check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    print(f"{path}: OK ({len(config.slots)} slot(s), listen {host_port(*config.listen)})")
    return 0
