"""Every Prometheus metric, defined once (prefix ``hal0proxy_``, base units).

Hot-path cost is one dictionary lookup, one integer increment and two bisects per *request*,
never per chunk: request counts and latency histograms are plain numbers here, and chunk
counts, connection counts and control-plane state are read at scrape time into a plain
``StatsSnapshot``. The module imports nothing above ``slots``: the layers above hand it plain
data (``DataPlaneStats``, ``ControlStats``) and call its ``observe_*`` methods, never the
other way round.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from hal0proxy.slots.state import SlotState

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_CONTROL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BUCKET_LABELS = (*(floatToGoString(b) for b in _LATENCY_BUCKETS), "+Inf")


class _PlainHistogram:
    """One label set's histogram as plain numbers: a bisect and two additions per observation.

    prometheus-client's ``Histogram.observe`` takes a lock and walks every bucket; the proxy
    observes from one thread, so the counts are kept here and exported at scrape time.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)  # per bucket, not cumulative; last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal")
        self.counts[bisect_left(_LATENCY_BUCKETS, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        out = []
        for label, count in zip(_BUCKET_LABELS, self.counts, strict=True):
            running += count
            out.append((label, float(running)))
        return out


class _RequestSeries:
    """Per-request numbers of one ``(slot, status)``: the count and the two histograms' children."""

    __slots__ = ("count", "duration", "ttfb")

    def __init__(self, duration: _PlainHistogram, ttfb: _PlainHistogram) -> None:
        self.count = 0
        self.duration = duration
        self.ttfb = ttfb


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # Requests, durations and TTFB are counted as plain numbers on the hot path and
        # exported by this collector under the same names and types as before.
        self._series: dict[tuple[str | None, int], _RequestSeries] = {}
        self._series_by_slot: dict[str | None, dict[int, _RequestSeries]] = {}  # the same series, for observe
        self._durations: dict[str, _PlainHistogram] = {}
        self._ttfbs: dict[str, _PlainHistogram] = {}
        self.upstream_unavailable_count = 0
        r.register(_RequestCollector(self))
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
        self._collector: _StateCollector | None = None

    # -- hot path ---------------------------------------------------------------------------
    def observe_request(self, slot: str | None, status: int, seconds: float, ttfb: float | None) -> None:
        # Keyed slot first, then status: two plain lookups, no tuple built and hashed per call.
        by_status = self._series_by_slot.get(slot)
        series = None if by_status is None else by_status.get(status)
        if series is None:
            series = self._new_series(slot, status)
        series.count += 1
        # _PlainHistogram.observe, inlined: this runs once per request
        histogram = series.duration
        histogram.counts[bisect_left(_LATENCY_BUCKETS, seconds)] += 1
        histogram.total += seconds
        if ttfb is not None:
            histogram = series.ttfb
            histogram.counts[bisect_left(_LATENCY_BUCKETS, ttfb)] += 1
            histogram.total += ttfb
        if status == 502:
            self.upstream_unavailable_count += 1

    def _new_series(self, slot: str | None, status: int) -> _RequestSeries:
        label = slot or "-"
        duration = self._durations.setdefault(label, _PlainHistogram())
        ttfb = self._ttfbs.setdefault(label, _PlainHistogram())
        series = self._series[(slot, status)] = _RequestSeries(duration, ttfb)
        self._series_by_slot.setdefault(slot, {})[status] = series
        return series

    def request_counts(self) -> dict[tuple[str, str], int]:
        """``(slot label, status) -> requests`` as exported (``-`` for requests without a slot)."""
        out: dict[tuple[str, str], int] = {}
        for (slot, status), series in self._series.items():
            key = (slot or "-", str(status))
            out[key] = out.get(key, 0) + series.count
        return out

    # -- control-plane hooks ---------------------------------------------------------------
    def route_stable(self, timing: _Timed) -> None:
        self.route_stable_seconds.observe(max(0.0, timing.seconds))

    def observe_load(self, model: str, seconds: float) -> None:
        """One ``/v1/load`` call took ``seconds`` (the control plane's ``load_measured`` hook)."""
        self.load_seconds.labels(model).observe(seconds)

    def observe_recovery(self, slot: str, seconds: float) -> None:
        """``slot`` was ready again ``seconds`` after an eviction or crash took it away."""
        self.recovery_seconds.labels(slot).observe(seconds)

    def count_eviction(self, reason: str, initiator: str) -> None:
        self.evictions.labels(reason, initiator).inc()

    def bind(self, control: Callable[[], ControlStats] | None, data_plane: DataPlaneStats) -> None:
        """Read state at scrape time: the control plane's plain ``ControlStats`` (none with static
        routes) and a copy of the data plane's counters, combined into one ``StatsSnapshot``."""
        if control is None:
            self.bind_snapshot(lambda: StatsSnapshot(replace(data_plane), None))
        else:
            self.bind_snapshot(lambda: StatsSnapshot(replace(data_plane), control()))

    def bind_snapshot(self, source: Callable[[], StatsSnapshot]) -> None:
        self._collector = _StateCollector(source)
        self.registry.register(self._collector)

    def render(self) -> tuple[bytes, bytes]:
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)


class _Timed(Protocol):
    @property
    def seconds(self) -> float: ...


@dataclass(frozen=True, slots=True)
class SlotSnapshot:
    name: str
    state: SlotState
    in_flight: int


@dataclass(slots=True)
class DataPlaneStats:
    """Plain counters the data plane bumps on its hot path; metrics read them at scrape time.

    Defined here, below the data plane, so a snapshot can carry a copy of them."""

    connections_open: int = 0
    client_disconnects: int = 0
    retries: int = 0
    reroutes: int = 0
    streams_interrupted: int = 0
    chunks_relayed: int = 0
    connections_refused: int = 0  # past the connection cap (503 and close)
    upstream_bad_responses: int = 0  # child responses refused as invalid HTTP (502)


@dataclass(frozen=True, slots=True)
class ControlStats:
    """The control plane's numbers at one instant, as plain data (``Controller.stats_snapshot``)."""

    websocket_connected: bool = False
    websocket_reconnects: int = 0
    lemond_resyncs: int = 0
    lemond_seq_gaps: int = 0
    lemond_restarts: int = 0
    loads_issued: int = 0
    subscribers_dropped: int = 0
    slots: tuple[SlotSnapshot, ...] = ()


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Everything the scrape-time collector exports, as plain numbers."""

    data_plane: DataPlaneStats = field(default_factory=DataPlaneStats)  # a copy, never the live counters
    #: None with static routes: no lemond, no slots, so no lemond or slot figures are exported
    #: (a constant ``websocket_connected 0`` would fire the WebSocket-down alert).
    control: ControlStats | None = field(default_factory=ControlStats)


class _RequestCollector:
    """``hal0proxy_requests``, ``..._request_duration_seconds`` and ``..._time_to_first_byte_seconds``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "hal0proxy_requests", "Requests answered, by slot and HTTP status", labels=["slot", "code"]
        )
        for (slot, code), count in sorted(m.request_counts().items()):
            requests.add_metric([slot, code], count)
        yield requests
        yield _histogram_family("hal0proxy_request_duration_seconds", "Request duration", m._durations.items())
        yield _histogram_family(
            "hal0proxy_time_to_first_byte_seconds",
            "Time from a complete request to the child's response head",
            m._ttfbs.items(),
        )
        yield CounterMetricFamily(
            "hal0proxy_dispatch_upstream_unavailable",
            "502 dispatch.upstream_unavailable answers",
            value=m.upstream_unavailable_count,
        )


