"""End to end: the official ``openai`` client -> ``hal0proxy serve`` -> the real lemond -> real
llama-server children (``max_loaded_models = 1``, models ``alpha`` and ``beta``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from openai import OpenAI

from tests.real_lemond.streams import Outcome, acceptable, stream_chat
from tests.support.proxy import ProxyProcess, start_proxy, wait_for
from tests.support.real_lemond import RealLemond

pytestmark = pytest.mark.timeout(3900)

CONFIG = """
[policy]
max_wait_s = 60

[[slot]]
name = "primary"
model = "alpha"
warm = true

[[slot]]
name = "spare"
model = "beta"
warm = false
idle_timeout_s = 3
"""


@pytest.fixture(scope="module")
def proxy(lemond: RealLemond) -> Iterator[ProxyProcess]:
    lemond.post("/v1/unload", {})
    with start_proxy(lemond.base_url, CONFIG) as proc:
        assert wait_for(lambda: "alpha" in lemond.loaded(), 60), proc.log_text()[-3000:]
        yield proc


@pytest.fixture(scope="module")
def client(proxy: ProxyProcess) -> OpenAI:
    return OpenAI(base_url=f"{proxy.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def lru_evictions(lemond: RealLemond) -> list[str]:
    return [line for line in lemond.log_lines() if "evicting LRU" in line]


def test_chat_non_streaming(client: OpenAI) -> None:
    done = client.chat.completions.create(
        model="primary", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    )
    choice = done.choices[0]
    assert choice.message.content and choice.finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 16


def test_chat_streaming(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="alpha", max_tokens=24, stream=True, messages=[{"role": "user", "content": "hello"}]
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_cold_model_loads_on_demand_and_the_proxy_makes_room(
    client: OpenAI, lemond: RealLemond, proxy: ProxyProcess
) -> None:
    before = len(lru_evictions(lemond))
    assert "beta" not in lemond.loaded()
    done = client.chat.completions.create(model="beta", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content
    assert set(lemond.loaded()) == {"beta"}
    # The proxy unloaded alpha itself before loading beta: lemond's LRU never picked a victim.
    assert lru_evictions(lemond)[before:] == []


def test_room_making_never_cuts_the_serving_stream(lemond: RealLemond, proxy: ProxyProcess) -> None:
    lemond.post("/v1/unload", {})
    warm = stream_chat(proxy.port, "alpha", max_tokens=4)
    assert warm.kind == "done", warm
    long: list[Outcome] = []
    # ctx_size is 512: a long answer still fits after the short prompt.
    streamer = threading.Thread(target=lambda: long.append(stream_chat(proxy.port, "alpha", max_tokens=450)))
    streamer.start()
    time.sleep(0.05)
    other = stream_chat(proxy.port, "beta", max_tokens=4)
    streamer.join(120)
    assert long and long[0].kind == "done", long
    assert acceptable(other), other
    assert other.status != 502


def test_idle_unload(lemond: RealLemond, proxy: ProxyProcess) -> None:
    out = stream_chat(proxy.port, "spare", max_tokens=4)
    assert out.kind == "done", out
    assert "beta" in lemond.loaded()
    # idle_timeout_s = 3 on the slot; the unload itself takes about 2 s in lemond.
    assert wait_for(lambda: "beta" not in lemond.loaded(), 20), lemond.loaded()
    slots = proxy.slots()
    assert slots["spare"]["state"] in ("offline", "idle", "unloading"), slots["spare"]
