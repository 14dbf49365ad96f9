"""Everything a client connection needs, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from hal0proxy.http.messages import LocalHandler
from hal0proxy.proxy.routing import Router
from hal0proxy.proxy.settings import ProxySettings
from hal0proxy.proxy.upstream import UpstreamPool


@dataclass(slots=True)
class DataPlaneStats:
    """Plain counters bumped on the hot path; metrics read them at scrape time."""

    connections_open: int = 0
    client_disconnects: int = 0
    retries: int = 0
    reroutes: int = 0
    streams_interrupted: int = 0
    chunks_relayed: int = 0
    connections_refused: int = 0  # past the connection cap (503 and close)
    upstream_bad_responses: int = 0  # child responses refused as invalid HTTP (502)


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
