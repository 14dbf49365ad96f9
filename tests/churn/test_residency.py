"""Residency the proxy owns: pinned slots, lemond's LRU and its idle eviction engine.

lemond cannot see the proxy's traffic (it goes straight to the children), so:
* a slot configured ``pinned = true`` is loaded pinned, never idle-unloaded, never a victim;
* a model with requests in flight is pinned in lemond, so another client's ``/v1/load``
  into a full pool cannot make lemond's LRU evict it (that client gets 409 instead);
* every ``/v1/load`` the proxy issues says ``"auto_evict": false``, so lemond's eviction
  engine cannot unload a model that streams through the proxy.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from tests.churn.traffic import Tally, one_request
from tests.support.emulator import start_emulator, wait_until
from tests.support.proxy import start_proxy

A, B = "Qwen3-0.6B-GGUF", "Qwen3-4B-GGUF"


def _catalog(tmp_path: Path) -> Path:
    models = [
        {"name": name, "type": "llm", "checkpoint": f"test/{name}:Q4_0", "load_seconds": 0.1}
        for name in ("tiny-a", "tiny-b", "tiny-c")
    ]
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"models": models}))
    return path


def test_pinned_slot_is_loaded_pinned_and_never_unloaded_by_the_proxy(tmp_path: Path) -> None:
    config = (
        '[[slot]]\nname = "keep"\nmodel = "tiny-a"\nwarm = true\npinned = true\nidle_timeout_s = 1\n'
        '[[slot]]\nname = "bee"\nmodel = "tiny-b"\nmax_wait_s = 10\n'
        '[[slot]]\nname = "sea"\nmodel = "tiny-c"\nmax_wait_s = 10\n'
    )
    with start_emulator(catalog=_catalog(tmp_path), max_loaded_models=2) as emu:
        proxy = start_proxy(emu.base_url, config)
        try:
            assert wait_until(lambda: emu.loaded().get("tiny-a", {}).get("pinned") is True, 20)
            tally = Tally()
            one_request(proxy.port, "bee", tally, stream=False)  # tiny-b is now newer than tiny-a
            time.sleep(2.5)  # past keep's idle_timeout_s
            assert "tiny-a" in emu.loaded(), "a pinned slot was idle-unloaded"
            one_request(proxy.port, "sea", tally, stream=False)  # pool full: someone must go
            assert tally.outcomes["200"] == 2, tally.summary()
            loaded = emu.loaded()
            assert set(loaded) == {"tiny-a", "tiny-c"}, loaded  # tiny-b made room, not pinned tiny-a
            assert "Unload model called: tiny-a" not in emu.log_text()
        finally:
            proxy.stop()


def test_a_third_party_load_cannot_evict_a_model_serving_a_stream() -> None:
    with start_emulator("--fake-tokens-per-second", "20", max_loaded_models=1) as emu:
        proxy = start_proxy(emu.base_url, f'[[slot]]\nname = "alpha"\nmodel = "{A}"\nwarm = true\n')
        try:
            assert wait_until(lambda: A in emu.loaded(), 20)
            tally = Tally()
            stream = threading.Thread(
                target=one_request, args=(proxy.port, "alpha", tally), kwargs={"stream": True, "max_tokens": 50}
            )
            stream.start()
            time.sleep(0.8)  # the stream is flowing (2.5 s long)
            assert emu.loaded()[A]["pinned"] is True  # pinned while it serves
            status, body = emu.post("/v1/load", {"model_name": B})  # another client, straight to lemond
            stream.join(30)
            assert tally.outcomes["done"] == 1, tally.summary()  # not cut
            assert status == 409 and body["error"]["code"] == "slots_pinned_error", body
            # Once the proxy is quiet the pin is released and the other client gets its way.
            assert wait_until(lambda: emu.loaded().get(A, {}).get("pinned") is False, 10)
            status, body = emu.post("/v1/load", {"model_name": B})
            assert status == 200, body
        finally:
            proxy.stop()


def test_lemond_auto_evict_never_unloads_a_model_streaming_through_the_proxy() -> None:
    flags = ("--auto-evict", "--evict-idle-timeout", "3", "--downsize-idle-timeout", "2")
    flags += ("--eviction-interval-seconds", "0.5", "--fake-tokens-per-second", "10")
    with start_emulator(*flags, max_loaded_models=2) as emu:
        proxy = start_proxy(emu.base_url, f'[[slot]]\nname = "alpha"\nmodel = "{A}"\nwarm = true\n')
        try:
            assert wait_until(lambda: A in emu.loaded(), 20)
            # A model loaded by someone else, without the proxy's auto_evict=false: lemond's
            # engine is on and does evict it — the control that shows it would bite.
            assert emu.post("/v1/load", {"model_name": B})[0] == 200
            tally = Tally()
            started = time.monotonic()
            one_request(proxy.port, "alpha", tally, stream=True, max_tokens=100)  # ~10 s
            assert time.monotonic() - started > 8
            assert tally.outcomes["done"] == 1, tally.summary()
            log = emu.log_text()
            assert f"Model {B} reached evict idle timeout (3s). Evicting." in log
            assert f"Model {A} reached evict idle timeout" not in log
            assert f"Model {A} reached downsize idle timeout" not in log
            assert A in emu.loaded()
        finally:
            proxy.stop()


def test_readyz_warns_about_adopted_models() -> None:
    with start_emulator(max_loaded_models=2) as emu:
        assert emu.post("/v1/load", {"model_name": B})[0] == 200
        proxy = start_proxy(emu.base_url, f'[[slot]]\nname = "alpha"\nmodel = "{A}"\nwarm = true\n')
        try:
            assert wait_until(lambda: proxy.request("GET", "/readyz")[0] == 200, 20)
            doc = json.loads(proxy.request("GET", "/readyz")[2])
            assert doc["ready"] is True
            assert any(B in p and "may evict" in p for p in doc["problems"]), doc
        finally:
            proxy.stop()
