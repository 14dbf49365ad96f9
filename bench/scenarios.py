"""The measurements, each run against every target in turn with the same load generator."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

from bench.procs import REPO, Proc, raise_nofile_preexec, run_loadgen, start_fake_child, start_proxy
from bench.profiles import Profile

__all__ = ["Target", "hold_streams", "latency", "real_latency", "stream_delay", "stream_throughput"]

Result = dict[str, object]


@dataclass
class Target:
    """Somewhere to send requests: ``direct`` (the child itself), ``hal0proxy`` or ``nginx``."""

    name: str
    ports: dict[str, int]  # model -> port that serves it
    relay: Proc | None = None  # the process in the middle, whose CPU time is charged to it
    notes: list[str] = field(default_factory=list)


def _measure(target: Target, argv: list[str], timeout: float) -> Result:
    cpu_before = target.relay.cpu_s() if target.relay else 0.0
    t0 = time.perf_counter()
    result = run_loadgen(argv, timeout)
    result["wall_s"] = time.perf_counter() - t0
    if target.relay is not None:
        result["relay_cpu_s"] = target.relay.cpu_s() - cpu_before
        result["relay_rss_mb"] = target.relay.rss_mb()
    return result


def latency(targets: list[Target], profile: Profile, *, paced: bool) -> dict[str, Result]:
    """Non-streaming chat requests from 16 keep-alive connections (back to back, or paced)."""
    out: dict[str, Result] = {}
    for target in targets:
        argv = ["latency", "--port", str(target.ports["fast"]), "--model", "fast", "--conns", "16"]
        argv += ["--duration", str(profile.duration), "--warmup", str(profile.warmup), "--max-tokens", "16"]
        if profile.latency_requests:
            argv += ["--requests", str(profile.latency_requests)]
        if paced:
            argv += ["--rate", str(profile.paced_rate)]
        result = _measure(target, argv, timeout=60 + 2 * profile.duration)
        ok = int(result["ok"])  # type: ignore[call-overload]
        if target.relay is not None and ok:
            result["relay_cpu_us_per_req"] = float(result["relay_cpu_s"]) / ok * 1e6  # type: ignore[arg-type]
        out[target.name] = result
    return out


def real_latency(targets: list[Target], profile: Profile, model: str) -> dict[str, Result]:
    """Non-streaming requests to a real llama-server: a fixed count from 4 connections, few tokens.

    Inference dominates here (milliseconds, not microseconds), so this shows what a relay adds
    next to a real child rather than the relay's own capacity. A short unrecorded run first
    warms the prompt cache and every connection path.
    """
    out: dict[str, Result] = {}
    for target in targets:
        argv = ["latency", "--port", str(target.ports[model]), "--model", model, "--conns", "4"]
        argv += ["--max-tokens", str(profile.real_max_tokens), "--duration", "0", "--warmup", "0"]
        run_loadgen([*argv, "--requests", "16"], timeout=120)
        result = _measure(target, [*argv, "--requests", str(profile.real_requests)], timeout=300)
        ok = int(result["ok"])  # type: ignore[call-overload]
        if target.relay is not None and ok:
            result["relay_cpu_us_per_req"] = float(result["relay_cpu_s"]) / ok * 1e6  # type: ignore[arg-type]
        out[target.name] = result
    return out


def stream_throughput(targets: list[Target], profile: Profile) -> dict[str, Result]:
    """SSE events/s relayed from a child writing as fast as the socket takes them."""
    out: dict[str, Result] = {}
    for target in targets:
        argv = ["stream", "--port", str(target.ports["fast"]), "--model", "fast"]
        argv += ["--conns", str(profile.stream_conns), "--max-tokens", str(profile.stream_max_tokens)]
        argv += ["--duration", str(profile.duration), "--warmup", str(profile.warmup)]
        if profile.stream_streams:
            argv += ["--streams", str(profile.stream_streams)]
        result = _measure(target, argv, timeout=60 + 2 * profile.duration)
        total = int(result["events_total"])  # type: ignore[call-overload]
        if target.relay is not None and total:
            cpu = float(result["relay_cpu_s"])  # type: ignore[arg-type]
            result["relay_cpu_us_per_event"] = cpu / total * 1e6
            result["relay_events_per_cpu_s"] = total / cpu if cpu > 0 else 0.0
            result["relay_cpu_share"] = cpu / float(result["wall_s"])  # type: ignore[arg-type]
        out[target.name] = result
    return out


def stream_delay(targets: list[Target], profile: Profile) -> dict[str, Result]:
    """Receive time minus the child's send stamp, per event, over many paced concurrent streams."""
    out: dict[str, Result] = {}
    for target in targets:
        argv = ["stream", "--port", str(target.ports["paced"]), "--model", "paced", "--stamp"]
        argv += ["--conns", str(profile.stamp_conns), "--max-tokens", str(profile.stamp_max_tokens)]
        argv += ["--duration", str(profile.duration), "--warmup", str(profile.warmup)]
        if profile.stamp_streams:
            argv += ["--streams", str(profile.stamp_streams)]
        out[target.name] = _measure(target, argv, timeout=90 + 2 * profile.duration)
    return out


