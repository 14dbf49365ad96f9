"""The one interface through which the data plane learns where a request goes.

The data plane never reads lemond state directly: it asks a ``Router`` for a ``Lease`` (a
port plus bookkeeping for in-flight counts) and hands the lease back when the exchange ends.
The production router is fed by the lemond adapter and the slot policy; ``StaticRouter`` is a
fixed table for tests and benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from hal0proxy.http.errors import ProxyError
from hal0proxy.routing.classify import Classified


class Lease(Protocol):
    @property
    def port(self) -> int: ...

    @property
    def slot(self) -> str: ...

    def release(self) -> None: ...


class Router(Protocol):
    def acquire_now(self, request: Classified) -> Lease | None:
        """A lease if the request can be forwarded right now without waiting, else None.

        The hot path: no coroutine, no task. ``None`` sends the request down ``acquire``.
        """
        ...

    async def acquire(self, request: Classified) -> Lease:
        """Return where to send ``request``; may wait for a load; raises ``ProxyError``."""
        ...

    async def reroute(self, lease: Lease) -> Lease | None:
        """Called after a connect to ``lease.port`` failed: a fresh lease, or None if hopeless.

        The old lease has already been released by the caller.
        """
        ...

    def child_hung(self, lease: Lease) -> None:
        """The child behind ``lease.port`` stopped answering (see ``proxy.hangwatch``): stop
        routing to it and have it replaced. The caller then ends the exchanges on it."""
        ...

    def models_payload(self) -> dict[str, Any]:
        """Body of ``GET /v1/models`` from the proxy's view."""
        ...


@dataclass(frozen=True, slots=True)
class StaticLease:
    port: int
    slot: str

    def release(self) -> None:
        return None  # a fixed table counts nothing in flight


@dataclass
class StaticRouter:
    """model name -> port, fixed. Unknown models get 404 ``dispatch.no_route``.

    Its lease is only a port and a name, immutable, with nothing to account for on release:
    one lease per route serves every request, none is built per request.
    """

    table: dict[str, int]
    default: str | None = None
    _leases: dict[str, StaticLease] = field(default_factory=dict, init=False, repr=False)

    def acquire_now(self, request: Classified) -> Lease | None:
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if s in self.table), self.default)
            if name is None:
                return None
        port = self.table.get(name)
        if port is None:
            return None
        lease = self._leases.get(name)
        if lease is None or lease.port != port:  # (first use, or the table was edited)
            lease = self._leases[name] = StaticLease(port, name)
        return lease

    async def acquire(self, request: Classified) -> Lease:
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if s in self.table), self.default)
        if name is None:
            raise ProxyError(400, "request.missing_model", "request has no 'model' and no default slot applies")
        port = self.table.get(name)
        if port is None:
            raise ProxyError(404, "dispatch.no_route", f"no route for model {name!r}", {"model": name})
        return StaticLease(port=port, slot=name)

    async def reroute(self, lease: Lease) -> Lease | None:
        return None

    def child_hung(self, lease: Lease) -> None:
        return None  # a fixed table has nothing to reload

    def models_payload(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "hal0proxy"} for name in self.table],
        }
