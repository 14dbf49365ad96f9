"""``hal0proxy emulate`` / ``python -m hal0proxy.emulator``: run the lemond emulator."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hal0proxy.emulator.catalog import DEFAULT_CATALOG, load_catalog
from hal0proxy.emulator.config import SUPPORTED_VERSIONS, EmulatorConfig, Release
from hal0proxy.emulator.launch import LaunchPlan
from hal0proxy.emulator.server import Emulator

__all__ = ["build_parser", "config_from_args", "main"]


def _port(value: str) -> int:
    """A TCP port 1-65535: a larger number would be cut to its low 16 bits by the socket layer."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port 1-65535 (got {value!r})")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hal0proxy emulate", description="A lemond emulator with real child processes.")
    p.add_argument("--host", default="localhost")
    p.add_argument("--port", type=_port, default=13305)
    p.add_argument("--child-port-base", type=_port, default=8001)
    p.add_argument("--max-loaded-models", type=int, default=1, help="per model type; -1 = unlimited")
    p.add_argument("--catalog", type=Path, default=None, help="models file (JSON or .toml)")
    p.add_argument("--children", choices=("fake", "llama-server"), default="fake")
    p.add_argument("--llama-server", type=Path, default=None, help="real binary (default: built on demand)")
    p.add_argument("--lemond-version", choices=SUPPORTED_VERSIONS, default="11.7")
    p.add_argument("--no-websocket", action="store_true", help="no WebSocket server at all")
    p.add_argument("--websocket-port-base", type=_port, default=9000)
    p.add_argument("--unload-pause-seconds", type=float, default=2.0)
    p.add_argument("--fake-tokens-per-second", type=float, default=0.0, help="0 = as fast as possible")
    p.add_argument("--fake-close-after-stream", action="store_true")
    p.add_argument("--log-level", choices=("trace", "debug", "info", "warning", "error"), default="info")
    p.add_argument("--watchdog-poll-seconds", type=float, default=1.0)
    p.add_argument("--quiet", action="store_true", help="do not echo log lines to stdout")
    p.add_argument("--auto-evict", action="store_true", help="lemond's global auto_evict (v11+)")
    p.add_argument("--evict-idle-timeout", type=float, default=300.0, help="seconds idle before an auto-evict unload")
    p.add_argument("--downsize-idle-timeout", type=float, default=60.0, help="seconds idle before a downsize")
    p.add_argument("--eviction-interval-seconds", type=float, default=5.0, help="eviction engine period")
    return p


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    catalog = load_catalog(args.catalog) if args.catalog else DEFAULT_CATALOG
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        child_port_base=args.child_port_base,
        max_loaded_models=args.max_loaded_models,
        catalog=catalog,
        children=args.children,
        release=Release.parse(args.lemond_version),
        websocket=not args.no_websocket,
        websocket_port_base=args.websocket_port_base,
        unload_pause_s=args.unload_pause_seconds,
        fake_tokens_per_second=args.fake_tokens_per_second,
        fake_close_after_stream=args.fake_close_after_stream,
        log_level=args.log_level,
        watchdog_poll_s=args.watchdog_poll_seconds,
        echo_logs=not args.quiet,
        auto_evict=args.auto_evict,
        evict_idle_timeout_s=args.evict_idle_timeout,
        downsize_idle_timeout_s=args.downsize_idle_timeout,
        eviction_interval_s=args.eviction_interval_seconds,
    )


def _launch_plan(args: argparse.Namespace) -> LaunchPlan:
    if args.children == "fake":
        return LaunchPlan()
    from hal0proxy.emulator import realbin  # imported lazily: it pulls in the model generator

    binary = args.llama_server or realbin.llama_server_path() or realbin.ensure_llama_server()
    return LaunchPlan(real_binary=binary, real_model=realbin.tiny_model_path())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        plan = _launch_plan(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    emulator = Emulator(config, plan)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a runtime dependency
        return asyncio.run(emulator.run())
    return int(uvloop.run(emulator.run()))
