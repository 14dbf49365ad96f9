"""Recovery: what the control plane does when lemond's view and the children disagree.

Owned by :class:`~hal0proxy.control.controller.Controller`, which leases and starts loads
on what this object finds. Three kinds of trouble end up here:

* a child that is dead although lemond still lists it (lemond < v10.8 never notices, later
  releases only after their watchdog poll): found from the proxy's own refused or closed
  connects (``reroute``) or from its hang watch (``child_hung``), marked dead in the adapter,
  and replaced with one ``/v1/unload`` + ``/v1/load`` however many requests saw it;
* lemond itself unreachable: ``503 lemond.unavailable`` with ``Retry-After``, never a 502;
* lemond back (it was down, or it restarted): warm slots are loaded again and the model
  list refreshed, without restarting the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib

from hal0proxy.control.attribution import UnloadLedger
from hal0proxy.control.registry import Slot
from hal0proxy.control.shared import ControlShared
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError, LemondUnavailable, NotLoaded
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, Resynced

__all__ = ["LoadFailure", "Recovery", "lemond_major"]

#: How often a load looks whether lemond's own respawn of the model has ended: the end is a
#: log line, so a short poll costs nothing and adds at most this much to the load.
REPLACEMENT_POLL_S = 0.05
#: The longest a load waits for lemond's respawn when the line that ends it is lost (a
#: respawn of a small model takes seconds; ``load_timeout_s`` caps it further).
REPLACEMENT_WAIT_MAX_S = 60.0


class LoadFailure(Exception):
    def __init__(self, message: str, status: int = 503, code: str = "slot.load_failed") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def lemond_major(adapter: LemondAdapter) -> int:
    """lemond's major release from its last ``/v1/health`` (0 while unknown)."""
    health = adapter.last_health
    head = health.version.split(".", 1)[0] if health is not None else ""
    return int(head) if head.isdigit() else 0


