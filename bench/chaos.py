"""Chaos benchmark: streams through the proxy while lemond (the emulator) fails every way the
proxy is meant to survive, reported from the proxy's own ``/metrics``.

    .venv/bin/python -m bench.chaos                    # 60 s, lemond 11.7, fake children
    .venv/bin/python -m bench.chaos --lemond-version 10.7 --duration 30

Faults, in a shuffled cycle: crash, respawn, evict, ws_drop, restart, hang, slow and failing
loads, a third client's ``/v1/load`` into the full pool, and lemond killed (SIGKILL to its
process group, children included) and started again on the same port.

Reported: route-stable and eviction-recovery p50/p99 and ``/v1/load`` p99 (interpolated from
the proxy's histograms, as ``histogram_quantile`` does), the 502 count, the proxy's count of
streams its children cut short, and what the clients saw: streams completed with ``[DONE]``,
ended with the interrupted event, or truncated (neither), and 503s with ``Retry-After``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.procs import Proc, free_port

SLOTS = {"alpha": "tiny-a", "beta": "tiny-b"}
THIRD = "tiny-c"
FAULTS = ("crash", "respawn", "evict", "ws_drop", "restart", "hang", "slow_load", "fail_load", "third_party", "kill")
CONFIG = """[policy]
max_wait_s = 20
hang_after_s = 2
hang_probe_interval_s = 0.5
hang_probe_timeout_s = 0.5
hang_probe_failures = 2
""" + "".join(f'[[slot]]\nname = "{s}"\nmodel = "{m}"\nwarm = true\n' for s, m in SLOTS.items())


def _http(port: int, method: str, path: str, body: object = None, timeout: float = 60) -> tuple[int, bytes, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        raw = None if body is None else json.dumps(body).encode()
        conn.request(method, path, raw, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("retry-after") or ""
    finally:
        conn.close()


class Clients:
    """Streaming clients, one thread each, classifying every answer."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.outcomes: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(list(SLOTS)[i % 2],), daemon=True) for i in range(count)
        ]

    def _run(self, slot: str) -> None:
        body = {"model": slot, "stream": True, "max_tokens": 40, "messages": [{"role": "user", "content": "go"}]}
        while not self.stop.is_set():
            try:
                status, data, retry_after = _http(self.port, "POST", "/v1/chat/completions", body)
            except (OSError, http.client.HTTPException):
                outcome = "transport_error"
            else:
                last = [e for e in data.split(b"\n\n") if e.strip()][-1:] or [b""]
                if status == 200 and last[0] == b"data: [DONE]":
                    outcome = "completed"
                elif status == 200 and b"upstream.stream_interrupted" in last[0]:
                    outcome = "interrupted"
                elif status == 200:
                    outcome = "truncated"
                elif status == 503 and retry_after.isdigit():
                    outcome = "503_retry_after"
                else:
                    outcome = f"status_{status}"
            with self.lock:
                self.outcomes[outcome] += 1
            if outcome == "503_retry_after":
                self.stop.wait(0.2)

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding rank q·count."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return None


def metrics_report(text: str) -> dict[str, object]:
    buckets: dict[str, dict[float, float]] = {}
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                per = buckets.setdefault(sample.name.removesuffix("_bucket"), {})
                per[le] = per.get(le, 0.0) + sample.value  # summed over labels (models)
            elif not sample.labels:
                values[sample.name] = sample.value

    def q(name: str, quantile: float) -> float | None:
        return _quantile(list(buckets.get(f"hal0proxy_{name}", {}).items()), quantile)

    return {
        "route_stable_p50_s": q("route_stable_seconds", 0.5),
        "route_stable_p99_s": q("route_stable_seconds", 0.99),
        "eviction_recovery_p50_s": q("eviction_recovery_seconds", 0.5),
        "eviction_recovery_p99_s": q("eviction_recovery_seconds", 0.99),
        "lemond_load_p99_s": q("lemond_load_seconds", 0.99),
        "responses_502": values.get("hal0proxy_dispatch_upstream_unavailable_total", 0.0),
        "streams_cut_by_children": values.get("hal0proxy_streams_interrupted_total", 0.0),
    }


