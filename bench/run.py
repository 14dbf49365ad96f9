"""Run every measurement side by side in one go and print one markdown table.

    python -m bench.run            # full run (about 3 minutes), writes bench/results/latest.md
    python -m bench.run --quick    # under a minute, prints the table only

Targets: ``direct`` (the fake llama-server child itself), ``hal0proxy`` started exactly as a
user would (``hal0proxy serve --static-route MODEL=PORT``: no lemond, the data plane alone),
``nginx`` (one worker, upstream keep-alive, ``proxy_buffering off``) when it is installed,
``litellm`` (LiteLLM's proxy, one worker, from its own venv) and ``llamacpp-router``: a separate
section with a real llama-server and the tiny GGUF — plain, behind hal0proxy, and llama.cpp's
router mode.
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
from collections.abc import Callable
from pathlib import Path

import orjson

from bench import scenarios
from bench.litellm import ensure_litellm, litellm_version, start_litellm
from bench.llamacpp import MODEL as REAL_MODEL
from bench.llamacpp import llama_server_version, router_supported, start_llama_direct, start_llama_router
from bench.nginx import nginx_binary, start_nginx
from bench.procs import REPO, Proc, start_fake_child, start_proxy
from bench.profiles import PROFILES, Profile
from bench.report import render
from hal0proxy.emulator.realbin import ensure_llama_server

__all__ = ["main", "run"]

RESULTS_DIR = REPO / "bench" / "results"
ALL_TARGETS = ("direct", "hal0proxy", "nginx", "litellm", "llamacpp-router")


def _nginx_version(binary: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([binary, "-v"], capture_output=True, timeout=10, check=False)
        return done.stderr.decode().strip().removeprefix("nginx version: ")
    return "?"


def _run_scenarios(pool: list[scenarios.Target], profile: Profile, results: dict[str, object]) -> None:
    """Run every scenario over ``pool``, merging per-target results into ``results``."""
    phases: list[tuple[str, Callable[[], dict[str, scenarios.Result]]]] = [
        ("latency", lambda: scenarios.latency(pool, profile, paced=False))
    ]
    if profile.paced_rate:
        phases.append(("latency_paced", lambda: scenarios.latency(pool, profile, paced=True)))
    phases.append(("stream_throughput", lambda: scenarios.stream_throughput(pool, profile)))
    phases.append(("stream_delay", lambda: scenarios.stream_delay(pool, profile)))
    for key, measure in phases:
        earlier = results.get(key)
        merged: dict[str, object] = dict(earlier) if isinstance(earlier, dict) else {}
        merged.update(measure())
        results[key] = merged


def run(profile: Profile, targets: tuple[str, ...], *, hold: bool, log_dir: Path) -> dict[str, object]:
    """Start the children and relays, measure, stop everything; returns all results."""
    procs: list[Proc] = []
    started = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, object] = {}
    try:
        fast, fast_port = start_fake_child("fast", log_dir)
        procs.append(fast)
        # --stamp: LiteLLM does not forward the X-Emu-Stamp request header, so the child stamps always
        paced, paced_port = start_fake_child("paced", log_dir, tokens_per_second=profile.stamp_tps, extra=["--stamp"])
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
        _run_scenarios(pool, profile, results)
        if "litellm" in targets:
            # Measured in a phase of its own, with only it running: saturated, it keeps working
            # through a backlog for seconds after its load generator stops, which would land
            # on whichever target was measured next.
            litellm, litellm_port = start_litellm(log_dir, children)
            procs.append(litellm)
            _run_scenarios(
                [scenarios.Target("litellm", {m: litellm_port for m in children}, litellm)], profile, results
            )
    finally:
        for proc in reversed(procs):
            proc.stop()
    if "llamacpp-router" in targets:
        results["real_latency"] = _real_child_section(profile, log_dir)
    if hold and "hal0proxy" in targets:
        try:
            results["hold"] = scenarios.hold_streams(profile, log_dir)
        except (RuntimeError, OSError) as exc:
            results["hold"] = {"requested": profile.hold_streams, "live": 0, "error": str(exc)[:500]}
    binary = nginx_binary()
    real_binary = ensure_llama_server() if "llamacpp-router" in targets else None
    results["context"] = {
        "profile": profile.name,
        "targets": list(targets),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "nginx": _nginx_version(binary) if binary and "nginx" in targets else None,
        "litellm": litellm_version() if "litellm" in targets else None,
        "llama_server": llama_server_version(real_binary) if real_binary else None,
        "real_max_tokens": profile.real_max_tokens,
        "paced_rate": profile.paced_rate,
        "stream_conns": profile.stream_conns,
        "stamp_conns": profile.stamp_conns,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return results


def _real_child_section(profile: Profile, log_dir: Path) -> dict[str, object]:
    """Plain llama-server, hal0proxy in front of it, and llama.cpp's router over the same model."""
    procs: list[Proc] = []
    try:
        child, child_port = start_llama_direct(log_dir)
        procs.append(child)
        proxy, proxy_port = start_proxy("hal0proxy-real", log_dir, {REAL_MODEL: child_port})
        procs.append(proxy)
        router, router_port = start_llama_router(log_dir)
        procs.append(router)
        pool = [
            scenarios.Target("direct", {REAL_MODEL: child_port}),
            scenarios.Target("hal0proxy", {REAL_MODEL: proxy_port}, proxy),
            scenarios.Target("llamacpp-router", {REAL_MODEL: router_port}, router),
        ]
        return dict(scenarios.real_latency(pool, profile, REAL_MODEL))
    finally:
        for proc in reversed(procs):
            proc.stop()


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
        f"nginx {context['nginx'] or 'not run'}, LiteLLM {context.get('litellm') or 'not run'}. Loopback only. "
        "`direct` is the same load generator talking to the child itself; ratios are proxy / direct and proxy / "
        "peer. Latencies are in microseconds (client side, including the load generator's own scheduling).\n\n"
        f"{table}\n{_notes(results, context)}"
    )


