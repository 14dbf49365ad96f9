"""Room and idleness: the unloads the proxy decides itself, so lemond's LRU never has to.

Before a load into a full lemond pool the least recently used *quiet* model of that type is
unloaded first (never one that is serving, never a ``pinned = true`` slot); slots quiet past
their ``idle_timeout_s`` are unloaded; both are journaled with a reason. The choices are
``slots.policy``'s (pure); this object carries them out against lemond.

``Room`` owns the "a request finished" pulse (``note_quiet``): a wait for room, or an
unload waiting for its in-flight requests, wakes on it rather than polling alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from hal0proxy.control.attribution import UnloadLedger
from hal0proxy.control.recovery import LoadFailure
from hal0proxy.control.registry import Slot
from hal0proxy.control.shared import ControlShared
from hal0proxy.lemond.errors import LemondError, NotLoaded
from hal0proxy.slots import policy
from hal0proxy.slots.signals import IdleTick, UnloadRequested

__all__ = ["QUIET_RECHECK_S", "Room"]

#: A wait for a quiet slot looks again at least this often: the quiet pulse comes when a
#: request finishes, but room also appears without one (lemond evicts or a child crashes).
QUIET_RECHECK_S = 1.0


def _never(_model: str) -> bool:
    return False


def _ignore(_reason: str) -> None:
    return None


class Room:
    """Unloads for room and for idleness.

    ``is_loading(model)`` says whether a load of the model is in progress (the idle policy
    leaves it alone); ``on_unload(reason)`` is told of every unload the proxy issues (the
    eviction metric counts it as the proxy's)."""

    def __init__(
        self,
        shared: ControlShared,
        ledger: UnloadLedger,
        *,
        is_loading: Callable[[str], bool] = _never,
        on_unload: Callable[[str], None] = _ignore,
    ) -> None:
        self._adapter, self._registry, self._journal, self._config, self._clock = shared
        self._ledger = ledger
        self._is_loading = is_loading
        self._on_unload = on_unload
        # Pulsed whenever a request finishes (room may have appeared); made only while someone
        # waits for it, since the pulse runs once per request.
        self._quiet: asyncio.Event | None = None
        self.unloads_issued: dict[str, int] = {}  # reason -> unloads the proxy sent

    def note_quiet(self) -> None:
        """A slot's last request finished: wake whoever waits for room or for quiet."""
        quiet = self._quiet
        if quiet is not None:
            self._quiet = None
            quiet.set()

    async def _quiet_or(self, timeout_s: float) -> None:
        quiet = self._quiet
        if quiet is None:
            quiet = self._quiet = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(quiet.wait(), timeout_s)

    # ------------------------------------------------------------------ room
    async def make_room(self, slot: Slot, mtype: str) -> None:
        """Unload quiet models of ``mtype`` until ``slot``'s model fits in lemond's pool, or
        wait (up to the slot's ``max_wait_s``) while every candidate is serving."""
        health = self._adapter.last_health
        if health is None:
            # Without lemond's pool limits the proxy could not keep its LRU from choosing.
            with contextlib.suppress(LemondError):
                health = await self._adapter.refresh()
        max_models = health.max_models.get(mtype, -1) if health is not None else -1
        cfg = slot.config
        deadline = self._clock() + (cfg.max_wait_s if cfg else self._config().policy.max_wait_s)
        while True:
            action = policy.choose_room_victim(self.views_of_type(mtype), max_models, slot.model)
            if action is None:
                return
            if isinstance(action, policy.UnloadAction):
                assert action.model is not None
                self._journal.publish(
                    "slot.unloaded_for_room", victim=action.slot, model=action.model, for_model=slot.model
                )
                await self.unload(action.model, "room")
                continue
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise LoadFailure(f"every {mtype} slot is serving; no room to load {slot.model}")
            await self._quiet_or(min(remaining, QUIET_RECHECK_S))

    def views_of_type(self, mtype: str) -> list[policy.SlotView]:
        """One view per model of lemond pool ``mtype``, with the model's in-flight count over
        all the slots that name it."""
        views: list[policy.SlotView] = []
        seen: set[str] = set()
        for slot in self._registry.all():
            if slot.model in seen or self._registry.type_of(slot.model) != mtype:
                continue
            seen.add(slot.model)
            status = slot.status
            in_flight = self._registry.in_flight(slot.model)
            if in_flight != status.in_flight:
                status = status._replace(in_flight=in_flight)
            views.append(policy.SlotView(slot.name, status, mtype, slot.idle_timeout_s, slot.pinned))
        return views

    async def unload(self, model: str, reason: str) -> None:
        """Unload ``model`` through lemond, after what is in flight on it has finished (up to
        ``max_wait_s``); counted under ``reason`` and remembered as the proxy's doing."""
        self._registry.signal_model(model, UnloadRequested(), self._clock())
        # Nothing new is dispatched to an unloading slot; let what is in flight finish first
        # (room and idle victims are quiet already, so this only waits for admin unloads).
        deadline = self._clock() + self._config().policy.max_wait_s
        while self._registry.in_flight(model) and self._clock() < deadline:
            await self._quiet_or(QUIET_RECHECK_S)
        self.unloads_issued[reason] = self.unloads_issued.get(reason, 0) + 1
        self._on_unload(reason)
        self._ledger.asked(model, self._clock())
        try:
            await self._adapter.client.unload(model)
        except NotLoaded:
            self._ledger.withdrawn(model)
        finally:
            # The eviction log line normally updates the route; do not depend on it arriving.
            with contextlib.suppress(LemondError):
                await self._adapter.refresh(newer_than=self._clock())

    # ------------------------------------------------------------------ idleness
    async def idle_loop(self, interval: float) -> None:
        """Run the idle policy every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.idle_pass()

    async def idle_pass(self) -> None:
        """One run of the idle policy: tick every slot's idle timer, then unload the slots
        quiet past their ``idle_timeout_s`` (never one with requests in flight or loading)."""
        now = self._clock()
        for ticked in self._registry.all():
            self._registry.signal(ticked, IdleTick(ticked.idle_timeout_s), now)
        views = [policy.SlotView(s.name, s.status, s.type, s.idle_timeout_s, s.pinned) for s in self._registry.all()]
        for action in policy.idle_unload_candidates(views, now):
            slot = self._registry.get(action.slot)
            if slot is None or self._registry.in_flight(slot.model) or self._is_loading(slot.model):
                continue
            idle_s = round(now - slot.status.quiet_since(), 3)
            self._journal.publish(
                "slot.evicted_by_idle_policy",
                slot=slot.name,
                model=slot.model,
                idle_s=idle_s,
                reason=f"idle for {idle_s}s >= idle_timeout_s {slot.idle_timeout_s}",
            )
            with contextlib.suppress(LemondError):
                await self.unload(slot.model, "idle")
