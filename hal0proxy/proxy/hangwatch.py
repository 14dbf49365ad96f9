"""Hang detection for the proxy's own traffic.

lemond's watchdog only watches requests that pass through lemond; the proxy's go straight to
the child, so lemond never sees a child that accepted a connection and then stopped
answering. This watch does for the proxy what lemond's does for lemond (SPEC §4.4): an
exchange with no byte from its child for ``hang_after_s`` has the child's ``/health`` probed
every ``probe_interval_s``; ``probe_failures`` failures in a row and the child is declared
hung — the router stops using it and has it replaced, and every exchange still on that port
ends the way a dead child ends it (retried on the new child when nothing reached the client,
the ``upstream.stream_interrupted`` event for a stream in flight). A child that still answers
``/health`` (a long prompt evaluation) is not a hang, however long it is silent.

Nothing is done per chunk: every ``tick_s`` the watch samples each exchange's progress mark
(which response, how many chunks so far) and compares it with the previous sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from hal0proxy.lemond.probe import probe_health
from hal0proxy.proxy.context import ProxyContext
from hal0proxy.routing.contract import Lease

__all__ = ["HangSettings", "HangWatch", "Watched"]

log = logging.getLogger("hal0proxy.proxy.hang")

Mark = tuple[int, int, int]


class Watched(Protocol):
    """What an exchange exposes to the watch (``proxy.exchange.Exchange`` implements it)."""

    def progress_mark(self) -> tuple[Lease, Mark] | None: ...

    def end_hung_exchange(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HangSettings:
    hang_after_s: float = 90.0
    probe_interval_s: float = 5.0
    probe_timeout_s: float = 2.0
    probe_failures: int = 3

    @property
    def tick_s(self) -> float:
        return max(0.05, min(1.0, self.hang_after_s / 4))


@dataclass(slots=True)
class _PortState:
    failures: int = 0
    next_probe_at: float = 0.0
    probing: bool = False
    stuck: list[Watched] = field(default_factory=list)


Probe = Callable[[int, float], Awaitable[bool]]


class HangWatch:
    def __init__(self, ctx: ProxyContext, settings: HangSettings, probe: Probe = probe_health) -> None:
        self.ctx = ctx
        self.settings = settings
        self._probe = probe
        self._marks: dict[Watched, tuple[Mark, float]] = {}
        self._ports: dict[int, _PortState] = {}
        self._task: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self.hangs = 0  # children declared hung
        self.probes = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="hang-watch")

    def update(self, settings: HangSettings) -> None:
        """A configuration reload: exchanges already watched are judged by the new thresholds
        from the next tick (their silence so far counts). A probe already scheduled further
        out than the new interval allows is brought forward to it."""
        self.settings = settings
        latest = asyncio.get_running_loop().time() + settings.probe_interval_s
        for state in self._ports.values():
            state.next_probe_at = min(state.next_probe_at, latest)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._probes) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                self.sweep(asyncio.get_running_loop().time())
            except Exception:  # one bad sweep must not end hang detection for good
                log.exception("hang watch sweep failed")

    def sweep(self, now: float) -> None:
        """Sample every exchange; start a probe for each port whose exchanges are stuck."""
        marks: dict[Watched, tuple[Mark, float]] = {}
        stuck: dict[int, list[Watched]] = {}
        for watched, lease, mark in self._exchanges():
            prev = self._marks.get(watched)
            since = prev[1] if prev is not None and prev[0] == mark else now
            marks[watched] = (mark, since)
            if now - since >= self.settings.hang_after_s:
                stuck.setdefault(lease.port, []).append(watched)
        self._marks = marks
        for port in list(self._ports):
            if port not in stuck and not self._ports[port].probing:
                del self._ports[port]  # progress again (or nothing left): start over next time
        for port, conns in stuck.items():
            state = self._ports.setdefault(port, _PortState())
            state.stuck = conns
            if not state.probing and now >= state.next_probe_at:
                state.probing = True
                task = asyncio.get_running_loop().create_task(self._check(port, state))
                self._probes.add(task)
                task.add_done_callback(self._probes.discard)

    async def _check(self, port: int, state: _PortState) -> None:
        try:
            self.probes += 1
            ok = await self._probe(port, self.settings.probe_timeout_s)
        finally:
            state.probing = False
        state.next_probe_at = asyncio.get_running_loop().time() + self.settings.probe_interval_s
        if ok:
            state.failures = 0  # busy (e.g. a long prompt), not hung
            return
        state.failures += 1
        log.warning("child on port %d: health probe failed %d/%d", port, state.failures, self.settings.probe_failures)
        if state.failures < self.settings.probe_failures:
            return
        self._ports.pop(port, None)
        self._declare_hung(port)

    def _exchanges(self) -> list[tuple[Watched, Lease, Mark]]:
        """Every exchange waiting on a child, with its mark."""
        out: list[tuple[Watched, Lease, Mark]] = []
        for conn in list(self.ctx.connections):
            # A client connection's current exchange, if any (or anything watchable itself).
            candidate = getattr(conn, "exchange", conn)
            if not hasattr(candidate, "progress_mark"):
                continue  # idle, or answering locally
            watched = cast(Watched, candidate)
            found = watched.progress_mark()
            if found is not None:
                out.append((watched, found[0], found[1]))
        return out

    def _declare_hung(self, port: int) -> None:
        self.hangs += 1
        victims: list[Watched] = []
        lease: Lease | None = None
        for watched, found, _ in self._exchanges():
            if found.port == port:
                victims.append(watched)
                lease = lease or found
        log.error("child on port %d is hung: ending %d exchange(s) and replacing it", port, len(victims))
        if lease is not None:
            self.ctx.router.child_hung(lease)  # first, so the retries below do not go back there
        for conn in victims:
            self._marks.pop(conn, None)
            conn.end_hung_exchange()
