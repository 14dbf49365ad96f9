"""Run every measurement side by side in one go and print one markdown table.

    python -m bench.run            # full run (about 3 minutes), writes bench/results/latest.md
    python -m bench.run --quick    # under a minute, prints the table only

Targets: ``direct`` (the fake llama-server child itself), ``hal0proxy`` started exactly as a
user would (``hal0proxy serve --static-route MODEL=PORT``: no lemond, the data plane alone) and
``nginx`` (one worker, upstream keep-alive, ``proxy_buffering off``) when it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from bench import scenarios
from bench.nginx import nginx_binary, start_nginx
from bench.procs import REPO, Proc, start_fake_child, start_proxy
from bench.profiles import PROFILES, Profile
from bench.report import render

__all__ = ["main", "run"]

RESULTS_DIR = REPO / "bench" / "results"
ALL_TARGETS = ("direct", "hal0proxy", "nginx")


def _nginx_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([binary, "-v"], capture_output=True, timeout=10, check=False)
        return done.stderr.decode().strip().removeprefix("nginx version: ")
    return "?"


def run(profile: Profile, targets: tuple[str, ...], *, hold: bool, log_dir: Path) -> dict[str, object]:
    """Start the children and relays, measure, stop everything; returns all results."""
    procs: list[Proc] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, object] = {}
    try:
        fast, fast_port = start_fake_child("fast", log_dir)
        procs.append(fast)
        paced, paced_port = start_fake_child("paced", log_dir, tokens_per_second=profile.stamp_tps)
        procs.append(paced)
        children = {"fast": fast_port, "paced": paced_port}
        pool: list[scenarios.Target] = []
        if "direct" in targets:
            pool.append(scenarios.Target("direct", dict(children)))
        if "hal0proxy" in targets:
            proxy, proxy_port = start_proxy("hal0proxy", log_dir, children)
            procs.append(proxy)
            pool.append(scenarios.Target("hal0proxy", {m: proxy_port for m in children}, proxy))
        if "nginx" in targets:
            nginx, nginx_ports = start_nginx(log_dir, children)
            procs.append(nginx)
            pool.append(scenarios.Target("nginx", nginx_ports, nginx))
        results["latency"] = scenarios.latency(pool, profile, paced=False)
        if profile.paced_rate:
            results["latency_paced"] = scenarios.latency(pool, profile, paced=True)
        results["stream_throughput"] = scenarios.stream_throughput(pool, profile)
        results["stream_delay"] = scenarios.stream_delay(pool, profile)
    finally:
        for proc in reversed(procs):
            proc.stop()
    if hold and "hal0proxy" in targets:
        try:
            results["hold"] = scenarios.hold_streams(profile, log_dir)
        except (RuntimeError, OSError) as exc:
            results["hold"] = {"requested": profile.hold_streams, "live": 0, "error": str(exc)[:500]}
    binary = nginx_binary()
    results["context"] = {
        "profile": profile.name,
        "targets": list(targets),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "nginx": _nginx_version(binary) if binary and "nginx" in targets else None,
        "paced_rate": profile.paced_rate,
        "stream_conns": profile.stream_conns,
        "stamp_conns": profile.stamp_conns,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return results


def summary_markdown(results: dict[str, object], command: str) -> str:
    context = results.get("context")
    assert isinstance(context, dict)
    table = render(results, context)
    la_b, la_a = context["loadavg_before"], context["loadavg_after"]
    return (
        f"## hal0proxy benchmark ({context['profile']}, {context['date']})\n\n"
        f"Command: `{command}` — took {context['seconds']} s.\n\n"
        f"Machine: {context['cpus']} CPUs **shared** by the load generator, the fake child, the relay under test "
        f"and other work on the machine (load average {la_b} before, {la_a} after); Python {context['python']}, "
        f"nginx {context['nginx'] or 'not run'}. Loopback only. `direct` is the same load generator talking to the "
        "child itself; ratios are proxy / direct and proxy / nginx. Latencies are in microseconds "
        "(client side, including the load generator's own scheduling).\n\n"
        f"{table}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="short run (< 1 minute), fewer open streams")
    group.add_argument("--tiny", action="store_true", help="a fixed-count self-check of the harness")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list of direct,hal0proxy,nginx")
    parser.add_argument("--no-hold", action="store_true", help="skip the many-open-streams measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the summary here (full run: latest.md)")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "tiny" if args.tiny else "full"]
    targets = tuple(t for t in args.targets.split(",") if t)
    if "nginx" in targets and nginx_binary() is None:
        print("nginx not installed: measuring without it (Debian: apt-get install nginx-light)", file=sys.stderr)
        targets = tuple(t for t in targets if t != "nginx")
    log_dir = Path(tempfile.mkdtemp(prefix="hal0bench-"))
    try:
        results = run(profile, targets, hold=not args.no_hold, log_dir=log_dir)
    except BaseException:
        print(f"benchmark failed; process logs kept in {log_dir}", file=sys.stderr)
        raise
    shutil.rmtree(log_dir, ignore_errors=True)
    command = "python -m bench.run" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    text = summary_markdown(results, command.strip())
    print(text)
    json_path = args.json
    md_path = args.markdown
    if profile.name == "full":
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        json_path = json_path or RESULTS_DIR / "latest.json"
        md_path = md_path or RESULTS_DIR / "latest.md"
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    if md_path is not None:
        md_path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
