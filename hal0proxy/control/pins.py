"""Keep a model pinned in lemond while the proxy has requests in flight on it.

The proxy's traffic goes straight to the children, so lemond's LRU cannot see it: another
client's ``/v1/load`` into a full pool would pick a model that is serving proxied streams.
A pinned model is never an LRU victim (lemond answers that client ``409 slots_pinned_error``
instead, SPEC §4.1), so the model is pinned when its first request starts and unpinned
``unpin_after_s`` after its last one ends (a burst of requests costs two calls, not two per
request). ``/internal/pin`` changes only the pin, so it can never become an option-change
reload of the serving child, as a second ``/v1/load`` with other options would.

Failure modes, all non-fatal to the request: lemond older than v11 has no pins (nothing is
done); lemond down or the model just gone (the pin is retried on the next busy period); an
admin key the proxy does not have (401: pinning is switched off, logged once). Slots
configured ``pinned = true`` are left alone: lemond holds them pinned from their load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from hal0proxy.lemond.client import LemondClient
from hal0proxy.lemond.errors import LemondAuthError, LemondError

__all__ = ["InFlightPins"]

log = logging.getLogger("hal0proxy.control.pins")


class InFlightPins:
    def __init__(
        self,
        client: LemondClient,
        supported: Callable[[], bool],
        *,
        unpin_after_s: float = 2.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.client = client
        self.supported = supported  # lemond's release knows /internal/pin
        self.unpin_after_s = unpin_after_s
        self.timeout_s = timeout_s
        self.enabled = True
        self._pinned: set[str] = set()  # models the proxy pinned and has not unpinned yet
        self._unpin_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls = 0
        self.failures = 0

    def busy(self, model: str) -> None:
        """The first request on ``model`` started (in-flight count went 0 → 1)."""
        timer = self._unpin_timers.pop(model, None)
        if timer is not None:
            timer.cancel()  # still pinned from the last busy period
            return
        if model in self._pinned or not self.enabled or not self.supported():
            return
        self._pinned.add(model)
        self._spawn(self._set(model, True))

    def quiet(self, model: str) -> None:
        """The last request on ``model`` finished (in-flight count went to 0)."""
        if model not in self._pinned or model in self._unpin_timers:
            return
        loop = asyncio.get_running_loop()
        self._unpin_timers[model] = loop.call_later(self.unpin_after_s, self._unpin, model)

    def forget(self, model: str) -> None:
        """lemond no longer has the model (evicted, crashed, restarted): its pin went with it."""
        self._pinned.discard(model)
        timer = self._unpin_timers.pop(model, None)
        if timer is not None:
            timer.cancel()

    async def stop(self) -> None:
        for timer in self._unpin_timers.values():
            timer.cancel()
        self._unpin_timers.clear()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def _unpin(self, model: str) -> None:
        self._unpin_timers.pop(model, None)
        self._pinned.discard(model)
        self._spawn(self._set(model, False))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _set(self, model: str, pinned: bool) -> None:
        self.calls += 1
        try:
            await self.client.pin(model, pinned, timeout=self.timeout_s)
        except LemondAuthError as exc:
            self.enabled = False
            self.failures += 1
            log.warning("cannot pin models in lemond (%s): streams are not protected from its LRU", exc)
        except LemondError as exc:
            self.failures += 1
            if pinned:
                self._pinned.discard(model)  # try again on the next busy period
            log.info("pin of %s -> %s failed: %s", model, pinned, exc)
