"""A request without a model loads nothing unless its path has a default slot (real sockets:
emulator, fake children, the proxy as a subprocess). A modelless health probe sent through the
proxy used to go to the chat default, load it and evict the warm model to make room."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.policy.test_policy import BIG, SMALL, chat, slot_toml
from tests.support.emulator import EmulatorProcess, start_emulator
from tests.support.proxy import start_proxy, wait_for


@pytest.fixture
def emulator() -> Iterator[EmulatorProcess]:
    emu = start_emulator(max_loaded_models=1)
    yield emu
    emu.stop()


def test_modelless_requests_off_the_generation_paths_load_nothing(emulator: EmulatorProcess) -> None:
    config = slot_toml("primary", SMALL, warm=True) + slot_toml("chat", BIG)
    with start_proxy(emulator.base_url, config) as proxy:
        assert wait_for(lambda: proxy.slots()["primary"]["state"] == "ready", 15)
        for method, path in (("GET", "/api/v1/health"), ("GET", "/v1/health"), ("POST", "/v1/load")):
            status, _, body = proxy.request(method, path, {"model_name": BIG} if method == "POST" else None)
            error = json.loads(body)["error"]
            assert (status, error["code"]) == (404, "resource.not_found"), body
            assert "lemond" in error["message"]
        status, _, body = proxy.request("POST", "/v1/whatever", {"input": "x"})
        assert (status, json.loads(body)["error"]["code"]) == (400, "request.missing_model")
        assert emulator.state()["load_requests"].get(BIG) is None, "nothing was loaded"
        slots = proxy.slots()
        assert slots["primary"]["state"] == "ready" and slots["chat"]["state"] == "offline"
        # The generation paths keep hal0's default: chat, else primary.
        body_without_model = chat(SMALL)
        del body_without_model["model"]
        status, _, _ = proxy.request("POST", "/v1/chat/completions", body_without_model)
        assert status == 200 and emulator.state()["load_requests"].get(BIG) == 1
