"""Where each model is served: ``model -> Route``, derived only from lemond events.

:meth:`RouteTable.apply` is the only mutator, so every route change can be traced
to one event (a log line or a ``/v1/health`` reconciliation). Lookups are a dict
``get`` on the hot path; routes are frozen and replaced, never edited, so a
reference held by an in-flight request never changes under it.

Reconciliation race. A ``/v1/health`` answer describes lemond at some instant after
the request was sent (``Resynced.observed_at`` is the send time). A log event
observed after that instant may be newer than the answer — e.g. a model that finished
loading while the health reply was in flight would be missing from it. So a resync
never overrides a route that changed after the request was sent; the next heartbeat
settles it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from hal0proxy.lemond.events import (
    LemondEvent,
    LemondRestarted,
    LoadedModel,
    ModelEvicted,
    ModelLoaded,
    PortChanged,
    ProcessCrashed,
    Resynced,
)

__all__ = ["Route", "RouteTable", "StableTiming"]

Clock = Callable[[], float]
StableHook = Callable[["StableTiming"], None]


@dataclass(frozen=True, slots=True)
class Route:
    model: str
    port: int
    pid: int | None
    alive: bool
    # Local monotonic time of the event that produced this port/pid/alive combination.
    since: float
    # A request (or a probe) reached this port since the route last changed.
    proven: bool = False


@dataclass(frozen=True, slots=True)
class StableTiming:
    """One route change: how long from the event being observed to the route being usable."""

    model: str
    port: int
    cause: str  # event class name
    seconds: float


class RouteTable:
    """``model -> Route``. Not thread-safe: use from the event loop thread only."""

    def __init__(
        self,
        *,
        clock: Clock = time.monotonic,
        on_stable: StableHook | None = None,
        history: int = 256,
    ) -> None:
        self._routes: dict[str, Route] = {}
        self._clock = clock
        self._on_stable = on_stable
        self.timings: deque[StableTiming] = deque(maxlen=history)
        self.version = 0  # bumped on every change; lets readers cache derived views

    # -- reading ----------------------------------------------------------------------

    def get(self, model: str) -> Route | None:
        return self._routes.get(model)

    def snapshot(self) -> dict[str, Route]:
        return dict(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def __contains__(self, model: object) -> bool:
        return model in self._routes

    # -- the only mutators --------------------------------------------------------------

    def mark_proven(self, model: str, port: int) -> None:
        """A connection to ``port`` for ``model`` succeeded; skip the probe from now on."""
        route = self._routes.get(model)
        if route is not None and route.port == port and route.alive and not route.proven:
            self._routes[model] = replace(route, proven=True)

    def apply(self, event: LemondEvent) -> Route | None:
        """Apply one event. Returns the model's route after a single-model event
        (``None`` when it was removed or the event changed nothing routable)."""
        if isinstance(event, ModelLoaded):
            return self._set(event.model, event.port, event.pid, event)
        if isinstance(event, PortChanged):
            old = self._routes.get(event.model)
            return self._set(event.model, event.new_port, old.pid if old else None, event)
        if isinstance(event, ModelEvicted):
            self._remove(event.model)
            return None
        if isinstance(event, ProcessCrashed):
            return self._crashed(event)
        if isinstance(event, LemondRestarted):
            if self._routes:
                self._routes.clear()
                self.version += 1
            return None
        if isinstance(event, Resynced):
            self._resync(event)
            return None
        return None

    # -- helpers ----------------------------------------------------------------------

    def _set(self, model: str, port: int, pid: int | None, event: LemondEvent) -> Route:
        old = self._routes.get(model)
        if old is not None and old.alive and old.port == port and (pid is None or old.pid in (None, pid)):
            # Same child (a repeated announcement): keep `since` and `proven`, learn the pid.
            if pid is not None and old.pid is None:
                old = replace(old, pid=pid)
                self._routes[model] = old
            return old
        route = Route(model, port, pid, True, event.observed_at or self._clock(), False)
        self._routes[model] = route
        self.version += 1
        self._record(route, type(event).__name__, event.observed_at)
        return route

    def _remove(self, model: str) -> None:
        if self._routes.pop(model, None) is not None:
            self.version += 1

    def _crashed(self, event: ProcessCrashed) -> Route | None:
        route = self._routes.get(event.model) if event.model else None
        if route is None and event.pid is not None:
            route = next((r for r in self._routes.values() if r.pid == event.pid), None)
        if route is None:
            return None
        if event.pid is not None and route.pid is not None and route.pid != event.pid:
            return route  # an older process of this model died; the current one is fine
        if not route.alive:
            return route
        # Keep the entry, marked dead: the data plane must not forward there, and knows
        # the model needs a reload rather than treating it as never loaded.
        dead = replace(route, alive=False, proven=False, since=event.observed_at or self._clock())
        self._routes[route.model] = dead
        self.version += 1
        return dead

    def _resync(self, event: Resynced) -> None:
        cutoff = event.observed_at
        fresh = {m.model: m for m in event.loaded}
        for model, known in list(self._routes.items()):
            if model not in fresh and not self._newer(known, cutoff):
                self._remove(model)
        for model, entry in fresh.items():
            route = self._routes.get(model)
            if route is not None and self._newer(route, cutoff):
                continue
            if route is not None and not route.alive and entry.pid is not None and route.pid == entry.pid:
                continue  # lemond < v10.8 keeps listing a dead child; it stays dead
            if route is not None and route.alive and _same_child(route, entry):
                if entry.pid is not None and route.pid is None:
                    self._routes[model] = replace(route, pid=entry.pid)
                continue
            self._set(model, entry.port, entry.pid, event)

    @staticmethod
    def _newer(route: Route, cutoff: float) -> bool:
        return cutoff > 0 and route.since > cutoff

    def _record(self, route: Route, cause: str, observed_at: float) -> None:
        if observed_at <= 0:
            return
        timing = StableTiming(route.model, route.port, cause, max(0.0, self._clock() - observed_at))
        self.timings.append(timing)
        if self._on_stable is not None:
            self._on_stable(timing)


def _same_child(route: Route, entry: LoadedModel) -> bool:
    if route.port != entry.port:
        return False
    return route.pid is None or entry.pid is None or route.pid == entry.pid
