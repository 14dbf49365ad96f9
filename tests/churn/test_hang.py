"""A hung child: it keeps its socket open and answers nothing, not even ``/health``.

lemond's watchdog never sees it (the proxy's traffic bypasses lemond), so the proxy's own
hang watch must: streams in flight end with the interrupted event, requests not yet answered
are retried on the replacement child, the model is reloaded once through lemond, and the
cause is recorded as ``hang``. A child that is silent but answers ``/health`` is not hung.
"""

from __future__ import annotations

import json
import re
import time

from tests.churn.traffic import Hammer
from tests.support.emulator import start_emulator, wait_until
from tests.support.proxy import start_proxy

MODEL = "Qwen3-0.6B-GGUF"
CONFIG = f"""[policy]
hang_after_s = 1.0
hang_probe_interval_s = 0.3
hang_probe_timeout_s = 0.3
hang_probe_failures = 2

[[slot]]
name = "alpha"
model = "{MODEL}"
warm = true
max_wait_s = 20
"""


def _hang_evictions(metrics: str) -> float:
    found = re.search(r'hal0proxy_evictions_total\{initiator="proxy",reason="hang"\} ([0-9.]+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_hung_child_is_detected_replaced_and_no_request_is_lost() -> None:
    with start_emulator("--fake-tokens-per-second", "40", unload_pause_seconds=0.2) as emu:
        proxy = start_proxy(emu.base_url, CONFIG)
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            with (
                Hammer(proxy.port, "alpha", 2, stream=True, max_tokens=60) as streams,
                Hammer(proxy.port, "alpha", 1, max_tokens=20) as plain,
            ):
                time.sleep(1.0)
                status, hung = emu.post("/_emu/hang", {"model_name": MODEL})
                assert status == 200, hung
                hung_at = time.monotonic()
                assert wait_until(lambda: emu.loaded().get(MODEL, {}).get("pid") not in (None, hung["pid"]), 30)
                replaced_at = time.monotonic()
                time.sleep(3.0)
            for tally in (streams.tally, plain.tally):
                assert not tally.problems, tally.summary()  # no 502, no truncation, no transport error
            # the streams that were in flight on the hung child ended with the error event
            assert streams.tally.outcomes["interrupted"] >= 1, streams.tally.summary()
            # the non-streaming request caught on the hung child got its answer from the new one
            stuck = [o for t, o in plain.tally.statuses if hung_at < t < replaced_at + 2]
            assert "200" in stuck, plain.tally.summary()
            late = [o for t, o in streams.tally.statuses if t > replaced_at + 1.5]
            assert late and set(late) == {"done"}, streams.tally.summary()
            assert emu.state()["spawns_by_model"][MODEL] == 2  # one replacement
            metrics = proxy.request("GET", "/metrics")[2].decode()
            assert _hang_evictions(metrics) == 1.0, [m for m in metrics.splitlines() if "evictions" in m]
            assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics
            print(f"hang replaced after {replaced_at - hung_at:.2f}s; streams {dict(streams.tally.outcomes)}")
        finally:
            proxy.stop()


def test_silent_child_that_answers_health_is_not_a_hang() -> None:
    """A long prompt evaluation: nothing for 2.5 s (hang_after_s is 1), /health answers."""
    with start_emulator() as emu:
        proxy = start_proxy(emu.base_url, CONFIG)
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            assert wait_until(lambda: MODEL in emu.loaded(), 10)
            pid = emu.loaded()[MODEL]["pid"]
            body = {"model": "alpha", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
            status, _, data = proxy.request("POST", "/v1/chat/completions", body, {"X-Emu-Stall": "0,2.5"})
            assert status == 200, data
            assert json.loads(data)["choices"][0]["message"]["content"]
            stream = {**body, "stream": True}
            status, _, data = proxy.request("POST", "/v1/chat/completions", stream, {"X-Emu-Stall": "3,2.5"})
            assert status == 200 and data.rstrip().endswith(b"data: [DONE]"), data[-300:]
            assert emu.loaded()[MODEL]["pid"] == pid  # never replaced
            assert emu.state()["spawns_by_model"][MODEL] == 1
            metrics = proxy.request("GET", "/metrics")[2].decode()
            assert _hang_evictions(metrics) == 0.0
        finally:
            proxy.stop()
