"""How long and how hard each run measures: ``full``, ``quick`` and the ``tiny`` self-check."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROFILES", "Profile"]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    #: measured seconds per target and measurement (after ``warmup``); ignored by fixed-count runs
    duration: float
    warmup: float
    #: non-streaming: fixed request count instead of a duration (0 = use the duration)
    latency_requests: int
    #: total requests/s of the paced run (latency without queueing); 0 skips it
    paced_rate: float
    #: streaming throughput: connections, and fixed streams per connection (0 = endless for ``duration``)
    stream_conns: int
    stream_streams: int
    stream_max_tokens: int
    #: per-event delay: concurrent stamped streams, each at ``stamp_tps`` tokens/s
    stamp_conns: int
    stamp_streams: int
    stamp_tps: float
    stamp_max_tokens: int
    #: concurrent open streams for the RSS measurement, spread over this many child processes
    hold_streams: int
    hold_children: int
    #: real llama-server section: fixed non-streaming request count and tokens per request
    real_requests: int = 400
    real_max_tokens: int = 4


PROFILES = {
    "full": Profile(
        name="full",
        duration=5.0,
        warmup=1.0,
        latency_requests=0,
        paced_rate=400.0,
        stream_conns=4,
        stream_streams=0,
        stream_max_tokens=100_000_000,
        stamp_conns=256,
        stamp_streams=0,
        stamp_tps=20.0,
        stamp_max_tokens=1_000_000,
        hold_streams=10_000,
        hold_children=4,
    ),
    "quick": Profile(
        name="quick",
        duration=1.5,
        warmup=0.5,
        latency_requests=0,
        paced_rate=400.0,
        stream_conns=4,
        stream_streams=0,
        stream_max_tokens=100_000_000,
        stamp_conns=256,
        stamp_streams=0,
        stamp_tps=20.0,
        stamp_max_tokens=1_000_000,
        hold_streams=1_000,
        hold_children=1,
        real_requests=200,
    ),
    # A self-check of the harness (tests/test_bench_smoke.py): fixed counts, so every number
    # can be checked against what was asked for.
    "tiny": Profile(
        name="tiny",
        duration=0.0,
        warmup=0.0,
        latency_requests=160,
        paced_rate=800.0,
        stream_conns=4,
        stream_streams=2,
        stream_max_tokens=200,
        stamp_conns=16,
        stamp_streams=1,
        stamp_tps=100.0,
        stamp_max_tokens=20,
        hold_streams=40,
        hold_children=2,
        real_requests=40,
    ),
}