class Lemond:
    """The emulator as a process group, so a kill takes its children with it."""

    def __init__(self, args: argparse.Namespace, log_dir: Path, catalog: Path) -> None:
        self.args, self.log_dir, self.catalog = args, log_dir, catalog
        self.port = free_port()
        # Below the ephemeral range, where outgoing connections take ports (Linux: 32768+).
        self.child_base = random.randrange(20000, 32000, 50)
        self.runs = 0
        self.proc = self._start()

    def _start(self) -> Proc:
        self.runs += 1
        argv = [sys.executable, "-m", "hal0proxy.emulator", "--port", str(self.port), "--quiet"]
        argv += ["--child-port-base", str(self.child_base), "--catalog", str(self.catalog), "--max-loaded-models", "2"]
        argv += ["--lemond-version", self.args.lemond_version, "--unload-pause-seconds", "0.2"]
        argv += ["--fake-tokens-per-second", "300", "--watchdog-poll-seconds", "0.5"]
        proc = Proc(f"lemond-{self.runs}", argv, self.log_dir)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/live", timeout=2) as resp:
                    if resp.status == 200:
                        return proc
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"emulator did not start:\n{proc.log_tail()}")

    def post(self, path: str, body: object) -> int:
        try:
            return _http(self.port, "POST", path, body)[0]
        except OSError:
            return 0

    def kill_and_restart(self) -> int:
        os.killpg(self.proc.popen.pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        time.sleep(0.5)
        self.proc = self._start()
        return 200

    def inject(self, fault: str, model: str) -> int:
        if fault == "kill":
            return self.kill_and_restart()
        if fault == "third_party":
            return self.post("/v1/load", {"model_name": THIRD})
        if fault in ("slow_load", "fail_load"):
            if fault == "slow_load":
                self.post("/_emu/slow_load", {"model_name": model, "seconds": 1.5})
            else:
                self.post("/_emu/fail_next_load", {"model_name": model, "kind": "other"})
            status = self.post("/_emu/evict", {"model_name": model})
            self.post("/_emu/slow_load", {"model_name": model, "seconds": None})
            return status
        return self.post(f"/_emu/{fault}", {"model_name": model})


def run(args: argparse.Namespace) -> dict[str, object]:
    log_dir = Path(tempfile.mkdtemp(prefix="hal0-chaos-"))
    catalog = log_dir / "catalog.json"
    models = [
        {"name": n, "type": "llm", "checkpoint": f"bench/{n}:Q4_0", "load_seconds": 0.2}
        for n in (*SLOTS.values(), THIRD)
    ]
    catalog.write_text(json.dumps({"models": models}))
    (log_dir / "proxy.toml").write_text(CONFIG)
    lemond = Lemond(args, log_dir, catalog)
    proxy_port = free_port()
    argv = [sys.executable, "-m", "hal0proxy", "serve", "--listen", f"127.0.0.1:{proxy_port}"]
    argv += ["--lemond", f"http://127.0.0.1:{lemond.port}", "--config", str(log_dir / "proxy.toml")]
    proxy = Proc("hal0proxy", argv, log_dir)
    faults: Counter[str] = Counter()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _http(proxy_port, "GET", "/readyz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        rng = random.Random(args.seed)
        with Clients(proxy_port, args.clients) as clients:
            stop_at = time.monotonic() + args.duration
            cycle: list[str] = []
            while time.monotonic() < stop_at - 3:
                if not cycle:
                    cycle = list(FAULTS)
                    rng.shuffle(cycle)
                time.sleep(args.fault_every)
                fault = cycle.pop()
                faults[f"{fault}:{lemond.inject(fault, rng.choice(list(SLOTS.values())))}"] += 1
            time.sleep(max(0.0, stop_at - time.monotonic()))
        text = _http(proxy_port, "GET", "/metrics")[1].decode()
        return {
            "lemond_version": args.lemond_version,
            "duration_s": args.duration,
            "clients": args.clients,
            **metrics_report(text),
            "client_outcomes": dict(clients.outcomes),
            "faults": dict(faults),
        }
    finally:
        proxy.stop()
        lemond.proc.stop()


def markdown(result: dict[str, object], command: str) -> str:
    def s(key: str) -> str:
        value = result.get(key)
        return "-" if value is None else f"{float(value):.3f}"  # type: ignore[arg-type]

    outcomes = result["client_outcomes"]
    assert isinstance(outcomes, dict)
    return "\n".join(
        [
            f"Chaos run (`{command}`), lemond {result['lemond_version']}, {result['duration_s']} s, "
            f"{result['clients']} streaming clients; faults: {result['faults']}",
            "",
            "| measurement | value |",
            "|---|---:|",
            f"| route-stable p50 / p99 s | {s('route_stable_p50_s')} / {s('route_stable_p99_s')} |",
            f"| eviction-recovery p50 / p99 s | {s('eviction_recovery_p50_s')} / {s('eviction_recovery_p99_s')} |",
            f"| /v1/load p99 s | {s('lemond_load_p99_s')} |",
            f"| 502 answers | {int(result['responses_502'])} |",  # type: ignore[call-overload]
            f"| streams completed / interrupted / truncated | {outcomes.get('completed', 0)} / "
            f"{outcomes.get('interrupted', 0)} / {outcomes.get('truncated', 0)} |",
            f"| 503 + Retry-After / transport errors | {outcomes.get('503_retry_after', 0)} / "
            f"{outcomes.get('transport_error', 0)} |",
            f"| streams cut by children (proxy's count) | {int(result['streams_cut_by_children'])} |",  # type: ignore[call-overload]
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--lemond-version", choices=("11.7", "10.7"), default="11.7")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--fault-every", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = p.parse_args(argv)
    result = run(args)
    command = "python -m bench.chaos " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(result, command.strip())
    print(json.dumps(result, sort_keys=True))
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")
    bad = result["responses_502"] or any(
        k not in ("completed", "interrupted", "503_retry_after") for k in outcomes_of(result)
    )
    return 1 if bad else 0


def outcomes_of(result: dict[str, object]) -> dict[str, int]:
    outcomes = result["client_outcomes"]
    assert isinstance(outcomes, dict)
    return outcomes


if __name__ == "__main__":
    raise SystemExit(main())