def hold_streams(profile: Profile, log_dir: Path) -> Result:
    """Open ``hold_streams`` slow streams through a fresh proxy and read its RSS while they are open."""
    children: list[Proc] = []
    loadgens: list[subprocess.Popen[bytes]] = []
    proxy: Proc | None = None
    try:
        routes: dict[str, int] = {}
        for index in range(profile.hold_children):
            # one token every 5 s per stream: the streams are alive but nearly idle
            child, port = start_fake_child(f"slow{index}", log_dir, tokens_per_second=0.2)
            children.append(child)
            routes[f"slow{index}"] = port
        # The default connection cap (4,096) would answer the rest 503: raise it as a user
        # expecting this many streams would (the proxy raises its descriptor limit to fit).
        limits = f"[limits]\nmax_connections = {profile.hold_streams + 256}\n"
        proxy, proxy_port = start_proxy("hal0proxy-hold", log_dir, routes, config=limits)
        rss_idle = proxy.rss_mb()
        share, extra = divmod(profile.hold_streams, profile.hold_children)
        t0 = time.perf_counter()
        for index, model in enumerate(routes):
            conns = share + (1 if index < extra else 0)
            argv = [sys.executable, "-m", "bench.loadgen", "hold", "--port", str(proxy_port), "--model", model]
            argv += ["--conns", str(conns), "--max-tokens", "1000000", "--batch", "128"]
            loadgens.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=raise_nofile_preexec,
                )
            )
        opened = [_read_json_line(gen, timeout=150) for gen in loadgens]
        open_s = time.perf_counter() - t0
        time.sleep(1.0)  # let the per-stream buffers settle before sampling
        rss_open = proxy.rss_mb()
        fds = proxy.ps.num_fds()
        nofile = proxy.ps.rlimit(psutil.RLIMIT_NOFILE)[0]
        finals = []
        for gen in loadgens:
            assert gen.stdin is not None
            gen.stdin.write(b"stop\n")
            gen.stdin.flush()
        for gen in loadgens:
            finals.append(_read_json_line(gen, timeout=60))
        live = sum(_num(o["live"]) for o in opened)
        return {
            "requested": profile.hold_streams,
            "live": live,
            "still_open": sum(_num(f["still_open"]) for f in finals),
            "failed": sum(_num(o["failed"]) for o in opened),
            "fail_examples": [e for f in finals for e in _strings(f.get("fail_examples"))][:3],
            "events": sum(_num(f["events"]) for f in finals),
            "open_s": open_s,
            "rss_idle_mb": rss_idle,
            "rss_open_mb": rss_open,
            "kb_per_stream": (rss_open - rss_idle) * 1024 / live if live else 0.0,
            "proxy_fds": fds,
            # two fds per stream (client side + child side): the fd limit caps the stream count
            "proxy_nofile": nofile,
            "children": profile.hold_children,
        }
    finally:
        for gen in loadgens:
            if gen.poll() is None:
                gen.kill()
            gen.wait(timeout=10)
        if proxy is not None:
            proxy.stop()
        for child in children:
            child.stop()


def _read_json_line(gen: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    """The next JSON line a ``hold`` load generator prints (bounded wait)."""
    import selectors

    assert gen.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(gen.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = gen.stdout.readline()
                if not line:
                    break
                with contextlib.suppress(orjson.JSONDecodeError):
                    value = orjson.loads(line)
                    if isinstance(value, dict):
                        return value
    raise RuntimeError(f"hold load generator gave no result within {timeout}s (exit code {gen.poll()})")


def _num(value: object) -> int:
    return int(value) if isinstance(value, int | float) else 0


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
