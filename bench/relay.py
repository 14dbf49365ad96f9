"""Relay cost side by side: direct, the uvloop floor, hal0proxy and nginx in front of the fast child.

    python -m bench.relay                  # two rounds (order reversed), ~2 minutes; writes bench/results/relay.md
    python -m bench.relay --quick          # one short round, prints only (what tests/test_bench_smoke.py runs)

Per target and round:

- **1 client**: ``wrk -t1 -c1 --latency`` non-streaming POSTs; p50, and the p50 *added* over direct;
- **16 clients**: ``wrk -t1 -c16``; requests/s and the relay's CPU µs per request (psutil, user+system
  of the relay process over the run divided by the requests wrk completed);
- **paced SSE**: 64 streams at 20 events/s from the paced child (``bench.loadgen stream --stamp``);
  relay CPU per event and per-event delay p50/p99 (client receive minus child send stamp).

``uvloop-floor`` (``bench.floor``) splices bytes with uvloop and parses nothing: what any Python
relay on uvloop pays before doing any work of its own.

``wrk`` and ``nginx`` come from Debian (``bench/install_tools.sh``); without ``wrk`` the run stops
with that message, without ``nginx`` it is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.nginx import nginx_binary, start_nginx
from bench.procs import REPO, Proc, free_port, run_loadgen, start_proxy, start_ready

__all__ = ["RelayPlan", "main", "measure", "parse_wrk", "render"]

RESULTS = REPO / "bench" / "results" / "relay.md"
_WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"%s","messages":[{"role":"user","content":"Say something about foxes."}],"max_tokens":8}'
"""
_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


@dataclass(frozen=True, slots=True)
class RelayPlan:
    rounds: int
    seconds: float
    sse_streams: int
    sse_seconds: float
    targets: tuple[str, ...]


FULL = RelayPlan(
    rounds=2, seconds=5.0, sse_streams=64, sse_seconds=6.0, targets=("direct", "uvloop-floor", "hal0proxy", "nginx")
)
QUICK = RelayPlan(rounds=1, seconds=1.0, sse_streams=16, sse_seconds=1.5, targets=("direct", "hal0proxy"))


@dataclass(slots=True)
class Target:
    name: str
    ports: dict[str, int]
    proc: Proc | None = None
    rows: list[dict[str, float]] = field(default_factory=list)


