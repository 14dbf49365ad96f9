"""A real Prometheus scrapes a real proxy in front of the lemond emulator.

Traffic covers streaming chats, a cold load and a crashed child followed by more requests, so
every SLO histogram gets samples. The assertions are made through Prometheus' query API, the
way the dashboard and alerts see the numbers, and every dashboard expression is evaluated there.

Prometheus also loads ``prometheus/alerts.yml``. A second, faulty proxy (a static route to a
"child" that answers garbage) is scraped next to the first: the 502 alert must fire for it and
stay silent for the proxy that went through the crash. ``promtool`` checks the rule file and
runs its unit tests, and every metric the proxy exports must be described in
``docs/operations.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
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
ALERT_RULES = REPO / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "prometheus" / "alerts.test.yml"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
INSTALL_SCRIPT = REPO / "scripts" / "install_prometheus.sh"
FAULTY_JOB = "hal0proxy-faulty"

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


def promtool_binary() -> str:
    # Debian's prometheus package ships promtool next to the server.
    prometheus = prometheus_binary()
    found = shutil.which("promtool") or str(Path(prometheus).with_name("promtool"))
    assert Path(found).is_file(), f"promtool not found next to {prometheus}"
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


def start_prometheus(binary: str, target: str, workdir: Path, faulty_target: str | None = None) -> Prometheus:
    config = workdir / "prometheus.yml"
    text = Template(CONFIG_TEMPLATE.read_text()).substitute(proxy_target=target)
    if faulty_target is not None:
        # The template ends inside scrape_configs: one more job, then the rules at top level.
        text += (
            f"  - job_name: {FAULTY_JOB}\n    metrics_path: /metrics\n"
            f'    static_configs:\n      - targets: ["{faulty_target}"]\n'
            f"rule_files:\n  - {json.dumps(str(ALERT_RULES))}\n"
        )
    config.write_text(text)
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


class GarbageChild:
    """A "child" that answers every request with bytes that are not HTTP, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"this is not HTTP\r\n\r\n")

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@dataclass
class Stack:
    emu: EmulatorProcess
    proxy: ProxyProcess
    prom: Prometheus
    baseline: float
    statuses: list[int]
    faulty: ProxyProcess
    faulty_statuses: list[int]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    binary = prometheus_binary()
    workdir = Path(tempfile.mkdtemp(prefix="hal0proxy-prometheus-"))
    emu = start_emulator(unload_pause_seconds=0.1, log_level="info")
    garbage = GarbageChild()
    proxy: ProxyProcess | None = None
    faulty: ProxyProcess | None = None
    prom: Prometheus | None = None
    try:
        proxy = start_proxy(emu.base_url, PROXY_CONFIG)
        faulty = start_proxy(emu.base_url, "", "--static-route", f"garbage={garbage.port}")
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 30), proxy.slots()
        prom = start_prometheus(binary, f"127.0.0.1:{proxy.port}", workdir, f"127.0.0.1:{faulty.port}")
        assert prom.eventually('up{job="hal0proxy"}', lambda v: v == 1.0) == 1.0, "proxy never scraped"
        # Two scrapes of the faulty proxy's 502 counter at zero before its 502, so `increase`
        # sees the step (as it would for any proxy that ran for a while before a fault).
        unavailable = f'hal0proxy_dispatch_upstream_unavailable_total{{job="{FAULTY_JOB}"}}'
        assert prom.eventually(f"count_over_time({unavailable}[1m])", lambda v: v is not None and v >= 2)
        faulty_statuses = [faulty.request("POST", "/v1/chat/completions", {"model": "garbage", "messages": []})[0]]
        # Requests to the slots only: the admin polling above is counted under slot "-".
        baseline = prom.scalar(SLOT_REQUESTS) or 0.0

        statuses = [stream_chat(proxy) for _ in range(5)]
        status, _, _ = proxy.request("POST", "/v1/embeddings", {"model": "embed", "input": "cold load"})
        statuses.append(status)
        assert emu.post("/_emu/crash", {"model_name": "Qwen3-0.6B-GGUF"})[0] == 200
        statuses += [stream_chat(proxy) for _ in range(3)]
        yield Stack(emu, proxy, prom, baseline, statuses, faulty, faulty_statuses)
    finally:
        if prom is not None:
            prom.stop()
        for running in (proxy, faulty):
            if running is not None:
                running.stop()
        garbage.close()
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
    # job="hal0proxy": the faulty proxy scraped next to it (another job) answers 502 on purpose.
    assert stack.prom.scalar('sum(hal0proxy_dispatch_upstream_unavailable_total{job="hal0proxy"})') == 0.0
    assert stack.prom.scalar('sum(hal0proxy_requests_total{code="502", job="hal0proxy"})') is None


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
    # Every panel has data after the traffic above (a crash, a reload, a cold load), not just
    # valid syntax: a query naming a series the proxy never exports would stay empty.
    # A series born late (a labelled histogram's first observation) needs two scrapes for rate().
    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in dashboard_exprs() if not stack.prom.query(concrete_expr(expr))]

    assert wait_for(lambda: not empty(), 20, interval=0.5), "no data:\n" + "\n".join(empty())
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


