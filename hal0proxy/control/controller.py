"""The control coroutine: where requests go, single-flight loads, room-making, idle unloads.

It implements the data plane's ``Router``: a request for a ready model gets a lease on its
port at once; one for a model that is not loaded triggers exactly one ``/v1/load`` however
many requests arrive, and waits (``cold_start = "wait"``) or is answered 503 ``slot.loading``
with a measured ``Retry-After``. Before a load into a full lemond pool it unloads the least
recently used quiet model of that type itself, so lemond's LRU never picks a serving child.

The work is split into objects the controller builds and wires in ``__init__``, each given
what it uses explicitly: ``Catalog`` (which slot a request names), ``Recovery`` (dead
children, lemond down or back), ``Room`` (unloads for room and idleness) and ``Loading``
(single-flight loads, over ``Recovery`` and ``Room``). The decisions themselves are pure
and live in ``hal0proxy.slots`` (``dispatch.decide``, ``policy``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from hal0proxy.config import Config
from hal0proxy.control.attribution import UnloadLedger, eviction_source
from hal0proxy.control.catalog import Catalog
from hal0proxy.control.journal import Journal, Subscription, event_fields
from hal0proxy.control.loading import Loading
from hal0proxy.control.pins import InFlightPins
from hal0proxy.control.recovery import LoadFailure, Recovery
from hal0proxy.control.registry import PolicyDefaults, Slot, SlotRegistry
from hal0proxy.control.room import Room
from hal0proxy.control.shared import ControlShared
from hal0proxy.control.state_feed import SlotStateFeed
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, ModelEvicted, ProcessCrashed
from hal0proxy.lemond.routes import Route
from hal0proxy.metrics import ControlStats, SlotSnapshot
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease
from hal0proxy.slots import dispatch
from hal0proxy.slots.derive import LOADED
from hal0proxy.slots.dispatch import ColdStart, DispatchPolicy, DispatchSlot, Forward, Reject, Unresolved
from hal0proxy.slots.signals import RequestFinished, RequestStarted
from hal0proxy.slots.state import SlotState

log = logging.getLogger("hal0proxy.control")

# -- timing ----------------------------------------------------------------------------------
#: Between runs of the idle policy: idle timeouts are whole seconds in practice, so a
#: second's resolution is enough and costs nothing.
IDLE_TICK_S = 1.0
#: A wait for a load that ends sooner than this found nothing to do (lemond's view, or the
#: route table, had not caught up with the load yet) ...
LOAD_DID_NOTHING_S = 0.01
#: ... so the request pauses this long before deciding again, rather than spin on it.
NOTHING_TO_LOAD_PAUSE_S = 0.1

#: ``acquire_now`` only acts on a ``Forward``, which no policy changes.
_FAST_PATH_POLICY = DispatchPolicy()


def _noop(*_args: object) -> None:
    return None


def _rejection(reject: Reject) -> ProxyError:
    return ProxyError(reject.status, reject.code, reject.message, reject.details, reject.retry_after_s)


@dataclass(slots=True)
class ControlHooks:
    """Measurement hooks (metrics bind them); the controller works without them."""

    load_measured: Callable[[str, float], None] = _noop
    recovered: Callable[[str, float], None] = _noop
    evicted: Callable[[str, str], None] = _noop


class SlotLease:
    __slots__ = ("_controller", "_released", "_slot", "port")

    def __init__(self, controller: Controller, slot: Slot, port: int) -> None:
        self._controller = controller
        self._slot = slot
        self.port = port
        self._released = False

    @property
    def slot(self) -> str:
        return self._slot.name

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._controller._finished(self._slot)


class Controller:
    """The data plane's ``Router`` and the admin API's view of the slots.

    It owns three objects, each with one job and no knowledge of the others beyond what
    their constructors are given: ``recovery`` (dead children, lemond down or back),
    ``room`` (unloads for room and idleness) and ``loading`` (single-flight loads, which
    use the other two). The controller leases, wires lemond's events through, and acts on
    what ``recovery`` finds."""

    def __init__(
        self,
        config: Config,
        adapter: LemondAdapter,
        journal: Journal | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.adapter = adapter
        self.journal = journal or Journal()
        self.clock = clock
        self._state_feed = SlotStateFeed(self.journal, clock)
        self.registry = SlotRegistry(
            config.slots, on_change=self._on_state_change, defaults=PolicyDefaults(config.policy.idle_timeout_s)
        )
        self.hooks = ControlHooks()  # bound after construction (metrics), so read at use
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._models_task: asyncio.Task[bool] | None = None
        self._left_ready: dict[str, float] = {}  # slot -> when lemond took it away from ready
        # Warm slots whose warm-up is over (reached a loaded state once, or the load failed):
        # from then on being unloaded or evicted is normal operation, not unreadiness.
        self._warmed: set[str] = set()
        # The proxy's own unloads, so the eviction line lemond logs after one is not lemond's.
        self._unloads = UnloadLedger()
        shared = ControlShared(adapter, self.registry, self.journal, self._current_config, clock)
        self.recovery = Recovery(shared, self._unloads)
        self.room = Room(shared, self._unloads, is_loading=self._is_loading, on_unload=self._unload_issued)
        self.loading = Loading(shared, self.recovery, self.room, on_measured=self._load_measured)
        self.catalog = Catalog(adapter, self.registry, clock, self.recovery.lemond_retry_after)
        adapter.names.learn(cfg.model for cfg in config.slots)
        self.pins = InFlightPins(adapter.client, lambda: self.lemond_major >= 11)
        self._adoption_warned: set[str] = set()
        adapter.subscribe(self._on_event)

    # ------------------------------------------------------------------ wiring
    def _current_config(self) -> Config:
        return self.config  # a configuration reload assigns ``config``; the parts read it here

    def _is_loading(self, model: str) -> bool:
        return self.loading.in_progress(model)

    def _unload_issued(self, reason: str) -> None:
        self.hooks.evicted(reason, "proxy")

    def _load_measured(self, model: str, seconds: float) -> None:
        self.hooks.load_measured(model, seconds)

    @property
    def lemond_major(self) -> int:
        """lemond's major release from its last ``/v1/health`` (0 while unknown)."""
        return self.recovery.lemond_major

    # ------------------------------------------------------------------ lifecycle
    async def start(self, idle_interval_s: float = IDLE_TICK_S) -> None:
        await self.adapter.start()
        with contextlib.suppress(LemondError):
            await self.adapter.refresh()
        await self.catalog.refresh(force=True)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self.room.idle_loop(idle_interval_s), name="idle-policy"))
        self._started = True
        self._warm()

    def _warm(self) -> None:
        """Load every warm slot that is not loaded (concurrently; /readyz reports progress).

        Run at start, and again whenever lemond comes back (it was unreachable, or it
        restarted): the proxy may start before lemond, and a restarted lemond has nothing.
        """
        for slot in self.recovery.slots_to_warm():
            self.loading.ensure_loading(slot)

    def _rewarm(self) -> None:
        if not self._started:
            return
        self._warmed.clear()  # lemond came back (or restarted): its warm-up is a new start
        self._warm()
        if self._models_task is None or self._models_task.done():
            # lemond's model list may have been unknown (it was down) or changed (restarted).
            self._models_task = asyncio.get_running_loop().create_task(self.catalog.refresh(force=True))

    async def stop(self) -> None:
        self._started = False
        await self.pins.stop()
        tasks = [*self._tasks, *self.loading.tasks()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.adapter.stop()

    def ready(self) -> tuple[bool, list[str]]:
        """``/readyz``: lemond reachable (its health answered, so the adapter is synced) and the
        warm-up finished: every warm slot reached a loaded state once since the start (or since
        lemond came back), or its load failed. After that a warm slot that is offline because
        it was evicted or unloaded is normal operation (the next request loads it again), not
        a reason to take the proxy out of rotation; a slot in ``error`` still is. Adopted
        models are reported too (as warnings: they do not make the proxy unready)."""
        problems = [] if self.adapter.reachable else ["lemond is not answering /v1/health"]
        for slot in self.registry.all():
            if slot.config is None or not slot.config.warm:
                continue
            state = slot.status.state
            if state in LOADED:
                self._warmed.add(slot.name)
            if state is SlotState.ERROR:
                problems.append(f"slot {slot.name} is {state}")
            elif slot.name not in self._warmed:
                problems.append(f"slot {slot.name} is {state} (warm-up not finished)")
        return not problems, problems + self.recovery.adoption_warnings()

    def stats_snapshot(self) -> ControlStats:
        """The control plane's numbers for a metrics scrape, as plain data."""
        stats = self.adapter.stats
        return ControlStats(
            websocket_connected=bool(self.adapter.ws_connected),
            websocket_reconnects=stats.reconnects,
            lemond_resyncs=stats.resyncs,
            lemond_seq_gaps=stats.gaps,
            lemond_restarts=stats.restarts,
            loads_issued=self.loading.loads_issued,
            subscribers_dropped=self.journal.dropped_subscribers,
            slots=tuple(SlotSnapshot(s.name, s.status.state, s.status.in_flight) for s in self.registry.all()),
        )

    # ------------------------------------------------------------------ read surface (admin API)
    def slots(self) -> list[Slot]:
        """Every slot the proxy knows (configured, adopted, on demand), in the order it learnt them."""
        return self.registry.all()

    def slot(self, name: str) -> Slot | None:
        """The slot named ``name``, or ``None`` when there is none."""
        return self.registry.get(name)

    async def find_slot(self, name: str) -> Slot | Unresolved:
        """The slot ``name`` names as a request's ``model`` would: a slot, a slot's model, or
        a model lemond has loaded or can load (which then gets a slot of its own, as a cold
        request's would); else why not (``Unresolved``: unknown, or lemond down)."""
        return await self.catalog.resolve(Classified(name, (), b"", False))

    def subscribe_events(self) -> Subscription:
        """Slot and lemond events from now on; ``close()`` it when done. A subscriber that
        falls too far behind is dropped and receives ``None``, never waited for."""
        return self.journal.subscribe()

    def serving_port(self, slot: Slot) -> int | None:
        """The port of the child serving ``slot``'s model, while lemond reports it alive."""
        route = self.adapter.routes.get(slot.model)
        return route.port if route is not None and route.alive else None

    # ------------------------------------------------------------------ Router protocol
    def acquire_now(self, request: Classified) -> Lease | None:
        """The hot path: a known slot whose route is alive and proven gets a lease at once.

        Only a ``Forward`` is acted on here; anything else is decided again by ``acquire``
        with the slot's own policy and a measured ``Retry-After``."""
        slot = self.catalog.lookup(request)
        if slot is None:
            return None
        facts = DispatchSlot(slot.name, slot.model, slot.status.state, slot.status.in_flight, slot.pinned)
        decision = dispatch.decide(facts, self.adapter.routes.get(slot.model), _FAST_PATH_POLICY, 0.0)
        return self._lease(slot, decision.port, decision.hold_in_lemond) if isinstance(decision, Forward) else None

    async def acquire(self, request: Classified) -> Lease:
        found = await self.catalog.resolve(request)
        if isinstance(found, Unresolved):
            raise _rejection(dispatch.refuse_unresolved(found))
        slot = found
        cfg = slot.config
        rules = DispatchPolicy(
            ColdStart(cfg.cold_start if cfg else self.config.policy.cold_start),
            cfg.max_wait_s if cfg else self.config.policy.max_wait_s,
        )
        arrived = now = self.clock()
        # Wait means wait: until the deadline, however often the model is found crashed,
        # evicted or reloading (never an instant 503 because a dead route looked alive).
        while True:
            route = await self._probed_route(slot)
            facts = DispatchSlot(
                slot.name,
                slot.model,
                slot.status.state,
                slot.status.in_flight,
                slot.pinned,
                self.loading.retry_after(slot),
            )
            decision = dispatch.decide(facts, route, rules, max(now, self.clock()), arrived)
            if isinstance(decision, Forward):
                return self._lease(slot, decision.port, decision.hold_in_lemond)
            if isinstance(decision, Reject):
                if decision.start_load:
                    self.loading.ensure_loading(slot)
                raise _rejection(decision)
            now = await self._wait_for_load(slot, decision.deadline)

    async def reroute(self, lease: Lease) -> Lease | None:
        """A connect to the leased port failed, or the child closed before answering: learn
        where the model is now, or recover it through lemond (unload + load when lemond
        still lists the dead child), and wait for that within the slot's ``max_wait_s``."""
        slot = self.registry.get(lease.slot)
        if slot is None:
            return None
        port = await self.recovery.relocate(slot, lease.port)
        if port is not None:
            return self._lease(slot, port)
        return await self.acquire(Classified(slot.name, (), b"", False))

    def child_hung(self, lease: Lease) -> None:
        """The hang watch found the child behind ``lease`` silent and not answering /health:
        it is dead to the proxy (journal and metrics say ``hang``) and is replaced through
        lemond with one unload + load, which the requests re-resolving now wait for."""
        slot = self.registry.get(lease.slot)
        if slot is not None and self.recovery.child_hung(slot, lease.port):
            self.loading.ensure_loading(slot)

    async def _wait_for_load(self, slot: Slot, deadline: float) -> float:
        """Wait for the model's single-flight load, at most until ``deadline``; the time to
        decide at next (never before ``deadline`` once it has passed)."""
        task = self.loading.ensure_loading(slot)
        waited_from = self.clock()
        try:
            await asyncio.wait_for(asyncio.shield(task), deadline - waited_from)
        except TimeoutError:
            return max(self.clock(), deadline)
        except LoadFailure as exc:
            raise ProxyError(
                exc.status,
                exc.code,
                f"model {slot.model!r} could not be loaded: {exc}",
                {"slot": slot.name, "model": slot.model},
                retry_after_s=self.loading.retry_after(slot) if exc.status == 503 else None,
            ) from None
        if self.clock() - waited_from < LOAD_DID_NOTHING_S:
            # The load had nothing to do (lemond's view has not caught up yet): do not spin.
            await asyncio.sleep(min(NOTHING_TO_LOAD_PAUSE_S, max(0.0, deadline - self.clock())))
        return self.clock()

    def models_payload(self) -> dict[str, Any]:
        return self.catalog.models_payload()

    # ------------------------------------------------------------------ admin actions
    async def load_slot(self, slot: Slot) -> None:
        await asyncio.shield(self.loading.ensure_loading(slot))

    async def unload_slot(self, slot: Slot, reason: str = "manual") -> None:
        await self.room.unload(slot.model, reason)

    # ------------------------------------------------------------------ internals: requests
    async def _probed_route(self, slot: Slot) -> Route | None:
        """The slot's route if a request can go there now (an unproven port is probed first)."""
        if slot.status.state is SlotState.UNLOADING:
            return None  # no request goes to a child being unloaded, so no probe either
        route = await self.adapter.usable_route(slot.model)
        if route is None:
            await self.recovery.confirm_route(slot, "refused")
            return None
        if not route.proven:
            self.adapter.routes.mark_proven(slot.model, route.port)
            route = replace(route, proven=True)
        return route

    def _lease(self, slot: Slot, port: int, hold_in_lemond: bool | None = None) -> SlotLease:
        if hold_in_lemond is None:
            hold_in_lemond = slot.status.in_flight == 0 and not slot.pinned
        slot.last_used_wall = time.time()
        self.registry.signal(slot, RequestStarted(), self.clock())
        if hold_in_lemond:
            self.pins.busy(slot.model)  # keep lemond's LRU off it while it serves
        return SlotLease(self, slot, port)

    def _finished(self, slot: Slot) -> None:
        slot.last_used_wall = time.time()
        self.registry.signal(slot, RequestFinished(), self.clock())
        if slot.status.in_flight == 0:
            if self.registry.in_flight(slot.model) == 0:
                self.pins.quiet(slot.model)
            self.room.note_quiet()

    def retry_after(self, slot: Slot) -> int:
        """The ``Retry-After`` seconds for a request that finds ``slot`` loading."""
        return self.loading.retry_after(slot)

    # ------------------------------------------------------------------ internals: events
    def _on_event(self, event: LemondEvent) -> None:
        if self._started and self.recovery.lemond_back(event):
            # After this event has been applied everywhere (routes first, then the slots).
            asyncio.get_running_loop().call_soon(self._rewarm)
        if isinstance(event, ModelEvicted | ProcessCrashed) and event.model is not None:
            self.pins.forget(event.model)  # the pin went with the child
        elif isinstance(event, LemondRestarted):
            for slot in self.registry.all():
                self.pins.forget(slot.model)
        eviction = eviction_source(event, self._unloads, self.clock())
        if eviction is not None:
            self.hooks.evicted(eviction.reason, eviction.by)
        self.registry.apply_event(event)
        self.journal.publish(f"lemond.{type(event).__name__}", **event_fields(event))
        for warning in self.recovery.adoption_warnings():
            model = warning.split()[2]
            if model not in self._adoption_warned:
                self._adoption_warned.add(model)
                self.journal.publish("slot.adopted", model=model, warning=warning)

    def _on_state_change(self, slot: Slot, before: SlotState) -> None:
        status = slot.status
        if slot.config is not None and slot.config.warm and status.state in (*LOADED, SlotState.ERROR):
            self._warmed.add(slot.name)  # its warm-up is over (see ``ready``)
        if before in LOADED and status.state in (SlotState.OFFLINE, SlotState.ERROR):
            self._left_ready[slot.name] = self.clock()  # evicted or crashed behind the proxy's back
        elif status.state is SlotState.READY and slot.name in self._left_ready:
            self.hooks.recovered(slot.name, self.clock() - self._left_ready.pop(slot.name))
        self._state_feed.changed(slot, before)