def parse_wrk(text: str) -> dict[str, float]:
    """Requests completed, requests/s and (with ``--latency``) the p50/p99 in µs from wrk's output."""
    out: dict[str, float] = {}
    done = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if done is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{text[-1500:]}")
    out["requests"] = float(done.group(1))
    out["rps"] = float(rps.group(1))
    for label, key in (("50%", "p50_us"), ("99%", "p99_us")):
        found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        if found is not None:
            out[key] = float(found.group(1)) * _UNITS[found.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = float(errors.group(1)) if errors else 0.0
    return out


def _wrk(port: int, conns: int, seconds: float, script: Path) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency", "-s", str(script)]
    done = subprocess.run([*argv, f"http://127.0.0.1:{port}/v1/chat/completions"], capture_output=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.decode()[-500:]}")
    return parse_wrk(done.stdout.decode())


def _cpu(proc: Proc | None) -> float:
    return proc.cpu_s() if proc is not None else 0.0


def _measure_target(target: Target, plan: RelayPlan, scripts: dict[str, Path]) -> dict[str, float]:
    row: dict[str, float] = {}
    one = _wrk(target.ports["fast"], 1, plan.seconds, scripts["fast"])
    row["c1_p50_us"] = one["p50_us"]
    row["c1_p99_us"] = one["p99_us"]
    cpu0 = _cpu(target.proc)
    many = _wrk(target.ports["fast"], 16, plan.seconds, scripts["fast"])
    cpu1 = _cpu(target.proc)
    row["c16_rps"] = many["rps"]
    row["non2xx"] = one["non2xx"] + many["non2xx"]
    if target.proc is not None and many["requests"]:
        row["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / many["requests"]
    cpu0 = _cpu(target.proc)
    sse = run_loadgen(
        [
            "stream",
            "--port",
            str(target.ports["paced"]),
            "--model",
            "paced",
            "--conns",
            str(plan.sse_streams),
            "--duration",
            str(plan.sse_seconds),
            "--warmup",
            "0.5",
            "--max-tokens",
            "1000000",
            "--stamp",
        ],
        timeout=plan.sse_seconds + 60,
    )
    cpu1 = _cpu(target.proc)
    events_total = sse["events_total"]
    delay = sse["delay"]
    assert isinstance(events_total, int) and isinstance(delay, dict)
    row["sse_events"] = float(events_total)
    row["sse_errors"] = float(sse["errors"]) + float(sse["non200"])  # type: ignore[arg-type]
    row["delay_p50_us"] = float(delay["p50_us"])
    row["delay_p99_us"] = float(delay["p99_us"])
    if target.proc is not None and events_total:
        row["cpu_us_per_event"] = (cpu1 - cpu0) * 1e6 / events_total
    return row


def _start_fast_child(name: str, log_dir: Path, tokens_per_second: float) -> tuple[Proc, int]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.fastchild", "--port", str(port), "--tokens-per-second", str(tokens_per_second)]
    return start_ready(name, argv, log_dir, [(port, name)]), port


def _start_floor(log_dir: Path, children: dict[str, int]) -> tuple[Proc, dict[str, int]]:
    """``bench.floor``: one process splicing a port per child, the cost of uvloop alone."""
    ports = {model: free_port() for model in children}
    argv = [sys.executable, "-m", "bench.floor"]
    for model, port in ports.items():
        argv += ["--route", f"{port}={children[model]}"]
    return start_ready("uvloop-floor", argv, log_dir, [(port, model) for model, port in ports.items()]), ports


def _start_baseline(rev: str, log_dir: Path, routes: dict[str, int]) -> tuple[Proc, int]:
    """hal0proxy as of git revision ``rev`` (exported to a temporary directory), same command line."""
    tree = log_dir / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev, "hal0proxy"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    port = free_port()
    argv = [sys.executable, "-P", "-m", "hal0proxy", "serve", "--listen", f"127.0.0.1:{port}"]
    for model, child_port in routes.items():
        argv += ["--static-route", f"{model}={child_port}"]
    # -P and PYTHONPATH: the exported tree, not the working copy, provides the package
    return start_ready(
        "hal0proxy-base", argv, log_dir, [(port, next(iter(routes)))], env={"PYTHONPATH": str(tree)}
    ), port


def measure(plan: RelayPlan, log_dir: Path, baseline: str | None = None) -> dict[str, object]:
    """Start the children and relays, measure every round, stop everything."""
    procs: list[Proc] = []
    load_before = os.getloadavg()
    started = time.perf_counter()
    try:
        fast, fast_port = _start_fast_child("fast", log_dir, 0.0)
        procs.append(fast)
        paced, paced_port = _start_fast_child("paced", log_dir, 20.0)
        procs.append(paced)
        children = {"fast": fast_port, "paced": paced_port}
        targets: list[Target] = []
        for name in plan.targets:
            if name == "direct":
                targets.append(Target("direct", dict(children)))
            elif name == "hal0proxy":
                proxy, port = start_proxy("hal0proxy", log_dir, children)
                procs.append(proxy)
                targets.append(Target("hal0proxy", {m: port for m in children}, proxy))
            elif name == "hal0proxy-base" and baseline is not None:
                base, port = _start_baseline(baseline, log_dir, children)
                procs.append(base)
                targets.append(Target(name, {m: port for m in children}, base))
            elif name == "uvloop-floor":
                floor, ports = _start_floor(log_dir, children)
                procs.append(floor)
                targets.append(Target(name, ports, floor))
            elif name == "nginx":
                nginx, ports = start_nginx(log_dir, children)
                procs.append(nginx)
                targets.append(Target("nginx", ports, nginx))
        scripts = {}
        for model in children:
            scripts[model] = log_dir / f"{model}.lua"
            scripts[model].write_text(_WRK_LUA % model)
        for round_index in range(plan.rounds):
            order = targets if round_index % 2 == 0 else list(reversed(targets))
            for target in order:
                target.rows.append(_measure_target(target, plan, scripts))
    finally:
        for proc in reversed(procs):
            proc.stop()
    return {
        "targets": {t.name: t.rows for t in targets},
        "context": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "seconds": round(time.perf_counter() - started, 1),
            "plan": {"rounds": plan.rounds, "seconds": plan.seconds, "sse_streams": plan.sse_streams},
        },
    }


def _fmt(values: Sequence[float | None], digits: int = 0) -> str:
    shown = ["—" if v is None else f"{v:,.{digits}f}" for v in values]
    return " / ".join(shown)


def _col(rows: list[dict[str, float]], key: str) -> list[float | None]:
    return [row.get(key) for row in rows]


def _added(rows: list[dict[str, float]], direct: list[dict[str, float]], key: str) -> list[float | None]:
    return [row[key] - base[key] for row, base in zip(rows, direct, strict=True)]


def render(results: dict[str, object], command: str) -> str:
    """One markdown table (figures "round 1 / round 2") and the ratios against nginx."""
    by_target = results["targets"]
    context = results["context"]
    assert isinstance(by_target, dict) and isinstance(context, dict)
    names = list(by_target)
    direct = by_target.get("direct")
    lines = [
        f"## Relay cost ({context['date']})",
        "",
        f"Command: `{command}` — took {context['seconds']} s. {context['cpus']} CPUs shared by wrk/the load "
        f"generator, the child, the relay and other work (load average {context['loadavg_before']} before, "
        f"{context['loadavg_after']} after). Child: `bench.fastchild` (raw uvloop Protocol). Figures are "
        '"round 1 / round 2 / …", every other round in reversed target order.',
        "",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("1 client p50 µs (wrk -c1)", [_fmt(_col(by_target[n], "c1_p50_us")) for n in names])
    if direct:
        row("1 client p50 added over direct µs", [_fmt(_added(by_target[n], direct, "c1_p50_us")) for n in names])
    row("16 clients req/s (wrk -c16)", [_fmt(_col(by_target[n], "c16_rps")) for n in names])
    row("relay CPU µs per request", [_fmt(_col(by_target[n], "cpu_us_per_req"), 1) for n in names])
    row("paced SSE relay CPU µs per event", [_fmt(_col(by_target[n], "cpu_us_per_event"), 1) for n in names])
    row("per-event delay p50 µs", [_fmt(_col(by_target[n], "delay_p50_us")) for n in names])
    row("per-event delay p99 µs", [_fmt(_col(by_target[n], "delay_p99_us")) for n in names])
    row("SSE events in the window", [_fmt(_col(by_target[n], "sse_events")) for n in names])
    row(
        "non-2xx / stream errors",
        [_fmt(_col(by_target[n], "non2xx")) + "; " + _fmt(_col(by_target[n], "sse_errors")) for n in names],
    )
    if "hal0proxy" in by_target and "nginx" in by_target and direct:
        proxy, nginx = by_target["hal0proxy"], by_target["nginx"]

        def ratio(values: list[float | None], peers: list[float | None]) -> str:
            pairs = [(a, b) for a, b in zip(values, peers, strict=True) if a is not None and b]
            text = " / ".join("—" if a is None or not b else f"{a / b:.2f}" for a, b in zip(values, peers, strict=True))
            if len(pairs) > 2:  # one noisy round should not decide: the median of the rounds too
                text += f" (median {statistics.median(a / b for a, b in pairs):.2f})"
            return text

        def same(key: str) -> str:
            return ratio(_col(proxy, key), _col(nginx, key))

        def added(key: str) -> str:
            return ratio(_added(proxy, direct, key), _added(nginx, direct, key))

        lines += [
            "",
            "| hal0proxy ÷ nginx | ratio | target |",
            "|---|---|---|",
            f"| relay CPU per request | {same('cpu_us_per_req')} | ≤ 2 |",
            f"| 16-client req/s | {same('c16_rps')} | ≥ 0.6 |",
            f"| 1-client added p50 | {added('c1_p50_us')} | ≤ 2 |",
            f"| paced SSE CPU per event | {same('cpu_us_per_event')} | ≤ 1 |",
            f"| per-event delay added p99 | {added('delay_p99_us')} | ≤ 1.2 |",
        ]
        floor = by_target.get("uvloop-floor")
        if floor:

            def above_floor(key: str) -> str:
                return ratio(_col(proxy, key), _col(floor, key))

            lines += [
                f"| *hal0proxy ÷ uvloop-floor*: relay CPU per request | {above_floor('cpu_us_per_req')} | — |",
                f"| *hal0proxy ÷ uvloop-floor*: paced SSE CPU per event | {above_floor('cpu_us_per_event')} | — |",
            ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one short round, direct and hal0proxy only; prints only")
    parser.add_argument("--targets", default=None, help="comma list of direct,uvloop-floor,hal0proxy,nginx")
    parser.add_argument(
        "--baseline", default=None, help="git revision: also measure hal0proxy as of it (target hal0proxy-base)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2; the order reverses each round)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.rounds:
        plan = RelayPlan(args.rounds, plan.seconds, plan.sse_streams, plan.sse_seconds, plan.targets)
    if args.targets:
        plan = RelayPlan(plan.rounds, plan.seconds, plan.sse_streams, plan.sse_seconds, tuple(args.targets.split(",")))
    if shutil.which("wrk") is None:
        print("wrk is not installed: run bench/install_tools.sh (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    if "nginx" in plan.targets and nginx_binary() is None:
        print("nginx not installed: measuring without it (bench/install_tools.sh)", file=sys.stderr)
        kept = tuple(t for t in plan.targets if t != "nginx")
        plan = RelayPlan(plan.rounds, plan.seconds, plan.sse_streams, plan.sse_seconds, kept)
    if args.baseline and "hal0proxy-base" not in plan.targets:
        with_base = (*plan.targets[:1], "hal0proxy-base", *plan.targets[1:])
        plan = RelayPlan(plan.rounds, plan.seconds, plan.sse_streams, plan.sse_seconds, with_base)
    log_dir = Path(tempfile.mkdtemp(prefix="hal0relay-"))
    try:
        results = measure(plan, log_dir, args.baseline)
    except BaseException:
        print(f"relay benchmark failed; process logs kept in {log_dir}", file=sys.stderr)
        raise
    shutil.rmtree(log_dir, ignore_errors=True)
    command = "python -m bench.relay" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    text = render(results, command.strip())
    print(text)
    md_path = args.markdown or (None if args.quick else RESULTS)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(text)
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    with contextlib.suppress(OSError):
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
