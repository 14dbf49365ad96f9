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
from dataclasses import dataclass
from typing import Any

from hal0proxy.config import Config
from hal0proxy.control.journal import Journal, event_fields
from hal0proxy.control.pins import InFlightPins
from hal0proxy.control.recovery import LoadFailure, Recovery
from hal0proxy.control.registry import Slot, SlotRegistry
from hal0proxy.control.room import Room
from hal0proxy.http.errors import ProxyError
from hal0proxy.lemond.adapter import LemondAdapter
from hal0proxy.lemond.errors import LemondError, LemondUnavailable, ModelNotFound
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, ModelEvicted, ProcessCrashed
from hal0proxy.routing.classify import Classified
from hal0proxy.routing.contract import Lease
from hal0proxy.slots import policy
from hal0proxy.slots.derive import LOADED
from hal0proxy.slots.signals import LoadError, LoadRequested, RequestFinished, RequestStarted
from hal0proxy.slots.state import SlotState

log = logging.getLogger("hal0proxy.control")


def _noop(*_args: object) -> None:
    return None


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


class Controller(Recovery, Room):
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
    async def start(self, idle_interval_s: float = 1.0) -> None:
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

    # ------------------------------------------------------------------ Router protocol
    def acquire_now(self, request: Classified) -> Lease | None:
        """The hot path: a known slot whose route is alive and proven gets a lease at once."""
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self.registry.get(s)), None)
            if name is None:
                return None
        slot = self.registry.get(name)
        if slot is None:
            slots = self.registry.for_model(name)
            if not slots:
                return None
            slot = slots[0]
        if slot.status.state is SlotState.UNLOADING:
            return None
        route = self.adapter.routes.get(slot.model)
        if route is None or not route.alive or not route.proven:
            return None
        return self._lease(slot, route.port)

    async def acquire(self, request: Classified) -> Lease:
        slot = await self._resolve(request)
        cfg = slot.config
        cold_start = cfg.cold_start if cfg else self.config.policy.cold_start
        max_wait = cfg.max_wait_s if cfg else self.config.policy.max_wait_s
        deadline = self.clock() + max_wait
        # Wait means wait: until the deadline, however often the model is found crashed,
        # evicted or reloading (never an instant 503 because a dead route looked alive).
        while True:
            if slot.status.state is not SlotState.UNLOADING:
                route = await self.adapter.usable_route(slot.model)
                if route is not None:
                    if not route.proven:
                        self.adapter.routes.mark_proven(slot.model, route.port)
                    return self._lease(slot, route.port)
                await self._confirm_route(slot, "refused")
            task = self._ensure_loading(slot)
            remaining = deadline - self.clock()
            if cold_start == "reject" or remaining <= 0:
                raise self._loading_error(slot)
            waited_from = self.clock()
            try:
                await asyncio.wait_for(asyncio.shield(task), remaining)
            except TimeoutError:
                raise self._loading_error(slot) from None
            except LoadFailure as exc:
                raise ProxyError(
                    exc.status,
                    exc.code,
                    f"model {slot.model!r} could not be loaded: {exc}",
                    {"slot": slot.name, "model": slot.model},
                    retry_after_s=self._retry_after(slot) if exc.status == 503 else None,
                ) from None
            if self.clock() - waited_from < 0.01:
                # The load had nothing to do (lemond's view has not caught up yet): do not spin.
                await asyncio.sleep(min(0.1, max(0.0, deadline - self.clock())))

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
    async def _resolve(self, request: Classified) -> Slot:
        name = request.model
        if name is None:
            name = next((s for s in request.default_slots if self.registry.get(s)), None)
            if name is None:
                raise ProxyError(400, "request.missing_model", "request has no 'model' and no default slot applies")

        if self.registry.get(name) is None:
            name = self.adapter.names.to_public(name)  # extra.<m> and friends: one model, one slot

        def loaded(model: str) -> bool:
            route = self.adapter.routes.get(model)
            return route is not None and route.alive

        slot = self.registry.resolve(name, loaded)
        if slot is None and await self._refresh_known_models():
            slot = self.registry.resolve(name, loaded)
        if slot is None and not self.adapter.reachable:
            # Only lemond could say whether it knows this model: come back when it is up.
            raise self._lemond_unavailable(f"cannot resolve model {name!r} while lemond is down")
        if slot is None:
            raise ProxyError(404, "dispatch.no_route", f"no slot or lemond model named {name!r}", {"model": name})
        return slot

    def _lease(self, slot: Slot, port: int) -> SlotLease:
        slot.last_used_wall = time.time()
        self.registry.signal(slot, RequestStarted(), self.clock())
        if slot.status.in_flight == 1 and not (slot.config and slot.config.pinned):
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

    def _loading_error(self, slot: Slot) -> ProxyError:
        retry = self._retry_after(slot)
        state = str(slot.status.state)
        return ProxyError(
            503,
            "slot.loading",
            f"slot {slot.name!r} is {state}, not ready to serve yet",
            {
                "slot": slot.name,
                "state": state,
                "retry_after_s": retry,
                "progress": {"phase": state, "requested_model": slot.model},
            },
            retry_after_s=retry,
        )

    async def _refresh_known_models(self, force: bool = False) -> bool:
        """Refresh lemond's model list (rate limited); True if it was refreshed."""
        now = self.clock()
        if not force and now - self._models_fetched < 5.0:
            return False
        self._models_fetched = now
        try:
            models = await self.adapter.client.models()
        except LemondError:
            return False
        self.registry.known_models = {m["id"]: m for m in models if isinstance(m, dict) and "id" in m}
        self.adapter.names.learn(self.registry.known_models)
        return True

    # ------------------------------------------------------------------ internals: loading
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
            if asked_at is None or self.clock() - asked_at > 60.0:
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
