"""Every Prometheus metric, defined once (prefix ``hal0proxy_``, base units).

Hot-path cost is one labelled counter increment and two histogram observations per
*request*, never per chunk: chunk counts, connection counts and control-plane counters are
plain integers read by a collector at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from hal0proxy.slots.state import SlotState

if TYPE_CHECKING:
    from hal0proxy.control.controller import Controller
    from hal0proxy.lemond.routes import StableTiming
    from hal0proxy.proxy.context import DataPlaneStats

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CONTROL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "hal0proxy_requests", "Requests answered, by slot and HTTP status", ["slot", "code"], registry=r
        )
        self.duration = Histogram(
            "hal0proxy_request_duration_seconds", "Request duration", ["slot"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttfb = Histogram(
            "hal0proxy_time_to_first_byte_seconds",
            "Time from a complete request to the child's response head",
            ["slot"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_unavailable = Counter(
            "hal0proxy_dispatch_upstream_unavailable", "502 dispatch.upstream_unavailable answers", registry=r
        )
        self.load_seconds = Histogram(
            "hal0proxy_lemond_load_seconds",
            "Latency of /v1/load calls",
            ["model"],
            buckets=_CONTROL_BUCKETS,
            registry=r,
        )
        self.route_stable_seconds = Histogram(
            "hal0proxy_route_stable_seconds",
            "From a route-changing lemond event being observed to the route being usable",
            buckets=_CONTROL_BUCKETS,
            registry=r,
        )
        self.recovery_seconds = Histogram(
            "hal0proxy_eviction_recovery_seconds",
            "From a slot leaving ready (eviction, crash) to it being ready again",
            ["slot"],
            buckets=_CONTROL_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "hal0proxy_evictions", "Model evictions by reason and initiator", ["reason", "initiator"], registry=r
        )
        self._children: dict[tuple[str, int], tuple[Any, Any, Any]] = {}
        self._collector: _StateCollector | None = None

    # -- hot path ---------------------------------------------------------------------------
    def observe_request(self, slot: str | None, status: int, seconds: float, ttfb: float | None) -> None:
        key = (slot or "-", status)
        children = self._children.get(key)
        if children is None:
            label = key[0]
            children = (self.requests.labels(label, str(status)), self.duration.labels(label), self.ttfb.labels(label))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if ttfb is not None:
            children[2].observe(ttfb)
        if status == 502:
            self.upstream_unavailable.inc()

    # -- control-plane hooks ---------------------------------------------------------------
    def route_stable(self, timing: StableTiming) -> None:
        self.route_stable_seconds.observe(max(0.0, timing.seconds))

    def bind(self, controller: Controller, stats: DataPlaneStats) -> None:
        controller.hooks.load_measured = lambda model, s: self.load_seconds.labels(model).observe(s)
        controller.hooks.recovered = lambda slot, s: self.recovery_seconds.labels(slot).observe(s)
        controller.hooks.evicted = lambda reason, initiator: self.evictions.labels(reason, initiator).inc()
        self._collector = _StateCollector(controller, stats)
        self.registry.register(self._collector)

    def render(self) -> tuple[bytes, bytes]:
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)


class _StateCollector:
    """Gauges and counters read at scrape time from state the proxy keeps anyway."""

    def __init__(self, controller: Controller, stats: DataPlaneStats) -> None:
        self.controller = controller
        self.stats = stats

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        stats, ctl = self.stats, self.controller
        adapter = ctl.adapter
        simple = (
            ("connections_open", "Open client connections", stats.connections_open, GaugeMetricFamily),
            ("client_disconnects", "Streams cut by the client", stats.client_disconnects, CounterMetricFamily),
            ("upstream_retries", "Requests retried on a fresh child connection", stats.retries, CounterMetricFamily),
            (
                "route_reresolutions",
                "Route re-resolutions after a failed child connect",
                stats.reroutes,
                CounterMetricFamily,
            ),
            ("streams_interrupted", "Responses the child cut short", stats.streams_interrupted, CounterMetricFamily),
            ("streamed_chunks", "Chunks relayed from children", stats.chunks_relayed, CounterMetricFamily),
            (
                "connections_refused",
                "Client connections refused past the connection cap",
                stats.connections_refused,
                CounterMetricFamily,
            ),
            (
                "upstream_bad_responses",
                "Child responses refused as invalid HTTP (answered 502)",
                stats.upstream_bad_responses,
                CounterMetricFamily,
            ),
            (
                "websocket_connected",
                "1 while the lemond log WebSocket is connected",
                int(adapter.ws_connected),
                GaugeMetricFamily,
            ),
            ("websocket_reconnects", "lemond log WebSocket reconnects", adapter.stats.reconnects, CounterMetricFamily),
            ("lemond_resyncs", "/v1/health reconciliations applied", adapter.stats.resyncs, CounterMetricFamily),
            ("lemond_seq_gaps", "Gaps in the lemond log sequence", adapter.stats.gaps, CounterMetricFamily),
            ("lemond_restarts", "lemond restarts detected", adapter.stats.restarts, CounterMetricFamily),
            ("lemond_loads_issued", "/v1/load calls issued by the proxy", ctl.loads_issued, CounterMetricFamily),
            (
                "events_subscribers_dropped",
                "Admin event subscribers dropped for being slow",
                ctl.journal.dropped_subscribers,
                CounterMetricFamily,
            ),
        )
        for name, doc, value, family in simple:
            yield family(f"hal0proxy_{name}", doc, value=value)
        in_flight = GaugeMetricFamily("hal0proxy_in_flight", "Requests in flight per slot", labels=["slot"])
        state = GaugeMetricFamily("hal0proxy_slot_state", "Slot state (one-hot)", labels=["slot", "state"])
        for slot in ctl.registry.all():
            in_flight.add_metric([slot.name], slot.status.in_flight)
            for s in SlotState:
                state.add_metric([slot.name, str(s)], 1.0 if slot.status.state is s else 0.0)
        yield in_flight
        yield state
