"""Recovery: what the control plane does when lemond's view and the children disagree.

A mixin of :class:`~hal0proxy.control.controller.Controller` (it keeps no state of its
own). Three kinds of trouble end up here:

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
from collections.abc import Callable
from typing import TYPE_CHECKING

from hal0proxy.config import Config
from hal0proxy.control.journal import Journal
from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError, LemondUnavailable, NotLoaded
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, Resynced
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease

if TYPE_CHECKING:
    from hal0proxy.control.controller import SlotLease

__all__ = ["LoadFailure", "Recovery"]

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


class Recovery:
    """Base of ``Controller``; declares what it uses of it."""

    config: Config
    adapter: LemondAdapter
    registry: SlotRegistry
    journal: Journal
    clock: Callable[[], float]
    recoveries: int
    _started: bool
    _health_failures_seen: int
    _models_task: asyncio.Task[bool] | None
    _proxy_unloads: dict[str, float]

    # -- provided by the controller ------------------------------------------------------
    def _lease(self, slot: Slot, port: int, hold_in_lemond: bool | None = None) -> SlotLease:
        raise NotImplementedError

    async def acquire(self, request: Classified) -> Lease:
        raise NotImplementedError

    def _ensure_loading(self, slot: Slot) -> asyncio.Task[None]:
        raise NotImplementedError

    async def _refresh_known_models(self, force: bool = False) -> bool:
        raise NotImplementedError

    # -- recovery ------------------------------------------------------------------------
    def _warm(self) -> None:
        """Load every warm slot that is not loaded (concurrently; /readyz reports progress).

        Run at start, and again whenever lemond comes back (it was unreachable, or it
        restarted): the proxy may start before lemond, and a restarted lemond has nothing.
        """
        self._health_failures_seen = self.adapter.stats.health_failures
        for slot in self.registry.all():
            if slot.config is None or not slot.config.warm:
                continue
            route = self.adapter.routes.get(slot.model)
            if route is None or not route.alive:
                self._ensure_loading(slot)

    @property
    def lemond_major(self) -> int:
        """lemond's major release from its last ``/v1/health`` (0 while unknown)."""
        health = self.adapter.last_health
        head = health.version.split(".", 1)[0] if health is not None else ""
        return int(head) if head.isdigit() else 0

    def _adoption_warnings(self) -> list[str]:
        if self.lemond_major < 11:
            return []
        return [
            f"warning: model {slot.model} was loaded by another client; lemond may evict it on its own "
            "(auto_evict counts only traffic through lemond)"
            for slot in self.registry.all()
            if slot.adopted and (route := self.adapter.routes.get(slot.model)) is not None and route.alive
        ]

    async def reroute(self, lease: Lease) -> Lease | None:
        """A connect to the leased port failed, or the child closed before answering: learn
        where the model is now, or recover it through lemond (unload + load when lemond
        still lists the dead child), and wait for that within the slot's ``max_wait_s``."""
        slot = self.registry.get(lease.slot)
        if slot is None:
            return None
        self.adapter.validator.invalidate(lease.port)
        try:
            await self.adapter.refresh(newer_than=self.clock())
        except LemondError as exc:
            if await self.adapter.validator.check(lease.port):
                return self._lease(slot, lease.port)  # the child answers again; lemond is what is down
            self.adapter.mark_dead(slot.model, lease.port, "refused")
            raise self._lemond_unavailable(exc) from None
        await self._confirm_route(slot, "refused", port=lease.port)
        route = await self.adapter.usable_route(slot.model)
        if route is not None and route.port != lease.port:
            return self._lease(slot, route.port)
        return await self.acquire(Classified(slot.name, (), b"", False))

    def child_hung(self, lease: Lease) -> None:
        """The hang watch found the child behind ``lease`` silent and not answering /health:
        it is dead to the proxy (journal and metrics say ``hang``) and is replaced through
        lemond with one unload + load, which the requests re-resolving now wait for."""
        slot = self.registry.get(lease.slot)
        if slot is None:
            return
        self.journal.publish("slot.hang_detected", slot=slot.name, model=slot.model, port=lease.port)
        if self.adapter.mark_dead(slot.model, lease.port, "hang"):
            self._ensure_loading(slot)

    async def _confirm_route(self, slot: Slot, cause: str, port: int | None = None) -> None:
        """The route table says ``slot``'s model is alive (on ``port``), but it did not take a
        request: ask lemond, and if it still lists the child there and nothing listens, the
        child is dead behind lemond's back (``LemondAdapter.mark_dead``)."""
        route = self.adapter.routes.get(slot.model)
        if route is None or not route.alive or (port is not None and route.port != port):
            return
        with contextlib.suppress(LemondError):
            await self.adapter.refresh(newer_than=self.clock())
        route = self.adapter.routes.get(slot.model)
        if route is None or not route.alive or (port is not None and route.port != port):
            return  # lemond already reported the loss, or the model moved
        if not await self.adapter.validator.check(route.port):
            self.adapter.mark_dead(slot.model, route.port, cause)

    def _lemond_unavailable(self, exc: Exception | str) -> ProxyError:
        return ProxyError(
            503, "lemond.unavailable", f"lemond is not reachable: {exc}", {}, retry_after_s=self._lemond_retry_after()
        )

    def _lemond_retry_after(self) -> int:
        return max(1, round(self.adapter.poll_s * 2))

    async def _await_lemond_replacement(self, model: str, poll_s: float = REPLACEMENT_POLL_S) -> None:
        """lemond is respawning ``model`` with another client's options: wait for that load
        instead of adding one. An unload now would be refused (404) once lemond's eviction
        ends, and a load with the slot's own options would respawn the new child a second
        time (lemond compares resolved options), cutting whatever it has started to serve.
        Bounded, in case the log line that ends the respawn is lost."""
        deadline = self.clock() + min(self.config.policy.load_timeout_s, REPLACEMENT_WAIT_MAX_S)
        while self.adapter.replacing(model) and self.clock() < deadline:
            await asyncio.sleep(poll_s)

    async def _unload_dead(self, slot: Slot) -> None:
        """lemond still lists a dead child of this model (before v10.8 it never notices, and a
        ``/v1/load`` of it is a no-op): an explicit unload clears it so the load respawns."""
        model = slot.model
        self.journal.publish("slot.recovering", slot=slot.name, model=model, action="unload+load")
        self.recoveries += 1
        self._proxy_unloads[model] = self.clock()
        try:
            await self.adapter.client.unload(model, timeout=self.config.policy.load_timeout_s)
        except NotLoaded:
            self._proxy_unloads.pop(model, None)
        except LemondUnavailable as exc:
            raise LoadFailure(f"lemond is unavailable: {exc}", 503, "lemond.unavailable") from None
        except LemondError as exc:
            raise LoadFailure(f"could not unload the dead child of {model}: {exc}") from None
        with contextlib.suppress(LemondError):
            await self.adapter.refresh(newer_than=self.clock())

    def _note_lemond_back(self, event: LemondEvent) -> None:
        back = isinstance(event, LemondRestarted) or (
            isinstance(event, Resynced) and self.adapter.stats.health_failures != self._health_failures_seen
        )
        if back and self._started:
            self.journal.publish("lemond.back", restarted=isinstance(event, LemondRestarted))
            # After this event has been applied everywhere (routes first, then the slots).
            asyncio.get_running_loop().call_soon(self._rewarm)

    def _rewarm(self) -> None:
        if not self._started:
            return
        self._warm()
        if self._models_task is None or self._models_task.done():
            # lemond's model list may have been unknown (it was down) or changed (restarted).
            self._models_task = asyncio.get_running_loop().create_task(self._refresh_known_models(force=True))
