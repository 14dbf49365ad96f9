"""The control coroutine: where requests go, single-flight loads, room-making, idle unloads.

It implements the data plane's ``Router``: a request for a ready model gets a lease on its
port at once; one for a model that is not loaded triggers exactly one ``/v1/load`` however
many requests arrive, and waits (``cold_start = "wait"``) or is answered 503 ``slot.loading``
with a measured ``Retry-After``. Before a load into a full lemond pool it unloads the least
recently used quiet model of that type itself, so lemond's LRU never picks a serving child.
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
from hal0proxy.control.journal import Journal, event_fields
from hal0proxy.control.loading import Loading
from hal0proxy.control.pins import InFlightPins
from hal0proxy.control.recovery import LoadFailure
from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, ModelEvicted, ProcessCrashed
from hal0proxy.lemond.routes import Route
from hal0proxy.metrics import ControlStats, SlotSnapshot
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease
from hal0proxy.slots import dispatch, policy
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
#: A name the proxy does not know refreshes lemond's ``/v1/models`` at most this often, so a
#: client repeating an unknown name does not cost lemond a request per request.
MODELS_REFRESH_MIN_S = 5.0
#: An eviction line for a model the proxy asked to unload less than this long ago is the
#: proxy's own doing: lemond logs it after ``/v1/unload`` returned, several seconds later on
#: a busy child (it waits 5 s after SIGTERM), so the window is generous.
PROXY_UNLOAD_ATTRIBUTION_S = 60.0

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


class Controller(Loading):
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
        self.registry = SlotRegistry(config.slots, on_change=self._on_state_change)
        self.load_times = policy.LoadTimes()
        self._loads: dict[str, asyncio.Task[None]] = {}
        self._load_started: dict[str, float] = {}
        self._type_locks: dict[str, asyncio.Lock] = {}
        self._quiet = asyncio.Event()  # pulsed whenever a request finishes: room may have appeared
        self._tasks: list[asyncio.Task[None]] = []
        self._models_fetched = 0.0
        self.loads_issued = 0
        self._started = False
        self._health_failures_seen = 0
        self._models_task: asyncio.Task[bool] | None = None
        self.recoveries = 0  # dead children lemond still listed, cleared with unload + load
        self.unloads_issued: dict[str, int] = {}
        self.hooks = ControlHooks()
        # model -> when the proxy asked lemond to unload it; the eviction line that follows
        # (often after /v1/unload has returned) is the proxy's, not lemond's own decision.
        self._proxy_unloads: dict[str, float] = {}
        self._left_ready: dict[str, float] = {}  # slot -> when lemond took it away from ready
        adapter.names.learn(cfg.model for cfg in config.slots)
        self.pins = InFlightPins(adapter.client, lambda: self.lemond_major >= 11)
        self._adoption_warned: set[str] = set()
        adapter.subscribe(self._on_event)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, idle_interval_s: float = IDLE_TICK_S) -> None:
        await self.adapter.start()
        with contextlib.suppress(LemondError):
            await self.adapter.refresh()
        await self._refresh_known_models(force=True)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._idle_loop(idle_interval_s), name="idle-policy"))
        self._started = True
        self._warm()

    async def stop(self) -> None:
        self._started = False
        await self.pins.stop()
        for task in [*self._tasks, *self._loads.values()]:
            task.cancel()
        for task in [*self._tasks, *self._loads.values()]:
            with contextlib.suppress(BaseException):
                await task
        await self.adapter.stop()

    def ready(self) -> tuple[bool, list[str]]:
        """``/readyz``: lemond reachable and every warm slot dispatchable. Adopted models are
        reported too (as warnings: they do not make the proxy unready)."""
        problems = [] if self.adapter.reachable else ["lemond is not answering /v1/health"]
        for slot in self.registry.all():
            if slot.config is not None and slot.config.warm and not slot.status.dispatchable:
                problems.append(f"slot {slot.name} is {slot.status.state}")
        return not problems, problems + self._adoption_warnings()

    def stats_snapshot(self) -> ControlStats:
        """The control plane's numbers for a metrics scrape, as plain data."""
        stats = self.adapter.stats
        return ControlStats(
            websocket_connected=bool(self.adapter.ws_connected),
            websocket_reconnects=stats.reconnects,
            lemond_resyncs=stats.resyncs,
            lemond_seq_gaps=stats.gaps,
            lemond_restarts=stats.restarts,
            loads_issued=self.loads_issued,
            subscribers_dropped=self.journal.dropped_subscribers,
            slots=tuple(SlotSnapshot(s.name, s.status.state, s.status.in_flight) for s in self.registry.all()),
        )

    def serving_port(self, slot: Slot) -> int | None:
        """The port of the child serving ``slot``'s model, while lemond reports it alive."""
        route = self.adapter.routes.get(slot.model)
        return route.port if route is not None and route.alive else None

    # ------------------------------------------------------------------ Router protocol
    def acquire_now(self, request: Classified) -> Lease | None:
        """The hot path: a known slot whose route is alive and proven gets a lease at once.

        Only a ``Forward`` is acted on here; anything else is decided again by ``acquire``
        with the slot's own policy and a measured ``Retry-After``."""
        slot = self._lookup(request)
        if slot is None:
            return None
        facts = DispatchSlot(slot.name, slot.model, slot.status.state, slot.status.in_flight, slot.pinned)
        decision = dispatch.decide(facts, self.adapter.routes.get(slot.model), _FAST_PATH_POLICY, 0.0)
        return self._lease(slot, decision.port, decision.hold_in_lemond) if isinstance(decision, Forward) else None

    async def acquire(self, request: Classified) -> Lease:
        found = await self._resolve(request)
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
                slot.name, slot.model, slot.status.state, slot.status.in_flight, slot.pinned, self._retry_after(slot)
            )
            decision = dispatch.decide(facts, route, rules, max(now, self.clock()), arrived)
            if isinstance(decision, Forward):
                return self._lease(slot, decision.port, decision.hold_in_lemond)
            if isinstance(decision, Reject):
                if decision.start_load:
                    self._ensure_loading(slot)
                raise _rejection(decision)
            now = await self._wait_for_load(slot, decision.deadline)

    async def _wait_for_load(self, slot: Slot, deadline: float) -> float:
        """Wait for the model's single-flight load, at most until ``deadline``; the time to
        decide at next (never before ``deadline`` once it has passed)."""
        task = self._ensure_loading(slot)
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
                retry_after_s=self._retry_after(slot) if exc.status == 503 else None,
            ) from None
        if self.clock() - waited_from < LOAD_DID_NOTHING_S:
            # The load had nothing to do (lemond's view has not caught up yet): do not spin.
            await asyncio.sleep(min(NOTHING_TO_LOAD_PAUSE_S, max(0.0, deadline - self.clock())))
        return self.clock()

    def models_payload(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = []
        seen: set[str] = set()
        for slot in self.registry.all():
            if slot.name in seen:
                continue
            seen.add(slot.name)
            data.append(
                {
                    "id": slot.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "hal0proxy",
                    "model": slot.model,
                    "state": str(slot.status.state),
                }
            )
        for name, entry in self.registry.known_models.items():
            if name not in seen:
                seen.add(name)
                data.append({"id": name, "object": "model", "created": entry.get("created", 0), "owned_by": "lemonade"})
        return {"object": "list", "data": data}

    # ------------------------------------------------------------------ admin actions
    async def load_slot(self, slot: Slot) -> None:
        await asyncio.shield(self._ensure_loading(slot))

    async def unload_slot(self, slot: Slot, reason: str = "manual") -> None:
        await self._unload_model(slot.model, reason)

    # ------------------------------------------------------------------ internals: requests
    def _lookup(self, request: Classified) -> Slot | None:
        """The slot a request names (or its path's default slot), among the known ones."""
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self.registry.get(s)), None)
            if name is None:
                return None
        slot = self.registry.get(name)
        if slot is None:
            slots = self.registry.for_model(name)
            return slots[0] if slots else None
        return slot

    async def _resolve(self, request: Classified) -> Slot | Unresolved:
        """The request's slot, adopting a model lemond has loaded or can load, else why not."""
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self.registry.get(s)), None)
            if name is None:
                return Unresolved(None)

        if self.registry.get(name) is None:
            name = self.adapter.names.to_public(name)  # extra.<m> and friends: one model, one slot

        def loaded(model: str) -> bool:
            route = self.adapter.routes.get(model)
            return route is not None and route.alive

        slot = self.registry.resolve(name, loaded)
        if slot is None and await self._refresh_known_models():
            slot = self.registry.resolve(name, loaded)
        if slot is None:
            # While lemond is down only lemond could say whether it knows this model.
            return Unresolved(name, self.adapter.reachable, self._lemond_retry_after())
        return slot

    async def _probed_route(self, slot: Slot) -> Route | None:
        """The slot's route if a request can go there now (an unproven port is probed first)."""
        if slot.status.state is SlotState.UNLOADING:
            return None  # no request goes to a child being unloaded, so no probe either
        route = await self.adapter.usable_route(slot.model)
        if route is None:
            await self._confirm_route(slot, "refused")
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
            self._quiet.set()
            self._quiet = asyncio.Event()

    def retry_after(self, slot: Slot) -> int:
        """The ``Retry-After`` seconds for a request that finds ``slot`` loading."""
        return self._retry_after(slot)

    def _retry_after(self, slot: Slot) -> int:
        return self.load_times.retry_after_s(slot.model, self._load_started.get(slot.model), self.clock())

    async def _refresh_known_models(self, force: bool = False) -> bool:
        """Refresh lemond's model list (rate limited); True if it was refreshed."""
        now = self.clock()
        if not force and now - self._models_fetched < MODELS_REFRESH_MIN_S:
            return False
        self._models_fetched = now
        try:
            models = await self.adapter.client.models()
        except LemondError:
            return False
        self.registry.known_models = {m["id"]: m for m in models if isinstance(m, dict) and "id" in m}
        self.adapter.names.learn(self.registry.known_models)
        return True

    # ------------------------------------------------------------------ internals: events
    def _on_event(self, event: LemondEvent) -> None:
        self._note_lemond_back(event)
        if isinstance(event, ModelEvicted | ProcessCrashed) and event.model is not None:
            self.pins.forget(event.model)  # the pin went with the child
        elif isinstance(event, LemondRestarted):
            for slot in self.registry.all():
                self.pins.forget(slot.model)
        if isinstance(event, ModelEvicted):
            asked_at = self._proxy_unloads.pop(event.model, None)
            if asked_at is None or self.clock() - asked_at > PROXY_UNLOAD_ATTRIBUTION_S:
                self.hooks.evicted(str(event.reason), "lemond")
        elif isinstance(event, ProcessCrashed):
            if event.cause == "exit":
                self.hooks.evicted("crash", "lemond")
            else:  # found dead by the proxy's own traffic while lemond still listed it
                self.hooks.evicted("hang" if event.cause == "hang" else "crash", "proxy")
        self.registry.apply_event(event)
        self.journal.publish(f"lemond.{type(event).__name__}", **event_fields(event))
        for warning in self._adoption_warnings():
            model = warning.split()[2]
            if model not in self._adoption_warned:
                self._adoption_warned.add(model)
                self.journal.publish("slot.adopted", model=model, warning=warning)

    def _on_state_change(self, slot: Slot, before: SlotState) -> None:
        status = slot.status
        now = self.clock()
        if before in LOADED and status.state in (SlotState.OFFLINE, SlotState.ERROR):
            self._left_ready[slot.name] = now  # evicted or crashed behind the proxy's back
        elif status.state is SlotState.READY and slot.name in self._left_ready:
            self.hooks.recovered(slot.name, now - self._left_ready.pop(slot.name))
        self.journal.publish(
            "slot.state",
            slot=slot.name,
            model=slot.model,
            previous=str(before),
            state=str(status.state),
            port=status.port,
            message=status.message,
        )
