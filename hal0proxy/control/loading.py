"""Single-flight loads: however many requests want a model, lemond gets one ``/v1/load``.

Owned by :class:`~hal0proxy.control.controller.Controller`; it drives the ``Recovery`` and
``Room`` objects it is given: a load first waits out a respawn lemond already runs,
clears a dead child lemond still lists, makes room in the model's lemond pool (one load per
pool at a time, so room-making cannot race itself), then loads with the slot's options and
records how long it took (for ``Retry-After`` and the load-latency metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from hal0proxy.control.recovery import LoadFailure
from hal0proxy.control.registry import Slot
from hal0proxy.control.shared import ControlShared
from hal0proxy.lemond.errors import LemondError, LemondUnavailable, ModelNotFound
from hal0proxy.slots import policy
from hal0proxy.slots.signals import LoadError, LoadRequested

__all__ = ["LoadRecovery", "LoadRoom", "Loading"]

log = logging.getLogger("hal0proxy.control")


class LoadRecovery(Protocol):
    """What a load asks of ``Recovery``: lemond's release, and clearing the way."""

    @property
    def lemond_major(self) -> int: ...

    async def await_lemond_replacement(self, model: str) -> None: ...

    async def confirm_route(self, slot: Slot, cause: str) -> None: ...

    async def unload_dead(self, slot: Slot) -> None: ...


class LoadRoom(Protocol):
    """What a load asks of ``Room``: a place in the model's lemond pool."""

    async def make_room(self, slot: Slot, mtype: str) -> None: ...


def _ignore(_model: str, _seconds: float) -> None:
    return None


class Loading:
    """One load task per model at a time; every caller awaits the same task.

    ``on_measured(model, seconds)`` is told how long each ``/v1/load`` took (the
    load-latency metric); ``load_times`` keeps them for ``Retry-After``."""

    def __init__(
        self,
        shared: ControlShared,
        recovery: LoadRecovery,
        room: LoadRoom,
        *,
        on_measured: Callable[[str, float], None] = _ignore,
    ) -> None:
        self._adapter, self._registry, self._journal, self._config, self._clock = shared
        self._recovery = recovery
        self._room = room
        self._on_measured = on_measured
        self.load_times = policy.LoadTimes()
        self.loads_issued = 0
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._load_started: dict[str, float] = {}
        self._type_locks: dict[str, asyncio.Lock] = {}

    def in_progress(self, model: str) -> bool:
        """Whether a load of ``model`` is under way."""
        return model in self._loads

    def tasks(self) -> list[asyncio.Task[None]]:
        """The loads under way (to cancel at shutdown)."""
        return list(self._loads.values())

    def retry_after(self, slot: Slot) -> int:
        """The ``Retry-After`` seconds for a request that finds ``slot`` loading."""
        started = self._load_started.get(slot.model)
        return self.load_times.retry_after_s(slot.model, started, self._clock(), self._config().policy.default_load_s)

    def ensure_loading(self, slot: Slot) -> asyncio.Task[None]:
        """The load task of ``slot``'s model: the one under way, or a new one."""
        task = self._loads.get(slot.model)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._load(slot), name=f"load:{slot.model}")
            model = slot.model
            task.add_done_callback(lambda t: self._load_done(model, t))
            self._loads[slot.model] = task
        return task

    def _load_done(self, model: str, task: asyncio.Task[None]) -> None:
        if self._loads.get(model) is task:
            del self._loads[model]
        self._load_started.pop(model, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("load of %s failed: %s", model, task.exception())

    async def _load(self, slot: Slot) -> None:
        model, mtype = slot.model, self._registry.type_of(slot.model)
        self._load_started[model] = self._clock()
        await self._recovery.await_lemond_replacement(model)
        lock = self._type_locks.setdefault(mtype, asyncio.Lock())
        async with lock:  # one load per lemond pool at a time: room-making must not race itself
            route = self._adapter.routes.get(model)
            if route is not None and route.alive:
                if await self._adapter.usable_route(model) is not None:
                    return
                await self._recovery.confirm_route(slot, "refused")
                route = self._adapter.routes.get(model)
                if route is not None and route.alive:
                    return  # lemond lists it and something answers there: nothing to recover
            if self._adapter.lists_dead_child(model):
                await self._recovery.unload_dead(slot)
            await self._room.make_room(slot, mtype)
            self._registry.signal_model(model, LoadRequested(), self._clock())
            options = slot.config.load_options() if slot.config else {}
            if self._recovery.lemond_major >= 11:
                # The proxy owns idle policy: lemond's eviction engine measures idleness from
                # traffic through lemond only, and would evict a model streaming through us.
                options["auto_evict"] = False
            started = self._clock()
            self.loads_issued += 1
            self._journal.publish("slot.load_requested", slot=slot.name, model=model)
            try:
                await self._adapter.client.load(model, timeout=self._config().policy.load_timeout_s, **options)
            except LemondError as exc:
                # lemond logs no failure line for every refusal (an unknown model, lemond down):
                # the slot must not stay "starting" and hold its place in the pool.
                self._registry.signal_model(model, LoadError(str(exc)), self._clock())
                if isinstance(exc, ModelNotFound):
                    raise LoadFailure(str(exc), 404, "slot.not_found") from None
                if isinstance(exc, LemondUnavailable):
                    raise LoadFailure(f"lemond is unavailable: {exc}", 503, "lemond.unavailable") from None
                raise LoadFailure(str(exc)) from None
            finished = self._clock()
            self.load_times.record(model, finished - started)
            self._on_measured(model, finished - started)
            # /v1/load can answer before its log lines arrive: make sure the route is known,
            # from a /v1/health sent after the load returned (not one already in flight).
            route = self._adapter.routes.get(model)
            if route is None or not route.alive:
                with contextlib.suppress(LemondError):
                    await self._adapter.refresh(newer_than=finished)
