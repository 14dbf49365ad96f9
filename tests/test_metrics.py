"""The request metrics kept as plain numbers export exactly what prometheus-client would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from hal0proxy.metrics import _LATENCY_BUCKETS, ControlStats, DataPlaneStats, Metrics, SlotSnapshot, StatsSnapshot
from hal0proxy.slots.state import SlotState

OBSERVATIONS = [
    ("primary", 200, 0.0005, 0.0004),  # exactly on a bucket bound: le is "less or equal"
    ("primary", 200, 0.003, 0.001),
    ("primary", 503, 0.2, None),
    (None, 404, 0.00001, None),
    ("embed", 200, 400.0, 399.0),  # past the last bound: +Inf only
    ("primary", 502, 1.5, None),
]


def _lines(text: bytes, prefix: str) -> list[str]:
    return sorted(line for line in text.decode().splitlines() if line.startswith(prefix) and "_created" not in line)


def _reference() -> bytes:
    registry = CollectorRegistry()
    requests = Counter("hal0proxy_requests", "x", ["slot", "code"], registry=registry)
    duration = Histogram(
        "hal0proxy_request_duration_seconds", "x", ["slot"], buckets=_LATENCY_BUCKETS, registry=registry
    )
    ttfb = Histogram("hal0proxy_time_to_first_byte_seconds", "x", ["slot"], buckets=_LATENCY_BUCKETS, registry=registry)
    for slot, status, seconds, first in OBSERVATIONS:
        requests.labels(slot or "-", str(status)).inc()
        duration.labels(slot or "-").observe(seconds)
        child = ttfb.labels(slot or "-")  # created with the slot's first request, as before
        if first is not None:
            child.observe(first)
    return generate_latest(registry)


def test_request_series_match_prometheus_client_line_for_line() -> None:
    metrics = Metrics()
    for observation in OBSERVATIONS:
        metrics.observe_request(*observation)
    _, ours = metrics.render()
    reference = _reference()
    for prefix in (
        "hal0proxy_requests_total",
        "hal0proxy_request_duration_seconds_",
        "hal0proxy_time_to_first_byte_seconds_",
    ):
        expected = _lines(reference, prefix)
        assert expected, prefix
        assert _lines(ours, prefix) == expected, prefix
    assert "hal0proxy_dispatch_upstream_unavailable_total 1.0" in ours.decode()


def test_state_collector_exports_a_plain_snapshot() -> None:
    metrics = Metrics()
    snapshot = StatsSnapshot(
        data_plane=DataPlaneStats(connections_open=3, chunks_relayed=41),
        control=ControlStats(websocket_connected=True, slots=(SlotSnapshot("primary", SlotState.READY, 2),)),
    )
    metrics.bind_snapshot(lambda: snapshot)
    text = metrics.render()[1].decode()
    assert "hal0proxy_connections_open 3.0" in text
    assert "hal0proxy_streamed_chunks_total 41.0" in text
    assert "hal0proxy_websocket_connected 1.0" in text
    assert 'hal0proxy_in_flight{slot="primary"} 2.0' in text
    assert f'hal0proxy_slot_state{{slot="primary",state="{SlotState.READY}"}} 1.0' in text
