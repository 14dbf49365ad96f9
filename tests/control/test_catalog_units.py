"""``Catalog`` on its own: which slot a request names, adoption of a model lemond knows, and
the rate limit on asking lemond for its model list.

lemond is a loopback server answering ``GET /v1/models`` with a fixed list and counting the
requests, or an address nothing listens on (port 1) where lemond must be down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.catalog import MODELS_REFRESH_MIN_S, Catalog
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.routing.classify import Classified
from hal0proxy.slots.dispatch import Unresolved
from tests.control.fakes import answer_json

M, EXTRA = "Qwen3-0.6B-GGUF", "Gemma-3-1b-GGUF"
DOWN = "http://127.0.0.1:1"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ModelsServer:
    """Answers every request with lemond's ``/v1/models`` shape; counts them."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        body = orjson.dumps({"object": "list", "data": [{"id": EXTRA, "created": 7, "labels": []}]})
        await answer_json(writer, b"200 OK", body)


@pytest.fixture
async def lemond() -> AsyncIterator[tuple[str, ModelsServer]]:
    models = ModelsServer()
    server = await asyncio.start_server(models.handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", models
    finally:
        server.close()
        await server.wait_closed()


def catalog(url: str = DOWN) -> tuple[Catalog, SlotRegistry, Clock]:
    cfg = Config(slots=(SlotConfig(name="primary", model=M), SlotConfig(name="embed", model="Embed-GGUF")))
    registry, clock = SlotRegistry(cfg.slots), Clock()
    return Catalog(LemondAdapter(url, api_key=None), registry, clock, lambda: 4), registry, clock


def request(model: str | None, *defaults: str) -> Classified:
    return Classified(model, defaults, b"", False)


def test_lookup_by_slot_name_model_name_and_path_default() -> None:
    cat, *_ = catalog()
    by_name = cat.lookup(request("primary"))
    assert by_name is not None and by_name.name == "primary"
    by_model = cat.lookup(request(M))
    assert by_model is by_name
    by_default = cat.lookup(request(None, "nothing-here", "embed"))
    assert by_default is not None and by_default.name == "embed"
    assert cat.lookup(request("unknown")) is None
    assert cat.lookup(request(None, "nothing-here")) is None


async def test_an_unknown_name_while_lemond_is_down_is_unresolved_with_lemonds_retry_after() -> None:
    cat, *_ = catalog()
    found = await cat.resolve(request("no-such-model"))
    assert found == Unresolved("no-such-model", False, 4)
    assert await cat.resolve(request(None, "nothing-here")) == Unresolved(None)


async def test_a_model_lemond_lists_is_adopted_and_the_list_is_asked_for_at_most_every_few_seconds(
    lemond: tuple[str, ModelsServer],
) -> None:
    url, models = lemond
    cat, registry, clock = catalog(url)
    found = await cat.resolve(request(EXTRA))
    assert not isinstance(found, Unresolved) and found.model == EXTRA and registry.get(EXTRA) is found
    assert models.requests == 1
    assert await cat.resolve(request("still-unknown")) == Unresolved("still-unknown", False, 4)
    assert models.requests == 1  # within the rate limit: lemond is not asked again
    clock.now += MODELS_REFRESH_MIN_S
    await cat.resolve(request("still-unknown"))
    assert models.requests == 2
    assert await cat.refresh(force=True) is True and models.requests == 3
    listed = {entry["id"]: entry for entry in cat.models_payload()["data"]}
    assert listed["primary"]["owned_by"] == "hal0proxy" and listed[EXTRA]["model"] == EXTRA
