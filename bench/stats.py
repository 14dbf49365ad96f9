"""Pure statistics over latency samples: no I/O, no clocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["percentile", "summarize"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already-sorted values, nearest-rank.

    Nearest-rank rather than interpolation: every reported number is a latency that was
    actually observed, which keeps the p99 of a small sample honest.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean in microseconds plus the sample count."""
    ordered = sorted(samples_ns)
    count = len(ordered)
    if count == 0:
        return {
            "n": 0,
            "p50_us": math.nan,
            "p90_us": math.nan,
            "p99_us": math.nan,
            "max_us": math.nan,
            "mean_us": math.nan,
        }
    return {
        "n": count,
        "p50_us": percentile(ordered, 50) / 1000.0,
        "p90_us": percentile(ordered, 90) / 1000.0,
        "p99_us": percentile(ordered, 99) / 1000.0,
        "max_us": ordered[-1] / 1000.0,
        "mean_us": sum(ordered) / count / 1000.0,
    }
