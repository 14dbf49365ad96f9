"""A real Prometheus scrapes a real proxy in front of the lemond emulator.

Traffic covers streaming chats, a cold load and a crashed child followed by more requests, so
every SLO histogram gets samples. The assertions are made through Prometheus' query API, the
way the dashboard and alerts see the numbers, and every dashboard expression is evaluated there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pytest

from tests.support.emulator import REPO, EmulatorProcess, free_port, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy, terminate, wait_for
from tests.test_grafana_dashboard import PROXY_CONFIG, concrete_expr, dashboard_exprs

CONFIG_TEMPLATE = REPO / "prometheus" / "prometheus.test.yml"
INSTALL_SCRIPT = REPO / "scripts" / "install_prometheus.sh"

SLOTS = ("primary", "embed")
SLOT_REQUESTS = f'sum(hal0proxy_requests_total{{slot=~"{"|".join(SLOTS)}"}})'


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        # Installs the Debian package (root + apt) without starting its system service.
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"install_prometheus.sh failed:\n{done.stdout}\n{done.stderr}"
        found = done.stdout.strip().splitlines()[-1]
    assert Path(found).is_file(), found
    return found


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:  # a bad query answers 400 with an error body
            body = json.loads(exc.read())
        return body

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.api("/api/v1/query", query=expr)
        assert body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", (expr, body)
        return list(body["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        """The value of a single-series query, or None while it has no series."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return float(result[0]["value"][1]) if result else None

    def eventually(self, expr: str, accept: Any, timeout: float = 20.0) -> float | None:
        """Poll ``expr`` until ``accept(value)`` (scrapes land every second)."""
        value: float | None = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.scalar(expr)
            if accept(value):
                return value
            time.sleep(0.25)
        return value

    def stop(self) -> None:
        terminate(self.proc)


def start_prometheus(binary: str, target: str, workdir: Path) -> Prometheus:
    config = workdir / "prometheus.yml"
    config.write_text(Template(CONFIG_TEMPLATE.read_text()).substitute(proxy_target=target))
    port = free_port()
    log_path = workdir / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    prom = Prometheus(proc, port, log_path)

    def ready() -> bool:
        assert proc.poll() is None, f"prometheus exited:\n{log_path.read_text(errors='replace')}"
        with contextlib.suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
            return True
        return False

    if not wait_for(ready, 30, interval=0.1):
        prom.stop()
        raise RuntimeError(f"prometheus did not become ready:\n{log_path.read_text(errors='replace')}")
    return prom


def stream_chat(proxy: ProxyProcess) -> int:
    body = {"model": "primary", "stream": True, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    status, headers, data = proxy.request("POST", "/v1/chat/completions", body)
    if status == 200:
        assert headers["content-type"].startswith("text/event-stream"), headers
        assert data.rstrip().endswith(b"data: [DONE]"), data[-200:]
    return status


@dataclass
class Stack:
    emu: EmulatorProcess
    proxy: ProxyProcess
    prom: Prometheus
    baseline: float
    statuses: list[int]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    binary = prometheus_binary()
    workdir = Path(tempfile.mkdtemp(prefix="hal0proxy-prometheus-"))
    emu = start_emulator(unload_pause_seconds=0.1, log_level="info")
    proxy: ProxyProcess | None = None
    prom: Prometheus | None = None
    try:
        proxy = start_proxy(emu.base_url, PROXY_CONFIG)
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 30), proxy.slots()
        prom = start_prometheus(binary, f"127.0.0.1:{proxy.port}", workdir)
        assert prom.eventually('up{job="hal0proxy"}', lambda v: v == 1.0) == 1.0, "proxy never scraped"
        # Requests to the slots only: the admin polling above is counted under slot "-".
        baseline = prom.scalar(SLOT_REQUESTS) or 0.0

        statuses = [stream_chat(proxy) for _ in range(5)]
        status, _, _ = proxy.request("POST", "/v1/embeddings", {"model": "embed", "input": "cold load"})
        statuses.append(status)
        assert emu.post("/_emu/crash", {"model_name": "Qwen3-0.6B-GGUF"})[0] == 200
        statuses += [stream_chat(proxy) for _ in range(3)]
        yield Stack(emu, proxy, prom, baseline, statuses)
    finally:
        if prom is not None:
            prom.stop()
        if proxy is not None:
            proxy.stop()
        emu.stop()
        if os.environ.get("HAL0PROXY_KEEP_TMP") is None:
            shutil.rmtree(workdir, ignore_errors=True)


