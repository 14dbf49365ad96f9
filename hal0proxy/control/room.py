"""Room and idleness: the unloads the proxy decides itself, so lemond's LRU never has to.

A mixin of :class:`~hal0proxy.control.controller.Controller` (it keeps no state of its
own). Before a load into a full lemond pool the least recently used *quiet* model of that
type is unloaded first (never one that is serving, never a ``pinned = true`` slot); slots
quiet past their ``idle_timeout_s`` are unloaded; both are journaled with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from hal0proxy.config import Config
from hal0proxy.control.journal import Journal
from hal0proxy.control.recovery import LoadFailure
from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError, NotLoaded
from hal0proxy.slots import policy
from hal0proxy.slots.signals import IdleTick, UnloadRequested

if TYPE_CHECKING:
    from hal0proxy.control.controller import ControlHooks

__all__ = ["Room"]

#: A wait for a quiet slot looks again at least this often: ``_quiet`` pulses when a request
#: finishes, but room also appears without one (lemond evicts or a child crashes).
QUIET_RECHECK_S = 1.0


class Room:
    """Base of ``Controller``; declares what it uses of it."""

    config: Config
    adapter: LemondAdapter
    registry: SlotRegistry
    journal: Journal
    clock: Callable[[], float]
    hooks: ControlHooks
    unloads_issued: dict[str, int]
    _proxy_unloads: dict[str, float]
    _quiet: asyncio.Event
    _loads: dict[str, asyncio.Task[None]]

    async def _make_room(self, slot: Slot, mtype: str) -> None:
        health = self.adapter.last_health
        if health is None:
            # Without lemond's pool limits the proxy could not keep its LRU from choosing.
            with contextlib.suppress(LemondError):
                health = await self.adapter.refresh()
        max_models = health.max_models.get(mtype, -1) if health is not None else -1
        cfg = slot.config
        deadline = self.clock() + (cfg.max_wait_s if cfg else self.config.policy.max_wait_s)
        while True:
            views = self._views_of_type(mtype)
            action = policy.choose_room_victim(views, max_models, slot.model)
            if action is None:
                return
            if isinstance(action, policy.UnloadAction):
                assert action.model is not None
                self.journal.publish(
                    "slot.unloaded_for_room", victim=action.slot, model=action.model, for_model=slot.model
                )
                await self._unload_model(action.model, "room")
                continue
            remaining = deadline - self.clock()
            if remaining <= 0:
                raise LoadFailure(f"every {mtype} slot is serving; no room to load {slot.model}")
            quiet = self._quiet
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quiet.wait(), min(remaining, QUIET_RECHECK_S))

    def _views_of_type(self, mtype: str) -> list[policy.SlotView]:
        views: list[policy.SlotView] = []
        seen: set[str] = set()
        for slot in self.registry.all():
            if slot.model in seen or self.registry.type_of(slot.model) != mtype:
                continue
            seen.add(slot.model)
            status = slot.status
            in_flight = self.registry.in_flight(slot.model)
            if in_flight != status.in_flight:
                status = replace(status, in_flight=in_flight)
            views.append(policy.SlotView(slot.name, status, mtype, slot.idle_timeout_s, slot.pinned))
        return views

    async def _unload_model(self, model: str, reason: str) -> None:
        self.registry.signal_model(model, UnloadRequested(), self.clock())
        # Nothing new is dispatched to an unloading slot; let what is in flight finish first
        # (room and idle victims are quiet already, so this only waits for admin unloads).
        deadline = self.clock() + self.config.policy.max_wait_s
        while self.registry.in_flight(model) and self.clock() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), QUIET_RECHECK_S)
        self.unloads_issued[reason] = self.unloads_issued.get(reason, 0) + 1
        self.hooks.evicted(reason, "proxy")
        self._proxy_unloads[model] = self.clock()
        try:
            await self.adapter.client.unload(model)
        except NotLoaded:
            self._proxy_unloads.pop(model, None)
        finally:
            # The eviction log line normally updates the route; do not depend on it arriving.
            with contextlib.suppress(LemondError):
                await self.adapter.refresh(newer_than=self.clock())

    async def _idle_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            now = self.clock()
            for slot in self.registry.all():
                self.registry.signal(slot, IdleTick(slot.idle_timeout_s), now)
            slots = self.registry.all()
            views = [policy.SlotView(s.name, s.status, s.type, s.idle_timeout_s, s.pinned) for s in slots]
            for action in policy.idle_unload_candidates(views, now):
                found = self.registry.get(action.slot)
                if found is None:
                    continue
                slot = found
                if self.registry.in_flight(slot.model) or slot.model in self._loads:
                    continue
                idle_s = round(now - slot.status.quiet_since(), 3)
                self.journal.publish(
                    "slot.evicted_by_idle_policy",
                    slot=slot.name,
                    model=slot.model,
                    idle_s=idle_s,
                    reason=f"idle for {idle_s}s >= idle_timeout_s {slot.idle_timeout_s}",
                )
                with contextlib.suppress(LemondError):
                    await self._unload_model(slot.model, "idle")
