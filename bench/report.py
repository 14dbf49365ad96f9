"""Results -> one markdown table with absolute numbers, differences and ratios (pure)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

__all__ = ["render"]

Result = Mapping[str, object]
Getter = Callable[[Result], float | None]


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def _path(*keys: str) -> Getter:
    def get(result: Result) -> float | None:
        value: object = result
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return float(value) if isinstance(value, int | float) else None

    return get


#: relays compared against hal0proxy, in column order, when they were measured
PEERS = ("nginx", "litellm")


def _row(
    label: str, results: Mapping[str, Result], get: Getter, *, diff: bool, peers: Sequence[str], digits: int = 0
) -> str:
    values = {name: (get(res) if res else None) for name, res in results.items()}
    direct, proxy = values.get("direct"), values.get("hal0proxy")
    added = _fmt(proxy - direct, digits) if diff and proxy is not None and direct is not None else "-"
    cells = [label, _fmt(direct, digits), _fmt(proxy, digits), *(_fmt(values.get(p), digits) for p in peers), added]
    cells += [_ratio(proxy, direct), *(_ratio(proxy, values.get(p)) for p in peers)]
    return "| " + " | ".join(cells) + " |"


def _real_row(label: str, results: Mapping[str, Result], get: Getter, *, diff: bool, digits: int = 0) -> str:
    values = {name: (get(res) if res else None) for name, res in results.items()}
    direct, proxy, router = values.get("direct"), values.get("hal0proxy"), values.get("llamacpp-router")

    def minus(a: float | None) -> str:
        return _fmt(a - direct, digits) if diff and a is not None and direct is not None else "-"

    cells = [label, _fmt(direct, digits), _fmt(proxy, digits), _fmt(router, digits), minus(proxy), minus(router)]
    cells.append(_ratio(proxy, router))
    return "| " + " | ".join(cells) + " |"


def _real_table(real: Mapping[str, Result], context: Mapping[str, object]) -> list[str]:
    """The real llama-server section: plain child, hal0proxy in front of it, llama.cpp's router."""
    model = context.get("llama_server", "?")
    lines = [
        "",
        f"| real llama-server ({model}), tiny GGUF, 4 conns, {context.get('real_max_tokens', '?')} tokens "
        "| llamacpp-direct | hal0proxy | llamacpp-router | hal0proxy - direct | router - direct | hal0proxy / router |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _real_row("non-stream p50 µs", real, _path("latency", "p50_us"), diff=True),
        _real_row("non-stream p99 µs", real, _path("latency", "p99_us"), diff=True),
        _real_row("requests/s", real, _path("rps"), diff=False),
        _real_row("requests measured", real, _path("measured"), diff=False),
        _real_row("relay CPU µs per request", real, _path("relay_cpu_us_per_req"), diff=False, digits=1),
    ]
    return lines


def render(results: Mapping[str, object], context: Mapping[str, object]) -> str:
    """The summary table; ``results`` maps a measurement name to ``{target: result}``."""
    targets = context.get("targets")
    measured = targets if isinstance(targets, list) else list(PEERS)
    peers = [p for p in PEERS if p in measured]
    head = ["measurement", "direct", "hal0proxy", *peers, "proxy - direct", "proxy / direct"]
    head += [f"proxy / {p}" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]

    def section(name: str) -> Mapping[str, Result]:
        value = results.get(name)
        return value if isinstance(value, Mapping) else {}

    sat = section("latency")
    if sat:
        lines.append(
            _row("non-stream p50 µs (16 conns, back to back)", sat, _path("latency", "p50_us"), diff=True, peers=peers)
        )
        lines.append(
            _row("non-stream p99 µs (16 conns, back to back)", sat, _path("latency", "p99_us"), diff=True, peers=peers)
        )
        lines.append(_row("non-stream requests/s (16 conns)", sat, _path("rps"), diff=False, peers=peers))
        lines.append(
            _row("relay CPU µs per request", sat, _path("relay_cpu_us_per_req"), diff=False, peers=peers, digits=1)
        )
    paced = section("latency_paced")
    if paced:
        rate = context.get("paced_rate", "?")
        lines.append(
            _row(
                f"non-stream p50 µs (16 conns, {rate} req/s paced)",
                paced,
                _path("latency", "p50_us"),
                diff=True,
                peers=peers,
            )
        )
        lines.append(
            _row(
                f"non-stream p99 µs (16 conns, {rate} req/s paced)",
                paced,
                _path("latency", "p99_us"),
                diff=True,
                peers=peers,
            )
        )
    thr = section("stream_throughput")
    if thr:
        conns = context.get("stream_conns", "?")
        lines.append(
            _row(
                f"SSE events/s ({conns} streams, child unthrottled)",
                thr,
                _path("events_per_s"),
                diff=False,
                peers=peers,
            )
        )
        lines.append(
            _row(
                "relay CPU share of one core during that run",
                thr,
                _path("relay_cpu_share"),
                diff=False,
                peers=peers,
                digits=2,
            )
        )
        lines.append(
            _row(
                "relay events per CPU-second (one-core capacity)",
                thr,
                _path("relay_events_per_cpu_s"),
                diff=False,
                peers=peers,
            )
        )
    delay = section("stream_delay")
    if delay:
        conns = context.get("stamp_conns", "?")
        lines.append(
            _row(f"per-event delay p50 µs ({conns} streams)", delay, _path("delay", "p50_us"), diff=True, peers=peers)
        )
        lines.append(
            _row(f"per-event delay p99 µs ({conns} streams)", delay, _path("delay", "p99_us"), diff=True, peers=peers)
        )
        lines.append(_row("events measured for the delay", delay, _path("delay", "n"), diff=False, peers=peers))
    real = section("real_latency")
    if real:
        lines += _real_table(real, context)
    hold = results.get("hold")
    if isinstance(hold, Mapping):
        live = hold.get("live")
        lines.append("")
        lines.append("| open streams through hal0proxy | value |")
        lines.append("|---|---:|")
        lines.append(f"| streams requested / live / failed | {hold.get('requested')} / {live} / {hold.get('failed')} |")
        lines.append(f"| proxy RSS idle, MB | {_fmt(_path('rss_idle_mb')(hold), 1)} |")
        lines.append(f"| proxy RSS with {live} streams open, MB | {_fmt(_path('rss_open_mb')(hold), 1)} |")
        lines.append(f"| RSS per open stream, KB | {_fmt(_path('kb_per_stream')(hold), 1)} |")
        lines.append(f"| proxy open fds / RLIMIT_NOFILE | {hold.get('proxy_fds')} / {hold.get('proxy_nofile')} |")
        lines.append(f"| time to open them all, s | {_fmt(_path('open_s')(hold), 1)} |")
    return "\n".join(lines)
