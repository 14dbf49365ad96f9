"""The lemond adapter: one object that keeps the proxy's view of lemond current.

Pipeline: WebSocket log stream → ``parse`` → ``Correlator.feed`` → ``RouteTable.apply``
→ subscribers. Next to it runs the heartbeat: ``/v1/health`` every ``heartbeat_s``
(30 s) while the stream is up, every ``poll_s`` (1 s) while it is down, and at once
after a (re)connect, a seq gap, a lemond restart or :meth:`LemondAdapter.request_refresh`.
Each health answer is published as a ``Resynced`` event; it is authoritative.

History. A fresh subscription's snapshot replays up to 5000 old lines. They are fed to
the correlator (so that a load in progress has its context) but their events are
*not* applied: they describe the past, and the health refresh that follows every
connect describes the present. A resumed subscription's snapshot holds only lines
the adapter missed while disconnected, so those events are applied normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from hal0proxy.lemond.client import _UNSET, DEFAULT_BASE_URL, LemondClient  # one shared "not given" marker
from hal0proxy.lemond.correlate import Correlator
from hal0proxy.lemond.errors import LemondError
from hal0proxy.lemond.events import LemondEvent, LemondRestarted, LoadedModel, ProcessCrashed, Resynced
from hal0proxy.lemond.health import HealthSnapshot
from hal0proxy.lemond.logstream import LogStream, LogStreamListener
from hal0proxy.lemond.names import ModelNames
from hal0proxy.lemond.parser import parse
from hal0proxy.lemond.probe import PortValidator
from hal0proxy.lemond.routes import Route, RouteTable, StableHook

__all__ = ["AdapterStats", "LemondAdapter"]

log = logging.getLogger(__name__)

Subscriber = Callable[[LemondEvent], None]


@dataclass(slots=True)
class AdapterStats:
    reconnects: int = 0  # WebSocket reconnects after the first connect
    drops: int = 0  # live WebSocket connections lost
    resyncs: int = 0  # /v1/health reconciliations applied
    health_failures: int = 0
    gaps: int = 0  # seq gaps (entries lost in lemond's ring)
    restarts: int = 0  # lemond restarts detected
    events: int = 0  # events published
    dead_children: int = 0  # children found dead by the proxy while lemond still listed them


class _Listener(LogStreamListener):
    def __init__(self, adapter: LemondAdapter) -> None:
        self.adapter = adapter

    def on_entry(self, seq: int, line: str, observed_at: float, *, replay: bool = False) -> None:
        self.adapter._on_line(seq, line, observed_at, replay)

    def on_connected(self, url: str, resumed: bool) -> None:
        self.adapter._on_connected(url, resumed)

    def on_dropped(self, reason: str) -> None:
        self.adapter._on_dropped(reason)

    def on_gap(self, expected: int, got: int) -> None:
        self.adapter._on_gap(expected, got)

    def on_restart(self) -> None:
        self.adapter._on_restart()


class LemondAdapter:
    """Owns the lemond client, log stream, route table and heartbeat. Loop-thread only."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = _UNSET,
        heartbeat_s: float = 30.0,
        poll_s: float = 1.0,
        refresh_ttl_s: float = 0.25,
        ws_ping_s: float = 5.0,
        use_websocket: bool = True,
        client: LemondClient | None = None,
        validator: PortValidator | None = None,
        on_route_stable: StableHook | None = None,
    ) -> None:
        self.client = client if client is not None else LemondClient(base_url, api_key)
        self.routes = RouteTable(on_stable=on_route_stable)
        self.validator = validator if validator is not None else PortValidator()
        self.correlator = Correlator()
        self.stats = AdapterStats()
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.refresh_ttl_s = refresh_ttl_s
        self.last_health: HealthSnapshot | None = None
        # False after a /v1/health that could not reach lemond, True after one that did.
        self.reachable = False
        # model -> (pid, port) of a child the proxy found dead that lemond still lists
        # (lemond < v10.8 never notices; later releases only after their watchdog poll).
        # Such an entry is left out of every reconciliation until lemond lists another child.
        self.dead_listed: dict[str, tuple[int | None, int]] = {}
        # lemond's log lines name models canonically (extra.<m>); everything else is public.
        self.names = ModelNames()
        self._subs: list[Subscriber] = []
        self._stream: LogStream | None = None
        if use_websocket:
            self._stream = LogStream(
                self.client.host,
                self.client.port,
                _Listener(self),
                api_key=self.client.api_key,
                discover_ws_port=self._discover_ws_port,
                ping_interval=ws_ping_s,
            )
        self._refresh_task: asyncio.Task[HealthSnapshot] | None = None
        self._refresh_sent = 0.0
        self._want = 0.0  # the next heartbeat must see health sent at or after this time
        self._wake: asyncio.Event | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # -- public surface -------------------------------------------------------------------

    @property
    def ws_connected(self) -> bool:
        return self._stream is not None and self._stream.connected

    @property
    def ws_url(self) -> str | None:
        return self._stream.url if self._stream is not None else None

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every event after it was applied to ``routes``."""
        self._subs.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subs.remove(callback)

        return unsubscribe

    async def start(self) -> None:
        """Load the current state (best effort) and start the stream and heartbeat."""
        self._wake = asyncio.Event()
        try:
            await self.refresh()
        except LemondError as exc:
            log.warning("lemond not reachable at start: %s", exc)
        if self._stream is not None:
            self._stream.start()
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeat_loop(), name="lemond-heartbeat")

    async def stop(self) -> None:
        tasks = [t for t in (self._heartbeat, self._refresh_task) if t is not None]
        self._heartbeat = None
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._stream is not None:
            await self._stream.stop()

    def request_refresh(self, newer_than: float | None = None) -> None:
        """Ask for a ``/v1/health`` reconciliation soon (non-blocking, coalesced).

        Called by the data plane after a failed connect to a child. Requests within
        ``refresh_ttl_s`` of an answer are served by it; a burst causes one call.
        """
        want = time.monotonic() - self.refresh_ttl_s if newer_than is None else newer_than
        self._want = max(self._want, want)
        if self._wake is not None:
            self._wake.set()

    async def refresh(self, newer_than: float | None = None) -> HealthSnapshot:
        """Return health sent at or after ``newer_than`` (default: within the TTL).

        Single-flight: concurrent callers share one request. Raises ``LemondError``.
        """
        want = time.monotonic() - self.refresh_ttl_s if newer_than is None else newer_than
        while True:
            if self.last_health is not None and self.last_health.observed_at >= want:
                return self.last_health
            task = self._refresh_task
            if task is None or task.done():
                self._refresh_sent = time.monotonic()
                task = self._refresh_task = asyncio.get_running_loop().create_task(self._do_refresh())
                return await asyncio.shield(task)
            if self._refresh_sent >= want:
                return await asyncio.shield(task)
            # The call in flight started too early for this caller: wait, then start another.
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def mark_dead(self, model: str, port: int, cause: str) -> bool:
        """The child serving ``model`` on ``port`` is dead although lemond may still list it.

        Publishes a ``ProcessCrashed`` (with ``cause``) so routes and slots see the loss at
        once; the route is not trusted again until lemond reports another child. False when
        the route had already changed (someone else noticed first).
        """
        route = self.routes.get(model)
        if route is None or not route.alive or route.port != port:
            return False
        self.dead_listed[model] = (route.pid, port)
        self.stats.dead_children += 1
        self.validator.record(port, False)
        log.warning("child of %s on port %d is dead (%s); lemond still lists it", model, port, cause)
        self._publish(ProcessCrashed(model=model, pid=route.pid, cause=cause, observed_at=time.monotonic()))
        return True

    def replacing(self, model: str) -> bool:
        """True while lemond's log says it is respawning ``model`` with other options (a
        client's ``/v1/load`` with a new ``ctx_size``): its load is already under way."""
        return any(self.names.to_public(name) == model for name in self.correlator.replacing())

    def lists_dead_child(self, model: str) -> bool:
        """True while lemond's last ``/v1/health`` still lists a child the proxy found dead."""
        return model in self.dead_listed

    async def usable_route(self, model: str) -> Route | None:
        """The model's route if it can take a request now; probes an unproven port.

        On a failed probe a health refresh is requested and ``None`` returned.
        """
        route = self.routes.get(model)
        if route is None or not route.alive:
            return None
        if route.proven:
            return route
        if await self.validator.check(route.port):
            return route
        self.request_refresh()
        return None

    # -- heartbeat ------------------------------------------------------------------------

    async def _do_refresh(self) -> HealthSnapshot:
        try:
            snap = await self.client.health()
        except LemondError:
            self.stats.health_failures += 1
            self.reachable = False
            raise
        self.reachable = True
        self.names.learn(entry.model for entry in snap.loaded)
        if self.last_health is None or snap.observed_at >= self.last_health.observed_at:
            self.last_health = snap
        self.stats.resyncs += 1
        self.correlator.sync(snap.loaded)
        # observed_at is the *send* time: RouteTable uses it as the cutoff so events
        # observed after the request went out are not overridden by this answer.
        loaded = self._without_dead(snap.loaded)
        self._publish(Resynced(observed_at=snap.observed_at, loaded=loaded, max_models=snap.max_models))
        return snap

    def _without_dead(self, loaded: tuple[LoadedModel, ...]) -> tuple[LoadedModel, ...]:
        """``loaded`` minus the children the proxy found dead; forgets those lemond replaced."""
        if not self.dead_listed:
            return loaded
        listed = {entry.model: entry for entry in loaded}
        for model, (pid, port) in list(self.dead_listed.items()):
            entry = listed.get(model)
            if entry is None or not _same_child(entry, pid, port):
                del self.dead_listed[model]  # unloaded, or a new child: lemond's word holds again
        return tuple(e for e in loaded if e.model not in self.dead_listed)

    async def _heartbeat_loop(self) -> None:
        assert self._wake is not None
        # ``asyncio.timeout`` rather than ``wait_for``: on Python 3.11 ``wait_for`` loses a
        # cancellation that lands as the wait completes (a log-stream drop wakes the loop at
        # the moment ``stop`` cancels it), and the loop would then poll for ever.
        while self._heartbeat is not None:
            interval = self.heartbeat_s if self.ws_connected else self.poll_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            self._wake.clear()
            want = max(time.monotonic() - self.refresh_ttl_s, self._want)
            try:
                await self.refresh(newer_than=want)
            except LemondError as exc:
                log.debug("lemond health failed: %s", exc)

    async def _discover_ws_port(self) -> int | None:
        try:
            snap = await self.refresh()
        except LemondError:
            return None
        return snap.websocket_port

    # -- log stream callbacks -------------------------------------------------------------

    def _on_line(self, seq: int, line: str, observed_at: float, replay: bool) -> None:
        fact = parse(line)
        if fact is None:
            return
        events = self.correlator.feed(fact, seq, observed_at)
        if replay:
            # History: context for the correlator only (see module docstring); the
            # refresh that follows every connect covers any hint it raised.
            self.correlator.take_resync_hint()
            return
        for event in events:
            self._publish(self._public(event))
        if self.correlator.take_resync_hint():
            # The log alone could not say where a model lives (e.g. no port line at Info).
            self.request_refresh(newer_than=observed_at)

    def _on_connected(self, url: str, resumed: bool) -> None:
        if self._stream is not None and self._stream.stats.connects > 1:
            self.stats.reconnects += 1
        log.info("lemond log stream connected: %s (resumed=%s)", url, resumed)
        self.request_refresh(newer_than=time.monotonic())

    def _on_dropped(self, reason: str) -> None:
        if self._stream is not None and self._stream.stats.drops > self.stats.drops:
            self.stats.drops = self._stream.stats.drops
            log.warning("lemond log stream dropped: %s", reason)
            # Events may be missed until the stream is back: check now, then poll.
            self.request_refresh(newer_than=time.monotonic())

    def _on_gap(self, expected: int, got: int) -> None:
        self.stats.gaps += 1
        log.warning("lemond log entries %d..%d lost; resynchronising", expected, got - 1)
        self.request_refresh(newer_than=time.monotonic())

    def _on_restart(self) -> None:
        self.stats.restarts += 1
        self.correlator.reset()
        self._publish(LemondRestarted(observed_at=time.monotonic()))
        self.request_refresh(newer_than=time.monotonic())

    # -- publishing -----------------------------------------------------------------------

    def _public(self, event: LemondEvent) -> LemondEvent:
        """The event with lemond's canonical model name replaced by the public one."""
        model = getattr(event, "model", None)
        if isinstance(model, str):
            public = self.names.to_public(model)
            if public != model:
                return replace(event, model=public)  # type: ignore[call-arg]
        return event

    def _publish(self, event: LemondEvent) -> None:
        before = self.routes.get(getattr(event, "model", None) or "")
        after = self.routes.apply(event)
        if before is not None and (after is None or after.port != before.port):
            self.validator.invalidate(before.port)
        if isinstance(event, LemondRestarted):
            self.validator.invalidate()
        self.stats.events += 1
        for callback in tuple(self._subs):
            try:
                callback(event)
            except Exception:
                log.exception("lemond event subscriber failed on %s", type(event).__name__)


def _same_child(entry: LoadedModel, pid: int | None, port: int) -> bool:
    if entry.pid is not None and pid is not None:
        return entry.pid == pid
    return entry.port == port
