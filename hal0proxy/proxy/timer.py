"""The one timer of a client connection, re-armed lazily.

A request moves its connection's deadline several times (408 while the request arrives, 504
while the child is silent, keep-alive between requests). Only a move to an *earlier* time
than the scheduled one needs a new timer handle; a later one is picked up when the handle
fires, and a cancel only forgets what the expiry was for. A steady keep-alive connection so
schedules no new handle per request, and re-arming allocates nothing: what the expiry is for
is a plain int (``kind``), not a bound method.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["FIRST_BYTE", "IDLE", "NOTHING", "REQUEST", "ConnectionTimer"]

NOTHING, IDLE, REQUEST, FIRST_BYTE = 0, 1, 2, 3
# A handle that fires this close to its deadline counts as on time (uvloop's timers have
# millisecond resolution).
_SLACK_S = 0.001


class ConnectionTimer:
    __slots__ = ("_deadline", "_expired", "_handle", "_loop", "_when", "kind")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[int], None]) -> None:
        self._loop = loop
        self._expired = expired  # called with the kind that expired
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0  # when the handle fires (kept here: no when() call per re-arm)
        self._deadline = 0.0
        self.kind = NOTHING

    def arm(self, delay: float, kind: int) -> None:
        """Expire ``kind`` in ``delay`` seconds unless re-armed or cancelled before."""
        deadline = self._loop.time() + delay
        self._deadline = deadline
        self.kind = kind
        handle = self._handle
        if handle is not None:
            if self._when <= deadline:
                return  # fires in time; _fire moves it on to the new deadline
            handle.cancel()
        self._when = deadline
        self._handle = self._loop.call_at(deadline, self._fire)

    def cancel(self) -> None:
        # The handle stays: it finds nothing to expire, or a later deadline, when it fires.
        self.kind = NOTHING

    def drop(self) -> None:
        """The connection is gone: no handle may outlive it."""
        self.kind = NOTHING
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        kind = self.kind
        if kind == NOTHING:
            return
        if self._deadline - self._loop.time() > _SLACK_S:
            self._when = self._deadline
            self._handle = self._loop.call_at(self._deadline, self._fire)
            return
        self.kind = NOTHING
        self._expired(kind)