# -- alert rules ------------------------------------------------------------------------------
def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_promtool_checks_the_alert_rules() -> None:
    done = _promtool("check", "rules", str(ALERT_RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    rules = len(re.findall(r"^\s*- alert: ", ALERT_RULES.read_text(), re.M))
    assert f"SUCCESS: {rules} rules found" in done.stdout, done.stdout


def test_promtool_alert_unit_tests_pass() -> None:
    done = _promtool("test", "rules", str(ALERT_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def _rules(prom: Prometheus) -> list[dict[str, Any]]:
    body = prom.api("/api/v1/rules", type="alert")
    assert body["status"] == "success", body
    return [rule for group in body["data"]["groups"] for rule in group["rules"]]


_THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[0-9.e+-]+\s*$")


def test_every_alert_rule_is_loaded_healthy_and_its_expression_returns_data(stack: Stack) -> None:
    expected = set(re.findall(r"^\s*- alert: (\w+)", ALERT_RULES.read_text(), re.M))
    assert wait_for(lambda: all(r["health"] == "ok" for r in _rules(stack.prom)), 20), _rules(stack.prom)
    rules = _rules(stack.prom)
    assert {r["name"] for r in rules} == expected
    for rule in rules:
        assert not rule.get("lastError"), rule
        # The alert's condition is "<measurement> <op> <threshold>": the measurement must have
        # data on a proxy that served traffic, or the alert could never fire.
        measurement, count = _THRESHOLD.subn("", rule["query"])
        assert count == 1, rule["query"]
        assert stack.prom.query(measurement), f"{rule['name']}: no data for {measurement}"


def _alerts(prom: Prometheus) -> list[dict[str, Any]]:
    body = prom.api("/api/v1/alerts")
    assert body["status"] == "success", body
    return list(body["data"]["alerts"])


def test_502_alert_fires_for_a_child_answering_garbage(stack: Stack) -> None:
    assert stack.faulty_statuses == [502]
    target = f"127.0.0.1:{stack.faulty.port}"

    def firing() -> bool:
        return any(
            a["labels"]["alertname"] == "Hal0proxyUpstreamUnavailable"
            and a["labels"].get("instance") == target
            and a["state"] == "firing"
            for a in _alerts(stack.prom)
        )

    assert wait_for(firing, 30, interval=0.25), _alerts(stack.prom)


def test_no_alert_fires_for_the_proxy_that_went_through_the_chaos(stack: Stack) -> None:
    stack.prom.eventually(SLOT_REQUESTS, lambda v: v is not None and v >= stack.baseline + len(stack.statuses))
    time.sleep(2)  # a few rule evaluations (every second) after the last request
    target = f"127.0.0.1:{stack.proxy.port}"
    mine = [a for a in _alerts(stack.prom) if a["labels"].get("instance") == target]
    assert not [a for a in mine if a["state"] == "firing"], mine
    assert not [a for a in mine if a["labels"]["alertname"] == "Hal0proxyUpstreamUnavailable"], mine


def test_every_exported_metric_is_documented(stack: Stack) -> None:
    doc = OPERATIONS_DOC.read_text()
    result = stack.prom.query('count by (__name__) ({__name__=~"hal0proxy_.+", job="hal0proxy"})')
    names = {r["metric"]["__name__"] for r in result}
    families = {re.sub(r"_(bucket|sum|count|created|total)$", "", n) for n in names}
    assert len(families) > 15, families
    missing = sorted(f for f in families if not re.search(rf"`{f}(_total)?`", doc))
    assert not missing, f"not described in docs/operations.md: {missing}"
