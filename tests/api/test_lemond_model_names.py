"""``/api/slots/{name}`` accepts every name ``/api/slots`` lists, lemond's model names too.

Over real sockets, against a real proxy process in front of the lemond emulator, with only
``primary`` configured: a model a request brought in (``nomic-embed-text-v1-GGUF``) is read,
unloaded and loaded by its lemond name; a model lemond knows but nobody asked for yet loads
like a cold request's (single-flight, the proxy makes room itself); unknown names are 404
``slot.not_found``; only segments that cannot name anything are 400 ``slot.invalid_name``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hal0proxy.api import paths
from tests.support.emulator import EmulatorProcess, free_port, start_emulator
from tests.support.proxy import ProxyProcess, start_proxy

SMALL = "Qwen3-0.6B-GGUF"
BIG = "Qwen3-4B-GGUF"
EMBED = "nomic-embed-text-v1-GGUF"
CONFIG = f'[[slot]]\nname = "primary"\nmodel = "{SMALL}"\n'


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorProcess]:
    with start_emulator(unload_pause_seconds=0.2) as emu:
        yield emu


@pytest.fixture(scope="module")
def proxy(emulator: EmulatorProcess) -> Iterator[ProxyProcess]:
    with start_proxy(emulator.base_url, CONFIG) as running:
        yield running


def _code(body: bytes) -> str:
    code: str = json.loads(body)["error"]["code"]
    return code


def test_a_model_a_request_brought_in_is_read_unloaded_and_loaded_by_its_name(
    proxy: ProxyProcess, emulator: EmulatorProcess
) -> None:
    status, _, body = proxy.request("POST", "/v1/embeddings", {"model": EMBED, "input": "x"})
    assert status == 200, body
    listed = proxy.slots()
    assert EMBED in listed and listed[EMBED]["metadata"]["configured"] is False
    status, _, body = proxy.request("GET", f"/api/slots/{EMBED}")
    assert status == 200, body
    entry = json.loads(body)
    assert entry["name"] == EMBED and entry["model_id"] == EMBED and entry["state"] == "ready"

    status, _, body = proxy.request("POST", f"/api/slots/{EMBED}/unload")
    assert status == 200, body
    assert json.loads(body)["state"] == "offline" and EMBED not in emulator.loaded()

    status, _, body = proxy.request("POST", f"/api/slots/{EMBED}/load")
    assert status == 200, body
    assert json.loads(body)["state"] == "ready" and EMBED in emulator.loaded()


def test_the_name_is_percent_decoded(proxy: ProxyProcess) -> None:
    encoded = "".join(f"%{b:02X}" for b in EMBED.encode())  # every byte encoded
    status, _, body = proxy.request("GET", f"/api/slots/{encoded}")
    assert status == 200 and json.loads(body)["name"] == EMBED, body


def test_a_known_lemond_model_loads_single_flight_and_makes_room(
    proxy: ProxyProcess, emulator: EmulatorProcess
) -> None:
    status, _, body = proxy.request("POST", "/api/slots/primary/load")
    assert status == 200 and SMALL in emulator.loaded(), body
    loads_before = emulator.state()["load_requests"].get(BIG, 0)
    answers: list[tuple[int, bytes]] = []

    def load() -> None:
        status, _, body = proxy.request("POST", f"/api/slots/{BIG}/load")
        answers.append((status, body))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [s for s, _ in answers] == [200, 200, 200], answers
    assert all(json.loads(b)["state"] == "ready" for _, b in answers), answers
    assert emulator.state()["load_requests"].get(BIG, 0) == loads_before + 1  # one load for three asks
    loaded = emulator.loaded()
    assert BIG in loaded and SMALL not in loaded  # one LLM at a time: the proxy unloaded primary first
    assert proxy.slots()["primary"]["state"] == "offline"
    assert f"Unload model called: {SMALL}" in emulator.log_text()  # the proxy's own unload, not lemond's LRU


@pytest.mark.parametrize(
    ("segment", "name"),
    [
        ("no-such-model", "no-such-model"),
        ("UPPER.Case", "UPPER.Case"),
        ("user.Missing", "user.Missing"),
        ("%C3%A9", "é"),
    ],
)
def test_a_name_neither_listed_nor_known_to_lemond_is_404(proxy: ProxyProcess, segment: str, name: str) -> None:
    for method, path in (("GET", f"/api/slots/{segment}"), ("POST", f"/api/slots/{segment}/load")):
        status, _, body = proxy.request(method, path)
        assert status == 404 and _code(body) == "slot.not_found", (method, status, body)
        assert json.loads(body)["error"]["details"]["name"] == name


@pytest.mark.parametrize(
    "segment",
    ["a%2Fb", "..%2F..%2Fetc", "%2E%2E", ".", "a%20b", "a%09b", "%00x", "x%7F", "a%5Cb", "%FF", "m" * 257],
)
def test_a_segment_that_cannot_name_anything_is_400(proxy: ProxyProcess, segment: str) -> None:
    for method, path in (("GET", f"/api/slots/{segment}"), ("POST", f"/api/slots/{segment}/unload")):
        status, _, body = proxy.request(method, path)
        assert status == 400 and _code(body) == "slot.invalid_name", (method, segment, status, body)


def test_the_longest_name_is_looked_up_not_refused(proxy: ProxyProcess) -> None:
    status, _, body = proxy.request("GET", "/api/slots/" + "m" * paths.MAX_NAME_CHARS)
    assert status == 404 and _code(body) == "slot.not_found", body


def test_while_lemond_is_down_an_unknown_name_is_503_with_retry_after() -> None:
    with start_proxy(f"http://127.0.0.1:{free_port()}", CONFIG) as proxy:
        status, headers, body = proxy.request("GET", f"/api/slots/{EMBED}")
        assert status == 503 and _code(body) == "lemond.unavailable", body
        assert headers.get("retry-after", "").isdigit(), headers
        status, _, body = proxy.request("GET", "/api/slots/primary")  # a configured slot needs no lemond
        assert status == 200, body


@pytest.mark.parametrize(
    ("segment", "name"),
    [
        ("primary", "primary"),
        ("nomic-embed-text-v1-GGUF", EMBED),
        ("user.My_Model-v2", "user.My_Model-v2"),
        ("caf%C3%A9", "café"),
        ("%2e%2e%2e", "..."),
        ("a%2Fb", None),
        ("", None),
        ("..", None),
        ("%", "%"),  # a lone percent sign is left as it is (RFC 3986 decoders do the same)
    ],
)
def test_slot_segment_name(segment: str, name: Any) -> None:
    assert paths.slot_segment_name(segment) == name
