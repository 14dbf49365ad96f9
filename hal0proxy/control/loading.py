"""Single-flight loads: however many requests want a model, lemond gets one ``/v1/load``.

A mixin of :class:`~hal0proxy.control.controller.Controller`, between it and the recovery
and room-making mixins it calls: a load first waits out a respawn lemond already runs,
clears a dead child lemond still lists, makes room in the model's lemond pool (one load per
pool at a time, so room-making cannot race itself), then loads with the slot's options and
records how long it took (for ``Retry-After`` and the load-latency metric).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from hal0proxy.control.recovery import LoadFailure, Recovery
from hal0proxy.control.registry import Slot
from hal0proxy.control.room import Room
from hal0proxy.lemond.errors import LemondError, LemondUnavailable, ModelNotFound
from hal0proxy.slots import policy
from hal0proxy.slots.signals import LoadError, LoadRequested

if TYPE_CHECKING:
    from hal0proxy.control.controller import ControlHooks

__all__ = ["Loading"]

log = logging.getLogger("hal0proxy.control")


class Loading(Recovery, Room):
    """Base of ``Controller``; declares what it uses of it."""

    hooks: ControlHooks
    load_times: policy.LoadTimes
    loads_issued: int
    _load_started: dict[str, float]
    _type_locks: dict[str, asyncio.Lock]

    def _ensure_loading(self, slot: Slot) -> asyncio.Task[None]:
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
        model, mtype = slot.model, self.registry.type_of(slot.model)
        self._load_started[model] = self.clock()
        await self._await_lemond_replacement(model)
        lock = self._type_locks.setdefault(mtype, asyncio.Lock())
        async with lock:  # one load per lemond pool at a time: room-making must not race itself
            route = self.adapter.routes.get(model)
            if route is not None and route.alive:
                if await self.adapter.usable_route(model) is not None:
                    return
                await self._confirm_route(slot, "refused")
                route = self.adapter.routes.get(model)
                if route is not None and route.alive:
                    return  # lemond lists it and something answers there: nothing to recover
            if self.adapter.lists_dead_child(model):
                await self._unload_dead(slot)
            await self._make_room(slot, mtype)
            self.registry.signal_model(model, LoadRequested(), self.clock())
            options = slot.config.load_options() if slot.config else {}
            if self.lemond_major >= 11:
                # The proxy owns idle policy: lemond's eviction engine measures idleness from
                # traffic through lemond only, and would evict a model streaming through us.
                options["auto_evict"] = False
            started = self.clock()
            self.loads_issued += 1
            self.journal.publish("slot.load_requested", slot=slot.name, model=model)
            try:
                await self.adapter.client.load(model, timeout=self.config.policy.load_timeout_s, **options)
            except LemondError as exc:
                # lemond logs no failure line for every refusal (an unknown model, lemond down):
                # the slot must not stay "starting" and hold its place in the pool.
                self.registry.signal_model(model, LoadError(str(exc)), self.clock())
                if isinstance(exc, ModelNotFound):
                    raise LoadFailure(str(exc), 404, "slot.not_found") from None
                if isinstance(exc, LemondUnavailable):
                    raise LoadFailure(f"lemond is unavailable: {exc}", 503, "lemond.unavailable") from None
                raise LoadFailure(str(exc)) from None
            finished = self.clock()
            self.load_times.record(model, finished - started)
            self.hooks.load_measured(model, finished - started)
            # /v1/load can answer before its log lines arrive: make sure the route is known,
            # from a /v1/health sent after the load returned (not one already in flight).
            route = self.adapter.routes.get(model)
            if route is None or not route.alive:
                with contextlib.suppress(LemondError):
                    await self.adapter.refresh(newer_than=finished)
