"""Everything a client connection needs, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hal0proxy.http.messages import LocalHandler
from hal0proxy.metrics import DataPlaneStats
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import UpstreamPool
from hal0proxy.routing.contract import Router

# (slot, status, seconds, time to first byte) once per answered request
Observer = Callable[[str | None, int, float, float | None], None]


def _ignore(_slot: str | None, _status: int, _seconds: float, _ttfb: float | None) -> None:
    return None


class Drainable(Protocol):
    @property
    def busy(self) -> bool: ...

    def close_when_idle(self) -> None: ...

    def end_now(self) -> None: ...


@dataclass(slots=True)
class ProxyContext:
    router: Router
    pool: UpstreamPool
    settings: ProxySettings = field(default_factory=ProxySettings)
    local: LocalHandler | None = None
    stats: DataPlaneStats = field(default_factory=DataPlaneStats)
    observe: Observer = _ignore
    connections: set[Drainable] = field(default_factory=set)  # open client connections, for draining
    draining: bool = False
