"""The shipped Grafana dashboard cannot rot: every PromQL expression in it may only name metrics
(and labels) that a real running proxy exports.

The proxy and the lemond emulator run as real processes; traffic, a cold load and an eviction
make the labelled families produce samples, so label names can be checked too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.emulator import REPO, EmulatorProcess, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy, wait_for

DASHBOARD = REPO / "grafana" / "hal0proxy-dashboard.json"

PROXY_CONFIG = """
[policy]
cold_start = "wait"
max_wait_s = 30

[[slot]]
name = "primary"
model = "Qwen3-0.6B-GGUF"
type = "llm"
warm = true

[[slot]]
name = "embed"
model = "nomic-embed-text-v1-GGUF"
type = "embedding"
"""

# Every metric the dashboard must show (the SLOs and traffic of DESIGN.md "Metrics").
REQUIRED_METRICS = {
    "hal0proxy_requests_total",
    "hal0proxy_request_duration_seconds",
    "hal0proxy_time_to_first_byte_seconds",
    "hal0proxy_dispatch_upstream_unavailable_total",
    "hal0proxy_lemond_load_seconds",
    "hal0proxy_route_stable_seconds",
    "hal0proxy_eviction_recovery_seconds",
    "hal0proxy_evictions_total",
    "hal0proxy_websocket_connected",
    "hal0proxy_websocket_reconnects_total",
    "hal0proxy_in_flight",
    "hal0proxy_slot_state",
    "hal0proxy_streamed_chunks_total",
    "hal0proxy_connections_open",
    "hal0proxy_route_reresolutions_total",
}

# Labels Prometheus attaches at scrape time rather than the proxy exporting them.
TARGET_LABELS = {"instance", "job"}

PROMQL_FUNCTIONS = {
    "abs", "absent", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "count", "count_over_time", "delta", "deriv", "floor", "group", "histogram_quantile", "idelta", "increase",
    "irate", "label_join", "label_replace", "max", "max_over_time", "min", "min_over_time", "quantile",
    "quantile_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc", "stddev", "sum",
    "sum_over_time", "time", "timestamp", "topk", "vector",
}  # fmt: skip
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
_TOKEN = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# -- reading the dashboard -------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` for every query target of every panel."""
    dashboard = dashboard or load_dashboard()
    return [
        (panel.get("title", "?"), target["expr"])
        for panel in iter_panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def concrete_expr(expr: str) -> str:
    """The expression as Grafana would send it, with its template variables filled in."""
    for var, value in (("$__rate_interval", "1m"), ("$__range", "5m"), ("$__interval", "15s")):
        expr = expr.replace(var, value)
    return re.sub(r"\$\{?(instance|slot)\}?", ".*", expr)


# -- a small PromQL reader: enough to pull metric and label names out -----------------------


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """``(metric names, function names)`` used by ``expr``."""
    text = _strip_strings(expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = _GROUPING.sub(" ", text)
    metrics: set[str] = set()
    functions: set[str] = set()
    for match in _TOKEN.finditer(text):
        name, call = match.group(1), match.group(2)
        if call:
            functions.add(name)
        elif name.lower() not in PROMQL_KEYWORDS:
            metrics.add(name)
    return metrics, functions


def selector_labels(expr: str) -> dict[str, set[str]]:
    """Label names used in each ``metric{...}`` selector."""
    out: dict[str, set[str]] = {}
    for metric, body in _SELECTOR.findall(_strip_strings(expr)):
        out.setdefault(metric, set()).update(_MATCHER_LABEL.findall(body))
    return out


def grouping_labels(expr: str) -> set[str]:
    labels: set[str] = set()
    for _, inner in _GROUPING.findall(_strip_strings(expr)):
        labels.update(part.strip() for part in inner.split(",") if part.strip())
    return labels


def base_name(metric: str) -> str:
    for suffix in _HISTOGRAM_SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


# -- reading the proxy's exposition -----------------------------------------------------------


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """``(metric base names, labels seen per base name)`` from a Prometheus text exposition."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(base_name(line.split()[2]))
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            name = base_name(name.split()[0])
            names.add(name)
            if rest:
                found = set(re.findall(r'([A-Za-z_][A-Za-z0-9_]*)="', rest.rpartition("}")[0]))
                labels.setdefault(name, set()).update(found - {"le"})
    return names, labels


# -- the running system ----------------------------------------------------------------------


def _chat(proxy: ProxyProcess) -> int:
    body = {"model": "primary", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    status, _, data = proxy.request("POST", "/v1/chat/completions", body)
    assert b"data: [DONE]" in data or status != 200, data[-200:]
    return status


@pytest.fixture(scope="module")
def scrape() -> Iterator[str]:
    emu: EmulatorProcess = start_emulator(unload_pause_seconds=0.1, log_level="info")
    try:
        with start_proxy(emu.base_url, PROXY_CONFIG) as proxy:
            assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 30), proxy.slots()
            assert _chat(proxy) == 200
            status, _, _ = proxy.request("POST", "/v1/embeddings", {"model": "embed", "input": "hello"})
            assert status == 200  # a cold load through the proxy
            assert emu.post("/_emu/evict", {"model_name": "Qwen3-0.6B-GGUF"})[0] == 200
            assert _chat(proxy) == 200  # reloads primary: eviction recovery and route-stable samples
            status, headers, body = proxy.request("GET", "/metrics")
            assert status == 200, body[:300]
            assert headers["content-type"].startswith("text/plain")
            yield body.decode()
    finally:
        emu.stop()


# -- tests -----------------------------------------------------------------------------------


def test_dashboard_is_an_importable_grafana_dashboard() -> None:
    dash = load_dashboard()
    assert 36 <= dash["schemaVersion"] <= 41
    assert dash["uid"] and dash["title"]
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    assert dash["__inputs"][0]["pluginId"] == "prometheus"
    panels = list(iter_panels(dash["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not covered & cells, f"panel {panel['title']!r} overlaps another"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_covers_every_slo_metric() -> None:
    used = {base_name(m) for _, expr in dashboard_exprs() for m in referenced(expr)[0]}
    missing = {base_name(m) for m in REQUIRED_METRICS} - used
    assert not missing, f"dashboard has no panel for {sorted(missing)}"


def test_quantiles_are_taken_over_buckets_by_le() -> None:
    for title, expr in dashboard_exprs():
        if "histogram_quantile" not in expr:
            continue
        metrics, _ = referenced(expr)
        assert metrics and all(m.endswith("_bucket") for m in metrics), (title, expr)
        assert "le" in grouping_labels(expr), (title, expr)


def test_promql_reader_finds_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, model) (rate(x_bucket{a=~"$i", b="y"}[$__rate_interval]))) or vector(0)'
    )
    assert referenced(expr) == ({"x_bucket"}, {"histogram_quantile", "sum", "rate", "vector"})
    assert selector_labels(expr) == {"x_bucket": {"a", "b"}}
    assert grouping_labels(expr) == {"le", "model"}
    assert referenced("2 * max by (slot) (up) + 1e-3")[0] == {"up"}


def test_every_expression_names_only_exported_metrics(scrape: str) -> None:
    names, _ = exported(scrape)
    assert {base_name(m) for m in REQUIRED_METRICS} <= names, sorted({base_name(m) for m in REQUIRED_METRICS} - names)
    problems = []
    for title, expr in dashboard_exprs():
        metrics, functions = referenced(expr)
        if not metrics:
            problems.append(f"{title}: no metric in {expr!r}")
        for metric in metrics:
            if base_name(metric) not in names:
                problems.append(f"{title}: {metric} is not exported")
        for func in functions - PROMQL_FUNCTIONS:
            problems.append(f"{title}: unknown function {func}()")
    assert not problems, "\n".join(problems)


def test_every_label_used_is_exported(scrape: str) -> None:
    _, labels = exported(scrape)
    problems = []
    for title, expr in dashboard_exprs():
        metrics, _ = referenced(expr)
        for metric, used in selector_labels(expr).items():
            seen = labels.get(base_name(metric))
            if seen is not None:  # families without samples yet cannot be checked
                problems += [f"{title}: {metric} has no label {lb!r}" for lb in used - seen - TARGET_LABELS]
        known = set().union(*(labels.get(base_name(m), set()) for m in metrics)) | {"le"} | TARGET_LABELS
        if all(base_name(m) in labels for m in metrics):
            problems += [f"{title}: grouping by unknown label {lb!r}" for lb in grouping_labels(expr) - known]
    assert not problems, "\n".join(problems)


def test_dashboard_file_is_where_the_readme_says() -> None:
    readme = (REPO / "grafana" / "README.md").read_text()
    assert Path(DASHBOARD).name in readme
