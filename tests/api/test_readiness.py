"""``/readyz``: lemond reachable and the warm-up finished; normal operation afterwards keeps it.

Over real sockets, against a real proxy process in front of the lemond emulator (one LLM at
a time, as in the README's quick start): the proxy is unready until each warm slot reached
ready once; a cold request for another LLM then evicts warm ``primary`` and an admin unload
takes warm ``embed`` away, and the proxy stays ready; a warm slot whose load fails is a
problem, and so is lemond going away; when lemond comes back the warm-up is a new start.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.emulator import start_emulator, wait_until
from tests.support.proxy import ProxyProcess, start_proxy

SMALL = "Qwen3-0.6B-GGUF"
BIG = "Qwen3-4B-GGUF"
EMBED = "nomic-embed-text-v1-GGUF"
CONFIG = f"""
[[slot]]
name = "primary"
model = "{SMALL}"
type = "llm"
warm = true

[[slot]]
name = "chat"
model = "{BIG}"
type = "llm"

[[slot]]
name = "embed"
model = "{EMBED}"
type = "embedding"
warm = true
"""


def _readyz(proxy: ProxyProcess) -> tuple[int, dict[str, Any]]:
    status, _, body = proxy.request("GET", "/readyz")
    doc: dict[str, Any] = json.loads(body)
    return status, doc


def test_ready_after_the_warm_up_stays_ready_through_evictions_and_unloads() -> None:
    with start_emulator(unload_pause_seconds=0.2) as emu:
        emu.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 1.5})
        with start_proxy(emu.base_url, CONFIG) as proxy:
            status, doc = _readyz(proxy)
            assert status == 503 and doc["ready"] is False, doc
            assert any(p.startswith("slot primary is ") for p in doc["problems"]), doc
            assert wait_until(lambda: _readyz(proxy)[0] == 200, 20), _readyz(proxy)
            assert {s["state"] for s in proxy.slots().values() if s["name"] != "chat"} == {"ready"}

            # The quick start's cold request for another LLM: the proxy unloads primary to make room.
            chat = {"model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
            status, _, body = proxy.request("POST", "/v1/chat/completions", chat)
            assert status == 200, body
            assert proxy.slots()["primary"]["state"] == "offline" and SMALL not in emu.loaded()
            assert _readyz(proxy) == (200, {"ready": True, "problems": []})

            # An admin unload of a warm slot is normal operation too.
            status, _, body = proxy.request("POST", "/api/slots/embed/unload")
            assert status == 200 and json.loads(body)["state"] == "offline", body
            assert _readyz(proxy) == (200, {"ready": True, "problems": []})

            # lemond going away is a problem at once; back again, the warm-up is a new start.
            emu.stop()
            assert wait_until(lambda: _readyz(proxy)[0] == 503, 20)
            assert "lemond is not answering /v1/health" in _readyz(proxy)[1]["problems"]
            with start_emulator(port=emu.port, child_port_base=emu.child_port_base) as again:
                again.post("/_emu/slow_load", {"model_name": SMALL, "seconds": 2.0})
                assert wait_until(lambda: "slot primary" in json.dumps(_readyz(proxy)[1]), 20), _readyz(proxy)
                assert _readyz(proxy)[0] == 503
                assert wait_until(lambda: _readyz(proxy)[0] == 200, 30), _readyz(proxy)
                # /readyz follows the children's logs; lemond lists a model once its load returns.
                assert wait_until(lambda: {SMALL, EMBED} <= set(again.loaded()), 10), again.loaded()


def test_a_warm_slot_whose_load_failed_is_a_problem() -> None:
    with start_emulator() as emu:
        emu.post("/_emu/fail_next_load", {"model_name": SMALL, "kind": "other", "count": 100})
        with start_proxy(emu.base_url, CONFIG) as proxy:
            assert wait_until(lambda: proxy.slots()["primary"]["state"] == "error", 20), proxy.slots()
            assert wait_until(lambda: proxy.slots()["embed"]["state"] == "ready", 20), proxy.slots()
            status, doc = _readyz(proxy)
            assert status == 503 and doc["problems"] == ["slot primary is error"], doc
