"""The chaos benchmark's arithmetic: quantiles from Prometheus histogram buckets."""

from __future__ import annotations

import math

from bench.chaos import _quantile, metrics_report


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    buckets = [(0.1, 10.0), (1.0, 90.0), (math.inf, 100.0)]
    assert _quantile(buckets, 0.05) == 0.05
    assert abs((_quantile(buckets, 0.5) or 0) - (0.1 + 0.9 * 40 / 80)) < 1e-9
    assert _quantile(buckets, 0.99) == 1.0  # in the +Inf bucket: the highest finite bound
    assert _quantile([(1.0, 0.0), (math.inf, 0.0)], 0.5) is None


def test_metrics_report_reads_the_proxy_exposition() -> None:
    text = "\n".join(
        [
            "# TYPE hal0proxy_route_stable_seconds histogram",
            'hal0proxy_route_stable_seconds_bucket{le="0.01"} 4.0',
            'hal0proxy_route_stable_seconds_bucket{le="0.1"} 4.0',
            'hal0proxy_route_stable_seconds_bucket{le="+Inf"} 4.0',
            "hal0proxy_route_stable_seconds_count 4.0",
            "hal0proxy_route_stable_seconds_sum 0.01",
            "# TYPE hal0proxy_dispatch_upstream_unavailable_total counter",
            "hal0proxy_dispatch_upstream_unavailable_total 0.0",
            "",
        ]
    )
    report = metrics_report(text)
    assert report["route_stable_p50_s"] == 0.005
    assert report["responses_502"] == 0.0
    assert report["eviction_recovery_p99_s"] is None