def _histogram_family(name: str, doc: str, by_slot: Iterable[tuple[str, _PlainHistogram]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["slot"])
    for slot, histogram in sorted(by_slot):
        family.add_metric([slot], histogram.cumulative(), histogram.total)
    return family


class _StateCollector:
    """Gauges and counters read at scrape time from a ``StatsSnapshot``."""

    def __init__(self, source: Callable[[], StatsSnapshot]) -> None:
        self.source = source

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        control = snap.control
        simple = (
            ("connections_open", "Open client connections", snap.data_plane.connections_open, GaugeMetricFamily),
            (
                "client_disconnects",
                "Forwarded requests the client left (closed or sent its FIN) while the child was answering",
                snap.data_plane.client_disconnects,
                CounterMetricFamily,
            ),
            (
                "upstream_retries",
                "Requests retried on a fresh child connection",
                snap.data_plane.retries,
                CounterMetricFamily,
            ),
            (
                "route_reresolutions",
                "Route re-resolutions after a failed child connect",
                snap.data_plane.reroutes,
                CounterMetricFamily,
            ),
            (
                "streams_interrupted",
                "Responses the child cut short",
                snap.data_plane.streams_interrupted,
                CounterMetricFamily,
            ),
            ("streamed_chunks", "Chunks relayed from children", snap.data_plane.chunks_relayed, CounterMetricFamily),
            (
                "connections_refused",
                "Client connections refused past the connection cap",
                snap.data_plane.connections_refused,
                CounterMetricFamily,
            ),
            (
                "upstream_bad_responses",
                "Child responses refused as invalid HTTP (answered 502)",
                snap.data_plane.upstream_bad_responses,
                CounterMetricFamily,
            ),
        )
        for name, doc, value, family in simple:
            yield family(f"hal0proxy_{name}", doc, value=value)
        if control is not None:
            yield from self._control(control)

    @staticmethod
    def _control(control: ControlStats) -> Iterator[Metric]:
        simple = (
            (
                "websocket_connected",
                "1 while the lemond log WebSocket is connected",
                int(control.websocket_connected),
                GaugeMetricFamily,
            ),
            (
                "websocket_reconnects",
                "lemond log WebSocket reconnects",
                control.websocket_reconnects,
                CounterMetricFamily,
            ),
            ("lemond_resyncs", "/v1/health reconciliations applied", control.lemond_resyncs, CounterMetricFamily),
            ("lemond_seq_gaps", "Gaps in the lemond log sequence", control.lemond_seq_gaps, CounterMetricFamily),
            ("lemond_restarts", "lemond restarts detected", control.lemond_restarts, CounterMetricFamily),
            ("lemond_loads_issued", "/v1/load calls issued by the proxy", control.loads_issued, CounterMetricFamily),
            (
                "events_subscribers_dropped",
                "Admin event subscribers dropped for being slow",
                control.subscribers_dropped,
                CounterMetricFamily,
            ),
        )
        for name, doc, value, family in simple:
            yield family(f"hal0proxy_{name}", doc, value=value)
        in_flight = GaugeMetricFamily("hal0proxy_in_flight", "Requests in flight per slot", labels=["slot"])
        state = GaugeMetricFamily("hal0proxy_slot_state", "Slot state (one-hot)", labels=["slot", "state"])
        for slot in control.slots:
            in_flight.add_metric([slot.name], slot.in_flight)
            for s in SlotState:
                state.add_metric([slot.name, str(s)], 1.0 if slot.state is s else 0.0)
        yield in_flight
        yield state
