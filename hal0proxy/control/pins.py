"""Keep a model pinned in lemond while the proxy has requests in flight on it.

The proxy's traffic goes straight to the children, so lemond's LRU cannot see it: another
client's ``/v1/load`` into a full pool would pick a model that is serving proxied streams.
A pinned model is never an LRU victim (lemond answers that client ``409 slots_pinned_error``
instead, SPEC §4.1), so the model is pinned when its first request starts and unpinned
``unpin_after_s`` after its last one ends (a burst of requests costs two calls, not two per
request). ``/internal/pin`` changes only the pin, so it can never become an option-change
reload of the serving child, as a second ``/v1/load`` with other options would.

lemond serialises ``/internal/pin`` behind its load lock: a pin waits while lemond loads or
evicts anything (7 s for a busy child: a 5 s SIGTERM wait and a 2 s pause), and a pin whose
caller gave up is still applied when the lock frees. So the calls for one model go one at a
time (a later unpin never overtakes an earlier pin inside lemond), the last wanted state
wins, and the timeout is long.

Failure modes, all non-fatal to the request: lemond older than v11 has no pins (nothing is
done); lemond down or the model just gone (the pin is retried on the next busy period); an
admin key the proxy does not have (401: pinning is switched off, logged once). Slots
configured ``pinned = true`` are left alone: lemond holds them pinned from their load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

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
        timeout_s: float = 120.0,
    ) -> None:
        self.client = client
        self.supported = supported  # lemond's release knows /internal/pin
        self.unpin_after_s = unpin_after_s
        self.timeout_s = timeout_s
        self.enabled = True
        self._wanted: dict[str, bool] = {}  # model -> the pin the proxy wants lemond to hold
        self._applied: dict[str, bool] = {}  # model -> what lemond last confirmed
        self._unpin_timers: dict[str, asyncio.TimerHandle] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}  # at most one call per model at a time
        self.calls = 0
        self.failures = 0

    def pinned(self, model: str) -> bool:
        """Whether the proxy wants ``model`` pinned now."""
        return self._wanted.get(model, False)

    def busy(self, model: str) -> None:
        """The first request on ``model`` started (in-flight count went 0 → 1)."""
        timer = self._unpin_timers.pop(model, None)
        if timer is not None:
            timer.cancel()  # still pinned from the last busy period
        if not self.enabled or not self.supported():
            return
        self._wanted[model] = True
        self._kick(model)

    def quiet(self, model: str) -> None:
        """The last request on ``model`` finished (in-flight count went to 0)."""
        if not self._wanted.get(model) or model in self._unpin_timers:
            return
        loop = asyncio.get_running_loop()
        self._unpin_timers[model] = loop.call_later(self.unpin_after_s, self._unpin, model)

    def forget(self, model: str) -> None:
        """lemond no longer has the model (evicted, crashed, restarted): its pin went with it."""
        self._wanted.pop(model, None)
        self._applied.pop(model, None)
        timer = self._unpin_timers.pop(model, None)
        if timer is not None:
            timer.cancel()

    async def stop(self) -> None:
        for timer in self._unpin_timers.values():
            timer.cancel()
        self._unpin_timers.clear()
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    def _unpin(self, model: str) -> None:
        self._unpin_timers.pop(model, None)
        if self._wanted.get(model):
            self._wanted[model] = False
            self._kick(model)

    def _kick(self, model: str) -> None:
        worker = self._workers.get(model)
        if worker is not None and not worker.done():
            return  # the running worker reads the wanted state again when its call returns
        if self._wanted.get(model, False) == self._applied.get(model, False):
            return
        task = asyncio.get_running_loop().create_task(self._sync(model), name=f"pin:{model}")
        self._workers[model] = task
        task.add_done_callback(lambda t: self._workers.pop(model, None) if self._workers.get(model) is t else None)

    async def _sync(self, model: str) -> None:
        while model in self._wanted and self._wanted[model] != self._applied.get(model, False):
            pinned = self._wanted[model]
            if not await self._set(model, pinned):
                if pinned:
                    self._wanted.pop(model, None)  # try again on the next busy period
                self._applied.pop(model, None)
                return
            if model in self._wanted:  # not forgotten while the call was in flight
                self._applied[model] = pinned

    async def _set(self, model: str, pinned: bool) -> bool:
        self.calls += 1
        try:
            await self.client.pin(model, pinned, timeout=self.timeout_s)
        except LemondAuthError as exc:
            self.enabled = False
            self.failures += 1
            log.warning("cannot pin models in lemond (%s): streams are not protected from its LRU", exc)
            return False
        except LemondError as exc:
            self.failures += 1
            log.info("pin of %s -> %s failed: %s", model, pinned, exc)
            return False
        return True
