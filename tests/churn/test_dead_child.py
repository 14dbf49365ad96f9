"""A dead child that lemond still lists, and "wait means wait" after a crash.

lemond before v10.8 never notices a dead child: ``/v1/health`` keeps listing it with its old
``backend_url`` and a ``/v1/load`` of it is a no-op. The proxy must find out from its own
refused connects and recover through lemond with one ``/v1/unload`` + ``/v1/load``.
"""

from __future__ import annotations

import time

import pytest

from tests.churn.traffic import Hammer, Tally, one_request
from tests.support.emulator import start_emulator, wait_until
from tests.support.proxy import start_proxy

MODEL = "Qwen3-0.6B-GGUF"


def _config(cold_start: str = "wait", max_wait_s: float = 20) -> str:
    return (
        f'[[slot]]\nname = "alpha"\nmodel = "{MODEL}"\nwarm = true\n'
        f'cold_start = "{cold_start}"\nmax_wait_s = {max_wait_s}\n'
    )


def _unload_calls(log: str) -> int:
    return log.count(f"Unload model called: {MODEL}")


@pytest.mark.parametrize("version", ["10.7", "11.7"])
def test_crash_under_load_recovers_with_one_reload_and_no_502(version: str) -> None:
    with start_emulator(lemond_version=version, unload_pause_seconds=0.3) as emu:
        proxy = start_proxy(emu.base_url, _config())
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            with Hammer(proxy.port, "alpha", clients=3) as hammer:
                time.sleep(1.0)
                status, crashed = emu.post("/_emu/crash", {"model_name": MODEL})
                assert status == 200
                crashed_at = time.monotonic()
                time.sleep(4.0)
            tally = hammer.tally
            after = [o for t, o in tally.statuses if t > crashed_at + 3.0]
            assert tally.outcomes["200"] > 20, tally.summary()
            assert not tally.problems, tally.summary()  # no 502, no 503 without Retry-After
            assert after and all(o == "200" for o in after), tally.summary()  # recovered
            # wait mode: the requests that found the child dead waited for the reload
            assert tally.outcomes["503"] == 0, tally.summary()
            child = next(c for c in emu.state()["children"] if c["model_name"] == MODEL)
            assert child["pid"] != crashed["pid"] and child["alive"]
            assert emu.state()["spawns_by_model"][MODEL] == 2  # one reload however many saw it
            if version == "10.7":
                # lemond < v10.8 needed the explicit unload; exactly one, single-flight
                assert _unload_calls(emu.log_text()) == 1
            metrics = proxy.request("GET", "/metrics")[2].decode()
            assert "hal0proxy_dispatch_upstream_unavailable_total 0.0" in metrics
        finally:
            proxy.stop()


def test_reject_mode_answers_503_with_retry_after_while_the_dead_child_is_replaced() -> None:
    with start_emulator(lemond_version="10.7", unload_pause_seconds=0.3) as emu:
        emu.post("/_emu/slow_load", {"model_name": MODEL, "seconds": 1.5})
        proxy = start_proxy(emu.base_url, _config(cold_start="reject"))
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            with Hammer(proxy.port, "alpha", clients=2) as hammer:
                time.sleep(0.5)
                assert emu.post("/_emu/crash", {"model_name": MODEL})[0] == 200
                time.sleep(5.0)
            tally = hammer.tally
            assert not tally.problems, tally.summary()
            assert tally.outcomes["503"] >= 1, tally.summary()
            assert tally.statuses[-1][1] == "200", tally.summary()
            assert _unload_calls(emu.log_text()) == 1
        finally:
            proxy.stop()


def test_wait_mode_waits_for_the_reload_right_after_a_crash() -> None:
    """v11.7: a request arriving in the instant after a crash must wait, not get 503.

    The crash hits a route no request has used yet (just moved by a respawn), so the proxy
    cannot tell from its own traffic; only lemond's view, a moment later, says it is gone.
    """
    with start_emulator(lemond_version="11.7", watchdog_poll_seconds=2.0) as emu:
        emu.post("/_emu/slow_load", {"model_name": MODEL, "seconds": 0.8})
        proxy = start_proxy(emu.base_url, _config())
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            tally = Tally()
            for round_ in range(3):
                status, moved = emu.post("/_emu/respawn", {"model_name": MODEL})
                assert status == 200, moved
                port = moved["port"]
                assert wait_until(lambda p=port: proxy.slots()["alpha"]["port"] == p, 10), round_
                assert emu.post("/_emu/crash", {"model_name": MODEL})[0] == 200
                one_request(proxy.port, "alpha", tally, stream=round_ % 2 == 1)
                one_request(proxy.port, "alpha", tally, stream=False)
            assert tally.outcomes["200"] + tally.outcomes["done"] == 6, tally.summary()
        finally:
            proxy.stop()


def test_child_dying_before_it_answers_is_retried_on_its_replacement() -> None:
    """v10.7: the child accepted the request and died before a byte of the answer (the other
    trigger besides a refused connect); nothing reached the client, so the request is retried
    on the child lemond starts after the proxy's unload + load, and answered 200."""
    import threading

    with start_emulator(lemond_version="10.7", unload_pause_seconds=0.2) as emu:
        proxy = start_proxy(emu.base_url, _config())
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            body = {"model": "alpha", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
            answers: list[tuple[int, bytes]] = []

            def ask() -> None:
                status, _, data = proxy.request("POST", "/v1/chat/completions", body, {"X-Emu-Stall": "0,3"})
                answers.append((status, data))

            waiter = threading.Thread(target=ask)
            waiter.start()
            time.sleep(1.0)  # the request sits in the child, unanswered
            status, crashed = emu.post("/_emu/crash", {"model_name": MODEL})
            assert status == 200
            waiter.join(30)
            assert answers and answers[0][0] == 200, answers
            assert _unload_calls(emu.log_text()) == 1
            assert emu.loaded()[MODEL]["pid"] != crashed["pid"]
        finally:
            proxy.stop()