def test_every_request_succeeded_through_the_crash(stack: Stack) -> None:
    assert stack.statuses == [200] * 9


def test_requests_total_rose_by_the_requests_sent(stack: Stack) -> None:
    sent = len(stack.statuses)
    value = stack.prom.eventually(SLOT_REQUESTS, lambda v: v is not None and v >= stack.baseline + sent)
    assert value == stack.baseline + sent
    result = stack.prom.query(f'sum by (slot) (hal0proxy_requests_total{{code="200", slot=~"{"|".join(SLOTS)}"}})')
    by_slot = {r["metric"]["slot"]: float(r["value"][1]) for r in result}
    assert by_slot["embed"] == 1.0
    assert by_slot["primary"] == stack.baseline + sent - 1


def test_load_latency_quantile_is_a_number(stack: Stack) -> None:
    expr = "histogram_quantile(0.99, sum by (le) (rate(hal0proxy_lemond_load_seconds_bucket[1m])))"
    value = stack.prom.eventually(expr, lambda v: v is not None and math.isfinite(v))
    assert value is not None and math.isfinite(value) and value > 0, value


def test_slo_histograms_got_samples(stack: Stack) -> None:
    prom = stack.prom
    recovery = prom.eventually(
        'sum(hal0proxy_eviction_recovery_seconds_count{slot="primary"})', lambda v: v is not None and v >= 1
    )
    assert recovery is not None and recovery >= 1
    stable = prom.eventually("sum(hal0proxy_route_stable_seconds_count)", lambda v: v is not None and v >= 1)
    assert stable is not None and stable >= 1


def test_no_upstream_unavailable(stack: Stack) -> None:
    stack.prom.eventually(SLOT_REQUESTS, lambda v: v is not None and v >= stack.baseline + len(stack.statuses))
    assert stack.prom.scalar("sum(hal0proxy_dispatch_upstream_unavailable_total)") == 0.0
    assert stack.prom.scalar('sum(hal0proxy_requests_total{code="502"})') is None


def test_slot_state_is_one_hot(stack: Stack) -> None:
    result = stack.prom.query("sum by (slot) (hal0proxy_slot_state)")
    sums = {r["metric"]["slot"]: float(r["value"][1]) for r in result}
    assert sums == dict.fromkeys(SLOTS, 1.0)
    states = stack.prom.query("hal0proxy_slot_state == 1")
    assert {r["metric"]["slot"] for r in states} == set(SLOTS)


def test_websocket_connected(stack: Stack) -> None:
    value = stack.prom.eventually("hal0proxy_websocket_connected", lambda v: v == 1.0, timeout=10)
    assert value == 1.0


def test_every_dashboard_expression_evaluates(stack: Stack) -> None:
    problems = []
    for title, expr in dashboard_exprs():
        body = stack.prom.api("/api/v1/query", query=concrete_expr(expr))
        if body["status"] != "success":
            problems.append(f"{title}: {body.get('error')} in {expr!r}")
    assert not problems, "\n".join(problems)
    # The SLO panels have data after the traffic above, not just valid syntax.
    for expr in (
        'sum by (slot, code) (rate(hal0proxy_requests_total{instance=~".*", slot=~".*"}[1m]))',
        "sum by (slot) (hal0proxy_in_flight)",
    ):
        assert stack.prom.query(expr), expr


def test_streamed_chunks_are_counted(stack: Stack) -> None:
    streams = sum(1 for s in stack.statuses if s == 200) - 1  # one of them was the embeddings call
    value = stack.prom.eventually(
        "sum(hal0proxy_streamed_chunks_total)", lambda v: v is not None and v >= streams, timeout=5
    )
    assert value is not None and value >= streams, f"{value} chunks counted for {streams} streamed responses"