class Recovery:
    """Finds dead children and lemond outages, and clears what stands in a load's way.

    It never leases nor starts a load itself: it answers where a model is now
    (``relocate``), whether a child must be replaced (``child_hung``), which warm slots need
    a load (``slots_to_warm``) and whether lemond just came back (``lemond_back``); the
    controller acts on the answers."""

    def __init__(
        self,
        shared: ControlShared,
        ledger: UnloadLedger,
    ) -> None:
        self._adapter, self._registry, self._journal, self._config, self._clock = shared
        self._ledger = ledger
        self._health_failures_seen = 0
        self.recoveries = 0  # dead children lemond still listed, cleared with unload + load

    # ------------------------------------------------------------------ lemond's state
    @property
    def lemond_major(self) -> int:
        return lemond_major(self._adapter)

    def adoption_warnings(self) -> list[str]:
        """One warning per model another client loaded into lemond (v11+ evicts those on its own)."""
        if self.lemond_major < 11:
            return []
        return [
            f"warning: model {slot.model} was loaded by another client; lemond may evict it on its own "
            "(auto_evict counts only traffic through lemond)"
            for slot in self._registry.all()
            if slot.adopted and (route := self._adapter.routes.get(slot.model)) is not None and route.alive
        ]

    def slots_to_warm(self) -> list[Slot]:
        """Every warm slot whose model is not loaded (and, from now, lemond's health failures
        seen so far: a later failure followed by a resync means lemond came back)."""
        self._health_failures_seen = self._adapter.stats.health_failures
        cold: list[Slot] = []
        for slot in self._registry.all():
            if slot.config is None or not slot.config.warm:
                continue
            route = self._adapter.routes.get(slot.model)
            if route is None or not route.alive:
                cold.append(slot)
        return cold

    def lemond_back(self, event: LemondEvent) -> bool:
        """Whether ``event`` says lemond is back (it restarted, or answers again after
        failing): journaled, and the caller warms the slots again."""
        back = isinstance(event, LemondRestarted) or (
            isinstance(event, Resynced) and self._adapter.stats.health_failures != self._health_failures_seen
        )
        if back:
            self._journal.publish("lemond.back", restarted=isinstance(event, LemondRestarted))
        return back

    # ------------------------------------------------------------------ dead children
    async def relocate(self, slot: Slot, port: int) -> int | None:
        """A connect to ``port`` failed, or the child closed before answering: the port the
        model can be reached on now, or None when it must be acquired again (it is being
        recovered through lemond, or was never there). 503 ``lemond.unavailable`` when lemond
        is down and the child does not answer either."""
        self._adapter.validator.invalidate(port)
        try:
            await self._adapter.refresh(newer_than=self._clock())
        except LemondError as exc:
            if await self._adapter.validator.check(port):
                return port  # the child answers again; lemond is what is down
            self._adapter.mark_dead(slot.model, port, "refused")
            raise self.lemond_unavailable(exc) from None
        await self.confirm_route(slot, "refused", port=port)
        route = await self._adapter.usable_route(slot.model)
        if route is not None and route.port != port:
            return route.port
        return None

    def child_hung(self, slot: Slot, port: int) -> bool:
        """The hang watch found the child on ``port`` silent and not answering /health: it is
        dead to the proxy (journal and metrics say ``hang``). True if it must be replaced
        (the first report of it; later ones find it dead already)."""
        self._journal.publish("slot.hang_detected", slot=slot.name, model=slot.model, port=port)
        return self._adapter.mark_dead(slot.model, port, "hang")

    async def confirm_route(self, slot: Slot, cause: str, port: int | None = None) -> None:
        """The route table says ``slot``'s model is alive (on ``port``), but it did not take a
        request: ask lemond, and if it still lists the child there and nothing listens, the
        child is dead behind lemond's back (``LemondAdapter.mark_dead``)."""
        route = self._adapter.routes.get(slot.model)
        if route is None or not route.alive or (port is not None and route.port != port):
            return
        with contextlib.suppress(LemondError):
            await self._adapter.refresh(newer_than=self._clock())
        route = self._adapter.routes.get(slot.model)
        if route is None or not route.alive or (port is not None and route.port != port):
            return  # lemond already reported the loss, or the model moved
        if not await self._adapter.validator.check(route.port):
            self._adapter.mark_dead(slot.model, route.port, cause)

    async def unload_dead(self, slot: Slot) -> None:
        """lemond still lists a dead child of this model (before v10.8 it never notices, and a
        ``/v1/load`` of it is a no-op): an explicit unload clears it so the load respawns."""
        model = slot.model
        self._journal.publish("slot.recovering", slot=slot.name, model=model, action="unload+load")
        self.recoveries += 1
        self._ledger.asked(model, self._clock())
        try:
            await self._adapter.client.unload(model, timeout=self._config().policy.load_timeout_s)
        except NotLoaded:
            self._ledger.withdrawn(model)
        except LemondUnavailable as exc:
            raise LoadFailure(f"lemond is unavailable: {exc}", 503, "lemond.unavailable") from None
        except LemondError as exc:
            raise LoadFailure(f"could not unload the dead child of {model}: {exc}") from None
        with contextlib.suppress(LemondError):
            await self._adapter.refresh(newer_than=self._clock())

    async def await_lemond_replacement(self, model: str, poll_s: float = REPLACEMENT_POLL_S) -> None:
        """lemond is respawning ``model`` with another client's options: wait for that load
        instead of adding one. An unload now would be refused (404) once lemond's eviction
        ends, and a load with the slot's own options would respawn the new child a second
        time (lemond compares resolved options), cutting whatever it has started to serve.
        Bounded, in case the log line that ends the respawn is lost."""
        deadline = self._clock() + min(self._config().policy.load_timeout_s, REPLACEMENT_WAIT_MAX_S)
        while self._adapter.replacing(model) and self._clock() < deadline:
            await asyncio.sleep(poll_s)

    # ------------------------------------------------------------------ lemond down
    def lemond_unavailable(self, exc: Exception | str) -> ProxyError:
        return ProxyError(
            503, "lemond.unavailable", f"lemond is not reachable: {exc}", {}, retry_after_s=self.lemond_retry_after()
        )

    def lemond_retry_after(self) -> int:
        return max(1, round(self._adapter.poll_s * 2))