def _litellm_starved(results: dict[str, object]) -> bool:
    """True when LiteLLM relayed no event at all within the per-event-delay window."""
    section = results.get("stream_delay")
    entry = section.get("litellm") if isinstance(section, dict) else None
    return isinstance(entry, dict) and entry.get("events_total") == 0


def _notes(results: dict[str, object], context: dict[str, object]) -> str:
    targets = context.get("targets")
    notes = []
    if isinstance(targets, list) and "litellm" in targets:
        notes.append(
            "- LiteLLM is not a byte-passthrough relay: it parses every upstream SSE chunk and re-serialises it "
            "(field order changes, llama-server's `timings` and `usage` are dropped from the last chunk, null "
            "fields removed); unknown top-level fields such as the `emu_t_ns` stamp survive, so its per-event "
            "delay is measured the same way. One uvicorn worker (`--num_workers 1`), no master key, no database, "
            "no callbacks: its lightest configuration."
        )
    if _litellm_starved(results):
        notes.append(
            f"- LiteLLM's per-event delay is empty because it relayed **no event** to any of the "
            f"{context.get('stamp_conns')} paced streams within the run: at ~25 ms of CPU per request it spends "
            "the whole window (one core at 100%) setting up the requests, so the delay is longer than the window."
        )
    if isinstance(targets, list) and "llamacpp-router" in targets:
        notes.append(
            "- Real llama-server section: the same binary and tiny GGUF, `--ctx-size 512 -t 1 -np 4`; "
            "`llamacpp-router` is `llama-server --models-dir` (router mode), which relays to a child "
            "llama-server it spawns. Inference dominates these latencies; relay CPU is the relay process alone."
        )
    return ("\n" + "\n".join(notes) + "\n") if notes else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="short run (< 1 minute), fewer open streams")
    group.add_argument("--tiny", action="store_true", help="a fixed-count self-check of the harness")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list of " + ",".join(ALL_TARGETS))
    parser.add_argument("--no-hold", action="store_true", help="skip the many-open-streams measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the summary here (full run: latest.md)")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "tiny" if args.tiny else "full"]
    targets = tuple(t for t in args.targets.split(",") if t)
    if "nginx" in targets and nginx_binary() is None:
        print("nginx not installed: measuring without it (Debian: apt-get install nginx-light)", file=sys.stderr)
        targets = tuple(t for t in targets if t != "nginx")
    if "litellm" in targets:
        try:
            ensure_litellm()
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"litellm[proxy] could not be installed ({exc}): measuring without it", file=sys.stderr)
            targets = tuple(t for t in targets if t != "litellm")
    if "llamacpp-router" in targets and not router_supported(ensure_llama_server()):
        print("this llama-server has no router mode (--models-dir): skipping that section", file=sys.stderr)
        targets = tuple(t for t in targets if t != "llamacpp-router")
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
