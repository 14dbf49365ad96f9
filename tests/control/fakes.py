"""A lemond adapter stand-in for the control objects' in-process tests.

Only what ``Room`` asks of the adapter: lemond's pool limits (``last_health``), a refresh,
and ``/v1/unload`` (recorded; a model in ``not_loaded`` answers 404 as lemond does; any
other is evicted, and the eviction reaches the registry as lemond's log line would); and
``answer_json``, the reply of the stand-in lemond servers some tests run on a real socket.
"""

from __future__ import annotations

import asyncio

from hal0proxy.config import Config, SlotConfig
from hal0proxy.control.registry import SlotRegistry
from hal0proxy.lemond.errors import NotLoaded
from hal0proxy.lemond.events import EvictReason, ModelEvicted, ModelLoaded
from hal0proxy.lemond.health import HealthSnapshot


class FakeClient:
    def __init__(self, registry: SlotRegistry) -> None:
        self.registry = registry
        self.unloaded: list[str] = []
        self.not_loaded: set[str] = set()

    async def unload(self, model: str, timeout: float | None = None) -> None:
        self.unloaded.append(model)
        if model in self.not_loaded:
            raise NotLoaded(f"{model} is not loaded")
        self.registry.apply_event(ModelEvicted(model=model, reason=EvictReason.MANUAL))


class FakeAdapter:
    def __init__(self, registry: SlotRegistry, max_models: dict[str, int]) -> None:
        self.last_health = HealthSnapshot(version="10.8.0", max_models=max_models)
        self.client = FakeClient(registry)
        self.refreshes = 0

    async def refresh(self, newer_than: float | None = None) -> HealthSnapshot:
        self.refreshes += 1
        return self.last_health


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def slots(*specs: SlotConfig) -> tuple[Config, SlotRegistry]:
    cfg = Config(slots=specs)
    return cfg, SlotRegistry(cfg.slots)


def mark_loaded(registry: SlotRegistry, model: str, port: int, at: float) -> None:
    registry.apply_event(ModelLoaded(model=model, port=port, pid=1, observed_at=at))


async def answer_json(writer: asyncio.StreamWriter, status_line: bytes, body: bytes) -> None:
    """Answer one request of a stand-in lemond over a real socket, then close (``Connection: close``)."""
    writer.write(
        b"HTTP/1.1 %b\r\nContent-Type: application/json\r\nConnection: close\r\n" % status_line
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )
    await writer.drain()
    writer.close()
