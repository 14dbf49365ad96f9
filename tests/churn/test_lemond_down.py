"""lemond down, killed or restarted: 503 + Retry-After meanwhile, never 502, no proxy restart.

lemond starts its children with ``PR_SET_PDEATHSIG=SIGTERM`` (process_linux.cpp:157 in
v11.7.0, process_manager.cpp:554 in v10.7.0), so a killed lemond takes its children with
it; the emulator does the same, and ``EmulatorProcess.stop`` asserts it.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.churn.traffic import Hammer
from tests.support.emulator import free_port, start_emulator, wait_until
from tests.support.proxy import start_proxy

MODEL = "Qwen3-0.6B-GGUF"
OTHER = "Qwen3-4B-GGUF"
CONFIG = f'[[slot]]\nname = "alpha"\nmodel = "{MODEL}"\nwarm = true\nmax_wait_s = 15\n'


def _chat(model: str) -> dict[str, object]:
    return {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def test_proxy_started_before_lemond_answers_503_then_connects_and_warms() -> None:
    port = free_port()
    proxy = start_proxy(f"http://127.0.0.1:{port}", CONFIG)
    try:
        for model in ("alpha", OTHER):
            status, headers, body = proxy.request("POST", "/v1/chat/completions", _chat(model))
            assert status == 503, (model, body)
            assert headers.get("retry-after", "").isdigit(), headers
            assert json.loads(body)["error"]["code"] == "lemond.unavailable"
        assert proxy.request("GET", "/readyz")[0] == 503
        with start_emulator(port=port) as emu:
            # No restart of the proxy: it finds lemond, resyncs and warm-loads the slot.
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20), proxy.log_text()[-2000:]
            # /readyz follows the log (the child serves); lemond lists it once its load returns.
            assert wait_until(lambda: MODEL in emu.loaded(), 10)
            for model in ("alpha", OTHER):
                status, _, body = proxy.request("POST", "/v1/chat/completions", _chat(model))
                assert status == 200, (model, body)
    finally:
        proxy.stop()


@pytest.mark.parametrize("version", ["11.7", "10.7"])
def test_lemond_killed_and_restarted_under_streaming_load(version: str) -> None:
    opts = ("--fake-tokens-per-second", "150")
    emu = start_emulator(*opts, lemond_version=version)
    proxy = start_proxy(emu.base_url, CONFIG)
    try:
        assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
        with Hammer(proxy.port, "alpha", 3, stream=True, max_tokens=40) as streams, Hammer(proxy.port, "alpha", 1):
            time.sleep(1.5)
            emu.stop(sigkill=True)  # asserts the children died with it (PDEATHSIG)
            killed_at = time.monotonic()
            time.sleep(1.0)
            emu = start_emulator(*opts, port=emu.port, child_port_base=emu.child_port_base, lemond_version=version)
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20), proxy.log_text()[-2000:]
            back_at = time.monotonic()
            time.sleep(2.0)
        for tally in (streams.tally,):
            assert not tally.problems, tally.summary()  # no 502, no truncation, no transport error
            assert tally.outcomes["done"] > 5, tally.summary()
        outage = [o for t, o in streams.tally.statuses if killed_at < t < back_at]
        late = [o for t, o in streams.tally.statuses if t > back_at + 1.0]
        assert late and set(late) == {"done"}, streams.tally.summary()
        print(f"during the outage: {outage[:20]} ...; after: {len(late)} done")
        metrics = proxy.request("GET", "/metrics")[2].decode()
        assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics
    finally:
        proxy.stop()
        emu.stop()
